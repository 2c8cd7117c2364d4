//! `edgectl simulate --devices N`: load for the OTA server from light simulated devices that
//! speak the real protocol without running a model. Each one has its own ed25519 key, enrolls
//! over HTTPS with a proof of possession, connects over MQTT (TLS to the server's gate, or an
//! external broker) with its device token, says hello, verifies every desired state's director
//! signature and generation, downloads the bundles it names (device token, sha256 checked, the
//! bundle verified against the trust root once per digest), reports the install steps as signed
//! events and sends a signed telemetry window every `--window-seconds`.
//!
//! It starts its own `ota-server` (as `edgectl demo` does), rolls v1 out to everyone in one
//! phase, measures steady telemetry, then rolls v2 out in three phases (10 % → 50 % → 100 %) and
//! reports: devices connected, desired states delivered per second, telemetry messages ingested
//! per second, the time each rollout took to converge, and the server's RSS and CPU.
//!
//! One process may hold 20,000 descriptors here, one per simulated device: with `--workers K`
//! the devices run in K child processes (`edgectl simulate --worker SPEC`, each a slice of the
//! fleet) that report their counters as JSON lines every half second; this process sums them
//! and runs the scenario as before.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Args;
use edge_protocol::enroll::{
    proof_message, EnrollRequest, EnrollResponse, ARTIFACTS_PATH, ENROLL_PATH,
};
use edge_protocol::envelope::Kind;
use edge_protocol::{
    open, seal, topics, DesiredState, Event, Events, Header, Hello, Histogram, ReportedModel, Step,
    Telemetry, TelemetryWindow,
};
use edge_runtime::bundle::VerifyPolicy;
use edge_runtime::stats::LATENCY_BUCKETS_MS;
use edge_runtime::trust::{RootAnchor, TrustRoot};
use edge_runtime::{SigningKey, VerifyingKey};
use rumqttc::{AsyncClient, Event as MqttEvent, LastWill, MqttOptions, Packet, QoS};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use tokio::sync::Semaphore;

use super::fleet::{call, client, ServerArgs};
use super::local_fleet::{binary, bundle, calibration_rows, LocalServer};

/// `edgectl simulate` flags.
#[derive(Args, Debug)]
pub struct SimulateArgs {
    /// Simulated devices.
    #[arg(long, default_value_t = 1000)]
    pub devices: usize,
    /// Use an external broker (plaintext mqtt://host:port) instead of the embedded one.
    #[arg(long)]
    pub broker: Option<String>,
    /// Seconds between a device's telemetry windows.
    #[arg(long, default_value_t = 10)]
    pub window_seconds: u64,
    /// Soak time of the first two phases of the v2 rollout.
    #[arg(long, default_value_t = 10)]
    pub soak_seconds: u64,
    /// New device connections per second while the fleet comes up.
    #[arg(long, default_value_t = 250)]
    pub connect_rate: u64,
    /// Give up after this many seconds.
    #[arg(long, default_value_t = 1200)]
    pub timeout: u64,
    /// Print only the JSON report.
    #[arg(long)]
    pub json: bool,
    /// Run this many `ota-server` replicas on the PostgreSQL of `--store` (devices spread over
    /// them, each replica's MQTT port in turn; `scripts/cluster.sh pg` starts a PostgreSQL).
    #[arg(long, default_value_t = 1)]
    pub replicas: usize,
    /// The PostgreSQL the replicas share (`postgres://…`); needed with `--replicas` above 1.
    #[arg(long)]
    pub store: Option<String>,
    /// Run the devices in this many child processes (one socket per device; one process may
    /// hold 20,000 descriptors here).
    #[arg(long, default_value_t = 1)]
    pub workers: usize,
    /// Internal: run as a worker of another `edgectl simulate`, the devices its spec names.
    #[arg(long, hide = true)]
    pub worker: Option<std::path::PathBuf>,
}

/// What a worker process needs to run its slice of the fleet (written by the orchestrator).
#[derive(serde::Serialize, serde::Deserialize)]
struct WorkerSpec {
    server: String,
    token: String,
    ca: std::path::PathBuf,
    mqtt: Vec<(String, u16, bool)>,
    director: String,
    trust: std::path::PathBuf,
    root: String,
    enrollment_token: String,
    window_seconds: u64,
    connect_rate: u64,
    first: usize,
    devices: usize,
}

/// A worker's counters, every half second (receipts: the desired states received since the
/// last line, unix milliseconds).
#[derive(Default, serde::Serialize, serde::Deserialize)]
struct WorkerReport {
    /// [`Fleet::counters`], in that order.
    counters: Vec<u64>,
    versions: Vec<usize>,
    receipts: Vec<(u64, usize)>,
}

/// What the simulated fleet has done, shared by every device task.
struct Fleet {
    /// Where the devices connect and what they trust.
    link: FleetLink,
    http: ureq::Agent,
    /// Version index per device: 0 none, 1 = 1.0.0, 2 = 2.0.0 ...
    versions: Vec<AtomicU8>,
    /// Index of this process's first device (a worker runs a slice of the fleet).
    first: usize,
    /// Devices per version index, summed over the workers (when the devices run in workers).
    tally: Mutex<Option<Vec<usize>>>,
    enrolled: AtomicU64,
    connected: AtomicU64,
    connects: AtomicU64,
    connect_errors: AtomicU64,
    desired_received: AtomicU64,
    desired_at: Mutex<Vec<Instant>>,
    /// The same receipts, unix milliseconds (set against the server's phase start times).
    desired_wall_ms: Mutex<Vec<(u64, usize)>>,
    downloads: AtomicU64,
    download_errors: AtomicU64,
    telemetry_sent: AtomicU64,
    verified: Mutex<HashMap<[u8; 32], bool>>,
    downloads_at_once: Semaphore,
    enrolls_at_once: Semaphore,
    stop: AtomicBool,
}

