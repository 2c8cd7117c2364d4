//! Fetching a bundle from the OTA server's artifact store: `GET {url}/v1/artifacts/{sha256}`
//! into `downloads/{sha256}.partial`, resumed with an HTTP `Range` request after a cut
//! connection or a restart, paced under an optional bandwidth cap, retried with exponential
//! backoff and full jitter. Before writing, the free space of the filesystem is checked
//! against what is still to come. The finished file is fsync'd and its sha256 checked against
//! the desired state; a mismatch deletes it. Nothing here trusts the bytes: verification
//! against the trust root is the next step, on the complete file.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use edge_protocol::enroll::ARTIFACTS_PATH;
use sha2::{Digest, Sha256};

use crate::failpoint;

/// Space kept free on the state filesystem beyond the download itself.
pub const DISK_MARGIN_BYTES: u64 = 4 * 1024 * 1024;

/// Why a download failed.
#[derive(Debug, thiserror::Error)]
pub enum DownloadError {
    /// The server could not be reached or cut the connection (retried).
    #[error("transfer from {url}: {reason}")]
    Transfer {
        /// URL.
        url: String,
        /// Why.
        reason: String,
    },
    /// The server answered with an error status.
    #[error("{url} answered HTTP {status}")]
    Status {
        /// URL.
        url: String,
        /// Status code.
        status: u16,
    },
    /// Not enough free space for the bundle.
    #[error("not enough disk space in {dir}: {needed} bytes needed, {free} free")]
    DiskFull {
        /// Directory.
        dir: PathBuf,
        /// Bytes needed (including a safety margin).
        needed: u64,
        /// Bytes free.
        free: u64,
    },
    /// The file is complete but its digest is not the desired one.
    #[error("downloaded file has sha256 {got}, expected {expected}")]
    Digest {
        /// Expected hex digest.
        expected: String,
        /// Received hex digest.
        got: String,
    },
    /// The server sent more bytes than the desired state announced.
    #[error("server sent more than the announced {0} bytes")]
    TooLong(u64),
    /// The announced size is over the agent's limit.
    #[error("bundle of {size} bytes is over the {max}-byte limit")]
    TooLarge {
        /// Announced size.
        size: u64,
        /// Limit.
        max: u64,
    },
    /// Local file I/O.
    #[error("{path}: {source}")]
    Io {
        /// File.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
}

impl DownloadError {
    /// Worth another attempt after a pause.
    pub fn is_transient(&self) -> bool {
        match self {
            DownloadError::Transfer { .. } | DownloadError::Digest { .. } => true,
            DownloadError::Status { status, .. } => *status >= 500 || *status == 429,
            DownloadError::DiskFull { .. } | DownloadError::Io { .. } => true,
            DownloadError::TooLong(_) | DownloadError::TooLarge { .. } => false,
        }
    }
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> DownloadError + '_ {
    move |source| DownloadError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Free bytes for unprivileged writers on the filesystem holding `dir`.
pub fn free_space(dir: &Path) -> std::io::Result<u64> {
    let st = rustix::fs::statvfs(dir)?;
    Ok(st.f_bavail.saturating_mul(st.f_frsize))
}

/// Download policy.
#[derive(Clone, Debug)]
pub struct DownloadPolicy {
    /// Bytes per second, if capped.
    pub max_bytes_per_s: Option<u64>,
    /// Attempts before giving up.
    pub attempts: u32,
    /// First retry pause; doubles per attempt.
    pub base_delay: Duration,
    /// Longest pause.
    pub max_delay: Duration,
    /// Largest bundle accepted.
    pub max_size: u64,
}

/// The artifact downloader.
pub struct Downloader {
    base_url: String,
    agent: ureq::Agent,
    dir: PathBuf,
    policy: DownloadPolicy,
    bearer: std::sync::RwLock<Option<String>>,
}

/// The HTTP client settings the agent uses everywhere.
pub fn http_agent(ca_pem: Option<&[u8]>) -> ureq::Agent {
    let builder = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_connect(Some(Duration::from_secs(10)))
        .timeout_recv_response(Some(Duration::from_secs(30)));
    #[cfg(feature = "tls")]
    let builder = builder.tls_config(crate::tls::http(ca_pem));
    #[cfg(not(feature = "tls"))]
    let _ = ca_pem;
    builder.build().into()
}

/// Pause before retry `attempt` (1-based): `base * 2^(attempt-1)`, capped, times a random
/// factor in [0.5, 1) so a fleet that lost the server together does not return together.
pub fn backoff(policy: &DownloadPolicy, attempt: u32) -> Duration {
    let exp = policy
        .base_delay
        .saturating_mul(1u32 << attempt.saturating_sub(1).min(20));
    let capped = exp.min(policy.max_delay);
    let mut b = [0u8; 2];
    let r = if getrandom::fill(&mut b).is_ok() {
        u16::from_le_bytes(b) as f64 / 65536.0
    } else {
        0.5
    };
    capped.mul_f64(0.5 + r / 2.0)
}

impl Downloader {
    /// A downloader from `base_url` into `dir`.
    pub fn new(base_url: &str, agent: ureq::Agent, dir: &Path, policy: DownloadPolicy) -> Self {
        Downloader {
            base_url: base_url.trim_end_matches('/').to_string(),
            agent,
            dir: dir.to_path_buf(),
            policy,
            bearer: std::sync::RwLock::new(None),
        }
    }

    /// The device token sent as `Authorization: Bearer` (from enrollment).
    pub fn set_bearer(&self, token: Option<String>) {
        *self.bearer.write().unwrap_or_else(|e| e.into_inner()) = token;
    }

