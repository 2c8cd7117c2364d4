//! The `ota-server` binary: `init` checks the director against the trust root and writes a
//! private admin token; `serve` answers with it; `token create` adds tokens.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use edge_bundle::trust::{self, TrustSpec};

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_ota-server"))
}

fn write_keys(dir: &Path) {
    let root = edge_bundle::keys::generate().unwrap();
    let signer = edge_bundle::keys::generate().unwrap();
    let director = edge_bundle::keys::generate().unwrap();
    let other = edge_bundle::keys::generate().unwrap();
    let mut spec = TrustSpec::ephemeral(&signer.verifying_key());
    spec.director = Some(("director".into(), director.verifying_key()));
    std::fs::write(
        dir.join("trust.cbor"),
        trust::create(&spec, &root, None).unwrap(),
    )
    .unwrap();
    std::fs::write(
        dir.join("root.pub"),
        edge_bundle::keys::public_key_text(&root.verifying_key()),
    )
    .unwrap();
    std::fs::write(
        dir.join("director.key"),
        edge_bundle::keys::secret_key_text(&director),
    )
    .unwrap();
    std::fs::write(
        dir.join("other.key"),
        edge_bundle::keys::secret_key_text(&other),
    )
    .unwrap();
}

#[test]
fn init_serve_and_tokens() {
    let dir = tempfile::tempdir().unwrap();
    write_keys(dir.path());
    let data = dir.path().join("data");
    let init = |key: &str| {
        bin()
            .args(["init", "--data"])
            .arg(&data)
            .arg("--trust")
            .arg(dir.path().join("trust.cbor"))
            .arg("--director-key")
            .arg(dir.path().join(key))
            .arg("--root")
            .arg(dir.path().join("root.pub"))
            .output()
            .unwrap()
    };
    let wrong = init("other.key");
    assert!(!wrong.status.success());
    assert!(
        String::from_utf8_lossy(&wrong.stderr).contains("does not match"),
        "{wrong:?}"
    );
    let ok = init("director.key");
    assert!(ok.status.success(), "{ok:?}");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(data.join("admin.token"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    assert!(
        !init("director.key").status.success(),
        "a second init is refused"
    );
    let admin = std::fs::read_to_string(data.join("admin.token"))
        .unwrap()
        .trim()
        .to_string();

    let created = bin()
        .args(["token", "create", "--role", "viewer", "--data"])
        .arg(&data)
        .output()
        .unwrap();
    assert!(created.status.success(), "{created:?}");
    let viewer = String::from_utf8_lossy(&created.stdout).trim().to_string();
    let bad_role = bin()
        .args(["token", "create", "--role", "root", "--data"])
        .arg(&data)
        .output()
        .unwrap();
    assert!(!bad_role.status.success());

    let free = || {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    };
    let (port, mqtt) = (free(), free());
    let log = data.join("serve.log");
    let mut server = bin()
        .args(["serve", "--data"])
        .arg(&data)
        .args(["--http", &format!("127.0.0.1:{port}")])
        .args(["--mqtt", &format!("127.0.0.1:{mqtt}")])
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    // TLS by default, with the certificate `init` made for 127.0.0.1 under the fleet CA
    let ca = std::fs::read(data.join("tls/ca.pem")).unwrap();
    let roots: Vec<ureq::tls::Certificate<'static>> = ureq::tls::parse_pem(&ca)
        .filter_map(|i| match i {
            Ok(ureq::tls::PemItem::Certificate(c)) => Some(c),
            _ => None,
        })
        .collect();
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(10)))
        .tls_config(
            ureq::tls::TlsConfig::builder()
                .root_certs(ureq::tls::RootCerts::new_with_certs(&roots))
                .build(),
        )
        .build()
        .into();
    let deadline = Instant::now() + Duration::from_secs(30);
    let url = format!("https://127.0.0.1:{port}");
    while agent.get(&format!("{url}/healthz")).call().is_err() {
        assert!(
            Instant::now() < deadline,
            "server did not start: {}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let code = |token: &str| {
        agent
            .post(&format!("{url}/v1/tokens"))
            .header("authorization", format!("Bearer {token}"))
            .header("content-type", "application/json")
            .send(r#"{"name":"ci","role":"operator"}"#)
            .unwrap()
            .status()
            .as_u16()
    };
    assert_eq!(code(&admin), 201);
    assert_eq!(code(&viewer), 403);
    // SIGTERM: a graceful stop, logged
    sigterm(server.id());
    let status = server.wait().unwrap();
    assert!(status.success(), "{status}");
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("listening (https://)"), "{text}");
    assert!(text.contains("stopped"), "{text}");
}

/// Sends SIGTERM with the `kill` command (no libc in this crate's tests).
fn sigterm(pid: u32) {
    let ok = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok);
}
