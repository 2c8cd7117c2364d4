//! The MQTT link to the fleet (rumqttc): subscribes to the device's desired-state topic and
//! publishes the outbox to its up topic at QoS 1.
//!
//! - A message leaves the outbox only when the broker's PUBACK for it arrives (at-least-once;
//!   the signed sequence number lets the server drop a duplicate).
//! - Each connection is a fresh rumqttc event loop: after a disconnect nothing is replayed from
//!   the old session; unacknowledged messages are simply read from the outbox again, with the
//!   same bytes and sequence numbers.
//! - Publishes are matched to acknowledgements by packet id: rumqttc reports the id it gave
//!   each publish (`Outgoing::Publish`) in the order they were queued.
//! - After each connect the device queues a hello with its reported state; the server answers
//!   with the desired state (which is also retained on the desired topic).
//! - The connection's MQTT will is `offline` on the device's status topic: the server learns of
//!   a lost device without waiting for it to time out.
//! - Reconnects back off exponentially with jitter, up to `server.retry_max_seconds` (at most a
//!   minute).

use std::collections::{HashMap, VecDeque};
use std::sync::mpsc::Sender;
use std::sync::Arc;
use std::time::Duration;

use edge_protocol::topics;
use rumqttc::{AsyncClient, Event, MqttOptions, Outgoing, Packet, QoS};

use crate::config::parse_mqtt_url;
use crate::core::{unix_now, Core};
use crate::download::{backoff, DownloadPolicy};
use crate::reconcile::{accept_desired, Rejected};
use crate::Job;

/// Messages in flight (published, not yet acknowledged) at most.
pub const MAX_IN_FLIGHT: usize = 16;

/// Connection state shared with the status endpoint.
#[derive(Default)]
pub struct LinkState {
    /// Connected to the broker now.
    pub connected: std::sync::atomic::AtomicBool,
}

