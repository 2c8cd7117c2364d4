//! The fleet loop of a running server: its MQTT client (to the embedded broker or an external
//! one), the ingest worker, and the engine timer.
//!
//! - The client subscribes to every device's uplink and status topic (QoS 1, persistent
//!   session) and hands messages to the ingest worker, which takes them in batches
//!   ([`crate::ingest::ingest`]: one store transaction per batch).
//! - A device that says hello gets its stored desired state re-published.
//! - Every tick the engine ([`crate::engine::Engine`]) advances rollouts on their gates and
//!   gives devices new desired generations; those are signed ([`crate::director`]) and
//!   published retained on each device's desired topic. Telemetry series are compacted once a
//!   minute ([`crate::series::compact`]).
//! - At each (re)connect every stored desired state is published again, retained: a broker that
//!   restarted (the embedded one restarts with the server) has lost its retained messages.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use edge_bundle::SigningKey;
use edge_protocol::envelope::EnvelopeError;
use edge_protocol::topics;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use tokio::sync::mpsc;

use crate::bundles::Bundles;
use crate::engine::{self, DesiredRecord};
use crate::ingest::{ingest, Dropped, Uplink};
use crate::metrics::Metrics;
use crate::series::{self, Retention};
use crate::store::{Records, Store, StoreError, Table};

/// Where and how the server's client connects.
#[derive(Clone, Debug)]
pub struct BrokerLink {
    /// Host.
    pub host: String,
    /// Port.
    pub port: u16,
    /// Username and password, if the broker wants them.
    pub credentials: Option<(String, String)>,
    /// Client id (a persistent session is kept under it).
    pub client_id: String,
}

/// Fleet loop settings.
#[derive(Clone, Debug)]
pub struct FleetConfig {
    /// The broker.
    pub broker: BrokerLink,
    /// Engine period.
    pub tick: Duration,
    /// Telemetry retention.
    pub retention: Retention,
    /// Most messages per ingest batch.
    pub max_batch: usize,
    /// How long a batch waits for more messages after its first. Each batch rewrites the
    /// aggregates it touches (whose size grows with the fleet), so at low message rates one
    /// message per batch would spend a core on rewrites; gathering for a few tens of
    /// milliseconds keeps the batch count, not the message count, bounded.
    pub batch_wait: Duration,
    /// Set while the server's client is connected and subscribed (the device gate admits
    /// devices only then: a hello sent before the server listens would be lost).
    pub ready: Arc<AtomicBool>,
}

/// What the fleet loop shares with the rest of the server.
pub struct Fleet<S: Store + ?Sized> {
    records: Records<S>,
    bundles: Arc<Bundles<S>>,
    director: SigningKey,
    metrics: Arc<Metrics>,
    now: Arc<dyn Fn() -> u64 + Send + Sync>,
    publish: mpsc::UnboundedSender<(String, Vec<u8>)>,
    connected: Arc<AtomicBool>,
    /// The rollout engine and what it remembers between ticks.
    engine: std::sync::Mutex<engine::Engine>,
}

/// A message for the broker: topic and payload (published QoS 1, retained).
type Outgoing = (String, Vec<u8>);

