//! The agent's configuration: a TOML file, then environment overrides.
//!
//! Any key can be overridden by `EDGE_AGENT_<KEY>`, with `__` between nesting levels:
//! `EDGE_AGENT_STATE_DIR=/data/ef`, `EDGE_AGENT_API__LISTEN=0.0.0.0:8470`,
//! `EDGE_AGENT_SERVER__URL=http://ota:8080`. A value that parses as TOML (a number, a boolean,
//! an inline table such as `{ site = "lab" }`) is taken as such, anything else as a string.
//! Unknown keys are errors, so a typo does not silently fall back to a default.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use edge_sensors::mpu6050::AccelRange;
use edge_sensors::sim::SimSpec;
use serde::{Deserialize, Serialize};

/// Prefix of the environment overrides.
pub const ENV_PREFIX: &str = "EDGE_AGENT_";

/// Variables with the prefix that are not config keys: the log filter and the test failpoint.
pub const NOT_CONFIG: [&str; 2] = ["EDGE_AGENT_LOG", crate::failpoint::ENV];

/// The whole configuration.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Device id; default: derived from `/etc/machine-id`.
    #[serde(default)]
    pub device_id: Option<String>,
    /// Where keys, the state database and bundles live.
    #[serde(default = "default_state_dir")]
    pub state_dir: PathBuf,
    /// The fleet trust document (`trust.cbor`).
    #[serde(default = "default_trust_root")]
    pub trust_root: PathBuf,
    /// The fleet root public key the trust document must be signed by. Without it the trust
    /// document provisioned in the image is taken as it is (self-signed).
    #[serde(default)]
    pub root_key: Option<PathBuf>,
    /// Local inference API.
    #[serde(default)]
    pub api: ApiConfig,
    /// The OTA server; absent = offline (sideload only).
    #[serde(default)]
    pub server: Option<ServerConfig>,
    /// Bundles shipped with the image.
    #[serde(default)]
    pub sideload: Option<SideloadConfig>,
    /// Telemetry windows and the outbox bound.
    #[serde(default)]
    pub telemetry: TelemetryConfig,
    /// Trial window and crash-loop policy.
    #[serde(default)]
    pub trial: TrialConfig,
    /// Answers kept for ground truth from apps (`POST /v1/models/{name}/feedback`).
    #[serde(default)]
    pub feedback: FeedbackConfig,
    /// Threads for inference per model (default: the bundle's hint, else the engine's).
    #[serde(default)]
    pub inference_threads: Option<u32>,
    /// Engine for every model: "auto" (cuda, then gpu, then cpu), "cpu", "gpu" or "cuda"
    /// (default: each bundle's hint, else cpu). A model the engine cannot run loads on the CPU;
    /// the `verified` event and `GET /v1/models` say why.
    #[serde(default)]
    pub inference_engine: Option<edge_runtime::engine::EngineKind>,
    /// `[[sensor]]` sources feeding models (streaming inference).
    #[serde(default, rename = "sensor")]
    pub sensors: Vec<SensorConfig>,
}

/// `[api]`
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiConfig {
    /// TCP address; `""` turns TCP off.
    #[serde(default = "default_listen")]
    pub listen: String,
    /// Unix socket path (in addition to, or instead of, TCP).
    #[serde(default)]
    pub socket: Option<PathBuf>,
    /// Largest request body, bytes (larger → 413).
    #[serde(default = "default_max_body")]
    pub max_body_bytes: usize,
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            listen: default_listen(),
            socket: None,
            max_body_bytes: default_max_body(),
        }
    }
}

/// `[server]`
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// HTTP base URL (enrollment, artifacts).
    pub url: String,
    /// MQTT broker, `mqtt://host:port`.
    pub mqtt: String,
    /// One-time enrollment token.
    #[serde(default)]
    pub enrollment_token: Option<String>,
    /// Device tags (cohort selection).
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    /// Download bandwidth cap, KiB/s (default: none).
    #[serde(default)]
    pub max_download_kib_per_s: Option<u64>,
    /// Longest wait between download retries and broker reconnects, seconds.
    #[serde(default = "default_retry_max")]
    pub retry_max_seconds: u64,
    /// Download attempts before a model's reconcile is reported failed (retried at the next
    /// desired state or restart).
    #[serde(default = "default_attempts")]
    pub download_attempts: u32,
    /// The fleet CA (PEM) to pin for https:// and mqtts:// (`DATA/tls/ca.pem` of the server);
    /// without it, the public web PKI roots are trusted.
    #[serde(default)]
    pub ca: Option<PathBuf>,
    /// Allow http:// and mqtt:// (device token in clear; closed networks and tests only).
    #[serde(default)]
    pub allow_plaintext: bool,
}

