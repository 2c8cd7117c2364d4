//! The artifact downloader against a local HTTP server: the bandwidth cap paces the transfer,
//! a wrong digest deletes the file, an announced size beyond the free disk space is refused
//! before a byte is written, a server that sends more than announced is cut off, and transient
//! failures are retried with backoff.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use device_agent::download::{http_agent, DownloadError, DownloadPolicy, Downloader};
use sha2::{Digest, Sha256};

struct Server {
    body: Vec<u8>,
    fail_first: AtomicU32,
}

async fn artifact(
    State(s): State<Arc<Server>>,
    Path(_sha): Path<String>,
) -> axum::response::Response {
    if s.fail_first.load(Ordering::SeqCst) > 0 {
        s.fail_first.fetch_sub(1, Ordering::SeqCst);
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    }
    s.body.clone().into_response()
}

fn serve(body: Vec<u8>, fail_first: u32) -> (String, tokio::runtime::Runtime) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let state = Arc::new(Server {
        body,
        fail_first: AtomicU32::new(fail_first),
    });
    let router = Router::new()
        .route("/v1/artifacts/{sha}", get(artifact))
        .with_state(state);
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    rt.spawn(async move { axum::serve(listener, router).await });
    (url, rt)
}

fn policy(cap: Option<u64>) -> DownloadPolicy {
    DownloadPolicy {
        max_bytes_per_s: cap,
        attempts: 3,
        base_delay: Duration::from_millis(50),
        max_delay: Duration::from_millis(200),
        max_size: 1 << 30,
    }
}

fn body(n: usize) -> (Vec<u8>, String) {
    let b: Vec<u8> = (0..n).map(|i| (i * 31 % 251) as u8).collect();
    let sha = hex::encode(Sha256::digest(&b));
    (b, sha)
}

#[test]
fn the_bandwidth_cap_paces_the_transfer() {
    let (b, sha) = body(256 * 1024);
    let (url, _rt) = serve(b.clone(), 0);
    let dir = tempfile::tempdir().unwrap();
    let fast = Downloader::new(&url, http_agent(None), dir.path(), policy(None));
    let t = Instant::now();
    let p = fast.fetch(&sha, b.len() as u64, |_, _, _| {}).unwrap();
    let uncapped = t.elapsed();
    assert_eq!(std::fs::read(&p).unwrap(), b);
    std::fs::remove_file(p).unwrap();
    let slow = Downloader::new(&url, http_agent(None), dir.path(), policy(Some(128 * 1024)));
    let t = Instant::now();
    slow.fetch(&sha, b.len() as u64, |_, _, _| {}).unwrap();
    let capped = t.elapsed();
    assert!(
        capped >= Duration::from_millis(1800),
        "256 KiB at 128 KiB/s took {capped:?}"
    );
    assert!(
        uncapped < capped / 4,
        "uncapped {uncapped:?} vs capped {capped:?}"
    );
}

#[test]
fn a_wrong_digest_deletes_the_file_and_is_reported() {
    let (b, _) = body(10_000);
    let (url, _rt) = serve(b.clone(), 0);
    let dir = tempfile::tempdir().unwrap();
    let d = Downloader::new(&url, http_agent(None), dir.path(), policy(None));
    let wrong = "00".repeat(32);
    let e = d.fetch(&wrong, b.len() as u64, |_, _, _| {}).unwrap_err();
    assert!(matches!(e, DownloadError::Digest { .. }), "{e}");
    assert!(!d.partial_path(&wrong).exists());
}

#[test]
fn more_bytes_than_announced_are_refused() {
    let (b, sha) = body(10_000);
    let (url, _rt) = serve(b.clone(), 0);
    let dir = tempfile::tempdir().unwrap();
    let d = Downloader::new(&url, http_agent(None), dir.path(), policy(None));
    let e = d.fetch(&sha, 5_000, |_, _, _| {}).unwrap_err();
    assert!(matches!(e, DownloadError::TooLong(5_000)), "{e}");
}

#[test]
fn a_bundle_larger_than_the_free_disk_is_refused_before_writing() {
    let (url, _rt) = serve(Vec::new(), 0);
    let dir = tempfile::tempdir().unwrap();
    let mut p = policy(None);
    p.max_size = u64::MAX;
    let d = Downloader::new(&url, http_agent(None), dir.path(), p);
    let e = d
        .fetch(&"ab".repeat(32), 1 << 60, |_, _, _| {})
        .unwrap_err();
    assert!(matches!(e, DownloadError::DiskFull { .. }), "{e}");
    assert!(e.to_string().contains("not enough disk space"));
    // and a size over the agent's limit never gets that far
    let d = Downloader::new(&url, http_agent(None), dir.path(), policy(None));
    let e = d
        .fetch(&"ab".repeat(32), 2 << 30, |_, _, _| {})
        .unwrap_err();
    assert!(matches!(e, DownloadError::TooLarge { .. }), "{e}");
}

#[test]
fn server_errors_are_retried_with_backoff() {
    let (b, sha) = body(10_000);
    let (url, _rt) = serve(b.clone(), 2);
    let dir = tempfile::tempdir().unwrap();
    let d = Downloader::new(&url, http_agent(None), dir.path(), policy(None));
    let mut pauses = Vec::new();
    let p = d
        .fetch(&sha, b.len() as u64, |_, e, pause| {
            pauses.push((e.to_string(), pause))
        })
        .unwrap();
    assert_eq!(std::fs::read(p).unwrap(), b);
    assert_eq!(pauses.len(), 2, "{pauses:?}");
    assert!(pauses[0].0.contains("503"));
    assert!(pauses
        .iter()
        .all(|(_, p)| *p >= Duration::from_millis(25) && *p <= Duration::from_millis(200)));
    // out of attempts: the error comes back
    let (url, _rt2) = serve(b.clone(), 10);
    let d = Downloader::new(&url, http_agent(None), dir.path(), policy(None));
    std::fs::remove_dir_all(dir.path()).unwrap();
    let e = d.fetch(&sha, b.len() as u64, |_, _, _| {}).unwrap_err();
    assert!(
        matches!(e, DownloadError::Status { status: 503, .. }),
        "{e}"
    );
}
