//! Fixtures for the end-to-end fleet tests: a fresh fleet (root, signing and director keys, trust
//! document), the real `ota-server` and `edge-agent` binaries as child processes on loopback,
//! and small HTTP helpers. The binaries are the workspace's own build (`cargo test --workspace`
//! builds them first); when they are missing they are built once with `cargo build`.

#![forbid(unsafe_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Once;
use std::time::{Duration, Instant};

use edge_pack::pack::{pack, Calibration, PackSpec};
use edge_runtime::trust::{self, TrustSpec};
use edge_runtime::SigningKey;
use serde_json::Value;

pub mod mosquitto;
pub mod proxy;
pub mod staged;
pub mod webdriver;

/// The workspace root.
pub fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Path of a workspace binary, built if missing.
pub fn binary(name: &str) -> PathBuf {
    static BUILD: Once = Once::new();
    // tests run from target/<profile>/deps
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().unwrap().parent().unwrap().to_path_buf();
    let path = dir.join(name);
    if !path.exists() {
        BUILD.call_once(|| {
            let release = dir.file_name().is_some_and(|n| n == "release");
            let mut cmd = Command::new(env!("CARGO"));
            cmd.args([
                "build",
                "-q",
                "-p",
                "ota-server",
                "-p",
                "device-agent",
                "-p",
                "edgectl",
            ])
            .current_dir(workspace());
            if release {
                cmd.arg("--release");
            }
            assert!(cmd.status().unwrap().success(), "building the binaries");
        });
    }
    assert!(path.exists(), "{} not built", path.display());
    path
}

/// A free loopback port.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A fleet's keys and trust document, in a directory.
pub struct Keys {
    /// Holds the files.
    pub dir: PathBuf,
    /// Model signer.
    pub signer: SigningKey,
    /// trust.cbor.
    pub trust: PathBuf,
    /// root.pub.
    pub root_pub: PathBuf,
    /// director.key.
    pub director_key: PathBuf,
}

impl Keys {
    /// New keys in `dir`.
    pub fn new(dir: &Path) -> Keys {
        let root = edge_runtime::keys::generate().unwrap();
        let signer = edge_runtime::keys::generate().unwrap();
        let director = edge_runtime::keys::generate().unwrap();
        let mut spec = TrustSpec::ephemeral(&signer.verifying_key());
        spec.director = Some(("director".into(), director.verifying_key()));
        let doc = trust::create(&spec, &root, None).unwrap();
        let trust = dir.join("trust.cbor");
        std::fs::write(&trust, doc).unwrap();
        let root_pub = dir.join("root.pub");
        std::fs::write(
            &root_pub,
            edge_runtime::keys::public_key_text(&root.verifying_key()),
        )
        .unwrap();
        let director_key = dir.join("director.key");
        std::fs::write(
            &director_key,
            edge_runtime::keys::secret_key_text(&director),
        )
        .unwrap();
        Keys {
            dir: dir.to_path_buf(),
            signer,
            trust,
            root_pub,
            director_key,
        }
    }

    /// The digits sample model at `version`, after `edit`, signed.
    pub fn digits(&self, version: &str, edit: impl FnOnce(&mut PackSpec)) -> Vec<u8> {
        let models = workspace().join("models/digits");
        let onnx = std::fs::read(models.join("model.onnx")).unwrap();
        let text = std::fs::read_to_string(models.join("spec.toml")).unwrap();
        let mut spec: PackSpec = toml::from_str(&text).unwrap();
        spec.version = version.into();
        spec.health = Some(edge_runtime::bundle::HealthSpec {
            trial_seconds: 1,
            min_requests: 3,
            max_error_rate: 0.05,
            max_p99_ms: None,
            max_psi: 1e9,
        });
        edit(&mut spec);
        let file = std::fs::File::open(models.join("calib_x.npy")).unwrap();
        let x = edge_runtime::npy::read(file, 1 << 30).unwrap();
        let calibration = Calibration {
            inputs: x,
            targets: None,
        };
        pack(
            &onnx,
            spec,
            Some(&calibration),
            std::slice::from_ref(&self.signer),
            0,
        )
        .unwrap()
        .0
    }
}

/// Fleet CAs of the servers started in this process (PEM), trusted by [`call`].
static CAS: std::sync::Mutex<Vec<Vec<u8>>> = std::sync::Mutex::new(Vec::new());

