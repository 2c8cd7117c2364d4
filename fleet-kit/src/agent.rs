//! `edge-agent` as a child process: its config ([`AgentConfig`], or any TOML text), its log
//! (appended to `agent.log` in its directory; [`AgentProcess::log_text`] is this start's part),
//! its local API. Killed (SIGKILL) when dropped.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde_json::Value;

/// The settings the fleet's tools give an agent; [`AgentConfig::to_toml`] writes them.
#[derive(Clone, Debug, Default)]
pub struct AgentConfig {
    /// `device_id`.
    pub device_id: String,
    /// `state_dir`.
    pub state_dir: PathBuf,
    /// `trust_root`.
    pub trust_root: PathBuf,
    /// `root_key`.
    pub root_key: PathBuf,
    /// `[api] listen` (`127.0.0.1:PORT`).
    pub api: String,
    /// `[server] url`; no `[server]` section without it.
    pub server_url: Option<String>,
    /// `[server] mqtt`.
    pub mqtt_url: String,
    /// `[server] ca`.
    pub ca: Option<PathBuf>,
    /// `[server] enrollment_token`.
    pub enrollment_token: String,
    /// `[server] tags`.
    pub tags: Vec<(String, String)>,
    /// `[server] allow_plaintext`.
    pub allow_plaintext: bool,
    /// `[server] retry_max_seconds`.
    pub retry_max_seconds: u64,
    /// `[telemetry] window_seconds`, when set.
    pub telemetry_window_seconds: Option<u64>,
    /// `[trial] check_interval_ms`, when set.
    pub trial_check_ms: Option<u64>,
    /// More TOML, appended as it is (sections of its own).
    pub extra: String,
}

impl AgentConfig {
    /// The config file's text.
    pub fn to_toml(&self) -> String {
        let q = |s: &str| toml::Value::String(s.to_string()).to_string();
        let p = |p: &Path| q(&p.display().to_string());
        let mut t = format!(
            "device_id = {}\nstate_dir = {}\ntrust_root = {}\nroot_key = {}\n[api]\nlisten = {}\n",
            q(&self.device_id),
            p(&self.state_dir),
            p(&self.trust_root),
            p(&self.root_key),
            q(&self.api)
        );
        if let Some(url) = &self.server_url {
            t += &format!(
                "[server]\nurl = {}\nmqtt = {}\nenrollment_token = {}\nallow_plaintext = {}\n\
                 retry_max_seconds = {}\n",
                q(url),
                q(&self.mqtt_url),
                q(&self.enrollment_token),
                self.allow_plaintext,
                self.retry_max_seconds.max(1)
            );
            if let Some(ca) = &self.ca {
                t += &format!("ca = {}\n", p(ca));
            }
            if !self.tags.is_empty() {
                let tags: Vec<String> = self
                    .tags
                    .iter()
                    .map(|(k, v)| format!("{k} = {}", q(v)))
                    .collect();
                t += &format!("tags = {{ {} }}\n", tags.join(", "));
            }
        }
        if let Some(w) = self.telemetry_window_seconds {
            t += &format!("[telemetry]\nwindow_seconds = {w}\n");
        }
        if let Some(ms) = self.trial_check_ms {
            t += &format!("[trial]\ncheck_interval_ms = {ms}\n");
        }
        t + &self.extra
    }
}

/// A running `edge-agent`.
pub struct AgentProcess {
    /// The process.
    pub child: Child,
    /// Its local API address (`127.0.0.1:PORT`).
    pub api: String,
    /// Its config file.
    pub config: PathBuf,
    /// Its log file (every start's output, appended).
    pub log: PathBuf,
    /// Where this start's output begins in the log.
    log_from: usize,
}

