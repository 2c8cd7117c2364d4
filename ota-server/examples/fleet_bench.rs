//! How far one server goes: registers N devices in a fresh redb store, runs a rollout over them,
//! and measures
//!
//! - the store bytes and the resident memory an engine step needs per registered device,
//! - the engine step time: the first (every device placed), a step from scratch (a fresh engine,
//!   as after a restart: every device read and computed), a step in which nothing changed and
//!   one after a single enrollment (the incremental engine: neither grows with the fleet),
//! - signed telemetry messages ingested per second (signature check, replay check, phase
//!   aggregate and series update, one commit per batch of 512),
//! - signatures verified per second alone (the CPU bound of ingest),
//! - desired states the director signs per second (a large rollout step).
//!
//! `cargo run --release -p ota-server --example fleet_bench -- 20000`

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use edge_bundle::SigningKey;
use edge_protocol::{seal, Header, Histogram, Kind, Telemetry, TelemetryWindow};
use ota_server::bundles::BundleRecord;
use ota_server::devices::journal;
use ota_server::devices::DeviceRecord;
use ota_server::engine::{step, Engine};
use ota_server::ingest::{ingest, Uplink};
use ota_server::rollout::{Gates, OnGateFailure, Phase, Rollout, RolloutSpec};
use ota_server::store::{put, Records, RedbStore, Store, Table};

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

