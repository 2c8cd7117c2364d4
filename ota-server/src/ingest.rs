//! Device messages in (DESIGN decision 2: the broker is untrusted transport). Each uplink
//! payload is a signed envelope; it is verified with the key the device enrolled with, its
//! signed sender must be the device whose topic it came on, and its sequence number must be
//! newer than the last one accepted from that device (replays and the duplicates of
//! at-least-once delivery are dropped). Then:
//!
//! - **hello**: the device's reported state and agent version are recorded, it is marked
//!   online, and the caller re-publishes its desired state;
//! - **events**: kept in the device's history (`Events` table, in sequence order) and counted
//!   as installs / install failures of the rollout phase that delivered that version;
//! - **telemetry**: each window is merged into the aggregate of the rollout phase that reaches
//!   the device with that version (the gate input), and into per-minute time series per
//!   rollout phase and per model version ([`crate::series`]).
//!
//! Messages are taken in batches and every change a batch makes is written in one store
//! transaction: one commit per batch, not per message, which is what lets one server keep up
//! with a large fleet (see docs/benchmarks.md).

use std::collections::{BTreeMap, HashMap};

use edge_bundle::VerifyingKey;
use edge_protocol::envelope::{decode_body, open_raw, EnvelopeError, Header};
use edge_protocol::{Events, Hello, Kind, Step, Telemetry};

use crate::devices::{DeviceRecord, Reported, ReportedModel};
use crate::health::{metric_samples, ArmsAggregate, PhaseAggregate};
use crate::rollout::Rollout;
use crate::series;
use crate::store::{event_key, put, Records, Store, StoreError, Table, Write};
use crate::telemetry_keys::{arms_key, installs_key, phase_key};

pub use crate::health::InstallTally;
pub use edge_protocol::rest::{EventEntry, EventRecord};

/// One message from the broker.
#[derive(Clone, Debug, PartialEq)]
pub enum Uplink {
    /// A signed envelope from `edgefleet/v1/devices/{device}/up`.
    Up {
        /// Device id from the topic.
        device: String,
        /// Payload.
        payload: Vec<u8>,
    },
    /// `online` / `offline` from `edgefleet/v1/devices/{device}/status` (the MQTT will): an
    /// unsigned hint, only ever moves the online flag.
    Status {
        /// Device id from the topic.
        device: String,
        /// Online now.
        online: bool,
    },
}

/// Why a message was dropped.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum Dropped {
    /// No enrolled device of that id.
    #[error("message for unknown device '{0}'")]
    UnknownDevice(String),
    /// Envelope refused (bad signature, malformed, replay, ...).
    #[error(transparent)]
    Envelope(#[from] EnvelopeError),
    /// Signed by the device of one topic, sent on another's.
    #[error("device '{signed}' sent on the topic of '{topic}'")]
    WrongTopic {
        /// Device of the topic.
        topic: String,
        /// Signed sender.
        signed: String,
    },
    /// A message kind devices do not send.
    #[error("device '{0}' sent a {1:?} message")]
    UnexpectedKind(String, Kind),
    /// A telemetry window that does not merge (malformed histogram, more errors than calls).
    #[error("device '{device}': telemetry window of {model} {version} refused: {reason}")]
    BadWindow {
        /// Device.
        device: String,
        /// Model.
        model: String,
        /// Version.
        version: String,
        /// Why.
        reason: String,
    },
}

/// What a batch did.
#[derive(Debug, Default)]
pub struct Outcome {
    /// Messages accepted.
    pub accepted: usize,
    /// Telemetry windows merged.
    pub windows: usize,
    /// Messages (or windows) dropped, and why.
    pub dropped: Vec<Dropped>,
    /// Devices that said hello: their desired state is to be re-published.
    pub hellos: Vec<String>,
    /// How long the batch waited for the cluster-wide ingest lock.
    pub lock_wait: std::time::Duration,
}

