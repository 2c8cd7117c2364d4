//! A real Mosquitto broker for the interop scenario: a child `mosquitto` process on a free
//! loopback port, configured the way README's "external broker" section describes: the server
//! authenticates as `ota-server` and may use every fleet topic, and each device (MQTT username =
//! its device id) may only publish its own `up` and `status` topics and read its own `desired`
//! topic. `.ci/run` installs Mosquitto with `apt-get` (`.ci/deps`); `MOSQUITTO=/path` picks
//! another binary.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::{free_port, wait_for};

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
    /// Starts `mosquitto` with its config, ACL and log in `dir`.
    pub fn start(dir: &Path) -> Mosquitto {
        std::fs::create_dir_all(dir).unwrap();
        let port = free_port();
        let acl_path = dir.join("acl");
        std::fs::write(&acl_path, acl()).unwrap();
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
                 log_dest file {}\n\
                 log_type error\nlog_type warning\nlog_type notice\n",
                acl_path.display(),
                log.display()
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
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot run mosquitto ({e}): install it (`apt-get install mosquitto`, \
                     which .ci/run does)"
                )
            });
        let m = Mosquitto { port, child, log };
        wait_for(
            "mosquitto to listen",
            Duration::from_secs(10),
            || std::net::TcpStream::connect(("127.0.0.1", port)).ok(),
            || m.log_text(),
        );
        m
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
