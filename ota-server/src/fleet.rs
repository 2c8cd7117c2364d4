//! The fleet loop of a running server: where its devices' messages come from and its desired
//! states go (the in-process device [`Hub`] behind the gate, or an MQTT client to an external
//! broker), the ingest worker, and the engine timer.
//!
//! - Device messages (from the hub, or from the client's subscription to every device's uplink
//!   and status topic, QoS 1, persistent session) go to the ingest worker, which takes them in
//!   batches ([`crate::ingest::ingest`]: one store transaction per batch).
//! - A device that says hello gets its stored desired state re-published.
//! - Every tick the engine ([`crate::engine::Engine`]) advances rollouts on their gates and
//!   gives devices new desired generations; those are signed ([`crate::director`]) and
//!   published retained on each device's desired topic. Telemetry series are compacted once a
//!   minute ([`crate::series::compact`]).
//! - With the hub, desired states are signed and sent only to the devices connected here; a
//!   device that connects says hello and gets its stored one. Through a broker, every stored
//!   desired state is published again, retained, at each (re)connect: a restarted broker has
//!   lost its retained messages.
//!
//! Replicas (several servers on one PostgreSQL store): the engine runs on the one holding the
//! store's `engine` lease, renewed every tick (and beside a long step, within a bound:
//! [`crate::lease`]), its writes fenced with the lease's token; the
//! others serve the API, the artifacts and their own devices. Every replica follows the store's
//! feed of desired states ([`Store::desired_after`]) and publishes those of its devices to its
//! hub, so a device gets its desired state whichever replica it is connected to, now or
//! after it moves. Ingest batches that meet a vanished database are retried, not dropped.

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
use crate::hub::Hub;
use crate::ingest::{ingest, Dropped, Uplink};
use crate::lease::{Keep, LeaseKeeper};
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

/// Where devices' messages come from and desired states go.
#[derive(Clone)]
pub enum Transport {
    /// The server's own device connections (the gate and its hub): the default.
    Hub(Arc<Hub>),
    /// An external MQTT broker (Mosquitto, EMQX) the server's client connects to.
    Broker(BrokerLink),
}

/// Fleet loop settings.
#[derive(Clone)]
pub struct FleetConfig {
    /// Where devices are.
    pub transport: Transport,
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
    /// Set while the fleet loop listens to devices (the hub attached, or the client connected
    /// to the broker and subscribed; the gate admits devices only then: a hello sent before the
    /// server listens would be lost).
    pub ready: Arc<AtomicBool>,
    /// This server's name among replicas (the engine lease's holder).
    pub replica: String,
    /// How long the engine lease lasts unless renewed (each tick renews it): how soon another
    /// replica takes over from a leader that died.
    pub lease_ttl: Duration,
    /// Where committed messages are announced (the device gate holds PUBACKs on them).
    pub acks: Arc<crate::acks::IngestAcks>,
}

/// The lease whose holder runs the rollout engine.
pub const ENGINE_LEASE: &str = "engine";

/// How long an ingest batch is retried while the store is unreachable before its messages are
/// given up (logged as lost).
const INGEST_RETRY_FOR: Duration = Duration::from_secs(600);

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
    /// This replica holds the engine lease now.
    leading: AtomicBool,
    /// Renews the engine lease beside a long step.
    keeper: LeaseKeeper,
    /// The store has a feed of desired states: every replica publishes from it, the engine
    /// does not publish itself.
    follows_feed: bool,
    /// Set at each broker connect: the feed starts again from the beginning (a restarted broker
    /// lost its retained messages).
    feed_from_start: AtomicBool,
    replica: String,
    acks: Arc<crate::acks::IngestAcks>,
    /// The server's own device connections, when it has them: desired states are signed only
    /// for the devices connected here.
    hub: Option<Arc<Hub>>,
}

/// A desired state to send: device and signed payload (published QoS 1, retained).
type Outgoing = (String, Vec<u8>);

/// Desired states read from the feed at a time.
const FEED_BATCH: usize = 4096;

