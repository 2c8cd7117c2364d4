//! Fixtures for the end-to-end fleet tests, on the fleet kit (`edge-fleet-kit`): a fresh fleet
//! (root, signing and director keys, trust document), the real `ota-server` and `edge-agent`
//! binaries as child processes on loopback, and small HTTP helpers, in the shape the scenarios
//! use (panics instead of errors). The binaries are the workspace's own build (`cargo test
//! --workspace` builds them first); when they are missing they are built once with `cargo build`.

#![forbid(unsafe_code)]

use std::ops::{Deref, DerefMut};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use edge_fleet_kit::agent::{AgentConfig, AgentProcess};
use edge_fleet_kit::fixtures::{quick_trial, Digits};
use edge_fleet_kit::keys::FleetKeys;
use edge_fleet_kit::server::{ServeOptions, ServerProcess};
use edge_fleet_kit::traffic::Images;
use edge_pack::pack::PackSpec;
use serde_json::Value;

pub use edge_fleet_kit::proxy;
pub use edge_fleet_kit::wait::wait_for;

pub mod mosquitto;
pub mod postgres;
pub mod staged;
pub mod webdriver;

/// The workspace root.
pub fn workspace() -> PathBuf {
    edge_fleet_kit::binaries::workspace()
}

/// Path of a workspace binary, built if missing.
pub fn binary(name: &str) -> PathBuf {
    edge_fleet_kit::binaries::binary(name).unwrap_or_else(|e| panic!("{e:#}"))
}

/// A free loopback port.
pub fn free_port() -> u16 {
    edge_fleet_kit::free_port().unwrap()
}

/// A fleet's keys and trust document, in a directory.
pub struct Keys {
    /// Holds the files.
    pub dir: PathBuf,
    keys: FleetKeys,
}

impl Deref for Keys {
    type Target = FleetKeys;
    fn deref(&self) -> &FleetKeys {
        &self.keys
    }
}

impl Keys {
    /// New keys in `dir`.
    pub fn new(dir: &Path) -> Keys {
        Keys {
            dir: dir.to_path_buf(),
            keys: FleetKeys::create(dir).unwrap(),
        }
    }

    /// The digits sample model at `version` with a quick trial (1 s, 3 requests), after
    /// `edit`, signed.
    pub fn digits(&self, version: &str, edit: impl FnOnce(&mut PackSpec)) -> Vec<u8> {
        Digits::new()
            .version(version)
            .health(quick_trial(1, 3))
            .edit(edit)
            .pack(&self.signer)
            .unwrap()
    }
}

/// Fleet CAs of the servers started in this process (PEM), trusted by [`call`].
static CAS: std::sync::Mutex<Vec<u8>> = std::sync::Mutex::new(Vec::new());

/// One HTTP call, trusting the fleet CAs of the servers this process started: (status, body
/// text); a failed connection is status 0.
pub fn call(
    method: &str,
    url: &str,
    token: Option<&str>,
    body: Option<(&str, Vec<u8>)>,
) -> (u16, String) {
    let client = edge_fleet_kit::http::client(Some(&CAS.lock().unwrap()));
    let auth = token.map(edge_fleet_kit::http::bearer);
    let headers: Vec<(&str, &str)> = auth.iter().map(|(k, v)| (*k, v.as_str())).collect();
    edge_fleet_kit::http::call(&client, method, url, &headers, body)
}

/// A running `ota-server serve` (the kit's process, with the scenarios' helpers).
pub struct Server(ServerProcess);

impl Deref for Server {
    type Target = ServerProcess;
    fn deref(&self) -> &ServerProcess {
        &self.0
    }
}

impl DerefMut for Server {
    fn deref_mut(&mut self) -> &mut ServerProcess {
        &mut self.0
    }
}

impl Server {
    /// `init`s `data` with `keys`.
    pub fn init(data: &Path, keys: &Keys) {
        Server::init_with(data, keys, &[]);
    }

