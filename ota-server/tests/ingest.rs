//! Telemetry and event ingest over a real store: signatures checked against the enrolled key,
//! replays and duplicates dropped by sequence (also across a restart), a message signed by one
//! device on another's topic dropped, telemetry merged into the phase aggregate of the rollout
//! that reaches the device, install outcomes counted for the gate, series compacted.

mod common;

use std::collections::BTreeMap;

use edge_bundle::SigningKey;
use edge_protocol::envelope::EnvelopeError;
use edge_protocol::{
    seal, Event, Events, Header, Histogram, Kind, Step, Telemetry, TelemetryWindow,
};
use ota_server::devices::DeviceRecord;
use ota_server::health::PhaseAggregate;
use ota_server::ingest::{ingest, Dropped, EventRecord, InstallTally, Uplink};
use ota_server::rollout::{Gates, OnGateFailure, Phase, Rollout, RolloutSpec};
use ota_server::selector::Selector;
use ota_server::series::{self, Retention};
use ota_server::store::{Records, Table};
use ota_server::telemetry_keys::{installs_key, phase_key};

fn device(id: &str, key: &SigningKey) -> DeviceRecord {
    DeviceRecord {
        id: id.into(),
        public_key: hex::encode(key.verifying_key().to_bytes()),
        tags: BTreeMap::from([("site".to_string(), "lab".to_string())]),
        agent_version: "t".into(),
        enrolled_at: 0,
        last_seen: 0,
        online: false,
        token_hash: String::new(),
        last_seq: 0,
        reported: None,
        messages: 0,
        duplicates: 0,
        requests: 0,
        recent: vec![],
    }
}

fn header(sender: &str, seq: u64, kind: Kind) -> Header {
    Header {
        sender: sender.into(),
        seq,
        sent_at: 0,
        kind,
    }
}

fn window(version: &str, requests: u64, errors: u64) -> TelemetryWindow {
    let mut latency = Histogram::with_edges(vec![1.0, 10.0, 100.0]);
    (0..requests).for_each(|_| latency.observe(4.0));
    TelemetryWindow {
        model: "digits".into(),
        version: version.into(),
        window_start: 1_000,
        window_secs: 60,
        requests,
        errors,
        latency_ms: latency,
        confidence: None,
        class_counts: vec![requests, 0],
        prediction: None,
        features: vec![],
        shadow: None,
        feedback: None,
    }
}

/// A running rollout of digits 2.0.0 to every lab device, in its first phase since t=500.
fn lab_rollout() -> Rollout {
    let mut r = Rollout::new(
        "r-1".into(),
        "digits".into(),
        "2.0.0".into(),
        RolloutSpec {
            bundle: format!("sha256:{}", "0".repeat(64)),
            selector: Selector::parse("site=lab").unwrap(),
            phases: vec![Phase::canary(100.0, 60)],
            gates: Gates::default(),
            on_gate_failure: OnGateFailure::Pause,
        },
        500,
    );
    r.phase_started = 500;
    r
}

fn up(device: &str, payload: Vec<u8>) -> Uplink {
    Uplink::Up {
        device: device.into(),
        payload,
    }
}