fn agent() -> ureq::Agent {
    let certs: Vec<ureq::tls::Certificate<'static>> = CAS
        .lock()
        .unwrap()
        .iter()
        .flat_map(|pem| {
            ureq::tls::parse_pem(pem)
                .filter_map(|i| match i {
                    Ok(ureq::tls::PemItem::Certificate(c)) => Some(c),
                    _ => None,
                })
                .collect::<Vec<_>>()
        })
        .collect();
    let tls = ureq::tls::TlsConfig::builder()
        .root_certs(ureq::tls::RootCerts::new_with_certs(&certs))
        .build();
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(30)))
        .tls_config(tls)
        .build()
        .into()
}

/// One HTTP call: (status, body text).
pub fn call(
    method: &str,
    url: &str,
    token: Option<&str>,
    body: Option<(&str, Vec<u8>)>,
) -> (u16, String) {
    let a = agent();
    let auth = token.map(|t| format!("Bearer {t}"));
    let result = match (method, body) {
        ("GET", _) => {
            let mut r = a.get(url);
            if let Some(v) = &auth {
                r = r.header("authorization", v);
            }
            r.call()
        }
        (_, body) => {
            let mut r = a.post(url);
            if let Some(v) = &auth {
                r = r.header("authorization", v);
            }
            match body {
                Some((ct, bytes)) => r.header("content-type", ct).send(&bytes[..]),
                None => r.send_empty(),
            }
        }
    };
    match result {
        Ok(mut resp) => {
            let status = resp.status().as_u16();
            let text = resp.body_mut().read_to_string().unwrap_or_default();
            (status, text)
        }
        Err(e) => (0, e.to_string()),
    }
}

/// Polls `f` until it returns `Some`, or panics with `what` and `context()` after `timeout`.
pub fn wait_for<T>(
    what: &str,
    timeout: Duration,
    mut f: impl FnMut() -> Option<T>,
    context: impl Fn() -> String,
) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}\n{}",
            context()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A running `ota-server serve`.
pub struct Server {
    /// The process.
    pub child: Child,
    /// Data directory.
    pub data: PathBuf,
    /// HTTP base URL.
    pub url: String,
    /// Device MQTT port.
    pub mqtt_port: u16,
    /// Admin token.
    pub admin: String,
    /// Log file.
    pub log: PathBuf,
}

impl Server {
    /// `init`s `data` with `keys`.
    pub fn init(data: &Path, keys: &Keys) {
        let out = Command::new(binary("ota-server"))
            .arg("init")
            .arg("--data")
            .arg(data)
            .arg("--trust")
            .arg(&keys.trust)
            .arg("--director-key")
            .arg(&keys.director_key)
            .arg("--root")
            .arg(&keys.root_pub)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        CAS.lock()
            .unwrap()
            .push(std::fs::read(data.join("tls/ca.pem")).unwrap());
    }

    /// The fleet CA agents pin.
    pub fn ca(&self) -> PathBuf {
        self.data.join("tls/ca.pem")
    }

    /// Starts `serve` (TLS on both listeners) on the given ports and waits until it is
    /// connected to its broker.
    pub fn start(data: &Path, http_port: u16, mqtt_port: u16) -> Server {
        Server::start_with(data, http_port, mqtt_port, &[])
    }

    /// [`Server::start`] with more `serve` arguments. With `--broker URL` among them the server
    /// uses that broker (as user [`mosquitto::SERVER_USER`]) and `mqtt_port` is the broker's.
    pub fn start_with(data: &Path, http_port: u16, mqtt_port: u16, extra: &[&str]) -> Server {
        let log = data.join(format!("server-{}.log", free_port()));
        let child = Command::new(binary("ota-server"))
            .arg("serve")
            .arg("--data")
            .arg(data)
            .args(["--http", &format!("127.0.0.1:{http_port}")])
            .args(if extra.contains(&"--broker") {
                vec![]
            } else {
                vec!["--mqtt".to_string(), format!("127.0.0.1:{mqtt_port}")]
            })
            .args(["--tick-seconds", "1"])
            .args(extra)
            .env("OTA_SERVER_LOG", "info,rumqttd=warn")
            .env("OTA_SERVER_BROKER_USERNAME", mosquitto::SERVER_USER)
            .env("OTA_SERVER_BROKER_PASSWORD", "-")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let admin = std::fs::read_to_string(data.join("admin.token"))
            .unwrap()
            .trim()
            .to_string();
        let mut s = Server {
            child,
            data: data.to_path_buf(),
            url: format!("https://127.0.0.1:{http_port}"),
            mqtt_port,
            admin,
            log,
        };
        wait_for(
            "the server to connect to its broker",
            Duration::from_secs(30),
            || {
                let (code, body) = call("GET", &s.u("/healthz"), None, None);
                (code == 200 && body.contains("\"broker_connected\":true")).then_some(())
            },
            || s.log_text(),
        );
        if let Ok(Some(status)) = s.child.try_wait() {
            panic!("server exited: {status}\n{}", s.log_text());
        }
        s
    }