/// Where a fleet's devices connect and what they trust.
struct FleetLink {
    server: ServerArgs,
    /// Every replica's API (metrics are summed over them).
    servers: Vec<ServerArgs>,
    /// Where devices connect: device i to `mqtt[i % len]`.
    mqtt: Vec<(String, u16, bool)>,
    ca: Vec<u8>,
    director: VerifyingKey,
    trust: TrustRoot,
    token: String,
    window: Duration,
}

impl Fleet {
    /// A fleet over `link` whose counters start at zero, running devices `first..first +
    /// devices` in this process.
    fn new(link: FleetLink, first: usize, devices: usize) -> Result<Fleet> {
        Ok(Fleet {
            http: client(link.server.ca.as_ref())?,
            link,
            versions: (0..devices).map(|_| AtomicU8::new(0)).collect(),
            first,
            tally: Mutex::new(None),
            enrolled: AtomicU64::new(0),
            connected: AtomicU64::new(0),
            connects: AtomicU64::new(0),
            connect_errors: AtomicU64::new(0),
            desired_received: AtomicU64::new(0),
            desired_at: Mutex::new(Vec::new()),
            desired_wall_ms: Mutex::new(Vec::new()),
            downloads: AtomicU64::new(0),
            download_errors: AtomicU64::new(0),
            telemetry_sent: AtomicU64::new(0),
            verified: Mutex::new(HashMap::new()),
            downloads_at_once: Semaphore::new(16),
            enrolls_at_once: Semaphore::new(8),
            stop: AtomicBool::new(false),
        })
    }

    /// The counters a worker reports and the orchestrator sums, in one order.
    fn counters(&self) -> [&AtomicU64; 8] {
        [
            &self.enrolled,
            &self.connected,
            &self.connects,
            &self.connect_errors,
            &self.desired_received,
            &self.downloads,
            &self.download_errors,
            &self.telemetry_sent,
        ]
    }
}