    /// Where a download in progress lives.
    pub fn partial_path(&self, sha256: &str) -> PathBuf {
        self.dir.join(format!("{sha256}.partial"))
    }

    /// Deletes partial downloads other than those in `keep`.
    pub fn clean(&self, keep: &[String]) {
        if let Ok(entries) = fs::read_dir(&self.dir) {
            for e in entries.flatten() {
                let p = e.path();
                let name = p.file_stem().and_then(|s| s.to_str()).unwrap_or_default();
                if !keep.iter().any(|k| k == name) {
                    let _ = fs::remove_file(&p);
                }
            }
        }
    }

    /// Fetches the bundle `sha256` of `size` bytes, with retries. `on_retry` hears about each
    /// failed attempt (for logging). Returns the path of the complete, digest-checked file.
    pub fn fetch(
        &self,
        sha256: &str,
        size: u64,
        mut on_retry: impl FnMut(u32, &DownloadError, Duration),
    ) -> Result<PathBuf, DownloadError> {
        if size > self.policy.max_size {
            return Err(DownloadError::TooLarge {
                size,
                max: self.policy.max_size,
            });
        }
        fs::create_dir_all(&self.dir).map_err(io(&self.dir))?;
        let mut attempt = 0;
        loop {
            attempt += 1;
            match self.attempt(sha256, size) {
                Ok(p) => return Ok(p),
                Err(e) if e.is_transient() && attempt < self.policy.attempts => {
                    let pause = backoff(&self.policy, attempt);
                    on_retry(attempt, &e, pause);
                    std::thread::sleep(pause);
                }
                Err(e) => return Err(e),
            }
        }
    }

    fn attempt(&self, sha256: &str, size: u64) -> Result<PathBuf, DownloadError> {
        let path = self.partial_path(sha256);
        let mut file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&path)
            .map_err(io(&path))?;
        let mut have = file.metadata().map_err(io(&path))?.len();
        if have > size {
            file.set_len(0).map_err(io(&path))?;
            have = 0;
        }
        if have < size {
            let free = free_space(&self.dir).map_err(io(&self.dir))?;
            let needed = size - have + DISK_MARGIN_BYTES;
            if free < needed {
                return Err(DownloadError::DiskFull {
                    dir: self.dir.clone(),
                    needed,
                    free,
                });
            }
            self.transfer(sha256, size, &path, &mut file, have)?;
        }
        file.sync_all().map_err(io(&path))?;
        // check the digest of the whole file
        file.rewind().map_err(io(&path))?;
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = file.read(&mut buf).map_err(io(&path))?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
        }
        let got = hex::encode(hasher.finalize());
        if got != sha256 {
            drop(file);
            let _ = fs::remove_file(&path);
            return Err(DownloadError::Digest {
                expected: sha256.to_string(),
                got,
            });
        }
        Ok(path)
    }

    fn transfer(
        &self,
        sha256: &str,
        size: u64,
        path: &Path,
        file: &mut File,
        mut have: u64,
    ) -> Result<(), DownloadError> {
        let url = format!("{}{ARTIFACTS_PATH}/{sha256}", self.base_url);
        let transfer = |reason: String| DownloadError::Transfer {
            url: url.clone(),
            reason,
        };
        let mut request = self.agent.get(&url);
        if let Some(t) = self
            .bearer
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .as_deref()
        {
            request = request.header("Authorization", format!("Bearer {t}"));
        }
        if have > 0 {
            request = request.header("Range", format!("bytes={have}-"));
        }
        let mut response = request.call().map_err(|e| transfer(e.to_string()))?;
        match response.status().as_u16() {
            206 if have > 0 => {
                file.seek(std::io::SeekFrom::Start(have))
                    .map_err(io(path))?;
            }
            200 => {
                // no range support (or a fresh start): from the beginning
                have = 0;
                file.set_len(0).map_err(io(path))?;
                file.rewind().map_err(io(path))?;
            }
            416 => {
                // our partial file is not a prefix the server knows: start over next attempt
                file.set_len(0).map_err(io(path))?;
                return Err(transfer("range not satisfiable; restarting".into()));
            }
            status => {
                return Err(DownloadError::Status {
                    url: url.clone(),
                    status,
                })
            }
        }
        let mut reader = response.body_mut().as_reader();
        let mut buf = vec![0u8; 32 * 1024];
        let started = Instant::now();
        let mut sent_this_attempt = 0u64;
        let mut failpoint_armed = true;
        loop {
            let n = reader.read(&mut buf).map_err(|e| transfer(e.to_string()))?;
            if n == 0 {
                break;
            }
            if have + n as u64 > size {
                file.set_len(0).map_err(io(path))?;
                return Err(DownloadError::TooLong(size));
            }
            file.write_all(&buf[..n]).map_err(io(path))?;
            have += n as u64;
            sent_this_attempt += n as u64;
            if failpoint_armed && have >= size / 2 {
                failpoint_armed = false;
                file.sync_all().map_err(io(path))?;
                failpoint::hit("download");
            }
            if let Some(rate) = self.policy.max_bytes_per_s.filter(|r| *r > 0) {
                let due = Duration::from_secs_f64(sent_this_attempt as f64 / rate as f64);
                let elapsed = started.elapsed();
                if due > elapsed {
                    std::thread::sleep(due - elapsed);
                }
            }
        }
        if have < size {
            file.sync_all().map_err(io(path))?;
            return Err(transfer(format!(
                "connection ended after {have} of {size} bytes"
            )));
        }
        Ok(())
    }
}