impl ServerConfig {
    /// The fleet CA (`ca`), read: checked when the config was loaded, so a failure here is a
    /// file that changed since; it falls back to the public roots and the handshake says why.
    pub fn ca_pem(&self) -> Option<Vec<u8>> {
        self.ca
            .as_deref()
            .and_then(|p| match crate::tls::read_ca(p) {
                Ok(pem) => Some(pem),
                Err(e) => {
                    tracing::error!(error = %e, "fleet CA");
                    None
                }
            })
    }
}

/// `[sideload]`
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SideloadConfig {
    /// Directory of `.efb` files installed at start.
    pub dir: PathBuf,
}

/// `[telemetry]`
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TelemetryConfig {
    /// Aggregation window, seconds.
    #[serde(default = "default_window")]
    pub window_seconds: u64,
    /// Outbox bound on disk, bytes (oldest telemetry dropped first when full).
    #[serde(default = "default_outbox_bytes")]
    pub outbox_max_bytes: u64,
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        TelemetryConfig {
            window_seconds: default_window(),
            outbox_max_bytes: default_outbox_bytes(),
        }
    }
}

/// `[feedback]`
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FeedbackConfig {
    /// Answers kept per model for feedback (the oldest forgotten first); 0 turns it off.
    #[serde(default = "default_feedback_answers")]
    pub keep_answers: usize,
    /// Longest an answer is kept, seconds.
    #[serde(default = "default_feedback_seconds")]
    pub keep_seconds: u64,
}

impl Default for FeedbackConfig {
    fn default() -> Self {
        FeedbackConfig {
            keep_answers: default_feedback_answers(),
            keep_seconds: default_feedback_seconds(),
        }
    }
}

impl FeedbackConfig {
    /// As the runtime's limits.
    pub fn limits(&self) -> edge_runtime::feedback::FeedbackLimits {
        edge_runtime::feedback::FeedbackLimits {
            answers: self.keep_answers,
            max_age: std::time::Duration::from_secs(self.keep_seconds),
        }
    }
}

fn default_feedback_answers() -> usize {
    10_000
}

fn default_feedback_seconds() -> u64 {
    3600
}

/// `[trial]`
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrialConfig {
    /// A trial whose process has started more than this many times is rolled back (crash loop).
    #[serde(default = "default_max_boots")]
    pub max_boots: u32,
    /// How often the trial is evaluated, milliseconds.
    #[serde(default = "default_check_ms")]
    pub check_interval_ms: u64,
}

impl Default for TrialConfig {
    fn default() -> Self {
        TrialConfig {
            max_boots: default_max_boots(),
            check_interval_ms: default_check_ms(),
        }
    }
}

fn default_state_dir() -> PathBuf {
    "/var/lib/edgefleet".into()
}
fn default_trust_root() -> PathBuf {
    "/etc/edgefleet/trust.cbor".into()
}
fn default_listen() -> String {
    "127.0.0.1:8470".into()
}
fn default_max_body() -> usize {
    16 * 1024 * 1024
}
fn default_retry_max() -> u64 {
    300
}
fn default_attempts() -> u32 {
    8
}
fn default_window() -> u64 {
    60
}
fn default_outbox_bytes() -> u64 {
    64 * 1024 * 1024
}
fn default_max_boots() -> u32 {
    3
}
fn default_check_ms() -> u64 {
    500
}

/// A configuration that could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// File unreadable.
    #[error("cannot read config {path}: {source}")]
    Io {
        /// File.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// Not valid TOML, or a key/value the agent does not know.
    #[error("config {origin}: {message}")]
    Invalid {
        /// File or env var.
        origin: String,
        /// What is wrong.
        message: String,
    },
}

