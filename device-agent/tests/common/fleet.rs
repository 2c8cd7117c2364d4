//! A fleet in a test: an in-process MQTT broker (rumqttd) behind a proxy the test can cut, an
//! HTTP server that enrolls devices and serves artifacts with Range support (and can cut a
//! transfer halfway), a "server" MQTT client that signs desired states with the director key and
//! collects the devices' signed messages, and `edge-agent` as a real child process. The keys,
//! bundles, proxy, agent process, HTTP calls and traffic are the fleet kit's (`edge-fleet-kit`);
//! the broker, the fake server and the director are this harness's own.
#![allow(dead_code)]

use std::collections::HashMap;
use std::net::TcpStream;
use std::ops::Deref;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{Path as UrlPath, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use edge_fleet_kit::agent::{AgentConfig, AgentProcess};
use edge_fleet_kit::fixtures::{quick_trial, Digits};
use edge_fleet_kit::keys::FleetKeys;
use edge_fleet_kit::proxy::CutProxy;
use edge_pack::pack::PackSpec;
use edge_protocol::enroll::{EnrollRequest, EnrollResponse};
use edge_protocol::{
    envelope, topics, DesiredModel, DesiredState, Events, Header, Hello, Kind, Step, Telemetry,
};
use edge_runtime::{SigningKey, VerifyingKey};
use minicbor::bytes::ByteArray;
use rumqttc::{Client, Event, MqttOptions, Packet, QoS};
use sha2::{Digest, Sha256};

pub fn free_port() -> u16 {
    edge_fleet_kit::free_port().unwrap()
}

/// A message a device sent, verified.
#[derive(Clone, Debug)]
pub enum Up {
    Hello(Header, Hello),
    Events(Header, Events),
    Telemetry(Header, Telemetry),
}

impl Up {
    pub fn header(&self) -> &Header {
        match self {
            Up::Hello(h, _) | Up::Events(h, _) | Up::Telemetry(h, _) => h,
        }
    }
}

#[derive(Default)]
pub struct HttpState {
    pub artifacts: Mutex<HashMap<String, Vec<u8>>>,
    pub device_keys: Mutex<HashMap<String, VerifyingKey>>,
    pub ranges: Mutex<Vec<String>>,
    /// Device tokens issued at enrollment; artifact requests must carry one.
    pub device_tokens: Mutex<Vec<String>>,
    /// Cut the next artifact transfer after half its bytes.
    pub cut_next: AtomicBool,
    pub requests: AtomicU64,
}

async fn enroll(State(s): State<Arc<HttpState>>, Json(r): Json<EnrollRequest>) -> Response {
    if r.token != "test-token" {
        return (StatusCode::FORBIDDEN, "bad token").into_response();
    }
    let bytes: [u8; 32] = hex::decode(&r.public_key).unwrap().try_into().unwrap();
    let key = VerifyingKey::from_bytes(&bytes).unwrap();
    let proof: [u8; 64] = hex::decode(&r.proof).unwrap().try_into().unwrap();
    let message = edge_protocol::enroll::proof_message(&r.device_id, &bytes, &r.token);
    if key
        .verify_strict(&message, &ed25519_dalek::Signature::from_bytes(&proof))
        .is_err()
    {
        return (StatusCode::FORBIDDEN, "bad proof").into_response();
    }
    s.device_keys.lock().unwrap().insert(
        r.device_id.clone(),
        VerifyingKey::from_bytes(&bytes).unwrap(),
    );
    let token = format!("devtok-{}-{:x}", r.device_id, edge_fleet_kit::random_u64());
    s.device_tokens.lock().unwrap().push(token.clone());
    Json(EnrollResponse {
        device_id: r.device_id,
        device_token: Some(token),
    })
    .into_response()
}

async fn artifact(
    State(s): State<Arc<HttpState>>,
    UrlPath(sha): UrlPath<String>,
    headers: HeaderMap,
) -> Response {
    s.requests.fetch_add(1, Ordering::SeqCst);
    let bearer = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::to_string);
    if !bearer.is_some_and(|b| s.device_tokens.lock().unwrap().contains(&b)) {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    let Some(bytes) = s.artifacts.lock().unwrap().get(&sha).cloned() else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let start = match headers.get("range").and_then(|v| v.to_str().ok()) {
        Some(r) => {
            s.ranges.lock().unwrap().push(r.to_string());
            r.trim_start_matches("bytes=")
                .trim_end_matches('-')
                .parse::<usize>()
                .unwrap()
        }
        None => 0,
    };
    if start >= bytes.len() {
        return StatusCode::RANGE_NOT_SATISFIABLE.into_response();
    }
    let status = if start > 0 {
        StatusCode::PARTIAL_CONTENT
    } else {
        StatusCode::OK
    };
    let rest = bytes[start..].to_vec();
    if s.cut_next.swap(false, Ordering::SeqCst) {
        // announce everything, send half, then fail the body: the client sees a cut transfer
        let half = rest[..rest.len() / 2].to_vec();
        let stream = async_stream(half);
        return (
            status,
            [("content-length", rest.len().to_string())],
            axum::body::Body::from_stream(stream),
        )
            .into_response();
    }
    (status, Bytes::from(rest)).into_response()
}

fn async_stream(half: Vec<u8>) -> impl futures_core::Stream<Item = Result<Bytes, std::io::Error>> {
    /// Half the body, a pause (so the client surely has the bytes), then a failure.
    struct Cut(Option<Vec<u8>>, std::pin::Pin<Box<tokio::time::Sleep>>);
    impl futures_core::Stream for Cut {
        type Item = Result<Bytes, std::io::Error>;
        fn poll_next(
            mut self: std::pin::Pin<&mut Self>,
            cx: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Option<Self::Item>> {
            if let Some(b) = self.0.take() {
                return std::task::Poll::Ready(Some(Ok(Bytes::from(b))));
            }
            match self.1.as_mut().poll(cx) {
                std::task::Poll::Pending => std::task::Poll::Pending,
                std::task::Poll::Ready(()) => {
                    std::task::Poll::Ready(Some(Err(std::io::Error::other("cut"))))
                }
            }
        }
    }
    use std::future::Future;
    Cut(
        Some(half),
        Box::pin(tokio::time::sleep(Duration::from_millis(300))),
    )
}

/// The fleet around one or more agents.
pub struct Fleet {
    pub dir: tempfile::TempDir,
    pub http: Arc<HttpState>,
    pub http_port: u16,
    pub proxy: CutProxy,
    pub broker_port: u16,
    pub trust_path: PathBuf,
    pub root_pub_path: PathBuf,
    signer: SigningKey,
    pub director: SigningKey,
    director_seq: AtomicU64,
    pub received: Arc<Mutex<Vec<Up>>>,
    mqtt: Client,
    _rt: tokio::runtime::Runtime,
}

fn start_broker(port: u16) {
    let text = format!(
        r#"
id = 0
[router]
id = 0
max_connections = 1000
max_outgoing_packet_count = 200
max_segment_size = 104857600
max_segment_count = 10
[v4.1]
name = "v4-1"
listen = "127.0.0.1:{port}"
next_connection_delay_ms = 1
[v4.1.connections]
connection_timeout_ms = 60000
max_payload_size = 1048576
max_inflight_count = 100
dynamic_filters = true
"#
    );
    let config: rumqttd::Config = toml::from_str(&text).unwrap();
    std::thread::spawn(move || {
        let mut broker = rumqttd::Broker::new(config);
        broker.start().unwrap();
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "broker did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
}

impl Fleet {
    pub fn new() -> Fleet {
        let dir = tempfile::tempdir().unwrap();
        let keys = FleetKeys::create(dir.path()).unwrap();

        let broker_port = free_port();
        start_broker(broker_port);
        let proxy = CutProxy::start(broker_port).unwrap();

        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let http = Arc::new(HttpState::default());
        let router = Router::new()
            .route("/v1/devices/enroll", post(enroll))
            .route("/v1/artifacts/{sha}", get(artifact))
            .with_state(http.clone());
        let listener = rt
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let http_port = listener.local_addr().unwrap().port();
        rt.spawn(async move { axum::serve(listener, router).await });

        // the "server": collects device messages, publishes desired states
        let mut options = MqttOptions::new(
            format!("test-server-{broker_port}"),
            "127.0.0.1",
            broker_port,
        );
        options.set_max_packet_size(1 << 20, 1 << 20);
        let (mqtt, mut connection) = Client::new(options, 256);
        mqtt.subscribe(topics::ALL_UP, QoS::AtLeastOnce).unwrap();
        let received: Arc<Mutex<Vec<Up>>> = Arc::default();
        let (r, h) = (received.clone(), http.clone());
        std::thread::spawn(move || {
            for event in connection.iter() {
                let Ok(Event::Incoming(Packet::Publish(p))) = event else {
                    if event.is_err() {
                        std::thread::sleep(Duration::from_millis(50));
                    }
                    continue;
                };
                let Some(device) = topics::device_of_up_topic(&p.topic) else {
                    continue;
                };
                let Some(key) = h.device_keys.lock().unwrap().get(device).copied() else {
                    continue;
                };
                let k = |_: &str| Some(key);
                let up = if let Ok((hd, b)) = envelope::open::<Events>(&p.payload, Kind::Events, k)
                {
                    Up::Events(hd, b)
                } else if let Ok((hd, b)) =
                    envelope::open::<Telemetry>(&p.payload, Kind::Telemetry, k)
                {
                    Up::Telemetry(hd, b)
                } else if let Ok((hd, b)) = envelope::open::<Hello>(&p.payload, Kind::Hello, k) {
                    Up::Hello(hd, b)
                } else {
                    panic!("a device message that does not verify");
                };
                r.lock().unwrap().push(up);
            }
        });
        Fleet {
            dir,
            http,
            http_port,
            proxy,
            broker_port,
            trust_path: keys.trust,
            root_pub_path: keys.root_pub,
            signer: keys.signer,
            director: keys.director,
            director_seq: AtomicU64::new(1),
            received,
            mqtt,
            _rt: rt,
        }
    }

    /// A digits bundle at `version`, after `edit` changed its spec; fast trial by default (1 s,
    /// 5 requests; drift is judged only where a test asks for it).
    pub fn digits(&self, version: &str, edit: impl FnOnce(&mut PackSpec)) -> Vec<u8> {
        Digits::new()
            .version(version)
            .health(quick_trial(1, 5))
            .edit(edit)
            .pack(&self.signer)
            .unwrap()
    }

    /// The vibration sample model (healthy calibration windows), signed by the fleet's key.
    pub fn vibration(&self) -> Vec<u8> {
        edge_fleet_kit::fixtures::pack_sample("vibration", &self.signer).unwrap()
    }

    /// A validly signed bundle whose self-test expects other outputs than the model gives.
    pub fn digits_failing_self_test(&self, version: &str) -> Vec<u8> {
        let good = self.digits(version, |_| {});
        let info = edge_runtime::bundle::inspect(&good, &Default::default()).unwrap();
        let payload_len = info.payload_len as usize;
        let mut manifest = info.manifest;
        for v in &mut manifest.self_test.vectors {
            for o in &mut v.outputs {
                o.data.iter_mut().for_each(|b| *b = b.wrapping_add(7));
            }
        }
        let payload = &good[good.len() - payload_len..];
        edge_runtime::bundle::build(manifest, payload, std::slice::from_ref(&self.signer))
    }

    /// Puts a bundle in the artifact store; returns its desired-state entry.
    pub fn publish_artifact(&self, bundle: &[u8]) -> DesiredModel {
        let sha: [u8; 32] = Sha256::digest(bundle).into();
        self.http
            .artifacts
            .lock()
            .unwrap()
            .insert(hex::encode(sha), bundle.to_vec());
        let info = edge_runtime::bundle::inspect(bundle, &Default::default()).unwrap();
        DesiredModel {
            name: info.manifest.name,
            version: info.manifest.version,
            bundle_sha256: ByteArray::from(sha),
            size: bundle.len() as u64,
        }
    }

    /// Seals a desired state with the director key (next sequence number).
    pub fn seal_desired(
        &self,
        device: &str,
        generation: u64,
        models: Vec<DesiredModel>,
    ) -> Vec<u8> {
        self.seal_desired_with(&self.director.clone(), device, generation, models)
    }

    pub fn seal_desired_with(
        &self,
        key: &SigningKey,
        device: &str,
        generation: u64,
        models: Vec<DesiredModel>,
    ) -> Vec<u8> {
        self.seal_desired_state(key, device, generation, models, vec![])
    }

    /// A desired state with shadows, sealed by `key`.
    pub fn seal_desired_state(
        &self,
        key: &SigningKey,
        device: &str,
        generation: u64,
        models: Vec<DesiredModel>,
        shadows: Vec<edge_protocol::DesiredShadow>,
    ) -> Vec<u8> {
        let seq = self.director_seq.fetch_add(1, Ordering::SeqCst);
        envelope::seal(
            key,
            Header {
                sender: "director".into(),
                seq,
                sent_at: 0,
                kind: Kind::Desired,
            },
            &DesiredState {
                device_id: device.into(),
                generation,
                models,
                shadows,
            },
        )
    }

    /// Publishes raw bytes on the device's desired topic (retained, as the server does).
    pub fn send_desired_bytes(&self, device: &str, bytes: Vec<u8>) {
        self.mqtt
            .publish(topics::desired(device), QoS::AtLeastOnce, true, bytes)
            .unwrap();
    }

    pub fn send_desired(
        &self,
        device: &str,
        generation: u64,
        models: Vec<DesiredModel>,
    ) -> Vec<u8> {
        let b = self.seal_desired(device, generation, models);
        self.send_desired_bytes(device, b.clone());
        b
    }

    /// Sends a desired state with `shadows` beside `models`.
    pub fn send_desired_shadows(
        &self,
        device: &str,
        generation: u64,
        models: Vec<DesiredModel>,
        shadows: Vec<edge_protocol::DesiredShadow>,
    ) {
        let b =
            self.seal_desired_state(&self.director.clone(), device, generation, models, shadows);
        self.send_desired_bytes(device, b);
    }

    /// Telemetry windows received, in arrival order.
    pub fn windows(&self) -> Vec<edge_protocol::TelemetryWindow> {
        self.received
            .lock()
            .unwrap()
            .iter()
            .filter_map(|u| match u {
                Up::Telemetry(_, t) => Some(t.windows.clone()),
                _ => None,
            })
            .flatten()
            .collect()
    }

    /// Events received from `device`, in arrival order.
    pub fn events(&self) -> Vec<edge_protocol::Event> {
        self.received
            .lock()
            .unwrap()
            .iter()
            .filter_map(|u| match u {
                Up::Events(_, e) => Some(e.events.clone()),
                _ => None,
            })
            .flatten()
            .collect()
    }

    /// Waits until an event matching `pred` arrived; returns it.
    pub fn wait_event_where(
        &self,
        what: &str,
        pred: impl Fn(&edge_protocol::Event) -> bool,
        timeout: Duration,
    ) -> edge_protocol::Event {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(e) = self.events().into_iter().find(|e| pred(e)) {
                return e;
            }
            assert!(
                Instant::now() < deadline,
                "no event {what}; events so far: {:#?}",
                self.events()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sequence numbers received, first arrival of each, in arrival order; and whether every
    /// duplicate was byte-identical in meaning (same header and body).
    pub fn first_arrivals(&self) -> Vec<u64> {
        let mut seen = std::collections::HashMap::new();
        let mut order = Vec::new();
        for u in self.received.lock().unwrap().iter() {
            let h = u.header();
            let text = format!("{u:?}");
            match seen.get(&h.seq) {
                Some(prev) => assert_eq!(prev, &text, "seq {} reused for another message", h.seq),
                None => {
                    seen.insert(h.seq, text);
                    order.push(h.seq);
                }
            }
        }
        order
    }

    /// Waits until an event with `step` for `version` arrived; returns it.
    pub fn wait_event(&self, version: &str, step: Step, timeout: Duration) -> edge_protocol::Event {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(e) = self
                .events()
                .into_iter()
                .find(|e| e.version == version && e.step == step)
            {
                return e;
            }
            assert!(
                Instant::now() < deadline,
                "no {step:?} event for {version}; events so far: {:#?}",
                self.events()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Config text for an agent of this fleet (`extra`: more TOML sections).
    pub fn agent_config(
        &self,
        device: &str,
        state_dir: &Path,
        api_port: u16,
        extra: &str,
    ) -> String {
        AgentConfig {
            device_id: device.into(),
            state_dir: state_dir.to_path_buf(),
            trust_root: self.trust_path.clone(),
            root_key: self.root_pub_path.clone(),
            api: format!("127.0.0.1:{api_port}"),
            server_url: Some(format!("http://127.0.0.1:{}", self.http_port)),
            mqtt_url: format!("mqtt://127.0.0.1:{}", self.proxy.port),
            enrollment_token: "test-token".into(),
            tags: vec![("site".into(), "lab".into())],
            retry_max_seconds: 1,
            allow_plaintext: true,
            trial_check_ms: Some(100),
            extra: extra.into(),
            ..AgentConfig::default()
        }
        .to_toml()
    }
}

/// `edge-agent` as a child process (the kit's).
pub struct Agent(AgentProcess);

impl Deref for Agent {
    type Target = AgentProcess;
    fn deref(&self) -> &AgentProcess {
        &self.0
    }
}

impl std::ops::DerefMut for Agent {
    fn deref_mut(&mut self) -> &mut AgentProcess {
        &mut self.0
    }
}

impl Agent {
    pub fn start(config_text: &str, dir: &Path, env: &[(&str, &str)]) -> Agent {
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let bin = Path::new(env!("CARGO_BIN_EXE_edge-agent"));
        Agent(AgentProcess::spawn(bin, dir, config_text, &env).unwrap())
    }

    /// Waits for the API to answer.
    pub fn wait_ready(&mut self) {
        self.0
            .wait_ready(Duration::from_secs(60))
            .unwrap_or_else(|e| panic!("{e:#}"));
    }

    /// Waits for the process to end by itself (a failpoint); panics after `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> std::process::ExitStatus {
        self.0
            .wait_exit(timeout)
            .unwrap_or_else(|e| panic!("{e:#}"))
    }

    pub fn kill9(&mut self) {
        self.0.kill9()
    }

    pub fn status(&self) -> serde_json::Value {
        self.0.status().expect("the agent's /v1/status")
    }

    /// Predicts one digits row; returns (status, body JSON).
    pub fn predict_row(&self, row: &[f32]) -> (u16, serde_json::Value) {
        let body = serde_json::json!({ "input": [[row.chunks(8).collect::<Vec<_>>()]] });
        let (code, text) = http_post(
            &self.url("/v1/models/digits/predict"),
            "application/json",
            body.to_string().as_bytes(),
            &[],
        )
        .unwrap();
        (
            code,
            serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text)),
        )
    }
}

/// A GET on plain HTTP: `(status, body)`, or the connection's error.
pub fn http_get(url: &str) -> Result<(u16, String), String> {
    match edge_fleet_kit::http::get(url) {
        (0, e) => Err(e),
        answer => Ok(answer),
    }
}

/// A POST on plain HTTP with `headers`: `(status, body)`, or the connection's error.
pub fn http_post(
    url: &str,
    content_type: &str,
    body: &[u8],
    headers: &[(&str, &str)],
) -> Result<(u16, String), String> {
    match edge_fleet_kit::http::post(url, content_type, body.to_vec(), headers) {
        (0, e) => Err(e),
        answer => Ok(answer),
    }
}

/// Sends digits test rows to the agent from a background thread until dropped.
pub struct Traffic(edge_fleet_kit::traffic::Traffic);

impl Traffic {
    pub fn start(api: &str, pause: Duration) -> Traffic {
        let plan = edge_fleet_kit::traffic::Traffic::to(vec![api.to_string()]);
        Traffic(plan.every(pause).recording().start())
    }

    /// Every answer: `(status, body)`.
    pub fn stop(self) -> Vec<(u16, serde_json::Value)> {
        self.0.stop().1
    }
}