fn version_index(v: &str) -> u8 {
    v.split('.')
        .next()
        .and_then(|m| m.parse().ok())
        .unwrap_or(0)
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// One simulated device's own state.
struct Device {
    id: String,
    index: usize,
    key: SigningKey,
    seq: AtomicU64,
    applied: AtomicU64,
    active: Mutex<Option<(String, [u8; 32])>>,
}

impl Device {
    fn seal<T: minicbor::Encode<()>>(&self, kind: Kind, body: &T) -> Vec<u8> {
        let header = Header {
            sender: self.id.clone(),
            seq: self.seq.fetch_add(1, Ordering::Relaxed),
            sent_at: now_secs(),
            kind,
        };
        seal(&self.key, header, body)
    }

    fn hello(&self) -> Vec<u8> {
        let active = self.active.lock().unwrap().clone();
        self.seal(
            Kind::Hello,
            &Hello {
                agent_version: format!("simulated-{}", env!("CARGO_PKG_VERSION")),
                applied_generation: self.applied.load(Ordering::Relaxed),
                models: vec![ReportedModel {
                    name: "digits".into(),
                    active: active.map(|(v, d)| (v, d.into())),
                    previous: None,
                    trial: None,
                    bad_versions: vec![],
                    shadow: None,
                }],
                dropped_telemetry: 0,
                capabilities: Some(edge_protocol::Capabilities {
                    payload_formats: vec!["nnef".into(), "onnx".into()],
                    engines: vec!["cpu".into()],
                }),
            },
        )
    }
}

/// Enrolls (retrying); the device token.
fn enroll(fleet: &Fleet, device: &Device) -> Result<String> {
    let public = device.key.verifying_key().to_bytes();
    let proof = device
        .key
        .sign_message(&proof_message(&device.id, &public, &fleet.link.token));
    let request = EnrollRequest {
        device_id: device.id.clone(),
        public_key: hex::encode(public),
        token: fleet.link.token.clone(),
        tags: [("site".to_string(), format!("site-{}", device.index % 20))].into(),
        agent_version: "simulated".into(),
        proof: hex::encode(proof),
    };
    let url = format!("{}{ENROLL_PATH}", fleet.link.server.server);
    let body = serde_json::to_vec(&request)?;
    for attempt in 0..20 {
        match fleet
            .http
            .post(&url)
            .header("content-type", "application/json")
            .send(&body[..])
        {
            Ok(mut r) if r.status() == 200 => {
                let answer: EnrollResponse = serde_json::from_slice(&r.body_mut().read_to_vec()?)?;
                return answer.device_token.context("no device token");
            }
            _ => std::thread::sleep(Duration::from_millis(200 * (attempt + 1))),
        }
    }
    bail!("{}: enrollment failed", device.id)
}

trait SignMessage {
    fn sign_message(&self, m: &[u8]) -> [u8; 64];
}

impl SignMessage for SigningKey {
    fn sign_message(&self, m: &[u8]) -> [u8; 64] {
        use ed25519_dalek::Signer;
        self.sign(m).to_bytes()
    }
}

/// Downloads and checks one bundle: sha256 always, full verification once per digest.
fn fetch(fleet: &Fleet, token: &str, sha: &[u8; 32]) -> Result<()> {
    let url = format!(
        "{}{ARTIFACTS_PATH}/{}",
        fleet.link.server.server,
        hex::encode(sha)
    );
    let mut r = fleet
        .http
        .get(&url)
        .header("authorization", &format!("Bearer {token}"))
        .call()?;
    if r.status() != 200 {
        bail!("artifact: HTTP {}", r.status());
    }
    let bytes = r.body_mut().with_config().limit(64 << 20).read_to_vec()?;
    if Sha256::digest(&bytes).as_slice() != sha {
        bail!("artifact digest mismatch");
    }
    let mut verified = fleet.verified.lock().unwrap();
    let ok = *verified.entry(*sha).or_insert_with(|| {
        edge_runtime::bundle::verify_bytes(&bytes, &fleet.link.trust, &VerifyPolicy::default())
            .is_ok()
    });
    if !ok {
        bail!("bundle refused by the trust root");
    }
    Ok(())
}

/// Applies a desired state: installs what it names (in a task of its own).
fn on_desired(
    fleet: &Arc<Fleet>,
    device: &Arc<Device>,
    client: &AsyncClient,
    token: &str,
    payload: &[u8],
) {
    let opened = open::<DesiredState>(payload, Kind::Desired, |sender| {
        (sender == "director").then_some(fleet.link.director)
    });
    let Ok((_, desired)) = opened else {
        return;
    };
    if desired.device_id != device.id
        || desired.generation <= device.applied.load(Ordering::Relaxed)
    {
        return;
    }
    fleet.desired_received.fetch_add(1, Ordering::Relaxed);
    fleet.desired_at.lock().unwrap().push(Instant::now());
    fleet
        .desired_wall_ms
        .lock()
        .unwrap()
        .push((now_ms(), device.index));
    let Some(model) = desired.models.into_iter().find(|m| m.name == "digits") else {
        return;
    };
    let (fleet, device, client, token) = (
        fleet.clone(),
        device.clone(),
        client.clone(),
        token.to_string(),
    );
    tokio::spawn(async move {
        let sha: [u8; 32] = *model.bundle_sha256;
        if device
            .active
            .lock()
            .unwrap()
            .as_ref()
            .is_some_and(|(_, d)| *d == sha)
        {
            device.applied.store(desired.generation, Ordering::Relaxed);
            return;
        }
        let event = |step: Step, detail: Option<String>| Event {
            at: now_secs(),
            generation: desired.generation,
            model: model.name.clone(),
            version: model.version.clone(),
            step,
            detail,
        };
        let mut events = vec![event(Step::Downloading, None)];
        let result = {
            let _permit = fleet.downloads_at_once.acquire().await;
            let f = fleet.clone();
            tokio::task::spawn_blocking(move || fetch(&f, &token, &sha))
                .await
                .unwrap_or_else(|e| Err(e.into()))
        };
        match result {
            Ok(()) => {
                fleet.downloads.fetch_add(1, Ordering::Relaxed);
                events.push(event(Step::Verified, None));
                events.push(event(Step::Activated, None));
                events.push(event(Step::Committed, None));
                *device.active.lock().unwrap() = Some((model.version.clone(), sha));
                fleet.versions[device.index - fleet.first]
                    .store(version_index(&model.version), Ordering::Relaxed);
                device.applied.store(desired.generation, Ordering::Relaxed);
            }
            Err(e) => {
                fleet.download_errors.fetch_add(1, Ordering::Relaxed);
                events.push(event(Step::Failed, Some(e.to_string())));
            }
        }
        let message = device.seal(Kind::Events, &Events { events });
        let _ = client
            .publish(topics::up(&device.id), QoS::AtLeastOnce, false, message)
            .await;
    });
}

/// A telemetry window of plausible numbers for the active version.
fn window(device: &Device, secs: u64) -> Option<Telemetry> {
    let (version, _) = device.active.lock().unwrap().clone()?;
    let mut latency = Histogram::with_edges(LATENCY_BUCKETS_MS.to_vec());
    let requests = 20 + (device.seq.load(Ordering::Relaxed) % 20);
    for k in 0..requests {
        latency.observe(1.0 + (k % 7) as f64 * 0.5);
    }
    Some(Telemetry {
        windows: vec![TelemetryWindow {
            model: "digits".into(),
            version,
            window_start: now_secs().saturating_sub(secs),
            window_secs: secs as u32,
            requests,
            errors: 0,
            latency_ms: latency,
            confidence: None,
            class_counts: vec![],
            prediction: None,
            features: vec![],
            shadow: None,
            feedback: None,
        }],
    })
}

/// One device, from enrollment until the simulation stops.
async fn run_device(fleet: Arc<Fleet>, index: usize) -> Result<()> {
    let device = Arc::new(Device {
        id: format!("sim-{index:05}"),
        index,
        key: edge_runtime::keys::generate()?,
        seq: AtomicU64::new(1),
        applied: AtomicU64::new(0),
        active: Mutex::new(None),
    });
    let token = {
        let _permit = fleet.enrolls_at_once.acquire().await;
        let (f, d) = (fleet.clone(), device.clone());
        tokio::task::spawn_blocking(move || enroll(&f, &d)).await??
    };
    fleet.enrolled.fetch_add(1, Ordering::Relaxed);

    let (host, port, tls) = fleet.link.mqtt[index % fleet.link.mqtt.len()].clone();
    let mut options = MqttOptions::new(device.id.clone(), host, port);
    options
        .set_keep_alive(Duration::from_secs(60))
        .set_clean_session(true)
        .set_credentials(device.id.clone(), token.clone())
        .set_max_packet_size(1 << 20, 1 << 20)
        .set_last_will(LastWill::new(
            topics::status(&device.id),
            "offline",
            QoS::AtLeastOnce,
            false,
        ));
    if tls {
        options.set_transport(transport(&fleet.link.ca)?);
    }
    let (client, mut eventloop) = AsyncClient::new(options, 64);

    // telemetry, from a random point of the first window on
    {
        let (fleet, device, client) = (fleet.clone(), device.clone(), client.clone());
        tokio::spawn(async move {
            let offset = Duration::from_millis(
                (index as u64 * 7919) % (fleet.link.window.as_millis() as u64).max(1),
            );
            tokio::time::sleep(offset).await;
            let mut tick = tokio::time::interval(fleet.link.window);
            loop {
                tick.tick().await;
                if fleet.stop.load(Ordering::Relaxed) {
                    return;
                }
                if let Some(t) = window(&device, fleet.link.window.as_secs()) {
                    let m = device.seal(Kind::Telemetry, &t);
                    if client
                        .publish(topics::up(&device.id), QoS::AtLeastOnce, false, m)
                        .await
                        .is_ok()
                    {
                        fleet.telemetry_sent.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        });
    }

    let mut up = false;
    let mut backoff = Duration::from_millis(500);
    while !fleet.stop.load(Ordering::Relaxed) {
        match eventloop.poll().await {
            Ok(MqttEvent::Incoming(Packet::ConnAck(_))) => {
                up = true;
                backoff = Duration::from_millis(500);
                fleet.connected.fetch_add(1, Ordering::Relaxed);
                fleet.connects.fetch_add(1, Ordering::Relaxed);
                let _ = client.try_subscribe(topics::desired(&device.id), QoS::AtLeastOnce);
                let _ = client.try_publish(
                    topics::up(&device.id),
                    QoS::AtLeastOnce,
                    false,
                    device.hello(),
                );
            }
            Ok(MqttEvent::Incoming(Packet::Publish(p))) => {
                on_desired(&fleet, &device, &client, &token, &p.payload);
            }
            Ok(_) => {}
            Err(_) => {
                fleet.connect_errors.fetch_add(1, Ordering::Relaxed);
                if up {
                    up = false;
                    fleet.connected.fetch_sub(1, Ordering::Relaxed);
                }
                // as the agent does: doubling, capped, times a random factor in [0.5, 1), so
                // devices that lost the server together do not come back together
                let mut r = [0u8; 2];
                let _ = getrandom::fill(&mut r); // left at zero: the shortest pause
                let factor = 0.5 + f64::from(u16::from_le_bytes(r)) / 131_072.0;
                tokio::time::sleep(backoff.mul_f64(factor)).await;
                backoff = (backoff * 2).min(Duration::from_secs(30));
            }
        }
    }
    Ok(())
}

/// rumqttc over TLS with the fleet CA pinned.
pub(crate) fn transport(ca_pem: &[u8]) -> Result<rumqttc::Transport> {
    use rustls_pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pki_types::CertificateDer::pem_slice_iter(ca_pem).flatten() {
        roots.add(cert)?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(rumqttc::Transport::tls_with_config(
        rumqttc::TlsConfiguration::Rustls(Arc::new(config)),
    ))
}

fn parse_mqtt(url: &str) -> Result<(String, u16, bool)> {
    let (rest, tls) = match url.split_once("://") {
        Some(("mqtts", r)) => (r, true),
        Some(("mqtt", r)) => (r, false),
        _ => bail!("broker '{url}': use mqtt://host:port or mqtts://host:port"),
    };
    let (host, port) = rest
        .trim_end_matches('/')
        .rsplit_once(':')
        .context("broker: no port")?;
    Ok((host.to_string(), port.parse()?, tls))
}

/// The server process's resident memory (kB) and CPU time (s), from /proc.
fn proc_usage(pid: u32) -> Option<(u64, f64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let rss = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // fields after the command (which may hold spaces): state is field 3, utime 14, stime 15
    let after = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks: f64 = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
    Some((rss, ticks / 100.0))
}

/// A counter from the server's /metrics.
/// A counter summed over every replica.
fn metric_total(servers: &[ServerArgs], name: &str) -> Option<f64> {
    servers.iter().map(|s| metric(s, name)).sum()
}

fn metric(server: &ServerArgs, name: &str) -> Option<f64> {
    let url = format!("{}/metrics", server.server);
    let mut r = client(server.ca.as_ref())
        .ok()?
        .get(&url)
        .header("authorization", &format!("Bearer {}", server.token))
        .call()
        .ok()?;
    let text = r.body_mut().read_to_string().ok()?;
    text.lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// Server usage (all replicas together) sampled every half second: peak RSS, CPU seconds at
/// each mark.
struct Monitor {
    pids: Vec<u32>,
    peak_rss_kb: Arc<AtomicU64>,
}

fn total_usage(pids: &[u32]) -> (u64, f64) {
    pids.iter()
        .filter_map(|&p| proc_usage(p))
        .fold((0, 0.0), |(r, c), (r1, c1)| (r + r1, c + c1))
}

impl Monitor {
    fn start(pids: Vec<u32>, stop: Arc<AtomicBool>) -> Monitor {
        let peak = Arc::new(AtomicU64::new(0));
        let (p, watched) = (peak.clone(), pids.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                p.fetch_max(total_usage(&watched).0, Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(500));
            }
        });
        Monitor {
            pids,
            peak_rss_kb: peak,
        }
    }
    fn cpu(&self) -> f64 {
        total_usage(&self.pids).1
    }
    fn rss_mb(&self) -> f64 {
        total_usage(&self.pids).0 as f64 / 1024.0
    }
}

/// Desired-state delivery after `since`: the receipts are grouped into bursts (one per phase
/// the server opened; a gap over a second ends a burst) and the largest burst gives the rate,
/// devices reached / seconds from its first to its last receipt. (count, largest burst, its
/// seconds, its rate per second.)
fn delivery(times: &[Instant], since: Instant) -> Value {
    let mut t: Vec<Instant> = times.iter().copied().filter(|t| *t >= since).collect();
    t.sort();
    let mut best = (0usize, 0.0f64);
    let mut start = 0;
    for i in 0..t.len() {
        let ends = i + 1 == t.len() || t[i + 1].duration_since(t[i]) > Duration::from_secs(1);
        if ends {
            let n = i + 1 - start;
            if n > best.0 {
                best = (n, t[i].duration_since(t[start]).as_secs_f64());
            }
            start = i + 1;
        }
    }
    let rate = if best.0 > 1 {
        best.0 as f64 / best.1.max(1e-3)
    } else {
        0.0
    };
    json!({"delivered": t.len(), "largest_burst": best.0, "burst_seconds": best.1,
           "per_second": rate})
}

/// Runs the simulation: the server, the devices, v1 in one phase, steady telemetry, v2 in three
/// phases; prints the JSON report.
pub fn run(a: SimulateArgs) -> Result<()> {
    if let Some(spec) = &a.worker {
        return run_worker(spec);
    }
    let server_bin = binary("ota-server")?;
    let started = Instant::now();
    let deadline = started + Duration::from_secs(a.timeout);
    let dir = tempfile::Builder::new()
        .prefix("edgefleet-sim-")
        .tempdir()?;
    let say = |msg: &str| {
        if !a.json {
            println!("[{:>6.1}s] {msg}", started.elapsed().as_secs_f64());
        }
    };
    // every simulated device comes from this one address: no per-address HTTP limit
    let extra = ["--device-rate".to_string(), "0".to_string()];
    let local = match (&a.store, a.replicas) {
        (Some(store), n) => {
            if a.broker.is_some() {
                bail!("--store runs replicas that take the devices themselves: leave out --broker");
            }
            LocalServer::start_replicas(dir.path(), &server_bin, store, n, &extra, deadline)?
        }
        (None, 1) => LocalServer::start(
            dir.path(),
            &server_bin,
            a.broker.as_deref(),
            &extra,
            deadline,
        )?,
        (None, _) => bail!(
            "--replicas share a PostgreSQL: pass --store postgres://… (scripts/cluster.sh pg starts one)"
        ),
    };
    for p in local.processes() {
        say(&format!(
            "ota-server {} (pid {}), devices connect to {}",
            p.url,
            p.child.id(),
            p.mqtt_url
        ));
    }
    let stop = Arc::new(AtomicBool::new(false));
    let monitor = Monitor::start(
        local.processes().map(|p| p.child.id()).collect(),
        stop.clone(),
    );
    let shas = push_versions(&local)?;
    let fleet = Arc::new(fleet_state(&a, &local)?);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .max_blocking_threads(32)
        .build()?;
    let _workers = if a.workers > 1 {
        say(&format!("devices in {} worker processes", a.workers));
        Some(start_workers(&a, &local, &fleet, dir.path())?)
    } else {
        bring_up(&runtime, &fleet, a.devices, a.connect_rate);
        None
    };
    let watch = Watch {
        fleet: &fleet,
        monitor: &monitor,
        deadline,
        devices: a.devices as u64,
        say: &say,
    };
    let report = watch.scenario(&a, &shas);
    fleet.stop.store(true, Ordering::Relaxed);
    stop.store(true, Ordering::Relaxed);
    let report = match report {
        Ok(r) => r,
        Err(e) => {
            // the servers' and workers' logs are what explains a failed run: keep them
            let kept = dir.keep();
            if a.json {
                // a report of what was reached, so that a run that timed out still says it
                let partial = json!({
                    "error": format!("{e:#}"),
                    "devices": a.devices,
                    "replicas": a.replicas,
                    "enrolled": fleet.enrolled.load(Ordering::Relaxed),
                    "connected": fleet.connected.load(Ordering::Relaxed),
                    "reconnects": fleet.connects.load(Ordering::Relaxed)
                        .saturating_sub(a.devices as u64),
                    "on_v1": count(&fleet, 1),
                    "on_v2": count(&fleet, 2),
                    "downloads": fleet.downloads.load(Ordering::Relaxed),
                    "download_errors": fleet.download_errors.load(Ordering::Relaxed),
                    "desired_received_total": fleet.desired_received.load(Ordering::Relaxed),
                    "server_peak_rss_mb":
                        monitor.peak_rss_kb.load(Ordering::Relaxed) as f64 / 1024.0,
                    "server_rss_mb": monitor.rss_mb(),
                    "logs": kept.display().to_string(),
                });
                println!("{}", serde_json::to_string_pretty(&partial)?);
            }
            return Err(e.context(format!("logs kept in {}", kept.display())));
        }
    };
    println!("{}", serde_json::to_string_pretty(&report)?);
    runtime.shutdown_timeout(Duration::from_secs(2));
    Ok(())
}

/// Worker processes, killed when dropped.
struct Workers(Vec<std::process::Child>);

impl Drop for Workers {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Starts `--workers` child processes, each running a slice of the devices, and a thread per
/// worker that folds its report lines into `fleet`'s counters.
fn start_workers(
    a: &SimulateArgs,
    local: &LocalServer,
    fleet: &Arc<Fleet>,
    dir: &std::path::Path,
) -> Result<Workers> {
    let k = a.workers.min(a.devices.max(1));
    let per = a.devices.div_ceil(k);
    let reports: Arc<Mutex<Vec<WorkerReport>>> = Arc::new(Mutex::new(
        (0..k).map(|_| WorkerReport::default()).collect(),
    ));
    *fleet.tally.lock().unwrap() = Some(Vec::new());
    let exe = std::env::current_exe()?;
    let mut children = Vec::new();
    for w in 0..k {
        let first = w * per;
        let devices = per.min(a.devices.saturating_sub(first));
        let spec = WorkerSpec {
            server: local.api.server.clone(),
            token: local.api.token.clone(),
            ca: local.ca(),
            mqtt: fleet.link.mqtt.clone(),
            director: hex::encode(fleet.link.director.to_bytes()),
            trust: local.keys.trust.clone(),
            root: hex::encode(local.keys.root.to_bytes()),
            enrollment_token: fleet.link.token.clone(),
            window_seconds: fleet.link.window.as_secs(),
            // the fleet comes up at the rate asked for, spread over the workers
            connect_rate: (a.connect_rate / k as u64).max(1),
            first,
            devices,
        };
        let path = dir.join(format!("worker-{w}.json"));
        std::fs::write(&path, serde_json::to_vec(&spec)?)?;
        let mut child = std::process::Command::new(&exe)
            .args(["simulate", "--worker"])
            .arg(&path)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::fs::File::create(dir.join(format!("worker-{w}.log")))?)
            .spawn()
            .context("cannot start a simulator worker")?;
        let stdout = child.stdout.take().context("worker stdout")?;
        let (fleet, reports) = (fleet.clone(), reports.clone());
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let Ok(report) = serde_json::from_str::<WorkerReport>(&line) else {
                    continue;
                };
                fold(&fleet, &reports, w, report);
            }
        });
        children.push(child);
    }
    Ok(Workers(children))
}

/// Folds worker `w`'s latest report into the orchestrator's counters (sums over the workers;
/// receipts appended, set against this process's clock).
fn fold(fleet: &Fleet, reports: &Mutex<Vec<WorkerReport>>, w: usize, mut report: WorkerReport) {
    let receipts = std::mem::take(&mut report.receipts);
    let (now, now_wall) = (Instant::now(), now_ms());
    {
        let mut at = fleet.desired_at.lock().unwrap();
        let mut wall = fleet.desired_wall_ms.lock().unwrap();
        for (ms, device) in receipts {
            at.push(now - Duration::from_millis(now_wall.saturating_sub(ms)));
            wall.push((ms, device));
        }
    }
    let mut all = reports.lock().unwrap();
    all[w] = report;
    for (i, counter) in fleet.counters().into_iter().enumerate() {
        let total = all
            .iter()
            .map(|r| r.counters.get(i).copied().unwrap_or(0))
            .sum();
        counter.store(total, Ordering::Relaxed);
    }
    let mut tally = vec![0usize; 8];
    for r in all.iter() {
        for (v, n) in r.versions.iter().enumerate().take(8) {
            tally[v] += n;
        }
    }
    *fleet.tally.lock().unwrap() = Some(tally);
}

/// A worker: runs the devices its spec names and prints a [`WorkerReport`] line every half
/// second, until its standard input closes (the orchestrator ended).
fn run_worker(path: &std::path::Path) -> Result<()> {
    let spec: WorkerSpec = serde_json::from_slice(&std::fs::read(path)?)
        .with_context(|| format!("{}: not a worker spec", path.display()))?;
    let key = |text: &str| -> Result<VerifyingKey> {
        let bytes: [u8; 32] = hex::decode(text)?
            .try_into()
            .map_err(|_| anyhow::anyhow!("a key is 32 bytes"))?;
        Ok(VerifyingKey::from_bytes(&bytes)?)
    };
    let root = key(&spec.root)?;
    let server = ServerArgs {
        server: spec.server.clone(),
        token: spec.token.clone(),
        ca: Some(spec.ca.clone()),
        json: true,
    };
    let trust_bytes = std::fs::read(&spec.trust)?;
    let link = FleetLink {
        servers: vec![server.clone()],
        server,
        mqtt: spec.mqtt.clone(),
        ca: std::fs::read(&spec.ca)?,
        director: key(&spec.director)?,
        trust: TrustRoot::from_bytes(&trust_bytes, RootAnchor::Pinned(root))?,
        token: spec.enrollment_token.clone(),
        window: Duration::from_secs(spec.window_seconds.max(1)),
    };
    let fleet = Arc::new(Fleet::new(link, spec.first, spec.devices)?);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .max_blocking_threads(32)
        .build()?;
    bring_up_range(
        &runtime,
        &fleet,
        spec.first,
        spec.devices,
        spec.connect_rate,
    );
    // the orchestrator closing our standard input (or dying) ends the worker
    let closed = Arc::new(AtomicBool::new(false));
    let c = closed.clone();
    std::thread::spawn(move || {
        let _ = std::io::Read::read_to_end(&mut std::io::stdin(), &mut Vec::new());
        c.store(true, Ordering::Relaxed);
    });
    let mut sent = 0usize;
    while !closed.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(500));
        let receipts: Vec<(u64, usize)> = {
            let wall = fleet.desired_wall_ms.lock().unwrap();
            let new = wall[sent..].to_vec();
            sent = wall.len();
            new
        };
        let mut versions = vec![0usize; 8];
        for v in &fleet.versions {
            if let Some(n) = versions.get_mut(usize::from(v.load(Ordering::Relaxed))) {
                *n += 1;
            }
        }
        let report = WorkerReport {
            counters: fleet
                .counters()
                .iter()
                .map(|c| c.load(Ordering::Relaxed))
                .collect(),
            versions,
            receipts,
        };
        println!("{}", serde_json::to_string(&report)?);
    }
    fleet.stop.store(true, Ordering::Relaxed);
    runtime.shutdown_timeout(Duration::from_secs(1));
    Ok(())
}