impl Config {
    /// Reads `path` (if given) and applies the `EDGE_AGENT_*` overrides from the process
    /// environment.
    pub fn load(path: Option<&Path>) -> Result<Config, ConfigError> {
        let text = match path {
            Some(p) => std::fs::read_to_string(p).map_err(|source| ConfigError::Io {
                path: p.to_path_buf(),
                source,
            })?,
            None => String::new(),
        };
        let origin = path.map_or("(none)".to_string(), |p| p.display().to_string());
        Config::from_parts(&text, &origin, std::env::vars())
    }

    /// Parses TOML `text` and applies overrides from `env` (name, value) pairs.
    pub fn from_parts(
        text: &str,
        origin: &str,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        let mut table: toml::Table = toml::from_str(text).map_err(|e| ConfigError::Invalid {
            origin: origin.to_string(),
            message: e.to_string(),
        })?;
        let mut overrides: Vec<(String, String)> = env
            .into_iter()
            .filter(|(k, _)| k.starts_with(ENV_PREFIX) && !NOT_CONFIG.contains(&k.as_str()))
            .collect();
        overrides.sort();
        for (name, value) in overrides {
            let path: Vec<String> = name[ENV_PREFIX.len()..]
                .split("__")
                .map(|s| s.to_ascii_lowercase())
                .collect();
            if path.iter().any(|s| s.is_empty()) {
                continue;
            }
            set_path(&mut table, &path, parse_value(&value)).map_err(|message| {
                ConfigError::Invalid {
                    origin: name.clone(),
                    message,
                }
            })?;
        }
        let config: Config =
            table
                .try_into()
                .map_err(|e: toml::de::Error| ConfigError::Invalid {
                    origin: origin.to_string(),
                    message: e.to_string(),
                })?;
        config.check().map_err(|message| ConfigError::Invalid {
            origin: origin.to_string(),
            message,
        })?;
        Ok(config)
    }

    fn check(&self) -> Result<(), String> {
        if self.feedback.keep_answers > 1_000_000 {
            return Err("feedback.keep_answers must be at most 1000000".into());
        }
        if self.telemetry.window_seconds == 0 {
            return Err("telemetry.window_seconds must be at least 1".into());
        }
        if self.telemetry.outbox_max_bytes < 64 * 1024 {
            return Err("telemetry.outbox_max_bytes must be at least 65536".into());
        }
        if let Some(s) = &self.server {
            let (_, _, mqtt_tls) = parse_mqtt_url(&s.mqtt)?;
            if !(s.url.starts_with("http://") || s.url.starts_with("https://")) {
                return Err(format!(
                    "server.url '{}' must start with http:// or https://",
                    s.url
                ));
            }
            let http_tls = s.url.starts_with("https://");
            if (!http_tls || !mqtt_tls) && !s.allow_plaintext {
                return Err(format!(
                    "server.url '{}' / server.mqtt '{}' are plaintext: use https:// and mqtts:// \
                     (with server.ca), or set server.allow_plaintext = true on a closed network",
                    s.url, s.mqtt
                ));
            }
            if (http_tls || mqtt_tls) && !cfg!(feature = "tls") {
                return Err(
                    "https:// and mqtts:// need an edge-agent built with the 'tls' feature".into(),
                );
            }
            if let Some(ca) = &s.ca {
                crate::tls::read_ca(ca)?;
            }
        }
        if self.api.listen.is_empty() && self.api.socket.is_none() {
            return Err("api: set listen or socket (or both)".into());
        }
        let mut names = std::collections::BTreeSet::new();
        for sensor in &self.sensors {
            sensor.validate()?;
            if !names.insert(sensor.name.as_str()) {
                return Err(format!(
                    "two [[sensor]] sections are named '{}'",
                    sensor.name
                ));
            }
        }
        Ok(())
    }

    /// Path of the state database.
    pub fn db_path(&self) -> PathBuf {
        self.state_dir.join("state.redb")
    }
}