/// The stored form of one events message.
fn event_record(seq: u64, received_at: u64, events: &Events) -> EventRecord {
    EventRecord {
        seq,
        received_at,
        events: events
            .events
            .iter()
            .map(|e| EventEntry {
                at: e.at,
                generation: e.generation,
                model: e.model.clone(),
                version: e.version.clone(),
                step: match e.step {
                    Step::Downloading => "downloading",
                    Step::Verified => "verified",
                    Step::Activated => "activated",
                    Step::Committed => "committed",
                    Step::RolledBack => "rolled_back",
                    Step::Failed => "failed",
                    Step::Shadowing => "shadowing",
                }
                .to_string(),
                detail: e.detail.clone(),
            })
            .collect(),
    }
}

/// Where a message from a device counts: the live rollouts of `model` at `version` that reach it.
fn reaching<'r>(
    rollouts: &'r [Rollout],
    device: &DeviceRecord,
    model: &str,
    version: &str,
) -> impl Iterator<Item = &'r Rollout> {
    let (id, tags) = (device.id.clone(), device.tags.clone());
    let (model, version) = (model.to_string(), version.to_string());
    rollouts.iter().filter(move |r| {
        r.model == model && r.version == version && !r.status.is_final() && r.reaches(&id, &tags)
    })
}

/// The changes of one batch, applied in one transaction at the end.
struct Batch<'a, S: Store + ?Sized> {
    records: &'a Records<S>,
    devices: HashMap<String, Option<DeviceRecord>>,
    aggregates: BTreeMap<String, PhaseAggregate>,
    tallies: BTreeMap<String, InstallTally>,
    arms: BTreeMap<String, ArmsAggregate>,
    events: Vec<Write>,
    /// Every record the batch read, as read: its commit is refused if another server changed
    /// one of them meanwhile (replicas ingesting the same device or phase), and it runs again.
    guards: Vec<Write>,
}

/// A record as stored, its read guarded (added to `guards`).
fn read_guarded<S: Store + ?Sized, T: serde::de::DeserializeOwned>(
    records: &Records<S>,
    guards: &mut Vec<Write>,
    table: Table,
    key: &str,
) -> Result<Option<T>, StoreError> {
    let bytes = records.store().get(table, key)?;
    let value = bytes
        .as_deref()
        .map(|b| crate::store::decode(table, key, b))
        .transpose()?;
    guards.push(Write::Expect(table, key.to_string(), bytes));
    Ok(value)
}

/// A telemetry record of the batch: read (guarded) the first time, then the batch's copy.
fn cached<'m, S: Store + ?Sized, T: serde::de::DeserializeOwned + Default>(
    records: &Records<S>,
    guards: &mut Vec<Write>,
    map: &'m mut BTreeMap<String, T>,
    key: String,
) -> Result<&'m mut T, StoreError> {
    if !map.contains_key(&key) {
        let value = read_guarded(records, guards, Table::Telemetry, &key)?.unwrap_or_default();
        map.insert(key.clone(), value);
    }
    Ok(map.get_mut(&key).expect("inserted"))
}

impl<S: Store + ?Sized> Batch<'_, S> {
    fn device(&mut self, id: &str) -> Result<Option<&mut DeviceRecord>, StoreError> {
        if !self.devices.contains_key(id) {
            let d = read_guarded(self.records, &mut self.guards, Table::Devices, id)?;
            self.devices.insert(id.to_string(), d);
        }
        Ok(self.devices.get_mut(id).and_then(Option::as_mut))
    }

    fn aggregate(&mut self, key: String) -> Result<&mut PhaseAggregate, StoreError> {
        cached(self.records, &mut self.guards, &mut self.aggregates, key)
    }

    fn arms(&mut self, key: String) -> Result<&mut ArmsAggregate, StoreError> {
        cached(self.records, &mut self.guards, &mut self.arms, key)
    }

    fn tally(&mut self, key: String) -> Result<&mut InstallTally, StoreError> {
        cached(self.records, &mut self.guards, &mut self.tallies, key)
    }
}