    /// The HTTP port.
    pub fn http_port(&self) -> u16 {
        self.url
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .expect("port")
    }

    /// A URL on the server.
    pub fn u(&self, path: &str) -> String {
        format!("{}{path}", self.url)
    }

    /// An admin API call that must succeed; its JSON.
    pub fn api(&self, method: &str, path: &str, body: Option<(&str, Vec<u8>)>) -> Value {
        let (code, text) = call(method, &self.u(path), Some(&self.admin), body);
        assert!(
            (200..300).contains(&code),
            "{method} {path}: {code} {text}\n{}",
            self.log_text()
        );
        serde_json::from_str(&text).unwrap_or(Value::Null)
    }

    /// The server's log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// kill -9.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- server log ---\n{}", self.log_text());
        }
        self.kill9();
    }
}

/// Where an agent finds the server (when not the server's own listeners) and extra environment.
#[derive(Clone, Debug, Default)]
pub struct AgentOptions {
    /// Server HTTP base URL instead of the server's (e.g. through a proxy).
    pub http: Option<String>,
    /// MQTT URL instead of the server's gate; `mqtt://` turns `allow_plaintext` on.
    pub mqtt: Option<String>,
    /// More environment variables (e.g. `EDGE_AGENT_FAILPOINT`).
    pub env: Vec<(String, String)>,
}

/// A running `edge-agent`.
pub struct Agent {
    /// Device id.
    pub id: String,
    /// The process.
    pub child: Child,
    /// Local API address.
    pub api: String,
    /// Log file.
    pub log: PathBuf,
}

impl Agent {
    /// Starts an agent of `server`'s fleet in `dir`, enrolling with `enrollment_token`.
    pub fn start(
        id: &str,
        dir: &Path,
        keys: &Keys,
        server: &Server,
        enrollment_token: &str,
    ) -> Agent {
        Agent::start_with(
            id,
            dir,
            keys,
            server,
            enrollment_token,
            &AgentOptions::default(),
        )
    }

    /// [`Agent::start`] with other server addresses or more environment.
    pub fn start_with(
        id: &str,
        dir: &Path,
        keys: &Keys,
        server: &Server,
        enrollment_token: &str,
        options: &AgentOptions,
    ) -> Agent {
        std::fs::create_dir_all(dir).unwrap();
        // a port from free_port() can be taken again before the agent binds it (by another
        // test, or as the ephemeral port of some connection): then start again on another
        for _ in 0..5 {
            if let Some(agent) = Agent::try_start(id, dir, keys, server, enrollment_token, options)
            {
                return agent;
            }
        }
        panic!("{id}: no free port for the local API after 5 tries");
    }