/// `[[sensor]]`: one IMU feeding one model.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SensorConfig {
    /// Name in the API and metrics.
    pub name: String,
    /// Chip driver; only `mpu6050` today (also MPU-6500/9250).
    #[serde(default = "sensor_default_driver")]
    pub driver: String,
    /// `/dev/i2c-N` (needs the `i2c` feature, on by default), or `sim:...` for the emulated chip
    /// (see `edge_sensors::sim::SimSpec`: `sim:healthy`, `sim:worn`, `sim:wears-after=60`, with
    /// faults `nack-every=N`, `garbage-every=N`, `absent`, `foreign`).
    pub bus: String,
    /// 7-bit I²C address (0x68, or 0x69 with AD0 high).
    #[serde(default = "sensor_default_address")]
    pub address: u8,
    /// Samples per second, 4..=1000.
    #[serde(default = "sensor_default_rate")]
    pub rate_hz: u32,
    /// Samples per window (the model's last input dimension).
    #[serde(default = "sensor_default_window")]
    pub window: usize,
    /// The model each window is fed to: its input is `[1, 3, window]`, acceleration x/y/z in g.
    pub model: String,
    /// Accelerometer range in g: 2, 4, 8 or 16.
    #[serde(default = "sensor_default_range")]
    pub accel_range_g: u32,
}

fn sensor_default_driver() -> String {
    "mpu6050".into()
}
fn sensor_default_address() -> u8 {
    0x68
}
fn sensor_default_rate() -> u32 {
    200
}
fn sensor_default_window() -> usize {
    128
}
fn sensor_default_range() -> u32 {
    4
}

impl SensorConfig {
    /// Checks what can be checked before the source starts.
    pub fn validate(&self) -> Result<(), String> {
        let who = format!("[[sensor]] '{}'", self.name);
        if self.driver != "mpu6050" {
            return Err(format!(
                "{who}: unknown driver '{}' (supported: mpu6050)",
                self.driver
            ));
        }
        if !(4..=1000).contains(&self.rate_hz) {
            return Err(format!("{who}: rate_hz must be 4..=1000"));
        }
        if !(8..=65_536).contains(&self.window) {
            return Err(format!("{who}: window must be 8..=65536 samples"));
        }
        if self.address > 0x7f {
            return Err(format!("{who}: address must be a 7-bit I2C address"));
        }
        self.accel_range()?;
        if let Some(spec) = self.bus.strip_prefix("sim:") {
            SimSpec::parse(spec).map_err(|e| format!("{who}: {e}"))?;
        } else if !cfg!(feature = "i2c") {
            return Err(format!(
                "{who}: this edge-agent was built without the `i2c` feature; only sim: buses work"
            ));
        }
        Ok(())
    }

    /// The accelerometer range the chip is set to.
    pub fn accel_range(&self) -> Result<AccelRange, String> {
        Ok(match self.accel_range_g {
            2 => AccelRange::G2,
            4 => AccelRange::G4,
            8 => AccelRange::G8,
            16 => AccelRange::G16,
            other => {
                return Err(format!(
                    "[[sensor]] '{}': accel_range_g {other} is not 2, 4, 8 or 16",
                    self.name
                ))
            }
        })
    }
}

/// A value from the environment: TOML if it parses as a TOML value, else a string.
fn parse_value(raw: &str) -> toml::Value {
    let doc = format!("v = {raw}");
    match toml::from_str::<toml::Table>(&doc) {
        Ok(mut t) => t.remove("v").unwrap_or_else(|| raw.into()),
        Err(_) => toml::Value::String(raw.to_string()),
    }
}

fn set_path(table: &mut toml::Table, path: &[String], value: toml::Value) -> Result<(), String> {
    let (last, parents) = path.split_last().expect("non-empty path");
    let mut t = table;
    for p in parents {
        let entry = t
            .entry(p.clone())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        t = entry
            .as_table_mut()
            .ok_or_else(|| format!("'{p}' is not a table"))?;
    }
    t.insert(last.clone(), value);
    Ok(())
}

