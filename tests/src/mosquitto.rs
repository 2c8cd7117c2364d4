//! A real Mosquitto broker for the interop scenario: a child `mosquitto` process on a free
//! loopback port, configured the way README's "external broker" section describes: the server
//! authenticates as `ota-server` and may use every fleet topic, and each device (MQTT username =
//! its device id) may only publish its own `up` and `status` topics and read its own `desired`
//! topic. `.ci/run` installs Mosquitto with `apt-get` (`.ci/deps`); `MOSQUITTO=/path` picks
//! another binary.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::free_port;

/// The MQTT user the server connects as.
pub const SERVER_USER: &str = "ota-server";

/// A running Mosquitto; killed when dropped.
pub struct Mosquitto {
    /// Its loopback port.
    pub port: u16,
    child: Child,
    log: std::path::PathBuf,
}

/// The ACL file: the server reads and writes the fleet's topics; a device only its own.
pub fn acl() -> String {
    format!(
        "user {SERVER_USER}\n\
         topic readwrite edgefleet/v1/devices/#\n\
         \n\
         pattern write edgefleet/v1/devices/%u/up\n\
         pattern write edgefleet/v1/devices/%u/status\n\
         pattern read edgefleet/v1/devices/%u/desired\n"
    )
}

impl Mosquitto {
    /// Starts `mosquitto` with its config, ACL and log in `dir`. The port comes from
    /// [`free_port`], which another process may take before Mosquitto binds it; such a start
    /// (Mosquitto exits) is retried on a fresh port, a few times.
    pub fn start(dir: &Path) -> Mosquitto {
        std::fs::create_dir_all(dir).unwrap();
        let mut failures = vec![];
        for _ in 0..5 {
            match Mosquitto::try_start(dir) {
                Ok(m) => return m,
                Err(log) => failures.push(log),
            }
        }
        panic!(
            "mosquitto did not start (5 ports tried); its logs:\n{}",
            failures.join("\n---\n")
        )
    }

    /// One start on a fresh port: `Err(its log)` when it exits before it runs. It is ready
    /// once its own log says so: a connection alone could reach whatever else holds the port.
    fn try_start(dir: &Path) -> Result<Mosquitto, String> {
        let port = free_port();
        let acl_path = dir.join("acl");
        std::fs::write(&acl_path, acl()).unwrap();
        // its stderr, written through a file this process opens: started as root, Mosquitto
        // drops to the `mosquitto` user, which cannot open a file in a private temporary dir
        let log = dir.join("mosquitto.log");
        let conf = dir.join("mosquitto.conf");
        std::fs::write(
            &conf,
            format!(
                "listener {port} 127.0.0.1\n\
                 allow_anonymous true\n\
                 acl_file {}\n\
                 persistence false\n\
                 max_inflight_messages 64\n\
                 log_dest stderr\n\
                 log_type error\nlog_type warning\nlog_type notice\nlog_type information\n",
                acl_path.display(),
            ),
        )
        .unwrap();
        // Debian puts it in /usr/sbin, which a user's PATH may lack
        let program = std::env::var("MOSQUITTO").unwrap_or_else(|_| {
            if Path::new("/usr/sbin/mosquitto").exists() {
                "/usr/sbin/mosquitto".into()
            } else {
                "mosquitto".into()
            }
        });
        let child = Command::new(&program)
            .arg("-c")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot run mosquitto ({e}): install it (`apt-get install mosquitto`, \
                     which .ci/run does)"
                )
            });
        let mut m = Mosquitto { port, child, log };
        let running = format!("Opening ipv4 listen socket on port {port}");
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(Some(status)) = m.child.try_wait() {
                return Err(format!("exited ({status}):\n{}", m.log_text()));
            }
            let log = m.log_text();
            if log.contains(&running) && log.contains(" running") {
                return Ok(m);
            }
            assert!(
                std::time::Instant::now() < deadline,
                "timed out waiting for mosquitto to run\n{log}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `mqtt://127.0.0.1:{port}`.
    pub fn url(&self) -> String {
        format!("mqtt://127.0.0.1:{}", self.port)
    }

    /// Its log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- mosquitto log ---\n{}", self.log_text());
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