    fn try_start(
        id: &str,
        dir: &Path,
        keys: &Keys,
        server: &Server,
        enrollment_token: &str,
        options: &AgentOptions,
    ) -> Option<Agent> {
        let api = format!("127.0.0.1:{}", free_port());
        let mqtt = options
            .mqtt
            .clone()
            .unwrap_or_else(|| format!("mqtts://127.0.0.1:{}", server.mqtt_port));
        let config = format!(
            r#"
device_id = "{id}"
state_dir = "{state}"
trust_root = "{trust}"
root_key = "{root}"
[api]
listen = "{api}"
[server]
url = "{url}"
mqtt = "{mqtt}"
ca = "{ca}"
allow_plaintext = {plaintext}
enrollment_token = "{enrollment_token}"
retry_max_seconds = 1
[telemetry]
window_seconds = 1
[trial]
check_interval_ms = 100
"#,
            state = dir.join("state").display(),
            trust = keys.trust.display(),
            root = keys.root_pub.display(),
            url = options.http.as_deref().unwrap_or(&server.url),
            plaintext = mqtt.starts_with("mqtt://"),
            ca = server.ca().display(),
        );
        let path = dir.join("agent.toml");
        std::fs::write(&path, config).unwrap();
        let log = dir.join("agent.log");
        let before = std::fs::metadata(&log).map_or(0, |m| m.len() as usize);
        let mut child = Command::new(binary("edge-agent"))
            .args(["run", "--config"])
            .arg(&path)
            .env("EDGE_AGENT_LOG", "info")
            .envs(options.env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::null())
            .stderr(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&log)
                    .unwrap(),
            )
            .spawn()
            .unwrap();
        let listening = format!("local API listening addr={api}");
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            let text = std::fs::read(&log).unwrap_or_default();
            let text = String::from_utf8_lossy(text.get(before..).unwrap_or_default());
            if text.contains(&listening) {
                break;
            }
            if let Ok(Some(_)) = child.try_wait() {
                if text.contains("Address already in use") {
                    return None;
                }
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Some(Agent {
            id: id.into(),
            child,
            api,
            log,
        })
    }

    /// Waits for the process to end by itself (a failpoint); its exit status, or a panic after
    /// `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> std::process::ExitStatus {
        let child = &mut self.child;
        let log = self.log.clone();
        wait_for(
            "the agent to exit",
            timeout,
            || child.try_wait().unwrap(),
            || std::fs::read_to_string(&log).unwrap_or_default(),
        )
    }

    /// The agent's `/v1/status`.
    pub fn status(&self) -> Option<Value> {
        let (code, text) = call("GET", &format!("http://{}/v1/status", self.api), None, None);
        (code == 200)
            .then(|| serde_json::from_str(&text).ok())
            .flatten()
    }

    /// The agent's log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- agent {} log ---\n{}", self.id, self.log_text());
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One digits prediction on a fixed input at an agent's API address; the status code.
pub fn predict(api: &str) -> u16 {
    let row: Vec<Vec<f32>> = (0..8).map(|i| vec![i as f32; 8]).collect();
    let body = serde_json::json!({ "input": [[row]] });
    call(
        "POST",
        &format!("http://{api}/v1/models/digits/predict"),
        None,
        Some(("application/json", body.to_string().into_bytes())),
    )
    .0
}

/// Predictions sent to some agents in the background until stopped or dropped.
pub struct Traffic {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    sent: std::sync::Arc<std::sync::atomic::AtomicU64>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Traffic {
    /// Starts sending to `apis`, one round every 20 ms.
    pub fn start(apis: Vec<String>) -> Traffic {
        use std::sync::atomic::Ordering;
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let sent = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let (s, n) = (stop.clone(), sent.clone());
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                for api in &apis {
                    if predict(api) == 200 {
                        n.fetch_add(1, Ordering::Relaxed);
                    }
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        });
        Traffic {
            stop,
            sent,
            thread: Some(thread),
        }
    }

    /// Successful predictions so far.
    pub fn sent(&self) -> u64 {
        self.sent.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Stops sending (waits for the request in flight); the successful predictions, all told.
    pub fn stop(mut self) -> u64 {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            t.join().unwrap();
        }
        self.sent()
    }
}

