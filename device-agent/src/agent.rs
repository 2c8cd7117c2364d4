//! The running daemon: opens the state, boots the slots, installs sideloaded bundles, then
//! starts the reconciler thread (downloads and installs are blocking work), the watcher thread
//! (trials, telemetry), the MQTT link (after enrollment) and the local API, and runs until
//! SIGINT/SIGTERM.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{channel, Receiver};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};

use crate::api::{self, Api};
use crate::config::{Config, ServerConfig};
use crate::core::Core;
use crate::download::{backoff, http_agent, DownloadPolicy, Downloader};
use crate::identity;
use crate::reconcile;
use crate::uplink::{self, LinkState};
use crate::{watch, Job};

/// The download policy from the config.
pub fn download_policy(core: &Core) -> Option<DownloadPolicy> {
    core.config.server.as_ref().map(|s| DownloadPolicy {
        max_bytes_per_s: s.max_download_kib_per_s.map(|k| k * 1024),
        attempts: s.download_attempts.max(1),
        base_delay: Duration::from_millis(500).min(Duration::from_secs(s.retry_max_seconds.max(1))),
        max_delay: Duration::from_secs(s.retry_max_seconds.max(1)),
        max_size: {
            let l = &core.load_options.verify.limits;
            l.max_payload_bytes + l.max_manifest_bytes + l.max_signatures * 96 + 64
        },
    })
}

fn reconciler(core: Arc<Core>, jobs: Receiver<Job>) {
    let downloader = download_policy(&core).map(|policy| {
        Downloader::new(
            &core
                .config
                .server
                .as_ref()
                .expect("policy implies server")
                .url,
            http_agent(
                core.config
                    .server
                    .as_ref()
                    .and_then(ServerConfig::ca_pem)
                    .as_deref(),
            ),
            &core.config.state_dir.join("downloads"),
            policy,
        )
    });
    let refresh_credential = || {
        if let Some(d) = &downloader {
            d.set_bearer(identity::enrollment(&core.config.state_dir).and_then(|e| e.device_token));
        }
    };
    if let Some(doc) = reconcile::stored_desired(&core) {
        refresh_credential();
        reconcile::apply(&core, &doc, downloader.as_ref(), false);
    }
    while let Ok(mut job) = jobs.recv() {
        // only the newest desired state matters
        while let Ok(newer) = jobs.try_recv() {
            job = newer;
        }
        refresh_credential();
        match job {
            Job::Desired(doc, fresh) => reconcile::apply(&core, &doc, downloader.as_ref(), fresh),
        }
    }
}

/// Runs the agent until a signal.
pub fn run(config: Config) -> Result<()> {
    let core = Arc::new(Core::open(config)?);
    tracing::info!(device = %core.device_id, state_dir = %core.config.state_dir.display(), "edge-agent starting");
    reconcile::boot(&core)?;
    if let Some(s) = &core.config.sideload {
        reconcile::sideload(&core, &s.dir);
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(serve(core))
}

async fn serve(core: Arc<Core>) -> Result<()> {
    let stop = Arc::new(AtomicBool::new(false));
    let link = Arc::new(LinkState::default());
    let (jobs_tx, jobs_rx) = channel();
    {
        let c = core.clone();
        std::thread::Builder::new()
            .name("reconciler".into())
            .spawn(move || reconciler(c, jobs_rx))?;
    }
    {
        let (c, s) = (core.clone(), stop.clone());
        std::thread::Builder::new()
            .name("watcher".into())
            .spawn(move || watch::run(c, s))?;
    }
    let sensors = crate::sensor::sources(&core.config.sensors);
    crate::sensor::spawn_all(&core, &sensors, &stop)?;
    if let Some(server) = core.config.server.clone() {
        let (c, l) = (core.clone(), link.clone());
        tokio::spawn(async move {
            let pause = DownloadPolicy {
                max_bytes_per_s: None,
                attempts: 0,
                base_delay: Duration::from_secs(1),
                max_delay: Duration::from_secs(300),
                max_size: 0,
            };
            let mut attempt = 0;
            let enrolled = loop {
                attempt += 1;
                let c2 = c.clone();
                let s2 = server.clone();
                let r = tokio::task::spawn_blocking(move || {
                    identity::enroll(
                        &c2.config.state_dir,
                        &s2,
                        &c2.device_id,
                        &c2.key,
                        &http_agent(s2.ca_pem().as_deref()),
                    )
                })
                .await;
                match r {
                    Ok(Ok(e)) => break e,
                    Ok(Err(e)) => tracing::warn!(error = %e, "enrollment failed; retrying"),
                    Err(e) => tracing::error!(error = %e, "enrollment task"),
                }
                tokio::time::sleep(backoff(&pause, attempt)).await;
            };
            tracing::info!(device = %enrolled.device_id, "enrolled");
            let credentials = enrolled
                .device_token
                .clone()
                .map(|t| (c.device_id.clone(), t));
            uplink::run(c, jobs_tx, l, credentials).await;
        });
    }
    let api = Api::new(core.clone(), link, sensors);
    let router = api::router(api);
    let mut servers = Vec::new();
    if !core.config.api.listen.is_empty() {
        let listener = tokio::net::TcpListener::bind(&core.config.api.listen)
            .await
            .with_context(|| format!("cannot listen on {}", core.config.api.listen))?;
        tracing::info!(addr = %listener.local_addr()?, "local API listening");
        let r = router.clone();
        servers.push(tokio::spawn(async move { axum::serve(listener, r).await }));
    }
    if let Some(path) = core.config.api.socket.clone() {
        let _ = std::fs::remove_file(&path);
        let listener = tokio::net::UnixListener::bind(&path)
            .with_context(|| format!("cannot bind the Unix socket {}", path.display()))?;
        tracing::info!(socket = %path.display(), "local API listening");
        let r = router.clone();
        servers.push(tokio::spawn(async move { axum::serve(listener, r).await }));
    }
    shutdown_signal().await;
    tracing::info!("edge-agent stopping");
    stop.store(true, Ordering::Relaxed);
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("SIGTERM handler");
    tokio::select! {
        _ = ctrl_c => {}
        _ = term.recv() => {}
    }
}
