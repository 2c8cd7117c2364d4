//! The rollout engine over a real store: a phase reaches about its share of devices and waits
//! for telemetry and soak; a server restart mid-phase resumes where it was; a device that
//! enrolls late is placed at the next step; a failing gate rolls devices back to what they ran
//! before; generations only grow, and only for devices whose desired models changed.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;

use edge_protocol::{Histogram, TelemetryWindow};
use ota_server::bundles::BundleRecord;
use ota_server::devices::journal;
use ota_server::devices::DeviceRecord;
use ota_server::engine::{step, DesiredRecord, Engine};
use ota_server::health::PhaseAggregate;
use ota_server::rollout::{Gates, OnGateFailure, Phase, Rollout, RolloutSpec, Status};
use ota_server::selector::Selector;
use ota_server::store::{Records, Store, StoreError, Table, Write};
use ota_server::telemetry_keys::phase_key;

fn device(id: &str) -> DeviceRecord {
    DeviceRecord {
        id: id.into(),
        public_key: String::new(),
        tags: BTreeMap::from([("site".to_string(), "lab".to_string())]),
        agent_version: "t".into(),
        enrolled_at: 0,
        last_seen: 0,
        online: true,
        token_hash: String::new(),
        last_seq: 0,
        reported: None,
        messages: 0,
        duplicates: 0,
        requests: 0,
        recent: vec![],
    }
}

fn bundle(version: &str) -> BundleRecord {
    BundleRecord {
        sha256: format!("{:0>64}", version.replace('.', "")),
        name: "digits".into(),
        version: version.into(),
        size: 1,
        min_version: None,
        task: "classification".into(),
        payload_format: "onnx".into(),
        signers: vec![],
        uploaded_at: 0,
        uploaded_by: "t".into(),
    }
}

fn rollout(id: &str, b: &BundleRecord, phases: Vec<Phase>, on_fail: OnGateFailure) -> Rollout {
    Rollout::new(
        id.into(),
        b.name.clone(),
        b.version.clone(),
        RolloutSpec {
            bundle: format!("sha256:{}", b.sha256),
            selector: Selector::parse("site=lab").unwrap(),
            phases,
            gates: Gates {
                max_error_rate: Some(0.01),
                min_reporting_devices: 1,
                ..Default::default()
            },
            on_gate_failure: on_fail,
        },
        0,
    )
}

fn report(records: &Records<dyn Store>, key: &str, device: &str, requests: u64, errors: u64) {
    report_to(records, key, device, requests, errors)
}

fn report_to<S: Store + ?Sized>(
    records: &Records<S>,
    key: &str,
    device: &str,
    requests: u64,
    errors: u64,
) {
    let mut a: PhaseAggregate = records
        .get(Table::Telemetry, key)
        .unwrap()
        .unwrap_or_default();
    a.observe(
        device,
        &TelemetryWindow {
            model: "digits".into(),
            version: "x".into(),
            window_start: 0,
            window_secs: 60,
            requests,
            errors,
            latency_ms: Histogram::with_edges(vec![1.0, 10.0]),
            confidence: None,
            class_counts: vec![],
            prediction: None,
            features: vec![],
            shadow: None,
            feedback: None,
        },
    )
    .unwrap();
    records.put(Table::Telemetry, key, &a).unwrap();
}

fn desired_version<S: Store + ?Sized>(records: &Records<S>, device: &str) -> Option<String> {
    records
        .get::<DesiredRecord>(Table::Desired, device)
        .unwrap()
        .and_then(|d| d.models.first().map(|m| m.version.clone()))
}