#[test]
fn signed_messages_in_replays_and_forgeries_out() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("server.redb");
    let (ka, kb) = (
        SigningKey::from_bytes(&[1; 32]),
        SigningKey::from_bytes(&[2; 32]),
    );
    let records = Records::new(common::open_store(&db));
    records
        .put(Table::Devices, "dev-a", &device("dev-a", &ka))
        .unwrap();
    records
        .put(Table::Devices, "dev-b", &device("dev-b", &kb))
        .unwrap();
    let r = lab_rollout();
    records.put(Table::Rollouts, "r-1", &r).unwrap();

    let telemetry = |seq: u64, version: &str, requests: u64| {
        seal(
            &ka,
            header("dev-a", seq, Kind::Telemetry),
            &Telemetry {
                windows: vec![window(version, requests, 1)],
            },
        )
    };
    let events = seal(
        &ka,
        header("dev-a", 3, Kind::Events),
        &Events {
            events: vec![Event {
                at: 900,
                generation: 1,
                model: "digits".into(),
                version: "2.0.0".into(),
                step: Step::Committed,
                detail: None,
            }],
        },
    );
    let mut tampered = telemetry(10, "2.0.0", 5);
    let n = tampered.len();
    tampered[n - 80] ^= 1;
    let messages = vec![
        up("dev-a", telemetry(1, "2.0.0", 100)),
        up("dev-a", telemetry(1, "2.0.0", 100)), // the duplicate of at-least-once delivery
        up("dev-a", telemetry(2, "1.0.0", 50)),  // an old version: its series only
        up("dev-a", events.clone()),
        up("dev-b", telemetry(4, "2.0.0", 7)), // dev-a's message on dev-b's topic
        up("dev-a", tampered),
        up("dev-zz", telemetry(5, "2.0.0", 7)),
        up("dev-a", b"not cbor".to_vec()),
        Uplink::Status {
            device: "dev-b".into(),
            online: true,
        },
    ];
    let out = ingest(&records, messages, 1_030).unwrap();
    assert_eq!(out.accepted, 3, "{:?}", out.dropped);
    assert_eq!(out.windows, 2);
    assert!(matches!(
        out.dropped[0],
        Dropped::Envelope(EnvelopeError::Replay {
            seq: 1,
            last: 1,
            ..
        })
    ));
    assert!(
        matches!(&out.dropped[1], Dropped::WrongTopic { topic, signed } if topic == "dev-b" && signed == "dev-a"),
        "{:?}",
        out.dropped[1]
    );
    assert!(matches!(
        out.dropped[2],
        Dropped::Envelope(EnvelopeError::BadSignature(_))
    ));
    assert!(matches!(out.dropped[3], Dropped::UnknownDevice(_)));
    assert!(matches!(
        out.dropped[4],
        Dropped::Envelope(EnvelopeError::Malformed(_))
    ));

    let aggregate: PhaseAggregate = records
        .get(Table::Telemetry, &phase_key("r-1", 0))
        .unwrap()
        .unwrap();
    assert_eq!(
        (aggregate.requests, aggregate.errors),
        (100, 1),
        "only 2.0.0, only once"
    );
    let tally: InstallTally = records
        .get(Table::Telemetry, &installs_key("r-1", 0))
        .unwrap()
        .unwrap();
    assert_eq!(tally.counts(), (1, 0));
    let phase_points = series::points(&records, &series::rollout_series("r-1", 0)).unwrap();
    assert_eq!(
        (
            phase_points[0].aggregate.installs,
            phase_points[0].aggregate.install_failures
        ),
        (1, 0),
        "the commit lands in the phase's time series too (the dashboard's install chart)"
    );
    let history: Vec<EventRecord> = records.list(Table::Events, "dev-a/", 100).unwrap();
    assert_eq!(history.len(), 1);
    assert_eq!(history[0].events[0].step, "committed");
    let a: DeviceRecord = records.get(Table::Devices, "dev-a").unwrap().unwrap();
    assert_eq!((a.last_seq, a.last_seen, a.online), (3, 1_030, true));
    assert_eq!(
        a.recent
            .iter()
            .map(|m| (m.t, m.version.as_str(), m.requests))
            .collect::<Vec<_>>(),
        [(1_020, "2.0.0", 100), (1_020, "1.0.0", 50)],
        "its own minute of telemetry, per version"
    );
    assert_eq!(
        (a.messages, a.duplicates, a.requests),
        (3, 1, 150),
        "per-device counters: each message once, the redelivery counted apart, every window's calls"
    );
    let b: DeviceRecord = records.get(Table::Devices, "dev-b").unwrap().unwrap();
    assert_eq!(
        (b.last_seq, b.online),
        (0, true),
        "status moved only the online flag"
    );
    let old = series::points(&records, &series::version_series("digits", "1.0.0")).unwrap();
    assert_eq!(old.len(), 1);
    assert_eq!(old[0].aggregate.requests, 50);

    // the high-water mark is stored: after a restart the same message is still a replay
    drop(records);
    let records = Records::new(common::open_store(&db));
    let out = ingest(&records, vec![up("dev-a", events)], 1_031).unwrap();
    assert_eq!(out.accepted, 0);
    assert!(matches!(
        out.dropped[0],
        Dropped::Envelope(EnvelopeError::Replay {
            seq: 3,
            last: 3,
            ..
        })
    ));
    assert_eq!(
        records
            .list::<EventRecord>(Table::Events, "dev-a/", 100)
            .unwrap()
            .len(),
        1,
        "nothing stored"
    );
    let a: DeviceRecord = records.get(Table::Devices, "dev-a").unwrap().unwrap();
    assert_eq!((a.messages, a.duplicates), (3, 2));

    // a day later the minute points fold into one hour point, totals kept
    let s = series::rollout_series("r-1", 0);
    let out = ingest(
        &records,
        vec![up("dev-a", telemetry(20, "2.0.0", 30))],
        1_100,
    )
    .unwrap();
    assert_eq!(out.windows, 1);
    assert_eq!(
        series::points(&records, &s).unwrap().len(),
        2,
        "two minutes"
    );
    let done = series::compact(&records, 1_100 + 2 * 86_400, Retention::default()).unwrap();
    assert!(done.folded >= 2, "{done:?}");
    let points = series::points(&records, &s).unwrap();
    assert_eq!(points.len(), 1);
    assert_eq!(
        (points[0].resolution, points[0].aggregate.requests),
        (3600, 130)
    );
    let done = series::compact(&records, 1_100 + 40 * 86_400, Retention::default()).unwrap();
    assert!(done.expired >= 1);
    assert!(series::points(&records, &s).unwrap().is_empty(), "expired");
}