fn hwm_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(20_000);
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("server.redb");
    let records = Records::new(Arc::new(RedbStore::open(&db).unwrap()));
    let keys: Vec<SigningKey> = (0..n)
        .map(|i| {
            let mut seed = [0u8; 32];
            seed[..8].copy_from_slice(&(i as u64 + 1).to_le_bytes());
            SigningKey::from_bytes(&seed)
        })
        .collect();
    let base_rss = rss_kib();
    for chunk in keys.chunks(5_000).enumerate() {
        let (c, ks) = chunk;
        let writes = ks
            .iter()
            .enumerate()
            .map(|(j, k)| {
                let id = format!("dev-{:06}", c * 5_000 + j);
                let d = DeviceRecord {
                    id: id.clone(),
                    public_key: hex::encode(k.verifying_key().to_bytes()),
                    tags: BTreeMap::from([
                        ("hw".to_string(), "jetson-orin".to_string()),
                        ("site".to_string(), format!("site-{}", j % 20)),
                    ]),
                    agent_version: "0.1.0".into(),
                    enrolled_at: 0,
                    last_seen: 0,
                    online: true,
                    token_hash: "0".repeat(64),
                    last_seq: 0,
                    reported: None,
                    messages: 0,
                    duplicates: 0,
                    requests: 0,
                    recent: vec![],
                };
                put(Table::Devices, &id, &d)
            })
            .collect();
        records.store().write(writes).unwrap();
    }
    let bundle = BundleRecord {
        sha256: "ab".repeat(32),
        name: "digits".into(),
        version: "2.0.0".into(),
        size: 20_000,
        min_version: None,
        task: "classification".into(),
        payload_format: "nnef".into(),
        signers: vec![],
        uploaded_at: 0,
        uploaded_by: "bench".into(),
    };
    records
        .put(Table::Bundles, &bundle.sha256, &bundle)
        .unwrap();
    let rollout = Rollout::new(
        "r-1".into(),
        "digits".into(),
        "2.0.0".into(),
        RolloutSpec {
            bundle: format!("sha256:{}", bundle.sha256),
            selector: ota_server::selector::Selector::parse("hw=jetson-orin").unwrap(),
            phases: vec![Phase::canary(100.0, 1_000_000)],
            gates: Gates::default(),
            on_gate_failure: OnGateFailure::Pause,
        },
        0,
    );
    records.put(Table::Rollouts, "r-1", &rollout).unwrap();

    // engine: the first step gives every device a desired state (n writes); a fresh engine
    // reads and computes the fleet; the long-lived one, with nothing changed, neither
    let mut engine = Engine::default();
    let t = Instant::now();
    let first = engine.step(&records, 10, |_| Default::default()).unwrap();
    let first_s = t.elapsed().as_secs_f64();
    let mut steady = Vec::new();
    for i in 0..5 {
        let t = Instant::now();
        step(&records, 20 + i, |_| Default::default()).unwrap();
        steady.push(t.elapsed().as_secs_f64());
    }
    let mut quiet = Vec::new();
    for i in 0..5 {
        let t = Instant::now();
        let r = engine
            .step(&records, 30 + i, |_| Default::default())
            .unwrap();
        quiet.push(t.elapsed().as_secs_f64());
        assert_eq!(r.devices_computed, 0);
    }
    let mut one_enrolled = Vec::new();
    for i in 0..5 {
        let mut d: DeviceRecord = records.get(Table::Devices, "dev-000000").unwrap().unwrap();
        d.id = format!("dev-late-{i}");
        records
            .store()
            .write(vec![put(Table::Devices, &d.id, &d), journal(&d)])
            .unwrap();
        let t = Instant::now();
        let r = engine
            .step(&records, 40 + i, |_| Default::default())
            .unwrap();
        one_enrolled.push(t.elapsed().as_secs_f64());
        assert_eq!((r.devices_computed, r.desired.len()), (1, 1));
    }
    // the director signs every new desired state (sequence numbers reserved in one commit)
    let director = SigningKey::from_bytes(&[7; 32]);
    let t = Instant::now();
    let signed = ota_server::director::sign_all(&records, &director, &first.desired, 10).unwrap();
    let sign_rate = signed.len() as f64 / t.elapsed().as_secs_f64();
    drop(signed);
    let step_hwm = hwm_kib();
    let store_bytes = std::fs::metadata(&db).map(|m| m.len()).unwrap_or(0);

    // ingest: one telemetry window per message, every device, three rounds
    let window = |requests: u64| {
        let mut latency = Histogram::with_edges(vec![1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0]);
        (0..requests).for_each(|_| latency.observe(3.0));
        let mut confidence = Histogram::uniform(0.0, 1.0, 10);
        (0..requests).for_each(|_| confidence.observe(0.9));
        TelemetryWindow {
            model: "digits".into(),
            version: "2.0.0".into(),
            window_start: 100,
            window_secs: 60,
            requests,
            errors: 0,
            latency_ms: latency,
            confidence: Some(confidence),
            class_counts: vec![requests / 10; 10],
            prediction: None,
            features: vec![],
            shadow: None,
            feedback: None,
        }
    };
    let mut rates = Vec::new();
    for round in 1..=3u64 {
        let messages: Vec<Uplink> = keys
            .iter()
            .enumerate()
            .map(|(i, k)| {
                let id = format!("dev-{i:06}");
                Uplink::Up {
                    payload: seal(
                        k,
                        Header {
                            sender: id.clone(),
                            seq: round,
                            sent_at: 0,
                            kind: Kind::Telemetry,
                        },
                        &Telemetry {
                            windows: vec![window(50)],
                        },
                    ),
                    device: id,
                }
            })
            .collect();
        let t = Instant::now();
        let mut accepted = 0;
        let mut it = messages.into_iter().peekable();
        while it.peek().is_some() {
            let batch: Vec<Uplink> = it.by_ref().take(512).collect();
            accepted += ingest(&records, batch, 120 + round).unwrap().accepted;
        }
        assert_eq!(accepted, n);
        rates.push(n as f64 / t.elapsed().as_secs_f64());
    }
    // the verification alone
    let sample: Vec<Vec<u8>> = keys
        .iter()
        .take(2_000)
        .enumerate()
        .map(|(i, k)| {
            seal(
                k,
                Header {
                    sender: format!("dev-{i:06}"),
                    seq: 1,
                    sent_at: 0,
                    kind: Kind::Telemetry,
                },
                &Telemetry {
                    windows: vec![window(50)],
                },
            )
        })
        .collect();
    let t = Instant::now();
    for (m, k) in sample.iter().zip(&keys) {
        edge_protocol::envelope::open_raw(m, |_| Some(k.verifying_key())).unwrap();
    }
    let verify_rate = sample.len() as f64 / t.elapsed().as_secs_f64();

    println!("devices: {n}");
    println!(
        "store: {:.0} bytes per device after the first step ({} desired states written)",
        store_bytes as f64 / n as f64,
        first.desired.len()
    );
    println!(
        "memory: peak RSS {} MiB during engine steps, {:.1} KiB per device over the {} MiB baseline",
        step_hwm / 1024,
        (step_hwm.saturating_sub(base_rss)) as f64 / n as f64,
        base_rss / 1024
    );
    println!(
        "engine step: first {:.2} s (writes every desired state); from scratch (a fresh engine) \
         median {:.3} s; nothing changed median {:.6} s; one enrollment median {:.6} s",
        first_s,
        median(steady),
        median(quiet),
        median(one_enrolled)
    );
    println!(
        "ingest: median {:.0} telemetry messages/s (rounds: {:?})",
        median(rates.clone()),
        rates.iter().map(|r| r.round()).collect::<Vec<_>>()
    );
    println!("signature verification alone: {verify_rate:.0} messages/s (one core)");
    println!("director signing of desired states: {sign_rate:.0} per second (one core)");
}