    /// [`Server::init`] with more `init` arguments (`--store URL`).
    pub fn init_with(data: &Path, keys: &Keys, extra: &[&str]) {
        ServerProcess::init_with(&binary("ota-server"), data, keys, extra).unwrap();
        CAS.lock()
            .unwrap()
            .extend(std::fs::read(data.join("tls/ca.pem")).unwrap());
    }

    /// Starts `serve` (TLS on both listeners) on the given ports and waits until it is
    /// connected to its broker.
    pub fn start(data: &Path, http_port: u16, mqtt_port: u16) -> Server {
        Server::start_with(data, http_port, mqtt_port, &[])
    }

    /// [`Server::start`] with more `serve` arguments. With `--broker URL` among them the server
    /// uses that broker (as user [`mosquitto::SERVER_USER`]) and `mqtt_port` is the broker's.
    pub fn start_with(data: &Path, http_port: u16, mqtt_port: u16, extra: &[&str]) -> Server {
        let mut extra: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        let broker = extra.iter().position(|a| a == "--broker").map(|i| {
            let url = extra.remove(i + 1);
            extra.remove(i);
            url
        });
        let options = ServeOptions {
            http_port,
            mqtt_port,
            broker,
            extra,
            env: vec![
                (
                    "OTA_SERVER_BROKER_USERNAME".into(),
                    mosquitto::SERVER_USER.into(),
                ),
                ("OTA_SERVER_BROKER_PASSWORD".into(), "-".into()),
            ],
            log: None,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut server = ServerProcess::serve(&binary("ota-server"), data, &options, deadline)
            .unwrap_or_else(|e| panic!("{e:#}"));
        server.mqtt_port = mqtt_port;
        Server(server)
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

/// A running `edge-agent` (the kit's process, with its device id).
pub struct Agent {
    /// Device id.
    pub id: String,
    process: AgentProcess,
}

impl Deref for Agent {
    type Target = AgentProcess;
    fn deref(&self) -> &AgentProcess {
        &self.process
    }
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
        let mqtt = options
            .mqtt
            .clone()
            .unwrap_or_else(|| format!("mqtts://127.0.0.1:{}", server.mqtt_port));
        let config = |api: &str| {
            AgentConfig {
                device_id: id.into(),
                state_dir: dir.join("state"),
                trust_root: keys.trust.clone(),
                root_key: keys.root_pub.clone(),
                api: api.into(),
                server_url: Some(options.http.clone().unwrap_or_else(|| server.url.clone())),
                allow_plaintext: mqtt.starts_with("mqtt://"),
                mqtt_url: mqtt.clone(),
                ca: Some(server.ca()),
                enrollment_token: enrollment_token.into(),
                retry_max_seconds: 1,
                telemetry_window_seconds: Some(1),
                trial_check_ms: Some(100),
                ..AgentConfig::default()
            }
            .to_toml()
        };
        let process =
            AgentProcess::start_on_free_port(&binary("edge-agent"), dir, config, &options.env)
                .unwrap_or_else(|e| panic!("{id}: {e:#}"));
        Agent {
            id: id.into(),
            process,
        }
    }

    /// Waits for the process to end by itself (a failpoint); its exit status, or a panic after
    /// `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> std::process::ExitStatus {
        self.process
            .wait_exit(timeout)
            .unwrap_or_else(|e| panic!("{}: {e:#}", self.id))
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

/// Predictions of one fixed image (far from the model's reference data) sent to some agents in
/// the background, a round every 20 ms, until stopped or dropped.
pub struct Traffic(edge_fleet_kit::traffic::Traffic);

impl Traffic {
    /// Starts sending to `apis`.
    pub fn start(apis: Vec<String>) -> Traffic {
        let plan = edge_fleet_kit::traffic::Traffic::to(apis).images(Images::Constant);
        Traffic(plan.start())
    }

    /// Successful predictions so far.
    pub fn sent(&self) -> u64 {
        self.0.sent()
    }

    /// Stops sending (waits for the request in flight); the successful predictions, all told.
    pub fn stop(self) -> u64 {
        self.0.stop().0
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
