//! `ota-server`: `init` a data directory; `serve` the HTTP API, the devices' MQTT connections
//! (terminated by its device gate, or through an external broker), telemetry ingest and the rollout engine;
//! `token create`.

#![forbid(unsafe_code)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use edge_bundle::trust::{RootAnchor, TrustRoot};
use ota_server::auth::{create_token, Role};
use ota_server::bundles::Bundles;
use ota_server::fleet::{BrokerLink, Fleet, FleetConfig, Transport};
use ota_server::gate::{self, DeviceAuth};
use ota_server::http::{router, AppState};
use ota_server::hub::Hub;
use ota_server::ratelimit::RateLimiter;
use ota_server::store::{PgStore, Records, RedbStore, Store};
use ota_server::{devices, tls};

/// mimalloc, not glibc's malloc: with a connection per device spread over tokio's threads,
/// glibc's per-thread arenas held freed memory as RSS (a replica at 3,750 devices: 149 MB of
/// live heap at its peak, 782 MB of RSS; heaptrack, docs/benchmarks.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
    Init(InitOptions),
    /// Serves the HTTP API, the embedded MQTT broker (or connects to an external one) and runs
    /// the rollout engine.
    Serve(ServeOptions),
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
        #[command(flatten)]
        store: StoreOptions,
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
        Ok(text) => RootAnchor::Pinned(edge_bundle::keys::parse_public_key(&text, "root.pub")?),
        Err(_) => RootAnchor::SelfSigned,
    };
    let trust =
        TrustRoot::from_bytes(&bytes, anchor).map_err(|e| anyhow::anyhow!("trust.cbor: {e}"))?;
    trust
        .check_expiry(now())
        .map_err(|e| anyhow::anyhow!("trust.cbor: {e}"))?;
    Ok(trust)
}

/// What `init` is given.
#[derive(clap::Args)]
struct InitOptions {
    /// Data directory (created).
    #[arg(long)]
    data: PathBuf,
    #[command(flatten)]
    store: StoreOptions,
    /// Fleet trust document (`edgectl trust init`).
    #[arg(long)]
    trust: PathBuf,
    /// The director's secret key (signs desired states).
    #[arg(long)]
    director_key: PathBuf,
    /// The fleet root public key the trust document must be signed by (recommended).
    #[arg(long)]
    root: Option<PathBuf>,
    /// A name agents reach the server by (DNS name or IP address) for the server
    /// certificate; repeat. Default: localhost and 127.0.0.1.
    #[arg(long = "tls-name")]
    tls_names: Vec<String>,
    /// Use this certificate chain (PEM) instead of creating a fleet CA (with --tls-key).
    #[arg(long, requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The private key (PEM) of --tls-cert.
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<PathBuf>,
}

fn init(o: InitOptions) -> Result<()> {
    let (data, trust, director_key, root) = (
        o.data.as_path(),
        o.trust.as_path(),
        o.director_key.as_path(),
        o.root.as_deref(),
    );
    if data.join("server.redb").exists() || data.join("director.key").exists() {
        bail!(
            "{} already holds a server; pick another directory",
            data.display()
        );
    }
    std::fs::create_dir_all(data).with_context(|| format!("cannot create {}", data.display()))?;
    let trust_bytes =
        std::fs::read(trust).with_context(|| format!("cannot read {}", trust.display()))?;
    let anchor = match root {
        Some(r) => RootAnchor::Pinned(edge_bundle::keys::read_public_key(r)?),
        None => RootAnchor::SelfSigned,
    };
    let parsed = TrustRoot::from_bytes(&trust_bytes, anchor)
        .map_err(|e| anyhow::anyhow!("{}: {e}", trust.display()))?;
    let director = edge_bundle::keys::read_secret_key(director_key)?;
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
        edge_bundle::keys::secret_key_text(&director).as_bytes(),
    )?;
    let tls_note = match (&o.tls_cert, &o.tls_key) {
        (Some(cert), Some(key)) => {
            tls::import(data, cert, key)?;
            "TLS: your certificate; agents pin its issuing CA".to_string()
        }
        _ => {
            let names = if o.tls_names.is_empty() {
                vec!["localhost".to_string(), "127.0.0.1".to_string()]
            } else {
                o.tls_names.clone()
            };
            let files = tls::create_fleet_ca(data, &names)?;
            format!(
                "TLS: fleet CA {} (agents pin it: server.ca), server certificate for {}",
                files.ca.display(),
                names.join(", ")
            )
        }
    };
    let records = o.store.open(data)?;
    let (token, _) = create_token(&records, "init", Role::Admin, now())?;
    write_private(&data.join("admin.token"), format!("{token}\n").as_bytes())?;
    println!(
        "initialized {}; admin token in {}\n{tls_note}",
        data.display(),
        data.join("admin.token").display()
    );
    Ok(())
}