/// How often a batch is ingested again after another server changed what it read.
const CONFLICT_RETRIES: usize = 8;

/// Ingests a batch of broker messages at `now` (unix seconds): verifies, drops what must be
/// dropped, and writes everything the rest changed in one transaction, guarded by what it read
/// (so a message two replicas both receive counts once: the second finds the sequence number
/// taken). A batch that lost a race to another server is read and applied again.
pub fn ingest<S: Store + ?Sized>(
    records: &Records<S>,
    messages: Vec<Uplink>,
    now: u64,
) -> Result<Outcome, StoreError> {
    // signatures checked before the lock, so that replicas verify side by side (a device's key
    // is read again under the lock: a check made with another key is not used)
    let verified = verify_signatures(records, &messages)?;
    // one replica at a time reads and rewrites the shared aggregates (optimistic retries alone
    // starve a replica when every batch touches the same hot phase and series records)
    let waited = std::time::Instant::now();
    let _exclusive = records.store().lock("ingest")?;
    let lock_wait = waited.elapsed();
    let mut attempt = 0;
    loop {
        match ingest_once(records, messages.clone(), &verified, now) {
            Ok(out) => return Ok(Outcome { lock_wait, ..out }),
            Err(StoreError::Conflict { table, key }) if attempt < CONFLICT_RETRIES => {
                attempt += 1;
                tracing::debug!(
                    table,
                    key,
                    attempt,
                    "ingest batch raced another server; again"
                );
            }
            other => return other,
        }
    }
}

/// A message whose signature checked out with a device's key: the key (hex, as the device
/// record holds it), the authenticated header and the undecoded body.
type Verified = Option<(String, Header, Vec<u8>)>;

/// The messages of `messages` that open with their topic device's key, by position; the
/// others (unknown devices, bad signatures, …) are `None` and refused under the lock.
fn verify_signatures<S: Store + ?Sized>(
    records: &Records<S>,
    messages: &[Uplink],
) -> Result<Vec<Verified>, StoreError> {
    let mut ids: Vec<String> = messages
        .iter()
        .filter_map(|m| match m {
            Uplink::Up { device, .. } => Some(device.clone()),
            Uplink::Status { .. } => None,
        })
        .collect();
    ids.sort();
    ids.dedup();
    // each device's key, as stored (hex) and parsed
    let mut keys: HashMap<&str, (String, VerifyingKey)> = HashMap::new();
    for (id, bytes) in ids
        .iter()
        .zip(records.store().get_many(Table::Devices, &ids)?)
    {
        if let Some(b) = bytes {
            let d: DeviceRecord = crate::store::decode(Table::Devices, id, &b)?;
            if let Some(key) = parse_key(&d.public_key) {
                keys.insert(id, (d.public_key, key));
            }
        }
    }
    Ok(messages
        .iter()
        .map(|m| {
            let Uplink::Up { device, payload } = m else {
                return None;
            };
            let (hex_key, key) = keys.get(device.as_str())?;
            let (header, body) =
                open_raw(payload, |sender| (sender == device).then_some(*key)).ok()?;
            Some((hex_key.clone(), header, body))
        })
        .collect())
}

