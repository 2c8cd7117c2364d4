//! `ota-server`: `init` a data directory, `serve` the HTTP API from it, `token create`.
//! The embedded MQTT broker, the rollout engine and telemetry ingest are not wired in yet
//! (issue 4, in progress): `serve` says so at start.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use edge_runtime::trust::{RootAnchor, TrustRoot};
use ota_server::auth::{create_token, Role};
use ota_server::bundles::Bundles;
use ota_server::http::{router, AppState};
use ota_server::store::{Records, RedbStore};

#[derive(Parser)]
#[command(name = "ota-server", version, about = "edgefleet OTA server")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Creates a data directory: trust root and director key copied in, the store, and an admin
    /// token in DIR/admin.token (0600).
    Init {
        /// Data directory (created).
        #[arg(long)]
        data: PathBuf,
        /// Fleet trust document (`edgectl trust init`).
        #[arg(long)]
        trust: PathBuf,
        /// The director's secret key (signs desired states).
        #[arg(long)]
        director_key: PathBuf,
        /// The fleet root public key the trust document must be signed by (recommended).
        #[arg(long)]
        root: Option<PathBuf>,
    },
    /// Serves the HTTP API.
    Serve {
        /// Data directory made by `init`.
        #[arg(long)]
        data: PathBuf,
        /// HTTP listen address.
        #[arg(long, default_value = "127.0.0.1:8080")]
        http: String,
        /// Largest bundle upload, bytes.
        #[arg(long, default_value_t = 512 * 1024 * 1024)]
        max_bundle_bytes: usize,
    },
    /// Admin tokens.
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
}

#[derive(Subcommand)]
enum TokenCommand {
    /// Creates a token and prints it (shown once). The server must be stopped (the store is
    /// opened directly); with the server running, use `POST /v1/tokens`.
    Create {
        /// Data directory.
        #[arg(long)]
        data: PathBuf,
        /// viewer, operator or admin.
        #[arg(long)]
        role: Role,
        /// A name for the holder.
        #[arg(long, default_value = "cli")]
        name: String,
    },
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn write_private(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    f.write_all(bytes)?;
    f.sync_all()?;
    Ok(())
}

fn load_trust(data: &Path) -> Result<TrustRoot> {
    let bytes = std::fs::read(data.join("trust.cbor"))
        .context("data dir has no trust.cbor; run `ota-server init`")?;
    let anchor = match std::fs::read_to_string(data.join("root.pub")) {
        Ok(text) => RootAnchor::Pinned(edge_runtime::keys::parse_public_key(&text, "root.pub")?),
        Err(_) => RootAnchor::SelfSigned,
    };
    let trust =
        TrustRoot::from_bytes(&bytes, anchor).map_err(|e| anyhow::anyhow!("trust.cbor: {e}"))?;
    trust
        .check_expiry(now())
        .map_err(|e| anyhow::anyhow!("trust.cbor: {e}"))?;
    Ok(trust)
}

fn init(data: &Path, trust: &Path, director_key: &Path, root: Option<&Path>) -> Result<()> {
    if data.join("server.redb").exists() {
        bail!(
            "{} already holds a server; pick another directory",
            data.display()
        );
    }
    std::fs::create_dir_all(data).with_context(|| format!("cannot create {}", data.display()))?;
    let trust_bytes =
        std::fs::read(trust).with_context(|| format!("cannot read {}", trust.display()))?;
    let anchor = match root {
        Some(r) => RootAnchor::Pinned(edge_runtime::keys::read_public_key(r)?),
        None => RootAnchor::SelfSigned,
    };
    let parsed = TrustRoot::from_bytes(&trust_bytes, anchor)
        .map_err(|e| anyhow::anyhow!("{}: {e}", trust.display()))?;
    let director = edge_runtime::keys::read_secret_key(director_key)?;
    match parsed.director() {
        Some(d) if *d == director.verifying_key() => {}
        Some(_) => bail!("the director key does not match the director the trust document names"),
        None => bail!("the trust document names no director; recreate it with `edgectl trust init --director`"),
    }
    std::fs::write(data.join("trust.cbor"), &trust_bytes)?;
    if let Some(r) = root {
        std::fs::copy(r, data.join("root.pub"))?;
    }
    write_private(
        &data.join("director.key"),
        edge_runtime::keys::secret_key_text(&director).as_bytes(),
    )?;
    let records = Records::new(Arc::new(RedbStore::open(&data.join("server.redb"))?));
    let (token, _) = create_token(&records, "init", Role::Admin, now())?;
    write_private(&data.join("admin.token"), format!("{token}\n").as_bytes())?;
    println!(
        "initialized {}; admin token in {}",
        data.display(),
        data.join("admin.token").display()
    );
    Ok(())
}

async fn serve(data: PathBuf, http: String, max_bundle_bytes: usize) -> Result<()> {
    let trust = load_trust(&data)?;
    let records = Records::new(Arc::new(RedbStore::open(&data.join("server.redb"))?));
    let bundles = Bundles::new(
        records.clone(),
        &data.join("artifacts"),
        max_bundle_bytes as u64,
    )?;
    let app = Arc::new(AppState {
        records,
        bundles,
        trust,
        now: Box::new(now),
    });
    let listener = tokio::net::TcpListener::bind(&http)
        .await
        .with_context(|| format!("cannot listen on {http}"))?;
    tracing::warn!(
        "plaintext HTTP on {http}: put TLS in front, or wait for the built-in rustls listener"
    );
    tracing::warn!("the rollout engine and the embedded MQTT broker are not wired in yet: rollouts are stored, not executed");
    tracing::info!(addr = %listener.local_addr()?, "ota-server listening");
    axum::serve(listener, router(app, max_bundle_bytes))
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    Ok(())
}

fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("OTA_SERVER_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let result = match Cli::parse().command {
        Command::Init {
            data,
            trust,
            director_key,
            root,
        } => init(&data, &trust, &director_key, root.as_deref()),
        Command::Serve {
            data,
            http,
            max_bundle_bytes,
        } => tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .map_err(Into::into)
            .and_then(|rt| rt.block_on(serve(data, http, max_bundle_bytes))),
        Command::Token {
            command: TokenCommand::Create { data, role, name },
        } => (|| {
            let records = Records::new(Arc::new(RedbStore::open(&data.join("server.redb"))?));
            let (token, _) = create_token(&records, &name, role, now())?;
            println!("{token}");
            Ok(())
        })(),
    };
    if let Err(e) = result {
        eprintln!("ota-server: {e:#}");
        std::process::exit(1);
    }
}