/// Where the server's records live.
#[derive(clap::Args, Clone)]
struct StoreOptions {
    /// The system of record: `postgres://user:password@host:port/database` for replicas that
    /// share it (see docs/cluster.md); default: redb in DATA/server.redb (one server).
    #[arg(long, env = "OTA_SERVER_STORE")]
    store: Option<String>,
    /// The PostgreSQL schema the server's tables live in (created and migrated at start).
    #[arg(long, default_value = "edgefleet")]
    store_schema: String,
}

impl StoreOptions {
    fn open(&self, data: &Path) -> Result<Records<dyn Store>> {
        let store: Arc<dyn Store> = match &self.store {
            Some(url) if url.starts_with("postgres://") || url.starts_with("postgresql://") => {
                let pg = PgStore::connect(url, &self.store_schema)?;
                tracing::info!(target = pg.target(), schema = %self.store_schema, "store: PostgreSQL");
                Arc::new(pg)
            }
            Some(other) => bail!("--store '{other}': use postgres://user:password@host:port/database, or leave it out for the embedded store"),
            None => Arc::new(RedbStore::open(&data.join("server.redb"))?),
        };
        Ok(Records::new(store))
    }
}

/// Options of `serve`.
#[derive(clap::Args)]
struct ServeOptions {
    /// Data directory made by `init`.
    #[arg(long)]
    data: PathBuf,
    #[command(flatten)]
    store: StoreOptions,
    /// Where bundles are kept, by sha256 (default DATA/artifacts). Replicas share one: a
    /// shared filesystem every replica mounts (bundles are too large for database rows).
    #[arg(long)]
    artifacts: Option<PathBuf>,
    /// This server's name among replicas (default: host name and process id).
    #[arg(long)]
    replica_id: Option<String>,
    /// Seconds the engine lease lasts unless renewed (every tick renews it): how long the
    /// rollout engine may stand still after its replica died, before another takes over.
    #[arg(long, default_value_t = 15)]
    lease_seconds: u64,
    /// HTTP listen address.
    #[arg(long, default_value = "127.0.0.1:8080")]
    http: String,
    /// Where devices connect (MQTT, ended by the server's authenticating gate).
    #[arg(long, default_value = "127.0.0.1:1883", conflicts_with = "broker")]
    mqtt: String,
    /// Use an external broker (Mosquitto, EMQX) instead: mqtt://host:port. Credentials from
    /// OTA_SERVER_BROKER_USERNAME / OTA_SERVER_BROKER_PASSWORD. Device topic ACLs are then
    /// the broker's job (see README).
    #[arg(long)]
    broker: Option<String>,
    /// Seconds between rollout engine steps.
    #[arg(long, default_value_t = 5)]
    tick_seconds: u64,
    /// Device HTTP requests (enroll, artifacts) per second per address; 0 disables.
    #[arg(long, default_value_t = 20.0)]
    device_rate: f64,
    /// Device MQTT publishes per second per connection (the gate's limit).
    #[arg(long, default_value_t = 20.0)]
    device_publish_rate: f64,
    /// Largest bundle upload, bytes.
    #[arg(long, default_value_t = 512 * 1024 * 1024)]
    max_bundle_bytes: usize,
    /// Serve HTTP and MQTT without TLS (closed networks and tests only).
    #[arg(long)]
    plaintext: bool,
}

fn parse_broker_url(url: &str) -> Result<(String, u16)> {
    let rest = url
        .strip_prefix("mqtt://")
        .or_else(|| url.strip_prefix("tcp://"))
        .with_context(|| format!("--broker '{url}': use mqtt://host:port"))?;
    let (host, port) = rest.rsplit_once(':').unwrap_or((rest, "1883"));
    let port = port
        .trim_end_matches('/')
        .parse()
        .with_context(|| format!("--broker '{url}': bad port"))?;
    Ok((host.to_string(), port))
}

