//! A fleet server on this machine for `edgectl demo` and `edgectl simulate`: finding (or
//! building) the `ota-server` and `edge-agent` binaries next to `edgectl`, fresh keys and a trust
//! root, `ota-server init` + `serve` (TLS, embedded broker or an external one) on free loopback
//! ports, and the digits bundles both push.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use edge_pack::pack::{pack, Calibration, PackSpec};
use edge_runtime::trust::{self, TrustSpec};
use edge_runtime::{SigningKey, Tensor, VerifyingKey};

use super::fleet::{call, ServerArgs};
use edge_protocol::rest::{EnrollmentTokenCreated, Healthz};

pub(crate) const MODEL_ONNX: &[u8] = include_bytes!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../models/digits/model.onnx"
));
pub(crate) const MODEL_SPEC: &str = include_str!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../models/digits/spec.toml"
));
pub(crate) const CALIB_X: &[u8] = include_bytes!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../models/digits/calib_x.npy"
));
pub(crate) const TEST_X: &[u8] = include_bytes!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../models/digits/test_x.npy"
));
pub(crate) const TEST_Y: &[u8] = include_bytes!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../models/digits/test_y.npy"
));

/// A child process killed when dropped.
pub(crate) struct Proc(pub(crate) Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub(crate) fn binary(name: &str) -> Result<PathBuf> {
    let here = std::env::current_exe()?;
    let dir = here.parent().context("edgectl has no directory")?;
    let path = dir.join(name);
    if path.exists() {
        return Ok(path);
    }
    // run through `cargo run`: build the other two binaries with the same profile
    if let Ok(cargo) = std::env::var("CARGO") {
        // cargo's own progress shows (a first build of the two is minutes on a small machine)
        eprintln!(
            "building ota-server and edge-agent next to edgectl (a first build takes a few \
             minutes; cargo's progress follows) ..."
        );
        let mut cmd = Command::new(cargo);
        cmd.args(["build", "-p", "ota-server", "-p", "device-agent"]);
        if dir.ends_with("release") {
            cmd.arg("--release");
        }
        if let Ok(manifest) = std::env::var("CARGO_MANIFEST_DIR") {
            cmd.current_dir(Path::new(&manifest).join(".."));
        }
        if !cmd.status()?.success() {
            bail!("building {name} failed");
        }
    }
    if path.exists() {
        Ok(path)
    } else {
        bail!(
            "{} not found: build it (cargo build --release -p ota-server -p device-agent)",
            path.display()
        )
    }
}

pub(crate) fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

pub(crate) fn npy(bytes: &[u8]) -> Result<Tensor> {
    Ok(edge_runtime::npy::read(bytes, 1 << 28)?)
}

/// The digits bundle at `version`, with `calibration` rows as its reference data.
pub(crate) fn bundle(signer: &SigningKey, version: &str, calibration: Tensor) -> Result<Vec<u8>> {
    let mut spec: PackSpec = toml::from_str(MODEL_SPEC)?;
    spec.version = version.into();
    spec.health = Some(edge_runtime::bundle::HealthSpec {
        trial_seconds: 2,
        min_requests: 5,
        max_error_rate: 0.05,
        max_p99_ms: None,
        // drift is the server's call in this demo (its PSI gate over the phase's devices)
        max_psi: 1e9,
    });
    let calibration = Calibration {
        inputs: calibration,
        targets: None,
    };
    Ok(pack(
        MODEL_ONNX,
        spec,
        Some(&calibration),
        std::slice::from_ref(signer),
        0,
    )?
    .0)
}

/// A running `ota-server` with fresh keys, stopped when dropped.
pub(crate) struct LocalServer {
    /// The API as admin.
    pub api: ServerArgs,
    /// Its data directory.
    pub data: PathBuf,
    /// Where devices connect (`mqtts://` to the embedded gate, or the external broker).
    pub mqtt_url: String,
    /// The model-signing key the trust root lists.
    pub signer: SigningKey,
    /// The director key's public half (desired states are signed with it).
    pub director: VerifyingKey,
    /// The trust root document.
    pub trust: PathBuf,
    /// The root key's public half (file).
    pub root_pub: PathBuf,
    /// The root key's public half.
    pub root: VerifyingKey,
    proc: Proc,
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
        let (root_key, signer, director) = (
            edge_runtime::keys::generate()?,
            edge_runtime::keys::generate()?,
            edge_runtime::keys::generate()?,
        );
        let mut spec = TrustSpec::ephemeral(&signer.verifying_key());
        spec.director = Some(("director".into(), director.verifying_key()));
        let trust_path = root.join("trust.cbor");
        let root_pub = root.join("root.pub");
        std::fs::write(&trust_path, trust::create(&spec, &root_key, None)?)?;
        std::fs::write(
            &root_pub,
            edge_runtime::keys::public_key_text(&root_key.verifying_key()),
        )?;
        std::fs::write(
            root.join("director.key"),
            edge_runtime::keys::secret_key_text(&director),
        )?;
        let data = root.join("server");
        let out = Command::new(server_bin)
            .arg("init")
            .arg("--data")
            .arg(&data)
            .arg("--trust")
            .arg(&trust_path)
            .arg("--director-key")
            .arg(root.join("director.key"))
            .arg("--root")
            .arg(&root_pub)
            .output()?;
        if !out.status.success() {
            bail!("ota-server init: {}", String::from_utf8_lossy(&out.stderr));
        }
        let (http_port, mqtt_port) = (free_port()?, free_port()?);
        let mut serve = Command::new(server_bin);
        serve
            .arg("serve")
            .arg("--data")
            .arg(&data)
            .args([
                "--http",
                &format!("127.0.0.1:{http_port}"),
                "--tick-seconds",
                "1",
            ])
            .args(extra)
            .env("OTA_SERVER_LOG", "info,rumqttd=warn")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(root.join("server.log"))?);
        let mqtt_url = match broker {
            Some(b) => {
                serve.args(["--broker", b]);
                b.to_string()
            }
            None => {
                serve.args(["--mqtt", &format!("127.0.0.1:{mqtt_port}")]);
                format!("mqtts://127.0.0.1:{mqtt_port}")
            }
        };
        let proc = Proc(serve.spawn()?);
        let api = ServerArgs {
            server: format!("https://127.0.0.1:{http_port}"),
            token: std::fs::read_to_string(data.join("admin.token"))?
                .trim()
                .to_string(),
            ca: Some(data.join("tls/ca.pem")),
            json: false,
        };
        let mut s = LocalServer {
            api,
            data,
            mqtt_url,
            signer,
            director: director.verifying_key(),
            trust: trust_path,
            root_pub,
            root: root_key.verifying_key(),
            proc,
        };
        loop {
            if let Ok(Some(status)) = s.proc.0.try_wait() {
                bail!(
                    "ota-server exited ({status}); see {}",
                    root.join("server.log").display()
                );
            }
            if call::<Healthz>(&s.api, "GET", "/healthz", None)
                .is_ok_and(|h| h.broker_connected == Some(true))
            {
                return Ok(s);
            }
            if Instant::now() > deadline {
                bail!("timed out waiting for the server");
            }
            std::thread::sleep(Duration::from_millis(200));
        }
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

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.proc.0.id()
    }
}