#[test]
fn phases_restart_late_devices_and_rollback() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("server.redb");
    let none = |_: &str| Default::default();
    let (v2, v3) = (bundle("2.0.0"), bundle("3.0.0"));
    {
        let records = Records::new(common::open_store(&db));
        for i in 0..500 {
            records
                .put(
                    Table::Devices,
                    &format!("dev-{i:03}"),
                    &device(&format!("dev-{i:03}")),
                )
                .unwrap();
        }
        records.put(Table::Bundles, &v2.sha256, &v2).unwrap();
        let r = rollout(
            "r-1",
            &v2,
            vec![Phase::canary(10.0, 100), Phase::canary(100.0, 0)],
            OnGateFailure::Pause,
        );
        records.put(Table::Rollouts, "r-1", &r).unwrap();

        let first = step(&records, 0, none).unwrap();
        assert!(first.transitions.is_empty(), "no telemetry yet");
        let reached = first.desired.len();
        assert!((25..=75).contains(&reached), "10% of 500: {reached}");
        assert!(first
            .desired
            .iter()
            .all(|(_, d)| d.generation == 1 && d.models[0].version == "2.0.0"));
        assert!(
            step(&records, 10, none).unwrap().desired.is_empty(),
            "nothing changed, no new generation"
        );

        // healthy telemetry from one canary, but the soak is not over
        let canary = first.desired[0].0.clone();
        report(&records, &phase_key("r-1", 0), &canary, 100, 0);
        assert!(step(&records, 50, none).unwrap().transitions.is_empty());
    } // the server stops mid-phase

    let records = Records::new(common::open_store(&db));
    let resumed = step(&records, 100, none).unwrap();
    assert_eq!(
        resumed.transitions.len(),
        1,
        "resumed and advanced after the soak"
    );
    assert_eq!(resumed.transitions[0].1.to_phase, 1);
    assert!(
        (425..=475).contains(&resumed.desired.len()),
        "the other 90%: {}",
        resumed.desired.len()
    );
    // phase 1 (100%) has no soak: once a device reports, it completes
    report(&records, &phase_key("r-1", 1), "dev-000", 10, 0);
    step(&records, 101, none).unwrap();
    let r1: Rollout = records.get(Table::Rollouts, "r-1").unwrap().unwrap();
    assert_eq!(r1.status, Status::Completed);

    // a device that enrolls late gets 2.0.0 at the next step
    records
        .put(Table::Devices, "dev-late", &device("dev-late"))
        .unwrap();
    let late = step(&records, 200, none).unwrap();
    assert_eq!(late.desired.len(), 1);
    assert_eq!(
        desired_version(&records, "dev-late").as_deref(),
        Some("2.0.0")
    );

    // 3.0.0 to everyone; its errors fail the gate and roll it back: devices return to 2.0.0
    records.put(Table::Bundles, &v3.sha256, &v3).unwrap();
    let r2 = rollout(
        "r-2",
        &v3,
        vec![Phase::canary(100.0, 0)],
        OnGateFailure::Rollback,
    );
    records.put(Table::Rollouts, "r-2", &r2).unwrap();
    let out = step(&records, 300, none).unwrap();
    assert_eq!(out.desired.len(), 501);
    assert_eq!(
        desired_version(&records, "dev-007").as_deref(),
        Some("3.0.0")
    );
    let generation_before = records
        .get::<DesiredRecord>(Table::Desired, "dev-007")
        .unwrap()
        .unwrap()
        .generation;
    report(&records, &phase_key("r-2", 0), "dev-007", 100, 20);
    let failed = step(&records, 301, none).unwrap();
    assert_eq!(failed.transitions[0].1.to_status, Status::RolledBack);
    assert!(failed.transitions[0].1.reason.contains("error rate"));
    assert_eq!(
        desired_version(&records, "dev-007").as_deref(),
        Some("2.0.0")
    );
    let generation_after = records
        .get::<DesiredRecord>(Table::Desired, "dev-007")
        .unwrap()
        .unwrap()
        .generation;
    assert!(
        generation_after > generation_before,
        "a new generation for the rollback"
    );
}

/// A store that counts the records it hands out (what a step reads).
struct Counting {
    inner: Arc<dyn Store>,
    rows: std::sync::atomic::AtomicUsize,
}

impl Store for Counting {
    fn get(&self, table: Table, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let v = self.inner.get(table, key)?;
        self.rows.fetch_add(
            usize::from(v.is_some()),
            std::sync::atomic::Ordering::Relaxed,
        );
        Ok(v)
    }
    fn scan(
        &self,
        table: Table,
        prefix: &str,
        limit: usize,
    ) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        let v = self.inner.scan(table, prefix, limit)?;
        self.rows
            .fetch_add(v.len(), std::sync::atomic::Ordering::Relaxed);
        Ok(v)
    }
    fn write(&self, writes: Vec<Write>) -> Result<(), StoreError> {
        self.inner.write(writes)
    }
    fn reserve(&self, name: &str, n: u64) -> Result<u64, StoreError> {
        self.inner.reserve(name, n)
    }
    fn lease(
        &self,
        name: &str,
        holder: &str,
        ttl: std::time::Duration,
    ) -> Result<Option<u64>, StoreError> {
        self.inner.lease(name, holder, ttl)
    }
}