/// Packs and uploads the digits model at 1.0.0 and 2.0.0; their `sha256:` ids.
fn push_versions(local: &LocalServer) -> Result<Vec<String>> {
    let calib = calibration_rows();
    let mut shas = Vec::new();
    for version in ["1.0.0", "2.0.0"] {
        let bytes = bundle(&local.keys.signer, version, calib.clone(), false)?;
        let v: edge_protocol::rest::Bundle = call(
            &local.api,
            "POST",
            "/v1/bundles",
            Some(("application/octet-stream", bytes)),
        )?;
        shas.push(format!("sha256:{}", v.sha256));
    }
    Ok(shas)
}

/// What every device task shares: the server, the fleet's keys and an enrollment token, and
/// the counters the report reads.
fn fleet_state(a: &SimulateArgs, local: &LocalServer) -> Result<Fleet> {
    let server = local.api.clone();
    let token = local.enrollment_token(json!({"name": "simulated", "tags": {"hw": "sim"}}))?;
    let trust_bytes = std::fs::read(&local.keys.trust)?;
    let link = FleetLink {
        servers: local.apis(),
        mqtt: local
            .processes()
            .map(|p| parse_mqtt(&p.mqtt_url))
            .collect::<Result<_>>()?,
        ca: std::fs::read(local.ca())?,
        director: local.keys.director.verifying_key(),
        trust: TrustRoot::from_bytes(&trust_bytes, RootAnchor::Pinned(local.keys.root))?,
        token,
        window: Duration::from_secs(a.window_seconds.max(1)),
        server,
    };
    Fleet::new(link, 0, a.devices)
}