/// Two replicas sharing the store both receive every message (a device that reconnected to
/// the other one and resent), concurrently, into the same phase aggregate: each message counts
/// once, no update is lost.
#[test]
fn replicas_sharing_a_store_count_every_message_once() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("server.redb");
    let store = common::open_store(&db);
    let first = Records::new(store.clone());
    let second = Records::new(common::open_replica(&db, &store));
    let keys: Vec<SigningKey> = (0..6u8)
        .map(|i| SigningKey::from_bytes(&[10 + i; 32]))
        .collect();
    for (i, k) in keys.iter().enumerate() {
        let id = format!("dev-{i}");
        first.put(Table::Devices, &id, &device(&id, k)).unwrap();
    }
    let r = lab_rollout();
    first.put(Table::Rollouts, "r-1", &r).unwrap();
    const MESSAGES: u64 = 12;
    // every device's messages in order, as each replica receives them
    let batches: Vec<Vec<Uplink>> = (1..=MESSAGES)
        .map(|seq| {
            keys.iter()
                .enumerate()
                .map(|(i, k)| {
                    let id = format!("dev-{i}");
                    let t = Telemetry {
                        windows: vec![window("2.0.0", 3, 0)],
                    };
                    up(&id, seal(k, header(&id, seq, Kind::Telemetry), &t))
                })
                .collect()
        })
        .collect();
    let accepted: Vec<usize> = std::thread::scope(|s| {
        let runs: Vec<_> = [&first, &second]
            .into_iter()
            .map(|records| {
                let batches = batches.clone();
                s.spawn(move || {
                    batches
                        .into_iter()
                        .map(|b| ingest(records, b, 1_030).unwrap().accepted)
                        .sum::<usize>()
                })
            })
            .collect();
        runs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let total = keys.len() * MESSAGES as usize;
    assert_eq!(
        accepted.iter().sum::<usize>(),
        total,
        "each message accepted by exactly one replica: {accepted:?}"
    );
    for i in 0..keys.len() {
        let d: DeviceRecord = first
            .get(Table::Devices, &format!("dev-{i}"))
            .unwrap()
            .unwrap();
        assert_eq!(
            (d.last_seq, d.messages, d.duplicates, d.requests),
            (MESSAGES, MESSAGES, MESSAGES, 3 * MESSAGES),
            "dev-{i}"
        );
    }
    let aggregate: PhaseAggregate = first
        .get(Table::Telemetry, &phase_key("r-1", 0))
        .unwrap()
        .unwrap();
    assert_eq!(
        aggregate.requests,
        3 * total as u64,
        "every prediction in the phase aggregate once"
    );
}

#[test]
fn time_series_points_count_devices_without_naming_them() {
    let dir = tempfile::tempdir().unwrap();
    let records = Records::new(common::open_store(&dir.path().join("server.redb")));
    let keys: Vec<SigningKey> = (1..=3).map(|i| SigningKey::from_bytes(&[i; 32])).collect();
    for (i, k) in keys.iter().enumerate() {
        let id = format!("dev-{i}");
        records.put(Table::Devices, &id, &device(&id, k)).unwrap();
    }
    records.put(Table::Rollouts, "r-1", &lab_rollout()).unwrap();
    let telemetry = |i: usize, seq: u64| {
        up(
            &format!("dev-{i}"),
            seal(
                &keys[i],
                header(&format!("dev-{i}"), seq, Kind::Telemetry),
                &Telemetry {
                    windows: vec![window("2.0.0", 10, 0)],
                },
            ),
        )
    };
    // minute 1,020: three devices, dev-0 twice (in one batch and again in the next)
    let batch = vec![telemetry(0, 1), telemetry(1, 1), telemetry(0, 2)];
    assert_eq!(ingest(&records, batch, 1_030).unwrap().windows, 3);
    assert_eq!(
        ingest(&records, vec![telemetry(2, 1), telemetry(0, 3)], 1_040)
            .unwrap()
            .windows,
        2
    );
    // minute 1,080: one device
    assert_eq!(
        ingest(&records, vec![telemetry(1, 2)], 1_090)
            .unwrap()
            .windows,
        1
    );

    let phase: PhaseAggregate = records
        .get(Table::Telemetry, &phase_key("r-1", 0))
        .unwrap()
        .unwrap();
    assert_eq!(
        phase.devices.len(),
        3,
        "the phase's aggregate names its devices (the gate)"
    );
    for s in [
        series::version_series("digits", "2.0.0"),
        series::rollout_series("r-1", 0),
    ] {
        let points = series::points(&records, &s).unwrap();
        let counted: Vec<(u64, u64, usize, u64)> = points
            .iter()
            .map(|p| {
                let a = &p.aggregate;
                (p.start, a.device_count, a.devices.len(), a.requests)
            })
            .collect();
        assert_eq!(counted, [(1_020, 3, 0, 50), (1_080, 1, 0, 10)], "{s}");
    }
    // an hour point keeps its busiest minute's count
    series::compact(&records, 1_000_000, Retention::default()).unwrap();
    let hours = series::points(&records, &series::version_series("digits", "2.0.0")).unwrap();
    assert_eq!(
        hours
            .iter()
            .map(|p| (p.resolution, p.aggregate.device_count, p.aggregate.requests))
            .collect::<Vec<_>>(),
        [(3600, 3, 60)]
    );
}