/// Enrolls `id` as the server does: its record and its journal entry in one write.
fn enroll<S: Store + ?Sized>(records: &Records<S>, id: &str) {
    let mut d = device(id);
    d.token_hash = format!("token-of-{id}");
    records
        .store()
        .write(vec![
            ota_server::store::put(Table::Devices, id, &d),
            journal(&d),
        ])
        .unwrap();
}

/// The same life as `phases_restart_late_devices_and_rollback`, on one long-lived engine: after
/// every step a fresh engine (everything from the store) finds nothing left to change, a step in
/// which nothing changed computes no device and reads a handful of records whatever the fleet's
/// size, and a late enrollment computes that device alone.
#[test]
fn the_incremental_engine_agrees_with_a_fresh_one_and_idles_without_touching_devices() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Counting {
        inner: common::open_store(&dir.path().join("server.redb")),
        rows: Default::default(),
    });
    let records = Records::new(store.clone());
    let none = |_: &str| Default::default();
    let (v2, v3) = (bundle("2.0.0"), bundle("3.0.0"));
    for i in 0..400 {
        enroll(&records, &format!("dev-{i:03}"));
    }
    records.put(Table::Bundles, &v2.sha256, &v2).unwrap();
    records.put(Table::Bundles, &v3.sha256, &v3).unwrap();
    let phases = vec![Phase::canary(10.0, 100), Phase::canary(100.0, 0)];
    let r1 = rollout("r-1", &v2, phases, OnGateFailure::Pause);
    records.put(Table::Rollouts, "r-1", &r1).unwrap();

    let mut engine = Engine::default();
    let at = |engine: &mut Engine, now: u64| {
        let report = engine.step(&records, now, none).unwrap();
        let fresh = step(&records, now, none).unwrap();
        assert!(
            fresh.desired.is_empty() && fresh.transitions.is_empty(),
            "at {now}, a fresh engine would still change {:?}",
            fresh.desired.iter().map(|(d, _)| d).collect::<Vec<_>>()
        );
        report
    };
    let first = at(&mut engine, 0);
    assert_eq!(
        first.devices_computed, 400,
        "the first step reads the fleet"
    );
    assert!((20..=60).contains(&first.desired.len()), "10% of 400");

    // nothing changed: no device computed, a handful of records read
    let before = store.rows.load(std::sync::atomic::Ordering::Relaxed);
    let quiet = engine.step(&records, 10, none).unwrap();
    let read = store.rows.load(std::sync::atomic::Ordering::Relaxed) - before;
    assert_eq!(quiet.devices_computed, 0);
    assert!(quiet.desired.is_empty());
    assert!(read <= 10, "a quiet step read {read} records");

    let canary = first.desired[0].0.clone();
    report_to(&records, &phase_key("r-1", 0), &canary, 100, 0);
    let advanced = at(&mut engine, 100);
    assert_eq!(advanced.transitions.len(), 1);
    assert_eq!(
        advanced.devices_computed, 400,
        "a new phase places the fleet"
    );
    assert_eq!(advanced.desired.len(), 400 - first.desired.len());
    report_to(&records, &phase_key("r-1", 1), "dev-000", 10, 0);
    at(&mut engine, 101);
    let r1: Rollout = records.get(Table::Rollouts, "r-1").unwrap().unwrap();
    assert_eq!(r1.status, Status::Completed);

    // a late enrollment: that device alone
    enroll(&records, "dev-late");
    let late = at(&mut engine, 200);
    assert_eq!(late.devices_computed, 1);
    assert_eq!(late.desired.len(), 1);
    assert_eq!(
        desired_version(&records, "dev-late").as_deref(),
        Some("2.0.0")
    );

    // 3.0.0 to everyone, rolled back on its errors: everyone back on 2.0.0
    let r2 = rollout(
        "r-2",
        &v3,
        vec![Phase::canary(100.0, 0)],
        OnGateFailure::Rollback,
    );
    records.put(Table::Rollouts, "r-2", &r2).unwrap();
    assert_eq!(at(&mut engine, 300).desired.len(), 401);
    report_to(&records, &phase_key("r-2", 0), "dev-007", 100, 20);
    let failed = at(&mut engine, 301);
    assert_eq!(failed.transitions[0].1.to_status, Status::RolledBack);
    assert_eq!(failed.desired.len(), 401);
    assert_eq!(
        desired_version(&records, "dev-007").as_deref(),
        Some("2.0.0")
    );
}