/// `mqtt://host:port` (port default 1883) → (host, port, tls).
pub fn parse_mqtt_url(url: &str) -> Result<(String, u16, bool), String> {
    let (rest, tls, default_port) = if let Some(r) = url.strip_prefix("mqtt://") {
        (r, false, 1883)
    } else if let Some(r) = url.strip_prefix("mqtts://") {
        (r, true, 8883)
    } else {
        return Err(format!(
            "server.mqtt '{url}' must start with mqtt:// or mqtts://"
        ));
    };
    let rest = rest.trim_end_matches('/');
    let (host, port) = match rest.rsplit_once(':') {
        Some((h, p)) => (
            h.to_string(),
            p.parse::<u16>()
                .map_err(|_| format!("server.mqtt '{url}': bad port '{p}'"))?,
        ),
        None => (rest.to_string(), default_port),
    };
    if host.is_empty() {
        return Err(format!("server.mqtt '{url}' has no host"));
    }
    Ok((host, port, tls))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn the_documented_example_parses_and_env_overrides_win() {
        let text = r#"
device_id = "dev-001"
state_dir = "/var/lib/edgefleet"
trust_root = "/etc/edgefleet/trust.cbor"
[api]
listen = "127.0.0.1:8470"
[server]
url = "https://fleet.example:8080"
mqtt = "mqtts://fleet.example:8883"
enrollment_token = "tok"
tags = { site = "lab", hw = "x86" }
[sideload]
dir = "/opt/edgefleet/bundles"
"#;
        let c = Config::from_parts(
            text,
            "test",
            env(&[
                ("EDGE_AGENT_STATE_DIR", "/data/ef"),
                ("EDGE_AGENT_API__LISTEN", "0.0.0.0:9000"),
                ("EDGE_AGENT_SERVER__TAGS", r#"{ site = "field" }"#),
                ("EDGE_AGENT_TELEMETRY__WINDOW_SECONDS", "5"),
                ("OTHER", "x"),
                ("EDGE_AGENT_LOG", "debug"),
            ]),
        )
        .unwrap();
        assert_eq!(c.device_id.as_deref(), Some("dev-001"));
        assert_eq!(c.state_dir, PathBuf::from("/data/ef"));
        assert_eq!(c.api.listen, "0.0.0.0:9000");
        let s = c.server.unwrap();
        assert_eq!(s.tags.get("site").map(String::as_str), Some("field"));
        assert_eq!(s.tags.get("hw"), None);
        assert_eq!(c.telemetry.window_seconds, 5);
        assert_eq!(
            c.sideload.unwrap().dir,
            PathBuf::from("/opt/edgefleet/bundles")
        );
    }

    #[test]
    fn typos_and_bad_values_are_named() {
        let e = Config::from_parts("stat_dir = \"/x\"", "f.toml", env(&[])).unwrap_err();
        assert!(e.to_string().contains("stat_dir"), "{e}");
        let e = Config::from_parts(
            "[server]\nurl = \"http://a\"\nmqtt = \"tcp://b\"",
            "f.toml",
            env(&[]),
        )
        .unwrap_err();
        assert!(e.to_string().contains("mqtt://"), "{e}");
        let e = Config::from_parts(
            "[server]\nurl = \"http://a\"\nmqtt = \"mqtt://b\"",
            "f.toml",
            env(&[]),
        )
        .unwrap_err();
        assert!(e.to_string().contains("allow_plaintext"), "{e}");
        let e = Config::from_parts(
            "[server]\nurl = \"https://a\"\nmqtt = \"mqtts://b\"\nca = \"/nonexistent/ca.pem\"",
            "f.toml",
            env(&[]),
        )
        .unwrap_err();
        assert!(e.to_string().contains("server.ca"), "{e}");
        let e = Config::from_parts("", "f", env(&[("EDGE_AGENT_API__LISTEN", "")])).unwrap_err();
        assert!(e.to_string().contains("listen or socket"), "{e}");
    }

    #[test]
    fn mqtt_urls() {
        assert_eq!(
            parse_mqtt_url("mqtt://h:1884").unwrap(),
            ("h".into(), 1884, false)
        );
        assert_eq!(
            parse_mqtt_url("mqtts://h").unwrap(),
            ("h".into(), 8883, true)
        );
        assert!(parse_mqtt_url("mqtt://:1").is_err());
        assert!(parse_mqtt_url("mqtt://h:x").is_err());
    }
}