fn ingest_once<S: Store + ?Sized>(
    records: &Records<S>,
    messages: Vec<Uplink>,
    verified: &[Verified],
    now: u64,
) -> Result<Outcome, StoreError> {
    let rollouts: Vec<Rollout> = records
        .list::<Rollout>(Table::Rollouts, "", usize::MAX)?
        .into_iter()
        .filter(|r| !r.status.is_final())
        .collect();
    let mut batch = Batch {
        records,
        devices: HashMap::new(),
        aggregates: BTreeMap::new(),
        tallies: BTreeMap::new(),
        arms: BTreeMap::new(),
        events: Vec::new(),
        guards: Vec::new(),
    };
    // every device of the batch in one read
    let ids: Vec<String> = {
        let mut ids: Vec<String> = messages
            .iter()
            .map(|m| match m {
                Uplink::Up { device, .. } | Uplink::Status { device, .. } => device.clone(),
            })
            .collect();
        ids.sort();
        ids.dedup();
        ids
    };
    for (id, bytes) in ids
        .iter()
        .zip(records.store().get_many(Table::Devices, &ids)?)
    {
        let device = bytes
            .as_deref()
            .map(|b| crate::store::decode(Table::Devices, id, b))
            .transpose()?;
        batch
            .guards
            .push(Write::Expect(Table::Devices, id.clone(), bytes));
        batch.devices.insert(id.clone(), device);
    }
    let mut out = Outcome::default();
    for (i, message) in messages.into_iter().enumerate() {
        match message {
            Uplink::Status { device, online } => {
                if let Some(d) = batch.device(&device)? {
                    d.online = online;
                }
            }
            Uplink::Up { device, payload } => {
                let checked = verified.get(i).and_then(Option::as_ref);
                match one(
                    &mut batch, &rollouts, &device, &payload, checked, now, &mut out,
                )? {
                    Ok(()) => out.accepted += 1,
                    Err(e) => out.dropped.push(e),
                }
            }
        }
    }
    let mut writes = batch.events;
    for (id, d) in &batch.devices {
        if let Some(d) = d {
            writes.push(put(Table::Devices, id, d));
        }
    }
    for (key, a) in &batch.aggregates {
        writes.push(put(Table::Telemetry, key, a));
    }
    for (key, t) in &batch.tallies {
        writes.push(put(Table::Telemetry, key, t));
    }
    for (key, a) in &batch.arms {
        writes.push(put(Table::Telemetry, key, a));
    }
    if !writes.is_empty() {
        let mut guarded = batch.guards;
        guarded.append(&mut writes);
        records.store().write(guarded)?;
    }
    Ok(out)
}

/// One uplink message: opened (signature, topic, sequence), then applied by its kind. The outer
/// `Result` is the store; the inner one says whether the message was accepted.
fn one<S: Store + ?Sized>(
    batch: &mut Batch<'_, S>,
    rollouts: &[Rollout],
    topic_device: &str,
    payload: &[u8],
    checked: Option<&(String, Header, Vec<u8>)>,
    now: u64,
    out: &mut Outcome,
) -> Result<Result<(), Dropped>, StoreError> {
    let (seq, body, device) = match open(batch, topic_device, payload, checked, now)? {
        Ok(opened) => opened,
        Err(dropped) => return Ok(Err(dropped)),
    };
    match body {
        Body::Hello(h) => {
            let d = batch.device(topic_device)?.expect("loaded by open");
            d.agent_version = h.agent_version.clone();
            d.reported = Some(reported(&h, now));
            out.hellos.push(device.id.clone());
        }
        Body::Events(events) => batch.events(rollouts, &device, seq, &events, now)?,
        Body::Telemetry(t) => batch.telemetry(rollouts, &device, &t, now, out)?,
    }
    Ok(Ok(()))
}

