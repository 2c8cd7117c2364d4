//! The rollout engine over a real store: a phase reaches about its share of devices and waits
//! for telemetry and soak; a server restart mid-phase resumes where it was; a device that
//! enrolls late is placed at the next step; a failing gate rolls devices back to what they ran
//! before; generations only grow, and only for devices whose desired models changed.

use std::collections::BTreeMap;
use std::sync::Arc;

use edge_protocol::{Histogram, TelemetryWindow};
use ota_server::bundles::BundleRecord;
use ota_server::devices::DeviceRecord;
use ota_server::engine::{step, DesiredRecord};
use ota_server::health::PhaseAggregate;
use ota_server::rollout::{Gates, OnGateFailure, Phase, Rollout, RolloutSpec, Status};
use ota_server::selector::Selector;
use ota_server::store::{Records, RedbStore, Table};
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

fn report(records: &Records<RedbStore>, key: &str, device: &str, requests: u64, errors: u64) {
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
        },
    )
    .unwrap();
    records.put(Table::Telemetry, key, &a).unwrap();
}

fn desired_version(records: &Records<RedbStore>, device: &str) -> Option<String> {
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
        let records = Records::new(Arc::new(RedbStore::open(&db).unwrap()));
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
            vec![
                Phase {
                    percent: 10.0,
                    soak_seconds: 100,
                },
                Phase {
                    percent: 100.0,
                    soak_seconds: 0,
                },
            ],
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

    let records = Records::new(Arc::new(RedbStore::open(&db).unwrap()));
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
        vec![Phase {
            percent: 100.0,
            soak_seconds: 0,
        }],
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