impl Drop for Traffic {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Waits until every agent's outbox is empty and the server has accepted exactly the messages
/// the agent numbered (`messages == last_seq == next_seq - 1`: none lost, none counted twice);
/// the predictions the server counted from these devices, all told. Call it with the traffic
/// stopped: it first lets the agents' last telemetry window (1 s in these tests) close. Panics
/// after `timeout`.
pub fn wait_uplink_complete(server: &Server, agents: &[Agent], timeout: Duration) -> u64 {
    std::thread::sleep(Duration::from_millis(1500));
    let mut total = 0;
    for a in agents {
        let requests = wait_for(
            &format!("{}'s outbox to reach the server, every message once", a.id),
            timeout,
            || {
                let s = a.status()?;
                let outbox = &s["outbox"];
                if outbox["queued"].as_u64()? != 0 {
                    return None;
                }
                let numbered = outbox["next_seq"].as_u64()? - 1;
                let up = server.device(&a.id)["uplink"].clone();
                (up["messages"].as_u64()? == numbered && up["last_seq"].as_u64()? == numbered)
                    .then(|| up["requests"].as_u64())
                    .flatten()
            },
            || {
                format!(
                    "agent outbox {}\nserver uplink {}",
                    a.status()
                        .map(|s| s["outbox"].to_string())
                        .unwrap_or_default(),
                    server.device(&a.id)["uplink"]
                )
            },
        );
        total += requests;
    }
    total
}

/// Runs `edgectl` against `server` with its admin token; (success, stdout + stderr).
pub fn edgectl(server: &Server, args: &[&str]) -> (bool, String) {
    let out = Command::new(binary("edgectl"))
        .args(args)
        .env("EDGECTL_SERVER", &server.url)
        .env("EDGECTL_TOKEN", &server.admin)
        .env("EDGECTL_CA", server.ca())
        .output()
        .unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

impl Server {
    /// A device's record (`GET /v1/devices/{id}`).
    pub fn device(&self, id: &str) -> Value {
        self.api("GET", &format!("/v1/devices/{id}"), None)
    }

    /// A fresh data directory under `dir` (keys made there), served on free ports.
    pub fn fresh(dir: &Path) -> (Keys, Server) {
        let keys = Keys::new(dir);
        let data = dir.join("server");
        Server::init(&data, &keys);
        let server = Server::start(&data, free_port(), free_port());
        (keys, server)
    }

    /// A new API token with `role` (`viewer`, `operator`, `admin`).
    pub fn api_token(&self, name: &str, role: &str) -> String {
        self.new_token(
            "/v1/tokens",
            serde_json::json!({"name": name, "role": role}),
        )
    }

    /// An enrollment token (unlimited uses) that gives its devices `tags`.
    pub fn enrollment_token(&self, tags: Value) -> String {
        self.new_token(
            "/v1/enrollment-tokens",
            serde_json::json!({"name": "test", "tags": tags}),
        )
    }

    fn new_token(&self, path: &str, spec: Value) -> String {
        self.api(
            "POST",
            path,
            Some(("application/json", spec.to_string().into_bytes())),
        )["token"]
            .as_str()
            .expect("token")
            .to_string()
    }

    /// Uploads `bundle`; its sha256 hex.
    pub fn push(&self, bundle: Vec<u8>) -> String {
        let v = self.api(
            "POST",
            "/v1/bundles",
            Some(("application/octet-stream", bundle)),
        );
        v["sha256"].as_str().expect("sha256").to_string()
    }

    /// Starts a rollout of bundle `sha` to `hw=x86`; its id.
    pub fn roll(&self, sha: &str, phases: Value, gates: Value, on_gate_failure: &str) -> String {
        let spec = serde_json::json!({"bundle": format!("sha256:{sha}"), "selector": "hw=x86",
            "phases": phases, "gates": gates, "on_gate_failure": on_gate_failure});
        self.api(
            "POST",
            "/v1/rollouts",
            Some(("application/json", spec.to_string().into_bytes())),
        )["id"]
            .as_str()
            .expect("id")
            .to_string()
    }

    /// A rollout's status.
    pub fn rollout_status(&self, id: &str) -> Value {
        self.api("GET", &format!("/v1/rollouts/{id}"), None)["status"].clone()
    }
}

impl Agent {
    /// The active version of the digits model, from the agent's status.
    pub fn active_version(&self) -> Option<String> {
        self.status().and_then(|s| {
            s["models"][0]["slots"]["active"]["version"]
                .as_str()
                .map(str::to_string)
        })
    }
}

/// Waits until rollout `id` has completed and every agent in `agents` runs `version`; panics
/// after `timeout` with the rollout's state.
pub fn wait_converged(
    server: &Server,
    id: &str,
    agents: &[Agent],
    version: &str,
    timeout: Duration,
) {
    wait_for(
        &format!("{id} to complete with every device on {version}"),
        timeout,
        || {
            let done = server.rollout_status(id) == "completed";
            (done
                && agents
                    .iter()
                    .all(|a| a.active_version().as_deref() == Some(version)))
            .then_some(())
        },
        || {
            server
                .api("GET", &format!("/v1/rollouts/{id}"), None)
                .to_string()
        },
    );
}