/// How often a replica looks at the feed.
const FEED_POLL: Duration = Duration::from_millis(250);

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
        let follows_feed = matches!(records.store().desired_after(u64::MAX, 1), Ok(Some(_)));
        let fleet = Arc::new(Fleet {
            records,
            bundles,
            director,
            metrics,
            now,
            publish,
            connected: config.ready.clone(),
            engine: Default::default(),
            leading: AtomicBool::new(false),
            keeper: LeaseKeeper::new(ENGINE_LEASE, &config.replica, config.lease_ttl),
            follows_feed,
            feed_from_start: AtomicBool::new(true),
            replica: config.replica.clone(),
            acks: config.acks.clone(),
            hub: match &config.transport {
                Transport::Hub(hub) => Some(hub.clone()),
                Transport::Broker(_) => None,
            },
        });
        let (uplink_tx, uplink_rx) = std::sync::mpsc::sync_channel::<Uplink>(8192);
        let f = fleet.clone();
        let (max_batch, batch_wait) = (config.max_batch, config.batch_wait);
        std::thread::Builder::new()
            .name("ingest".into())
            .spawn(move || f.ingest_worker(uplink_rx, max_batch, batch_wait))
            .expect("spawn ingest thread");
        match config.transport {
            Transport::Hub(hub) => {
                tokio::spawn(fleet.clone().hub_task(hub, uplink_tx, outgoing));
            }
            Transport::Broker(link) => {
                tokio::spawn(fleet.clone().mqtt_task(link, uplink_tx, outgoing));
            }
        }
        let f = fleet.clone();
        let (tick, retention, ttl) = (config.tick, config.retention, config.lease_ttl);
        std::thread::Builder::new()
            .name("engine".into())
            .spawn(move || f.engine_loop(tick, retention, ttl))
            .expect("spawn engine thread");
        let f = fleet.clone();
        std::thread::Builder::new()
            .name("lease".into())
            .spawn(move || f.lease_loop())
            .expect("spawn lease thread");
        if follows_feed {
            tokio::spawn(fleet.clone().feed_task());
        }
        fleet
    }

    /// Whether this replica runs the rollout engine now.
    pub fn leading(&self) -> bool {
        self.leading.load(Ordering::Relaxed)
    }

    /// Publishes the feed's desired states to this replica's broker as they are written.
    async fn feed_task(self: Arc<Self>) {
        let mut after = 0u64;
        loop {
            if !self.connected() {
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
            if self.feed_from_start.swap(false, Ordering::Relaxed) {
                after = 0;
            }
            let f = self.clone();
            let step = tokio::task::spawn_blocking(move || f.publish_feed(after)).await;
            match step {
                Ok(Ok((last, n))) => {
                    if n > 0 {
                        tracing::debug!(
                            devices = n,
                            upto = last,
                            "desired states from the feed published"
                        );
                    }
                    after = last;
                    if n == FEED_BATCH {
                        continue; // more waiting
                    }
                }
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "reading the desired-state feed; again shortly")
                }
                Err(e) => tracing::error!(error = %e, "desired-state feed step panicked"),
            }
            tokio::time::sleep(FEED_POLL).await;
        }
    }

    /// One read of the feed after change `after`, signed and published: the last change number
    /// seen and how many states.
    fn publish_feed(&self, after: u64) -> Result<(u64, usize), StoreError> {
        let rows = self
            .records
            .store()
            .desired_after(after, FEED_BATCH)?
            .unwrap_or_default();
        let last = rows.last().map_or(after, |(change, _, _)| *change);
        self.sign_and_publish(rows.iter().map(|(_, device, bytes)| (device, bytes)))?;
        Ok((last, rows.len()))
    }

    /// Whether a desired state for `device` goes anywhere from here: always through a broker,
    /// only when the device is connected here with the hub (the others get theirs when they
    /// connect and say hello).
    fn delivers_to(&self, device: &str) -> bool {
        self.hub.as_ref().is_none_or(|hub| hub.holds(device))
    }

    /// Stored desired records (device, bytes) of the devices this server delivers to decoded,
    /// signed in one block and published: how many.
    fn sign_and_publish<'a>(
        &self,
        rows: impl Iterator<Item = (&'a String, &'a Vec<u8>)>,
    ) -> Result<usize, StoreError> {
        let desired: Vec<(String, DesiredRecord)> = rows
            .filter(|(device, _)| self.delivers_to(device))
            .map(|(device, bytes)| {
                crate::store::decode(Table::Desired, device, bytes).map(|r| (device.clone(), r))
            })
            .collect::<Result<_, _>>()?;
        self.sign_and_send(&desired, (self.now)())?;
        Ok(desired.len())
    }

    /// Desired states signed in one block (as of `now`) and handed to the transport.
    fn sign_and_send(
        &self,
        desired: &[(String, DesiredRecord)],
        now: u64,
    ) -> Result<(), StoreError> {
        let signed = crate::director::sign_all(&self.records, &self.director, desired, now)?;
        Metrics::add(&self.metrics.desired_published, signed.len() as u64);
        for ((device, _), bytes) in desired.iter().zip(signed) {
            let _ = self.publish.send((device.clone(), bytes));
        }
        Ok(())
    }

    /// Re-publishes the stored desired states of devices that said hello: one read and one
    /// signing (one sequence reservation) for all of them, not a round trip each (a
    /// reconnecting fleet says hello thousands of times a second).
    fn republish(&self, devices: &[String]) -> Result<(), StoreError> {
        let mut devices = devices.to_vec();
        devices.sort();
        devices.dedup();
        let stored = self.records.store().get_many(Table::Desired, &devices)?;
        let rows = devices
            .iter()
            .zip(&stored)
            .filter_map(|(device, bytes)| bytes.as_ref().map(|b| (device, b)));
        self.sign_and_publish(rows).map(drop)
    }

    /// Publishes every stored desired state (at each broker connect), signed in blocks.
    fn republish_all(&self) -> Result<usize, StoreError> {
        let all = self.records.store().scan(Table::Desired, "", usize::MAX)?;
        let mut n = 0;
        for chunk in all.chunks(FEED_BATCH) {
            n += self.sign_and_publish(chunk.iter().map(|(device, bytes)| (device, bytes)))?;
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
        if !self.follows_feed {
            let desired: Vec<(String, DesiredRecord)> = report
                .desired
                .iter()
                .filter(|(device, _)| self.delivers_to(device))
                .cloned()
                .collect();
            self.sign_and_send(&desired, now)?;
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
            // what this batch settles, per device: its highest claimed sequence number
            let mut settles: std::collections::HashMap<String, u64> = Default::default();
            for m in &batch {
                if let Uplink::Up { device, payload } = m {
                    if let Some(seq) = edge_protocol::envelope::unverified_seq(payload) {
                        let at = settles.entry(device.clone()).or_insert(0);
                        *at = (*at).max(seq);
                    }
                }
            }
            let mut wait = Duration::from_millis(250);
            let result = loop {
                match ingest(&self.records, batch.clone(), (self.now)()) {
                    Err(StoreError::Backend(e)) if started.elapsed() < INGEST_RETRY_FOR => {
                        // the database went away (restart, failover): the broker holds what
                        // arrives meanwhile; this batch is applied once it is back
                        tracing::warn!(error = %e, retry_in_ms = wait.as_millis() as u64,
                            "ingest batch waits for the store");
                        std::thread::sleep(wait);
                        wait = (wait * 2).min(Duration::from_secs(5));
                    }
                    other => break other,
                }
            };
            if result.is_ok() {
                // committed, or refused for good: the gate may acknowledge them to the devices
                self.acks
                    .done(settles.iter().map(|(d, s)| (d.as_str(), *s)));
            }
            match result {
                Ok(out) => {
                    let m = &self.metrics;
                    Metrics::add(&m.ingest_batches, 1);
                    Metrics::add(&m.ingest_lock_wait_micros, out.lock_wait.as_micros() as u64);
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
                    if let Err(e) = self.republish(&out.hellos) {
                        tracing::error!(error = %e, devices = out.hellos.len(),
                            "re-publishing desired states after hellos");
                    }
                }
                Err(e) => {
                    // the gates close these devices' connections: they send the messages again
                    self.acks
                        .failed(settles.iter().map(|(d, s)| (d.as_str(), *s)));
                    tracing::error!(error = %e, "ingest batch failed; its messages stay unacknowledged (devices send them again)")
                }
            }
            Metrics::add(
                &self.metrics.ingest_micros,
                started.elapsed().as_micros() as u64,
            );
        }
    }

    /// Takes or renews the engine lease: its fencing token while this replica leads.
    fn hold_lease(&self, ttl: Duration) -> Result<Option<u64>, StoreError> {
        let held = self
            .records
            .store()
            .lease(ENGINE_LEASE, &self.replica, ttl)?;
        let mut engine = self
            .engine
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let was = self.leading.swap(held.is_some(), Ordering::Relaxed);
        match held {
            Some(token) => {
                if !was {
                    tracing::info!(replica = %self.replica, token, "leading the rollout engine");
                }
                engine.lead(ENGINE_LEASE, token);
            }
            None => {
                if was {
                    tracing::warn!(replica = %self.replica, "lost the engine lease to another replica");
                }
                engine.follow();
            }
        }
        Ok(held)
    }

    /// The lease keeper's thread: three times a lease it renews the lease under a running
    /// step (within the keeper's bound), and marks this replica a follower when the lease
    /// went elsewhere meanwhile (the step's writes are fenced; the engine thread's next
    /// renewal drops what the engine remembers).
    fn lease_loop(self: Arc<Self>) {
        let mut warned_overdue = false;
        loop {
            std::thread::sleep(self.keeper.period());
            match self.keeper.keep(self.records.store()) {
                Ok(Keep::Idle) | Ok(Keep::Renewed) => warned_overdue = false,
                Ok(Keep::Overdue(age)) => {
                    if !warned_overdue {
                        tracing::warn!(replica = %self.replica, step_seconds = age.as_secs(),
                            bound_seconds = self.keeper.bound().as_secs(),
                            "engine step past its bound: the lease is left to expire, \
                             another replica takes over");
                        warned_overdue = true;
                    }
                }
                Ok(Keep::Lost) => {
                    if self.leading.swap(false, Ordering::Relaxed) {
                        tracing::warn!(replica = %self.replica,
                            "lost the engine lease during a step; its writes are fenced");
                    }
                }
                Err(e) => tracing::warn!(error = %e, "engine lease not renewed beside the step"),
            }
        }
    }

    /// The engine's own thread: every tick it renews (or takes) the lease and, leading, steps
    /// the engine. Not tokio's blocking pool, whose queue fills with artifact reads and token
    /// checks when thousands of devices download at once, so a renewal never waits for a
    /// thread. A step longer than a lease keeps it through the [`LeaseKeeper`], within its
    /// bound.
    fn engine_loop(self: Arc<Self>, tick: Duration, retention: Retention, ttl: Duration) {
        let mut last_compaction = 0u64;
        let mut next = Instant::now();
        loop {
            next += tick;
            let compact = (self.now)() >= last_compaction + 60;
            let step = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                let Some(token) = self.hold_lease(ttl)? else {
                    return Ok(None);
                };
                let step = self.keeper.stepping(token);
                let report = self.run_engine_once();
                if step.elapsed() > ttl {
                    tracing::warn!(
                        step_seconds = step.elapsed().as_secs_f64(),
                        lease_seconds = ttl.as_secs(),
                        "engine step outlasted a lease"
                    );
                }
                drop(step);
                let report = report?;
                if compact {
                    let done = series::compact(&self.records, (self.now)(), retention)?;
                    if done != Default::default() {
                        tracing::debug!(?done, "telemetry series compacted");
                    }
                }
                Ok::<_, StoreError>(Some(report))
            }));
            match step {
                Ok(Ok(None)) => {}
                Ok(Ok(Some(_))) => {
                    Metrics::add(&self.metrics.engine_steps, 1);
                    if compact {
                        last_compaction = (self.now)();
                    }
                }
                Ok(Err(e)) => {
                    Metrics::add(&self.metrics.engine_errors, 1);
                    tracing::error!(error = %e, "engine step failed; retrying next tick");
                }
                Err(_) => {
                    Metrics::add(&self.metrics.engine_errors, 1);
                    tracing::error!("engine step panicked; retrying next tick");
                }
            }
            // a step longer than a tick: the next one starts at once, and the ticks it missed
            // are not made up
            let now = Instant::now();
            match next.checked_duration_since(now) {
                Some(wait) => std::thread::sleep(wait),
                None => next = now,
            }
        }
    }

    /// The hub: its devices' messages reach the ingest queue directly; desired states are kept
    /// with their devices' connections and pushed to them.
    async fn hub_task(
        self: Arc<Self>,
        hub: Arc<Hub>,
        uplink: std::sync::mpsc::SyncSender<Uplink>,
        mut outgoing: mpsc::UnboundedReceiver<Outgoing>,
    ) {
        // nothing to publish yet: no device is connected, and each one says hello when it is
        hub.attach(uplink);
        self.connected.store(true, Ordering::Relaxed);
        while let Some((device, payload)) = outgoing.recv().await {
            hub.publish_desired(&device, payload);
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
            while let Some((device, payload)) = outgoing.recv().await {
                if let Err(e) = publisher
                    .publish(topics::desired(&device), QoS::AtLeastOnce, true, payload)
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
                        if self.follows_feed {
                            self.feed_from_start.store(true, Ordering::Relaxed);
                            continue;
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

    /// Whether the fleet loop listens to devices now (the hub attached, or the client connected
    /// to the broker and subscribed).
    pub fn connected(&self) -> bool {
        self.connected.load(Ordering::Relaxed)
    }
}