/// Runs the link until the process ends.
pub async fn run(
    core: Arc<Core>,
    jobs: Sender<Job>,
    link: Arc<LinkState>,
    credentials: Option<(String, String)>,
) {
    let server = core
        .config
        .server
        .clone()
        .expect("uplink runs with a server");
    let (host, port, tls) = parse_mqtt_url(&server.mqtt).expect("checked at config load");
    let mut options = MqttOptions::new(core.device_id.clone(), host, port);
    options
        .set_keep_alive(Duration::from_secs(30))
        .set_clean_session(true)
        .set_max_packet_size(
            edge_protocol::envelope::MAX_MESSAGE_BYTES + 4096,
            edge_protocol::envelope::MAX_MESSAGE_BYTES + 4096,
        );
    // the broker announces a lost connection on the device's status topic
    options.set_last_will(rumqttc::LastWill::new(
        topics::status(&core.device_id),
        "offline",
        QoS::AtLeastOnce,
        false,
    ));
    if let Some((u, p)) = credentials {
        options.set_credentials(u, p);
    }
    if tls {
        #[cfg(feature = "tls")]
        match crate::tls::mqtt(server.ca_pem().as_deref()) {
            Ok(transport) => {
                options.set_transport(transport);
            }
            Err(e) => tracing::error!(error = %e, "MQTT TLS settings"),
        }
        #[cfg(not(feature = "tls"))]
        tracing::error!("mqtts:// needs an edge-agent built with the 'tls' feature");
    }
    let pause = DownloadPolicy {
        max_bytes_per_s: None,
        attempts: 0,
        base_delay: Duration::from_millis(200),
        max_delay: Duration::from_secs(server.retry_max_seconds.clamp(1, 60)),
        max_size: 0,
    };
    let desired_topic = topics::desired(&core.device_id);
    let up_topic = topics::up(&core.device_id);
    let mut failures = 0u32;
    loop {
        let (client, mut eventloop) = AsyncClient::new(options.clone(), 64);
        let mut session = Session::default();
        let mut connected = false;
        loop {
            tokio::select! {
                event = eventloop.poll() => match event {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        failures = 0;
                        connected = true;
                        link.connected.store(true, std::sync::atomic::Ordering::Relaxed);
                        tracing::info!(broker = %server.mqtt, "connected");
                        let _ = core.state.touch_sync(unix_now());
                        if let Err(e) = client.try_subscribe(desired_topic.clone(), QoS::AtLeastOnce) {
                            tracing::warn!(error = %e, "subscribe");
                        }
                        if let Err(e) = core.queue_hello() {
                            tracing::error!(error = %e, "hello");
                        }
                        session.pump(&core, &client, &up_topic).await;
                    }
                    Ok(Event::Incoming(Packet::Publish(p))) if p.topic == desired_topic => {
                        let _ = core.state.touch_sync(unix_now());
                        let c = core.clone();
                        let bytes = p.payload.to_vec();
                        let accepted = tokio::task::spawn_blocking(move || {
                            // the retained copy of the document already applied: nothing to say
                            if c.state.desired_doc().ok().flatten().as_deref() == Some(&bytes[..]) {
                                return Ok(None);
                            }
                            accept_desired(&c, &bytes).map(Some)
                        })
                        .await;
                        match accepted {
                            Ok(Ok(None)) => tracing::debug!("desired state already applied"),
                            Ok(Ok(Some(doc))) => {
                                tracing::info!(generation = doc.generation, "desired state accepted");
                                let _ = jobs.send(Job::Desired(doc, true));
                            }
                            Ok(Err(Rejected::StaleGeneration { got, applied })) if got == applied => {
                                tracing::debug!(generation = got, "desired state already applied");
                            }
                            Ok(Err(e)) => tracing::warn!(error = %e, "desired state ignored"),
                            Err(e) => tracing::error!(error = %e, "desired state check panicked"),
                        }
                    }
                    Ok(Event::Outgoing(Outgoing::Publish(pkid))) => {
                        if let Some(seq) = session.queued.pop_front() {
                            session.in_flight.insert(pkid, seq);
                        }
                    }
                    Ok(Event::Incoming(Packet::PubAck(ack))) => {
                        if let Some(seq) = session.in_flight.remove(&ack.pkid) {
                            let c = core.clone();
                            let _ = tokio::task::spawn_blocking(move || c.outbox.ack(&[seq])).await;
                        }
                        session.pump(&core, &client, &up_topic).await;
                    }
                    Ok(_) => {}
                    Err(e) => {
                        if connected {
                            tracing::warn!(error = %e, "disconnected from the broker");
                        } else {
                            tracing::debug!(error = %e, "broker unreachable");
                        }
                        break;
                    }
                },
                _ = core.outbox_signal.notified(), if connected => {
                    session.pump(&core, &client, &up_topic).await;
                }
            }
        }
        link.connected
            .store(false, std::sync::atomic::Ordering::Relaxed);
        failures += 1;
        tokio::time::sleep(backoff(&pause, failures)).await;
    }
}

/// What this connection has sent.
#[derive(Default)]
struct Session {
    /// Sequence numbers published, waiting for their packet id, in order.
    queued: VecDeque<u64>,
    /// Packet id → sequence number, waiting for PUBACK.
    in_flight: HashMap<u16, u64>,
    /// Highest sequence number handed to the client in this connection.
    sent_up_to: u64,
}

impl Session {
    /// Publishes the next outbox messages, up to [`MAX_IN_FLIGHT`] unacknowledged.
    async fn pump(&mut self, core: &Arc<Core>, client: &AsyncClient, topic: &str) {
        let busy = self.queued.len() + self.in_flight.len();
        if busy >= MAX_IN_FLIGHT {
            return;
        }
        let c = core.clone();
        let want = busy + MAX_IN_FLIGHT;
        let pending = match tokio::task::spawn_blocking(move || c.outbox.peek(want)).await {
            Ok(Ok(p)) => p,
            Ok(Err(e)) => {
                tracing::error!(error = %e, "outbox");
                return;
            }
            Err(_) => return,
        };
        let after = self.sent_up_to;
        for m in pending
            .into_iter()
            .filter(|m| m.seq > after)
            .take(MAX_IN_FLIGHT - busy)
        {
            if client
                .try_publish(topic, QoS::AtLeastOnce, false, m.payload)
                .is_err()
            {
                break;
            }
            self.queued.push_back(m.seq);
            self.sent_up_to = m.seq;
        }
    }
}