async fn serve(o: ServeOptions) -> Result<()> {
    let trust = load_trust(&o.data)?;
    let director = edge_bundle::keys::read_secret_key(&o.data.join("director.key"))?;
    let records = o.store.open(&o.data)?;
    let artifacts = o
        .artifacts
        .clone()
        .unwrap_or_else(|| o.data.join("artifacts"));
    let bundles = Bundles::new(records.clone(), &artifacts, o.max_bundle_bytes as u64)?;
    let replica = o.replica_id.clone().unwrap_or_else(|| {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
        format!("{}-{}", host.trim(), std::process::id())
    });
    let tick = Duration::from_secs(o.tick_seconds.max(1));
    let lease_ttl = Duration::from_secs(o.lease_seconds.max(1));
    if lease_ttl < tick * 2 {
        bail!(
            "--lease-seconds {} must be at least twice --tick-seconds {} (each tick renews the lease)",
            o.lease_seconds,
            o.tick_seconds
        );
    }
    let tls_config = if o.plaintext {
        None
    } else {
        let files = tls::TlsFiles::in_data(&o.data);
        Some(tls::server_config(&files).context(
            "TLS: no usable certificate in DATA/tls (made by `ota-server init`); or pass --plaintext",
        )?)
    };
    let acceptor = tls_config.map(tokio_rustls::TlsAcceptor::from);
    let clock: Arc<dyn Fn() -> u64 + Send + Sync> = Arc::new(now);
    let mut state = AppState::new(records.clone(), bundles, trust, clock.clone());
    state.device_limiter = RateLimiter::new(o.device_rate, o.device_rate * 5.0);

    let device_auth: DeviceAuth = {
        let r = records.clone();
        Arc::new(move |id: &str, token: &str| {
            matches!(devices::authenticate_device(&r, id, token), Ok(Some(_)))
        })
    };
    let ready = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let acks = Arc::new(ota_server::acks::IngestAcks::default());
    /// The client id the server's own client uses on an external broker.
    const SERVER_CLIENT: &str = "ota-server";
    let transport = match &o.broker {
        Some(url) => {
            let (host, port) = parse_broker_url(url)?;
            let credentials = match (
                std::env::var("OTA_SERVER_BROKER_USERNAME"),
                std::env::var("OTA_SERVER_BROKER_PASSWORD"),
            ) {
                (Ok(u), Ok(p)) => Some((u, p)),
                _ => None,
            };
            tracing::info!(%url, "using an external broker: device topic ACLs are its job");
            Transport::Broker(BrokerLink {
                host,
                port,
                credentials,
                client_id: SERVER_CLIENT.to_string(),
            })
        }
        None => {
            if let Some((soft, hard)) = ota_server::limits::raise_open_files() {
                tracing::info!(
                    open_files = soft,
                    hard_limit = hard,
                    devices = ota_server::limits::device_capacity(soft),
                    "device capacity (a descriptor per connected device; raise the hard \
                     `ulimit -n`, or run replicas, for more)"
                );
            }
            let hub = Arc::new(Hub::new(ready.clone(), acks.clone()));
            let listener = tokio::net::TcpListener::bind(&o.mqtt)
                .await
                .with_context(|| format!("cannot listen on {}", o.mqtt))?;
            match &acceptor {
                Some(_) => tracing::info!(addr = %listener.local_addr()?, "MQTT over TLS (mqtts://) listening"),
                None => tracing::warn!(
                    "PLAINTEXT MQTT on {} (--plaintext): device tokens cross the network unencrypted \
                     (messages stay signed); use this only on a closed network",
                    listener.local_addr()?
                ),
            }
            let limits = gate::Limits {
                publish_per_s: o.device_publish_rate,
                ..Default::default()
            };
            tokio::spawn(gate::run(
                listener,
                hub.clone(),
                device_auth.clone(),
                limits,
                acceptor.clone(),
            ));
            Transport::Hub(hub)
        }
    };
    let replica_name = replica.clone();
    let fleet = Fleet::start(
        records,
        state.bundles.clone(),
        director,
        state.metrics.clone(),
        clock,
        FleetConfig {
            transport,
            tick,
            retention: Default::default(),
            max_batch: 512,
            batch_wait: Duration::from_millis(50),
            ready,
            replica: replica.clone(),
            lease_ttl,
            acks,
        },
    );
    let f = fleet.clone();
    state.broker_connected = Some(Arc::new(move || f.connected()));
    let f = fleet.clone();
    state.engine_leader = Some((Arc::new(move || f.leading()), replica_name));
    let app = Arc::new(state);
    let listener = tokio::net::TcpListener::bind(&o.http)
        .await
        .with_context(|| format!("cannot listen on {}", o.http))?;
    let service = router(app, o.max_bundle_bytes)
        .into_make_service_with_connect_info::<std::net::SocketAddr>();
    match acceptor {
        Some(acceptor) => {
            tracing::info!(addr = %listener.local_addr()?, "ota-server listening (https://)");
            // tap_io: lets axum hand the peer address of a TLS connection to the rate limiter
            use axum::serve::ListenerExt;
            let tls_listener = tls::TlsListener::new(listener, acceptor)?.tap_io(|_| {});
            axum::serve(tls_listener, service)
                .with_graceful_shutdown(shutdown_signal())
                .await?;
        }
        None => {
            tracing::warn!(
                "PLAINTEXT HTTP on {} (--plaintext): tokens cross the network unencrypted; use this \
                 only on a closed network or behind a TLS terminator",
                listener.local_addr()?
            );
            axum::serve(listener, service)
                .with_graceful_shutdown(shutdown_signal())
                .await?;
        }
    }
    tracing::info!("stopped");
    Ok(())
}

/// Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = async {
            match term.as_mut() {
                Some(t) => { t.recv().await; }
                None => std::future::pending::<()>().await,
            }
        } => {}
    }
    tracing::info!("shutting down");
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
        Command::Init(o) => init(o),
        Command::Serve(o) => tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .map_err(Into::into)
            .and_then(|rt| rt.block_on(serve(o))),
        Command::Token {
            command:
                TokenCommand::Create {
                    data,
                    store,
                    role,
                    name,
                },
        } => (|| {
            let records = store.open(&data)?;
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
