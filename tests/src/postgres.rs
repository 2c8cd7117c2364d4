//! A PostgreSQL for the cluster scenario, run by `scripts/cluster.sh` (which installs it with
//! `apt-get` when missing) in a directory and on a port of the test's own; stopped and deleted
//! when dropped.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::{free_port, workspace};

/// A running PostgreSQL.
pub struct Postgres {
    /// `postgres://edgefleet@127.0.0.1:PORT/edgefleet`.
    pub url: String,
    dir: PathBuf,
    port: u16,
}

impl Postgres {
    /// Initializes and starts one with its data under `dir`.
    pub fn up(dir: &Path) -> Postgres {
        let mut pg = Postgres {
            url: String::new(),
            dir: dir.to_path_buf(),
            port: free_port(),
        };
        pg.url = pg.run("pg");
        pg
    }

    /// Stops it (fast shutdown: open connections are cut) and starts it again.
    pub fn restart(&self) {
        self.run("restart");
    }

    fn run(&self, what: &str) -> String {
        let out = Command::new(workspace().join("scripts/cluster.sh"))
            .arg(what)
            .env("EDGEFLEET_CLUSTER_DIR", &self.dir)
            .env("EDGEFLEET_PG_PORT", self.port.to_string())
            .output()
            .expect("running scripts/cluster.sh");
        assert!(
            out.status.success(),
            "scripts/cluster.sh {what}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let _ = Command::new(workspace().join("scripts/cluster.sh"))
            .arg("destroy")
            .env("EDGEFLEET_CLUSTER_DIR", &self.dir)
            .env("EDGEFLEET_PG_PORT", self.port.to_string())
            .output();
    }
}