impl<S: Store + ?Sized + 'static> Fleet<S> {
    /// Starts the loop's tasks on the current tokio runtime.
    pub fn start(
        records: Records<S>,
        bundles: Arc<Bundles<S>>,
        director: SigningKey,
        metrics: Arc<Metrics>,
        now: Arc<dyn Fn() -> u64 + Send + Sync>,
        config: FleetConfig,
    ) -> Arc<Fleet<S>> {
        let (publish, outgoing) = mpsc::unbounded_channel();
        let fleet = Arc::new(Fleet {
            records,
            bundles,
            director,
            metrics,
            now,
            publish,
            connected: config.ready.clone(),
            engine: Default::default(),
        });
        let (uplink_tx, uplink_rx) = std::sync::mpsc::sync_channel::<Uplink>(8192);
        let f = fleet.clone();
        let (max_batch, batch_wait) = (config.max_batch, config.batch_wait);
        std::thread::Builder::new()
            .name("ingest".into())
            .spawn(move || f.ingest_worker(uplink_rx, max_batch, batch_wait))
            .expect("spawn ingest thread");
        tokio::spawn(
            fleet
                .clone()
                .mqtt_task(config.broker.clone(), uplink_tx, outgoing),
        );
        tokio::spawn(fleet.clone().engine_task(config.tick, config.retention));
        fleet
    }

    fn send_desired(&self, device: &str, record: &DesiredRecord) -> Result<(), StoreError> {
        let bytes =
            crate::director::sign(&self.records, &self.director, device, record, (self.now)())?;
        Metrics::add(&self.metrics.desired_published, 1);
        let _ = self.publish.send((topics::desired(device), bytes));
        Ok(())
    }

    /// Re-publishes a device's stored desired state (after its hello).
    fn republish(&self, device: &str) -> Result<(), StoreError> {
        if let Some(record) = self.records.get::<DesiredRecord>(Table::Desired, device)? {
            self.send_desired(device, &record)?;
        }
        Ok(())
    }

    /// Publishes every stored desired state (at each broker connect), signed in blocks.
    fn republish_all(&self) -> Result<usize, StoreError> {
        let all = self.records.store().scan(Table::Desired, "", usize::MAX)?;
        let mut n = 0;
        for chunk in all.chunks(4096) {
            let desired: Vec<(String, DesiredRecord)> = chunk
                .iter()
                .map(|(device, bytes)| {
                    crate::store::decode(Table::Desired, device, bytes).map(|r| (device.clone(), r))
                })
                .collect::<Result<_, _>>()?;
            let signed =
                crate::director::sign_all(&self.records, &self.director, &desired, (self.now)())?;
            Metrics::add(&self.metrics.desired_published, signed.len() as u64);
            for ((device, _), bytes) in desired.iter().zip(signed) {
                let _ = self.publish.send((topics::desired(device), bytes));
            }
            n += desired.len();
        }
        Ok(n)
    }

    /// One engine step, with its desired states signed and published.
    pub fn run_engine_once(&self) -> Result<engine::StepReport, StoreError> {
        let now = (self.now)();
        let report = self
            .engine
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .step(&self.records, now, |sha| self.bundles.reference(sha))?;
        for (rollout, t) in &report.transitions {
            tracing::info!(rollout = %rollout, from = ?t.from_status, to = ?t.to_status,
                phase = t.to_phase, reason = %t.reason, "rollout transition");
        }
        Metrics::add(
            &self.metrics.rollout_transitions,
            report.transitions.len() as u64,
        );
        let signed =
            crate::director::sign_all(&self.records, &self.director, &report.desired, now)?;
        Metrics::add(&self.metrics.desired_published, signed.len() as u64);
        for ((device, _), bytes) in report.desired.iter().zip(signed) {
            let _ = self.publish.send((topics::desired(device), bytes));
        }
        Ok(report)
    }

    fn ingest_worker(
        &self,
        rx: std::sync::mpsc::Receiver<Uplink>,
        max_batch: usize,
        batch_wait: Duration,
    ) {
        while let Ok(first) = rx.recv() {
            let mut batch = vec![first];
            let until = Instant::now() + batch_wait;
            while batch.len() < max_batch {
                let left = until.saturating_duration_since(Instant::now());
                match rx.recv_timeout(left) {
                    Ok(m) => batch.push(m),
                    Err(_) => break,
                }
            }
            let started = Instant::now();
            match ingest(&self.records, batch, (self.now)()) {
                Ok(out) => {
                    let m = &self.metrics;
                    Metrics::add(&m.ingest_batches, 1);
                    Metrics::add(&m.messages_accepted, out.accepted as u64);
                    Metrics::add(&m.windows_merged, out.windows as u64);
                    Metrics::add(&m.messages_dropped, out.dropped.len() as u64);
                    for d in &out.dropped {
                        if matches!(d, Dropped::Envelope(EnvelopeError::Replay { .. })) {
                            Metrics::add(&m.replays_dropped, 1);
                            tracing::debug!(reason = %d, "device message dropped");
                        } else {
                            tracing::warn!(reason = %d, "device message dropped");
                        }
                    }
                    for device in &out.hellos {
                        if let Err(e) = self.republish(device) {
                            tracing::error!(error = %e, device = %device, "re-publishing desired state");
                        }
                    }
                }
                Err(e) => tracing::error!(error = %e, "ingest batch failed; its messages are lost"),
            }
            Metrics::add(
                &self.metrics.ingest_micros,
                started.elapsed().as_micros() as u64,
            );
        }
    }

    async fn engine_task(self: Arc<Self>, tick: Duration, retention: Retention) {
        let mut interval = tokio::time::interval(tick);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_compaction = 0u64;
        loop {
            interval.tick().await;
            let f = self.clone();
            let compact = (self.now)() >= last_compaction + 60;
            if compact {
                last_compaction = (self.now)();
            }
            let result = tokio::task::spawn_blocking(move || {
                let report = f.run_engine_once()?;
                if compact {
                    let done = series::compact(&f.records, (f.now)(), retention)?;
                    if done != Default::default() {
                        tracing::debug!(?done, "telemetry series compacted");
                    }
                }
                Ok::<_, StoreError>(report)
            })
            .await;
            Metrics::add(&self.metrics.engine_steps, 1);
            match result {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => {
                    Metrics::add(&self.metrics.engine_errors, 1);
                    tracing::error!(error = %e, "engine step failed; retrying next tick");
                }
                Err(e) => {
                    Metrics::add(&self.metrics.engine_errors, 1);
                    tracing::error!(error = %e, "engine step panicked");
                }
            }
        }
    }

    async fn mqtt_task(
        self: Arc<Self>,
        link: BrokerLink,
        uplink: std::sync::mpsc::SyncSender<Uplink>,
        mut outgoing: mpsc::UnboundedReceiver<Outgoing>,
    ) {
        let mut options = MqttOptions::new(link.client_id.clone(), link.host.clone(), link.port);
        options
            .set_keep_alive(Duration::from_secs(30))
            .set_clean_session(false)
            .set_max_packet_size(
                edge_protocol::envelope::MAX_MESSAGE_BYTES + 4096,
                edge_protocol::envelope::MAX_MESSAGE_BYTES + 4096,
            )
            .set_inflight(200);
        if let Some((u, p)) = &link.credentials {
            options.set_credentials(u.clone(), p.clone());
        }
        let (client, mut eventloop) = AsyncClient::new(options, 1024);
        // publishing waits for room in the client's queue while the loop below keeps polling
        let publisher = client.clone();
        tokio::spawn(async move {
            while let Some((topic, payload)) = outgoing.recv().await {
                if let Err(e) = publisher
                    .publish(topic, QoS::AtLeastOnce, true, payload)
                    .await
                {
                    tracing::error!(error = %e, "publish");
                }
            }
        });
        let broker = format!("{}:{}", link.host, link.port);
        let mut connected = false;
        loop {
            {
                match eventloop.poll().await {
                    Ok(Event::Incoming(Packet::SubAck(_))) => {
                        self.connected.store(connected, Ordering::Relaxed);
                    }
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        connected = true;
                        Metrics::add(&self.metrics.broker_connects, 1);
                        tracing::info!(%broker, "connected to the broker");
                        for filter in [topics::ALL_UP, topics::ALL_STATUS] {
                            if let Err(e) = client.try_subscribe(filter, QoS::AtLeastOnce) {
                                tracing::error!(error = %e, "subscribe");
                            }
                        }
                        let f = self.clone();
                        match tokio::task::spawn_blocking(move || f.republish_all()).await {
                            Ok(Ok(n)) if n > 0 => {
                                tracing::info!(devices = n, "desired states re-published")
                            }
                            Ok(Err(e)) => {
                                tracing::error!(error = %e, "re-publishing desired states")
                            }
                            _ => {}
                        }
                    }
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        let message = if let Some(device) = topics::device_of_up_topic(&p.topic) {
                            Some(Uplink::Up {
                                device: device.to_string(),
                                payload: p.payload.to_vec(),
                            })
                        } else {
                            topics::device_of_status_topic(&p.topic).map(|device| Uplink::Status {
                                device: device.to_string(),
                                online: &p.payload[..] == b"online",
                            })
                        };
                        if let Some(m) = message {
                            // a full queue blocks this task: the broker holds further messages
                            let tx = uplink.clone();
                            let _ = tokio::task::spawn_blocking(move || tx.send(m)).await;
                        }
                    }
                    Ok(_) => {}
                    Err(e) => {
                        if connected {
                            tracing::warn!(error = %e, %broker, "lost the broker; reconnecting");
                        } else {
                            tracing::debug!(error = %e, %broker, "broker unreachable");
                        }
                        connected = false;
                        self.connected.store(false, Ordering::Relaxed);
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                }
            }
        }
    }

    /// Whether the server's client is connected to the broker and subscribed now.
    pub fn connected(&self) -> bool {
        self.connected.load(Ordering::Relaxed)
    }
}
