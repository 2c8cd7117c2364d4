//! A fleet server on this machine for `edgectl demo` and `edgectl simulate`, on the fleet kit
//! (`edge-fleet-kit`, which the tests use too): the `ota-server` and `edge-agent` binaries next to
//! `edgectl` (built if missing), fresh keys and a trust root, `ota-server init` + `serve` (TLS,
//! its own MQTT endpoint or an external broker) on free loopback ports, and the digits bundles both push.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Result;
use edge_fleet_kit::fixtures::{quick_trial, relabel, Digits};
use edge_fleet_kit::keys::FleetKeys;
use edge_fleet_kit::server::{copy_data_dir, ServeOptions, ServerProcess};
use edge_runtime::{SigningKey, Tensor};

use super::fleet::{call, ServerArgs};
use edge_protocol::rest::EnrollmentTokenCreated;

pub(crate) use edge_fleet_kit::binaries::binary;
pub(crate) use edge_fleet_kit::fixtures::{calibration_rows, test_labels, test_rows};

/// The digits bundle at `version`, with `calibration` rows as its reference data and a 2 s
/// trial (drift is the server's call: its PSI gate over the phase's devices).
pub(crate) fn bundle(
    signer: &SigningKey,
    version: &str,
    calibration: Tensor,
    mixed_up: bool,
) -> Result<Vec<u8>> {
    Digits::new()
        .version(version)
        .health(quick_trial(2, 5))
        .calibration(calibration)
        .edit(|spec| {
            if mixed_up {
                // the labels "5" and "6" swapped: the model answers as well, its names are wrong
                relabel(spec, |c| match c {
                    5 => 6,
                    6 => 5,
                    c => c,
                });
            }
        })
        .pack(signer)
}

/// A running `ota-server` with fresh keys, stopped when dropped.
pub(crate) struct LocalServer {
    /// The API as admin.
    pub api: ServerArgs,
    /// The fleet's keys and their files (trust document, root key).
    pub keys: FleetKeys,
    /// The server process: its data directory, where devices connect (`mqtt_url`), its log.
    pub process: ServerProcess,
    /// More replicas of it on the same PostgreSQL store ([`LocalServer::start_replicas`]).
    pub replicas: Vec<ServerProcess>,
}

impl LocalServer {
    /// Makes keys and a trust root in `root`, `init`s `root/server` and serves it on free
    /// loopback ports (log in `root/server.log`), with `broker` as its external broker if given
    /// and `extra` `serve` arguments; waits for it until `deadline`.
    pub fn start(
        root: &Path,
        server_bin: &Path,
        broker: Option<&str>,
        extra: &[String],
        deadline: Instant,
    ) -> Result<LocalServer> {
        let keys = FleetKeys::create(root)?;
        let data = root.join("server");
        ServerProcess::init(server_bin, &data, &keys)?;
        let options = ServeOptions {
            broker: broker.map(str::to_string),
            extra: extra.to_vec(),
            log: Some(root.join("server.log")),
            ..ServeOptions::default()
        };
        let process = ServerProcess::serve(server_bin, &data, &options, deadline)?;
        let api = admin_api(&process);
        Ok(LocalServer {
            api,
            keys,
            process,
            replicas: Vec::new(),
        })
    }

    /// `count` replicas sharing the PostgreSQL at `store` (schema `edgefleet_local`, emptied
    /// first): keys made in `root`, `init` once, the data directory copied per replica, bundles
    /// in one shared `root/artifacts`; each serves on its own free ports.
    pub fn start_replicas(
        root: &Path,
        server_bin: &Path,
        store: &str,
        count: usize,
        extra: &[String],
        deadline: Instant,
    ) -> Result<LocalServer> {
        anyhow::ensure!(count >= 1, "at least one replica");
        let schema = "edgefleet_local";
        let keys = FleetKeys::create(root)?;
        let seed = root.join("server");
        drop_schema(store, schema)?;
        ServerProcess::init_with(
            server_bin,
            &seed,
            &keys,
            &["--store", store, "--store-schema", schema],
        )?;
        let artifacts = root.join("artifacts");
        let mut processes = Vec::new();
        for i in 0..count {
            let data = if i == 0 {
                seed.clone()
            } else {
                let d = root.join(format!("server-{i}"));
                copy_data_dir(&seed, &d)?;
                d
            };
            let mut args = extra.to_vec();
            args.extend(
                [
                    "--store",
                    store,
                    "--store-schema",
                    schema,
                    "--artifacts",
                    &artifacts.to_string_lossy(),
                    "--replica-id",
                    &format!("replica-{i}"),
                ]
                .map(String::from),
            );
            let options = ServeOptions {
                extra: args,
                log: Some(root.join(format!("server-{i}.log"))),
                ..ServeOptions::default()
            };
            processes.push(ServerProcess::serve(server_bin, &data, &options, deadline)?);
        }
        let process = processes.remove(0);
        let api = admin_api(&process);
        Ok(LocalServer {
            api,
            keys,
            process,
            replicas: processes,
        })
    }

    /// Every replica's process (the first is [`LocalServer::process`]).
    pub fn processes(&self) -> impl Iterator<Item = &ServerProcess> {
        std::iter::once(&self.process).chain(&self.replicas)
    }

    /// Every replica's API as admin.
    pub fn apis(&self) -> Vec<ServerArgs> {
        self.processes().map(admin_api).collect()
    }

    /// Where devices connect (`mqtts://` to the embedded gate, or the external broker).
    pub fn mqtt_url(&self) -> &str {
        &self.process.mqtt_url
    }

    /// The fleet CA file.
    pub fn ca(&self) -> PathBuf {
        self.process.ca()
    }

    /// A new enrollment token (`spec`: name, uses, tags).
    pub fn enrollment_token(&self, spec: serde_json::Value) -> Result<String> {
        let v: EnrollmentTokenCreated = call(
            &self.api,
            "POST",
            "/v1/enrollment-tokens",
            Some(("application/json", spec.to_string().into_bytes())),
        )?;
        Ok(v.token)
    }
}

/// A server's API as its admin.
fn admin_api(process: &ServerProcess) -> ServerArgs {
    ServerArgs {
        server: process.url.clone(),
        token: process.admin.clone(),
        ca: Some(process.ca()),
        json: false,
    }
}

/// Removes `schema` from the PostgreSQL at `url` (a fresh run), with `psql`.
fn drop_schema(url: &str, schema: &str) -> Result<()> {
    let out = std::process::Command::new("psql")
        .arg(url)
        .args(["-qc", &format!("DROP SCHEMA IF EXISTS {schema} CASCADE")])
        .output()
        .map_err(|e| anyhow::anyhow!("psql (the PostgreSQL client) is needed: {e}"))?;
    anyhow::ensure!(
        out.status.success(),
        "psql {url}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}
