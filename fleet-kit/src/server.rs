//! `ota-server` on loopback: `init` a data directory with a fleet's keys, `serve` it (TLS on
//! both listeners; devices on its own MQTT endpoint or an external broker) and wait until it
//! listens to its devices. Killed when dropped.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::keys::FleetKeys;

/// How to serve.
#[derive(Clone, Debug, Default)]
pub struct ServeOptions {
    /// HTTP port (`0`: a free one).
    pub http_port: u16,
    /// The server's own MQTT port for devices (`0`: a free one); unused with `broker`.
    pub mqtt_port: u16,
    /// An external broker's URL (`--broker`) instead of the server's own endpoint.
    pub broker: Option<String>,
    /// More `serve` arguments.
    pub extra: Vec<String>,
    /// More environment variables.
    pub env: Vec<(String, String)>,
    /// The log file (default: `server-HTTPPORT.log` in the data directory).
    pub log: Option<PathBuf>,
}

/// A running `ota-server serve`.
pub struct ServerProcess {
    /// The process.
    pub child: Child,
    /// Its data directory.
    pub data: PathBuf,
    /// The HTTP base URL (`https://127.0.0.1:PORT`).
    pub url: String,
    /// Where devices connect: `mqtts://` to the server itself, or the external broker's URL.
    pub mqtt_url: String,
    /// The server's MQTT port (the external broker's when there is one).
    pub mqtt_port: u16,
    /// The admin token `init` wrote.
    pub admin: String,
    /// Its log file.
    pub log: PathBuf,
}

impl ServerProcess {
    /// `ota-server init` of `data` with `keys` (the fleet CA and admin token are made there).
    pub fn init(server_bin: &Path, data: &Path, keys: &FleetKeys) -> Result<()> {
        ServerProcess::init_with(server_bin, data, keys, &[])
    }

    /// [`ServerProcess::init`] with more arguments (`--store URL` for replicas).
    pub fn init_with(
        server_bin: &Path,
        data: &Path,
        keys: &FleetKeys,
        extra: &[&str],
    ) -> Result<()> {
        let out = Command::new(server_bin)
            .arg("init")
            .args(extra)
            .arg("--data")
            .arg(data)
            .arg("--trust")
            .arg(&keys.trust)
            .arg("--director-key")
            .arg(&keys.director_key)
            .arg("--root")
            .arg(&keys.root_pub)
            .output()
            .context("running ota-server init")?;
        if !out.status.success() {
            bail!("ota-server init: {}", String::from_utf8_lossy(&out.stderr));
        }
        Ok(())
    }

    /// `serve`s `data` (already `init`ed) and waits, until `deadline`, for its health to say it
    /// is connected to its broker.
    pub fn serve(
        server_bin: &Path,
        data: &Path,
        options: &ServeOptions,
        deadline: Instant,
    ) -> Result<ServerProcess> {
        let port = |p: u16| if p == 0 { crate::free_port() } else { Ok(p) };
        let (http_port, mqtt_port) = (port(options.http_port)?, port(options.mqtt_port)?);
        let log = options
            .log
            .clone()
            .unwrap_or_else(|| data.join(format!("server-{http_port}.log")));
        let mut serve = Command::new(server_bin);
        serve
            .arg("serve")
            .arg("--data")
            .arg(data)
            .args(["--http", &format!("127.0.0.1:{http_port}")])
            .args(["--tick-seconds", "1"]);
        let (mqtt_url, mqtt_port) = match &options.broker {
            Some(b) => {
                serve.args(["--broker", b]);
                let port = b.rsplit(':').next().and_then(|p| p.parse().ok());
                (b.clone(), port.unwrap_or(mqtt_port))
            }
            None => {
                serve.args(["--mqtt", &format!("127.0.0.1:{mqtt_port}")]);
                (format!("mqtts://127.0.0.1:{mqtt_port}"), mqtt_port)
            }
        };
        let child = serve
            .args(&options.extra)
            .env("OTA_SERVER_LOG", "info")
            .envs(options.env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log)?)
            .spawn()
            .context("starting ota-server serve")?;
        let admin = std::fs::read_to_string(data.join("admin.token"))
            .context("the admin token (was the data directory init'ed?)")?
            .trim()
            .to_string();
        let mut server = ServerProcess {
            child,
            data: data.to_path_buf(),
            url: format!("https://127.0.0.1:{http_port}"),
            mqtt_url,
            mqtt_port,
            admin,
            log,
        };
        server.wait_connected(deadline)?;
        Ok(server)
    }

    /// Waits for `/healthz` to report the broker connected (fails if the process exits).
    fn wait_connected(&mut self, deadline: Instant) -> Result<()> {
        let client = crate::http::client(Some(&self.ca_pem()?));
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                bail!("ota-server exited ({status}):\n{}", self.log_text());
            }
            let (code, body) = crate::http::call(&client, "GET", &self.u("/healthz"), &[], None);
            if code == 200 && body.contains("\"broker_connected\":true") {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!(
                    "timed out waiting for ota-server to connect to its broker; see {}",
                    self.log.display()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The fleet CA file (agents pin it).
    pub fn ca(&self) -> PathBuf {
        self.data.join("tls/ca.pem")
    }

    /// The fleet CA (PEM).
    pub fn ca_pem(&self) -> Result<Vec<u8>> {
        Ok(std::fs::read(self.ca())?)
    }

    /// The HTTP port.
    pub fn http_port(&self) -> u16 {
        self.url
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .expect("a port in the URL")
    }

    /// A URL on the server.
    pub fn u(&self, path: &str) -> String {
        format!("{}{path}", self.url)
    }

    /// The log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// kill -9, and reaped.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A copy of an `init`ed data directory for another replica of the same server (same fleet CA,
/// director key and trust document; its logs left behind).
pub fn copy_data_dir(from: &Path, to: &Path) -> Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_data_dir(&entry.path(), &target)?;
        } else if !entry.file_name().to_string_lossy().ends_with(".log") {
            std::fs::copy(entry.path(), &target)?;
        }
    }
    Ok(())
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- ota-server log ---\n{}", self.log_text());
        }
        self.kill9();
    }
}