/// Starts the `devices` device tasks, `rate` new ones per second.
fn bring_up(runtime: &tokio::runtime::Runtime, fleet: &Arc<Fleet>, devices: usize, rate: u64) {
    bring_up_range(runtime, fleet, 0, devices, rate)
}

/// Starts device tasks `first..first + devices`, `rate` new ones per second.
fn bring_up_range(
    runtime: &tokio::runtime::Runtime,
    fleet: &Arc<Fleet>,
    first: usize,
    devices: usize,
    rate: u64,
) {
    let (fleet, rate) = (fleet.clone(), rate.max(1));
    runtime.spawn(async move {
        for i in first..first + devices {
            let f = fleet.clone();
            tokio::spawn(async move {
                if let Err(e) = run_device(f, i).await {
                    eprintln!("sim-{i:05}: {e:#}");
                }
            });
            if (i as u64 + 1).is_multiple_of(rate) {
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    });
}

/// The running simulation as the scenario sees it: waits with progress lines, rollouts, and
/// what they cost the server.
struct Watch<'a> {
    fleet: &'a Fleet,
    monitor: &'a Monitor,
    deadline: Instant,
    devices: u64,
    say: &'a dyn Fn(&str),
}

impl Watch<'_> {
    /// The scenario: every device connected, v1 in one phase, steady telemetry, v2 in three
    /// phases; the JSON report.
    fn scenario(&self, a: &SimulateArgs, shas: &[String]) -> Result<Value> {
        let (fleet, n) = (self.fleet, self.devices);
        let up_started = Instant::now();
        self.wait("every device to connect", &|| {
            fleet.connected.load(Ordering::Relaxed) >= n
        })?;
        let connect_time = up_started.elapsed();
        (self.say)(&format!(
            "{n} devices enrolled and connected in {:.1} s",
            connect_time.as_secs_f64()
        ));
        let (v1_time, v1_cpu, v1_delivery) =
            self.measure(&shas[0], 1, json!([{"percent": 100}]))?;
        (self.say)(&format!(
            "v1 on all {n} devices in {:.1} s",
            v1_time.as_secs_f64()
        ));
        let steady = self.steady(a.window_seconds)?;
        let soak = a.soak_seconds;
        let phases = json!([{"percent": 10, "soak_seconds": soak},
                            {"percent": 50, "soak_seconds": soak}, {"percent": 100}]);
        let (v2_time, v2_cpu, v2_delivery) = self.measure(&shas[1], 2, phases)?;
        (self.say)(&format!(
            "v2 in three phases (10 % → 50 % → 100 %, soak {soak} s) on all {n} devices in {:.1} s",
            v2_time.as_secs_f64()
        ));
        let published =
            metric_total(&fleet.link.servers, "edgefleet_desired_published_total").unwrap_or(0.0);
        let steady_rss = steady["server_rss_mb"].as_f64().unwrap_or(0.0);
        Ok(json!({
            "devices": n,
            "broker": a.broker.clone().unwrap_or_else(|| "embedded (TLS gate)".into()),
            "replicas": fleet.link.servers.len(),
            "store": if a.store.is_some() { "postgres" } else { "redb" },
            "connected": fleet.connected.load(Ordering::Relaxed),
            "connect_seconds": connect_time.as_secs_f64(),
            "reconnects": fleet.connects.load(Ordering::Relaxed).saturating_sub(n),
            "connect_errors": fleet.connect_errors.load(Ordering::Relaxed),
            "downloads": fleet.downloads.load(Ordering::Relaxed),
            "download_errors": fleet.download_errors.load(Ordering::Relaxed),
            "desired_published_total": published,
            "desired_received_total": fleet.desired_received.load(Ordering::Relaxed),
            "v1_one_phase": {"seconds": v1_time.as_secs_f64(), "desired": v1_delivery,
                              "server_cpu": v1_cpu},
            "v2_three_phases": {"seconds": v2_time.as_secs_f64(), "soak_seconds_total": 2 * soak,
                                 "desired": v2_delivery, "server_cpu": v2_cpu},
            "steady": steady,
            "server_peak_rss_mb": self.monitor.peak_rss_kb.load(Ordering::Relaxed) as f64 / 1024.0,
            "server_rss_per_device_kb": steady_rss * 1024.0 / n as f64,
        }))
    }

    /// Waits for `f`, a progress line every 10 s; fails at the deadline with the counts.
    fn wait(&self, what: &str, f: &dyn Fn() -> bool) -> Result<()> {
        let fleet = self.fleet;
        let mut last_print = Instant::now();
        while !f() {
            if Instant::now() > self.deadline {
                bail!(
                    "timed out waiting for {what}: {} enrolled, {} connected, server RSS {:.0} MB",
                    fleet.enrolled.load(Ordering::Relaxed),
                    fleet.connected.load(Ordering::Relaxed),
                    self.monitor.rss_mb()
                );
            }
            if last_print.elapsed() > Duration::from_secs(10) {
                last_print = Instant::now();
                (self.say)(&format!(
                    "  ... {what}: {} enrolled, {} connected, {} on v1, {} on v2",
                    fleet.enrolled.load(Ordering::Relaxed),
                    fleet.connected.load(Ordering::Relaxed),
                    count(fleet, 1),
                    count(fleet, 2)
                ));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        Ok(())
    }

    /// A rollout of bundle `sha` to every simulated device; its id.
    fn roll(&self, sha: &str, phases: Value) -> Result<String> {
        let gates = json!({"min_reporting_devices": 1, "max_error_rate": 0.05,
                           "max_p99_latency_ms": 100.0, "max_install_failure_rate": 0.05});
        let spec = json!({"bundle": sha, "selector": "hw=sim", "phases": phases, "gates": gates,
                          "on_gate_failure": "pause"});
        let v: edge_protocol::rest::Rollout = call(
            &self.fleet.link.server,
            "POST",
            "/v1/rollouts",
            Some(("application/json", spec.to_string().into_bytes())),
        )?;
        Ok(v.id)
    }

    /// A rollout's status (`running`, `completed`, ...; empty when the server does not answer).
    fn rollout_state(&self, id: &str) -> String {
        let path = format!("/v1/rollouts/{id}");
        call::<edge_protocol::rest::Rollout>(&self.fleet.link.server, "GET", &path, None)
            .map(|v| json!(v.status).as_str().unwrap_or_default().to_string())
            .unwrap_or_default()
    }

    /// One rollout, from creation until every device runs `version`: (time, server cores
    /// busy, desired-state delivery).
    fn measure(&self, sha: &str, version: u8, phases: Value) -> Result<(Duration, f64, Value)> {
        let (t, cpu, created_ms) = (Instant::now(), self.monitor.cpu(), now_ms());
        let id = self.roll(sha, phases)?;
        self.wait(&format!("v{version} on every device"), &|| {
            count(self.fleet, version) as u64 >= self.devices
                && self.rollout_state(&id) == "completed"
        })?;
        let took = t.elapsed();
        let cores = (self.monitor.cpu() - cpu) / took.as_secs_f64();
        let mut delivered = delivery(&self.fleet.desired_at.lock().unwrap(), t);
        delivered["per_phase"] = self.push_latency(&id, created_ms)?;
        Ok((took, cores, delivered))
    }

    /// Per phase of rollout `id`: how long after the phase opened its devices received their
    /// desired state. A device counts in the phase that first reached it (its stable bucket,
    /// as the server places it), whenever its receipt arrived; phase 0 opened when the rollout
    /// was created, the others at their transitions (which the server records in whole seconds).
    fn push_latency(&self, id: &str, created_ms: u64) -> Result<Value> {
        let r: edge_protocol::rest::Rollout = call(
            &self.fleet.link.server,
            "GET",
            &format!("/v1/rollouts/{id}"),
            None,
        )?;
        let mut starts = vec![created_ms];
        for t in &r.transitions {
            if t.to_phase > t.from_phase && t.to_phase == starts.len() {
                starts.push(t.at * 1000);
            }
        }
        let mut latencies: Vec<Vec<f64>> = vec![Vec::new(); starts.len()];
        for &(ms, device) in self.fleet.desired_wall_ms.lock().unwrap().iter() {
            if ms < created_ms {
                continue;
            }
            let name = format!("sim-{device:05}");
            let phase = r
                .spec
                .phases
                .iter()
                .position(|p| edge_protocol::cohort::in_phase(&name, id, p.percent));
            if let Some(k) = phase.filter(|k| *k < starts.len()) {
                latencies[k].push(ms.saturating_sub(starts[k]) as f64 / 1000.0);
            }
        }
        let mut out = Vec::new();
        for (k, mut lat) in latencies.into_iter().enumerate() {
            lat.sort_by(f64::total_cmp);
            let q = |p: f64| {
                lat.get(((lat.len() as f64 * p).ceil() as usize).saturating_sub(1))
                    .copied()
            };
            out.push(
                json!({"phase": k, "devices": lat.len(), "p50_s": q(0.5), "p99_s": q(0.99),
                       "max_s": lat.last()}),
            );
        }
        Ok(json!(out))
    }

    /// Three telemetry windows with nothing else going on: sent and ingested per second, the
    /// server's CPU and RSS.
    fn steady(&self, window_seconds: u64) -> Result<Value> {
        let (fleet, monitor, servers) = (self.fleet, self.monitor, &self.fleet.link.servers);
        let accepted = || metric_total(servers, "edgefleet_messages_accepted_total").unwrap_or(0.0);
        let (m0, c0, s0) = (
            accepted(),
            monitor.cpu(),
            fleet.telemetry_sent.load(Ordering::Relaxed),
        );
        let ts = Instant::now();
        std::thread::sleep(fleet.link.window * 3);
        let secs = ts.elapsed().as_secs_f64();
        let ingested = (accepted() - m0) / secs;
        let sent = (fleet.telemetry_sent.load(Ordering::Relaxed) - s0) as f64 / secs;
        let cpu = (monitor.cpu() - c0) / secs;
        let rss = monitor.rss_mb();
        (self.say)(&format!(
            "steady: {sent:.0} telemetry msgs/s sent, {ingested:.0} msgs/s ingested, server CPU {:.0} %, RSS {rss:.0} MB",
            cpu * 100.0
        ));
        Ok(
            json!({"window_seconds": window_seconds, "telemetry_sent_per_s": sent,
                  "messages_ingested_per_s": ingested, "server_cpu": cpu,
                  "server_rss_mb": rss}),
        )
    }
}

fn count(fleet: &Fleet, version: u8) -> usize {
    if let Some(tally) = fleet.tally.lock().unwrap().as_ref() {
        return tally.get(usize::from(version)).copied().unwrap_or(0);
    }
    fleet
        .versions
        .iter()
        .filter(|v| v.load(Ordering::Relaxed) == version)
        .count()
}