/// Verifies a device's message (signed by the device of its topic, with the key it enrolled
/// with; a sequence number above the last accepted; a kind devices send) and counts it on the
/// device: its sequence number, body and the device record as it now is.
fn open<S: Store + ?Sized>(
    batch: &mut Batch<'_, S>,
    topic_device: &str,
    payload: &[u8],
    checked: Option<&(String, Header, Vec<u8>)>,
    now: u64,
) -> Result<Result<(u64, Body, DeviceRecord), Dropped>, StoreError> {
    let Some(device) = batch.device(topic_device)? else {
        return Ok(Err(Dropped::UnknownDevice(topic_device.to_string())));
    };
    let opened = match checked {
        // verified before the lock with the key the device still has
        Some((key, header, body)) if *key == device.public_key => {
            Ok((header.clone(), body.clone()))
        }
        _ => {
            let key = parse_key(&device.public_key);
            open_raw(payload, |sender| {
                // the key of the topic's device: a message signed by anyone else fails here
                (sender == topic_device).then_some(key).flatten()
            })
        }
    };
    let (header, body) = match opened {
        Ok(v) => v,
        Err(EnvelopeError::UnknownSender(s)) if s != topic_device => {
            return Ok(Err(Dropped::WrongTopic {
                topic: topic_device.to_string(),
                signed: s,
            }))
        }
        Err(e) => return Ok(Err(e.into())),
    };
    if header.seq <= device.last_seq {
        device.duplicates += 1;
        return Ok(Err(EnvelopeError::Replay {
            sender: header.sender,
            seq: header.seq,
            last: device.last_seq,
        }
        .into()));
    }
    let decoded = match header.kind {
        Kind::Hello => decode_body::<Hello>(&body).map(Body::Hello),
        Kind::Events => decode_body::<Events>(&body).map(Body::Events),
        Kind::Telemetry => decode_body::<Telemetry>(&body).map(Body::Telemetry),
        Kind::Desired => {
            return Ok(Err(Dropped::UnexpectedKind(
                topic_device.to_string(),
                header.kind,
            )))
        }
    };
    let body = match decoded {
        Ok(b) => b,
        Err(e) => return Ok(Err(e.into())),
    };
    device.last_seq = header.seq;
    device.messages += 1;
    device.last_seen = now;
    device.online = true;
    Ok(Ok((header.seq, body, device.clone())))
}