impl AgentProcess {
    /// Writes `config` (TOML text) to `dir/agent.toml` and starts `agent_bin` on it, with
    /// `env`; does not wait (see [`AgentProcess::wait_listening`], [`AgentProcess::wait_ready`]).
    pub fn spawn(
        agent_bin: &Path,
        dir: &Path,
        config: &str,
        env: &[(String, String)],
    ) -> Result<AgentProcess> {
        std::fs::create_dir_all(dir)?;
        let path = dir.join("agent.toml");
        std::fs::write(&path, config)?;
        let parsed: toml::Table = toml::from_str(config).context("the agent config")?;
        let api = parsed
            .get("api")
            .and_then(|a| a.get("listen"))
            .and_then(|l| l.as_str())
            .context("the agent config has no [api] listen")?
            .to_string();
        let log = dir.join("agent.log");
        let log_from = std::fs::metadata(&log).map_or(0, |m| m.len() as usize);
        let child = Command::new(agent_bin)
            .args(["run", "--config"])
            .arg(&path)
            .env("EDGE_AGENT_LOG", "info")
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::null())
            .stderr(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&log)?,
            )
            .spawn()
            .context("starting edge-agent")?;
        Ok(AgentProcess {
            child,
            api,
            config: path,
            log,
            log_from,
        })
    }

    /// Starts an agent whose local API listens on a free port: `config(api)` gives the config
    /// for an API address; if the port is taken before the agent binds it (another test, or
    /// some connection's ephemeral port), it starts again on another (5 tries).
    pub fn start_on_free_port(
        agent_bin: &Path,
        dir: &Path,
        config: impl Fn(&str) -> String,
        env: &[(String, String)],
    ) -> Result<AgentProcess> {
        for _ in 0..5 {
            let api = format!("127.0.0.1:{}", crate::free_port()?);
            let mut agent = AgentProcess::spawn(agent_bin, dir, &config(&api), env)?;
            match agent.wait_listening(Duration::from_secs(20))? {
                Listening::Yes | Listening::Exited => return Ok(agent),
                Listening::PortTaken => continue,
            }
        }
        bail!("no free port for the agent's local API after 5 tries")
    }

    /// Waits for the log to say the local API listens, or the process to exit.
    pub fn wait_listening(&mut self, timeout: Duration) -> Result<Listening> {
        let line = format!("local API listening addr={}", self.api);
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            let text = self.log_text();
            if text.contains(&line) {
                return Ok(Listening::Yes);
            }
            if let Some(_status) = self.child.try_wait()? {
                let text = self.log_text();
                return Ok(if text.contains("Address already in use") {
                    Listening::PortTaken
                } else {
                    Listening::Exited
                });
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Ok(Listening::Exited)
    }

    /// Waits until `/healthz` answers 200; fails if the process exits or after `timeout`.
    pub fn wait_ready(&mut self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            if crate::http::get(&self.url("/healthz")).0 == 200 {
                return Ok(());
            }
            if let Some(status) = self.child.try_wait()? {
                bail!("agent exited with {status}:\n{}", self.log_text());
            }
            if Instant::now() >= deadline {
                bail!("agent not ready after {timeout:?}:\n{}", self.log_text());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits for the process to end by itself (a failpoint); its exit status.
    pub fn wait_exit(&mut self, timeout: Duration) -> Result<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Ok(status);
            }
            if Instant::now() >= deadline {
                bail!("the agent did not exit:\n{}", self.log_text());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// A URL on its local API.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.api)
    }

    /// Its `/v1/status`, if it answers.
    pub fn status(&self) -> Option<Value> {
        let (code, text) = crate::http::get(&self.url("/v1/status"));
        (code == 200)
            .then(|| serde_json::from_str(&text).ok())
            .flatten()
    }

    /// What this start has logged so far.
    pub fn log_text(&self) -> String {
        let bytes = std::fs::read(&self.log).unwrap_or_default();
        String::from_utf8_lossy(bytes.get(self.log_from..).unwrap_or_default()).into_owned()
    }

    /// kill -9, and reaped.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What [`AgentProcess::wait_listening`] saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listening {
    /// The local API listens.
    Yes,
    /// The process exited because its API port was taken.
    PortTaken,
    /// The process exited for another reason, or did not say it listens in time.
    Exited,
}

impl Drop for AgentProcess {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- edge-agent log ({}) ---\n{}", self.api, self.log_text());
        }
        self.kill9();
    }
}