impl<S: Store + ?Sized> Batch<'_, S> {
    /// Events: installs and install failures counted for the rollout phases that delivered
    /// the version (from the phase's start on), and the events kept in the device's history.
    fn events(
        &mut self,
        rollouts: &[Rollout],
        device: &DeviceRecord,
        seq: u64,
        events: &Events,
        now: u64,
    ) -> Result<(), StoreError> {
        for e in &events.events {
            let ok = match e.step {
                Step::Committed | Step::Shadowing => true,
                Step::Failed | Step::RolledBack => false,
                _ => continue,
            };
            let hits: Vec<(String, usize, u64)> = reaching(rollouts, device, &e.model, &e.version)
                .map(|r| (r.id.clone(), r.phase, r.phase_started))
                .collect();
            for (rollout, phase, started) in hits {
                if e.at < started {
                    continue;
                }
                self.tally(installs_key(&rollout, phase))?
                    .outcomes
                    .insert(device.id.clone(), ok);
                let series = series::rollout_series(&rollout, phase);
                let point = self.aggregate(series::minute_key(&series, now))?;
                point.installs += 1;
                point.install_failures += u64::from(!ok);
            }
        }
        self.events.push(put(
            Table::Events,
            &event_key(&device.id, seq),
            &event_record(seq, now, events),
        ));
        Ok(())
    }

    /// Telemetry: each window merged, all or nothing, into the aggregate of every rollout
    /// phase that reaches the device with that version (the gate's input) and the per-minute
    /// series of those phases and of the version; a window that does not merge is dropped.
    fn telemetry(
        &mut self,
        rollouts: &[Rollout],
        device: &DeviceRecord,
        t: &Telemetry,
        now: u64,
        out: &mut Outcome,
    ) -> Result<(), StoreError> {
        for w in &t.windows {
            let window_end = w.window_start.saturating_add(u64::from(w.window_secs));
            let refused = |reason| Dropped::BadWindow {
                device: device.id.clone(),
                model: w.model.clone(),
                version: w.version.clone(),
                reason,
            };
            let shadow = w.shadow.is_some();
            // (key, a time-series point): points count their devices without naming them
            let mut keys: Vec<(String, bool)> = reaching(rollouts, device, &w.model, &w.version)
                .filter(|r| window_end >= r.phase_started)
                .flat_map(|r| {
                    [
                        (phase_key(&r.id, r.phase), false),
                        (
                            series::minute_key(&series::rollout_series(&r.id, r.phase), now),
                            true,
                        ),
                    ]
                })
                .collect();
            if !shadow {
                keys.push((
                    series::minute_key(&series::version_series(&w.model, &w.version), now),
                    true,
                ));
            }
            // the device's first window of this model and version in this minute (the device
            // record keeps its recent minutes; earlier windows of this batch are in it)
            let minute = now - now % 60;
            let first_in_minute = !self
                .device(&device.id)?
                .expect("loaded by open")
                .recent
                .iter()
                .any(|m| m.t == minute && m.model == w.model && m.version == w.version);
            let observe = |a: &mut PhaseAggregate, point: bool| {
                if shadow {
                    a.observe_shadow(&device.id, w)
                } else if point {
                    a.observe_counted(first_in_minute, w)
                } else {
                    a.observe(&device.id, w)
                }
            };
            // all or nothing per window: check it merges before touching any aggregate
            if let Err(reason) = observe(&mut PhaseAggregate::default(), false) {
                out.dropped.push(refused(reason));
                continue;
            }
            let mut merged = true;
            for (key, point) in keys {
                if let Err(reason) = observe(self.aggregate(key)?, point) {
                    // bins changed against earlier windows of this series
                    out.dropped.push(refused(reason));
                    merged = false;
                }
            }
            if !merged {
                continue;
            }
            out.windows += 1;
            if shadow {
                continue;
            }
            // experiment phases: the window's samples go to the device's arm, the candidate's
            // version in the candidate's arm, any other version of the model in the incumbent's
            for r in rollouts.iter().filter(|r| {
                r.model == w.model
                    && !r.status.is_final()
                    && window_end >= r.phase_started
                    && r.reaches(&device.id, &device.tags)
            }) {
                let Some(spec) = &r.current_phase().experiment else {
                    continue;
                };
                let candidate = r.candidate_arm(&device.id);
                if candidate != (w.version == r.version) {
                    continue; // not yet switched, or switched back: not this arm's version
                }
                if let Some(samples) = metric_samples(spec.metric, w) {
                    self.arms(arms_key(&r.id, r.phase))?
                        .observe(candidate, &device.id, &samples);
                }
            }
            let d = self.device(&device.id)?.expect("loaded by open");
            d.requests += w.requests;
            d.note_window(now, w);
        }
        Ok(())
    }
}

enum Body {
    Hello(Hello),
    Events(Events),
    Telemetry(Telemetry),
}

fn parse_key(hex_key: &str) -> Option<VerifyingKey> {
    let bytes: [u8; 32] = hex::decode(hex_key).ok()?.try_into().ok()?;
    VerifyingKey::from_bytes(&bytes).ok()
}

fn version_of(v: &Option<(String, minicbor::bytes::ByteArray<32>)>) -> Option<String> {
    v.as_ref().map(|(version, _)| version.clone())
}

fn reported(h: &Hello, now: u64) -> Reported {
    Reported {
        at: now,
        applied_generation: h.applied_generation,
        models: h
            .models
            .iter()
            .map(|m| ReportedModel {
                name: m.name.clone(),
                active: version_of(&m.active),
                previous: version_of(&m.previous),
                trial: version_of(&m.trial),
                bad_versions: m.bad_versions.clone(),
            })
            .collect(),
        dropped_telemetry: h.dropped_telemetry,
        payload_formats: match &h.capabilities {
            Some(c) => c.payload_formats.clone(),
            None => vec!["onnx".into()],
        },
        engines: h
            .capabilities
            .as_ref()
            .map(|c| c.engines.clone())
            .unwrap_or_default(),
    }
}
