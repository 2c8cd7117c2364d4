//! The bundle registry: uploads are verified against the fleet trust root before anything is
//! kept (DESIGN decision 3: the server can only offer what the signing keys signed), stored
//! content-addressed (`artifacts/<sha256>.efb`, fsync + atomic rename), and recorded with their
//! manifest summary. A bundle is deleted only when no rollout uses it.

use std::fs;
use std::path::{Path, PathBuf};

use edge_bundle::trust::TrustRoot;
use edge_bundle::{verify_bytes, VerifyPolicy};
/// A bundle in the registry (the REST contract's type, stored as it is shown).
pub use edge_protocol::rest::Bundle as BundleRecord;
use sha2::{Digest, Sha256};

use crate::store::{Records, Store, StoreError, Table};

/// Registry failures.
#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    /// Not a valid, trusted bundle (the reason names the check that failed).
    #[error("bundle refused: {0}")]
    Refused(String),
    /// Over the upload limit.
    #[error("bundle of {size} bytes is over the {max}-byte limit")]
    TooLarge {
        /// Size.
        size: u64,
        /// Limit.
        max: u64,
    },
    /// Still used by a rollout.
    #[error("bundle {sha256} is used by rollout {rollout}; abort or finish it first")]
    InUse {
        /// Bundle.
        sha256: String,
        /// Rollout id.
        rollout: String,
    },
    /// No such bundle.
    #[error("no bundle sha256:{0}")]
    NotFound(String),
    /// File I/O.
    #[error("{path}: {source}")]
    Io {
        /// File.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// Store.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The registry.
pub struct Bundles<S: Store + ?Sized> {
    records: Records<S>,
    dir: PathBuf,
    max_bytes: u64,
    /// Reference statistics by sha256: bundles are content-addressed, so they never change.
    references: std::sync::Mutex<std::collections::HashMap<String, edge_bundle::ReferenceStats>>,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> BundleError + '_ {
    move |source| BundleError::Io {
        path: path.to_path_buf(),
        source,
    }
}

impl<S: Store + ?Sized> Bundles<S> {
    /// A registry keeping files in `dir`, refusing uploads over `max_bytes`.
    pub fn new(records: Records<S>, dir: &Path, max_bytes: u64) -> Result<Self, BundleError> {
        fs::create_dir_all(dir).map_err(io(dir))?;
        Ok(Bundles {
            records,
            dir: dir.to_path_buf(),
            max_bytes,
            references: Default::default(),
        })
    }

    /// Path of a stored bundle.
    pub fn path(&self, sha256: &str) -> PathBuf {
        self.dir.join(format!("{sha256}.efb"))
    }

    /// The signed manifest of a stored bundle (verified at upload; read back without the
    /// signature check), or None if its file is missing or unreadable.
    pub fn manifest(&self, sha256: &str) -> Option<edge_bundle::Manifest> {
        let bytes = std::fs::read(self.path(sha256)).ok()?;
        edge_bundle::inspect(&bytes, &Default::default())
            .ok()
            .map(|i| i.manifest)
    }

    /// The reference statistics of a stored bundle (what PSI is measured against), read from its
    /// file once and then kept; empty if the file is missing or unreadable. The engine's gate,
    /// the rollout view and the charts all read them here.
    pub fn reference(&self, sha256: &str) -> edge_bundle::ReferenceStats {
        let mut cache = self.references.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(r) = cache.get(sha256) {
            return r.clone();
        }
        let Some(r) = self.manifest(sha256).map(|m| m.reference) else {
            return Default::default();
        };
        cache.insert(sha256.to_string(), r.clone());
        r
    }

    /// Verifies and stores an upload; idempotent for the same bytes.
    pub fn upload(
        &self,
        bytes: &[u8],
        trust: &TrustRoot,
        by: &str,
        now: u64,
    ) -> Result<BundleRecord, BundleError> {
        if bytes.len() as u64 > self.max_bytes {
            return Err(BundleError::TooLarge {
                size: bytes.len() as u64,
                max: self.max_bytes,
            });
        }
        let policy = VerifyPolicy {
            now: Some(now),
            ..Default::default()
        };
        let verified =
            verify_bytes(bytes, trust, &policy).map_err(|e| BundleError::Refused(e.to_string()))?;
        let sha = hex::encode(Sha256::digest(bytes));
        if let Some(existing) = self.records.get::<BundleRecord>(Table::Bundles, &sha)? {
            return Ok(existing);
        }
        let m = verified.manifest();
        let task = serde_json::to_value(&m.output.task)
            .ok()
            .and_then(|v| v.get("task").and_then(|t| t.as_str()).map(str::to_string))
            .unwrap_or_else(|| "raw".into());
        let record = BundleRecord {
            sha256: sha.clone(),
            name: m.name.clone(),
            version: m.version.clone(),
            size: bytes.len() as u64,
            min_version: m.min_version.clone(),
            task,
            payload_format: m.payload.format.name().to_string(),
            signers: verified.signers().iter().map(|k| k.to_string()).collect(),
            uploaded_at: now,
            uploaded_by: by.to_string(),
        };
        // the file first (complete under its final name), then the record
        let path = self.path(&sha);
        if !path.exists() {
            edge_bundle::write_durably(&self.dir, &format!("{sha}.efb"), bytes)
                .map_err(io(&path))?;
        }
        self.records.put(Table::Bundles, &sha, &record)?;
        Ok(record)
    }

    /// One bundle's record.
    pub fn get(&self, sha256: &str) -> Result<Option<BundleRecord>, BundleError> {
        Ok(self.records.get(Table::Bundles, sha256)?)
    }

    /// Every bundle.
    pub fn list(&self) -> Result<Vec<BundleRecord>, BundleError> {
        Ok(self.records.list(Table::Bundles, "", usize::MAX)?)
    }

    /// Deletes a bundle unless `used_by` names a rollout using it.
    pub fn delete(&self, sha256: &str, used_by: Option<&str>) -> Result<(), BundleError> {
        if self.get(sha256)?.is_none() {
            return Err(BundleError::NotFound(sha256.to_string()));
        }
        if let Some(rollout) = used_by {
            return Err(BundleError::InUse {
                sha256: sha256.to_string(),
                rollout: rollout.to_string(),
            });
        }
        self.records.delete(Table::Bundles, sha256)?;
        let path = self.path(sha256);
        if path.exists() {
            fs::remove_file(&path).map_err(io(&path))?;
        }
        Ok(())
    }
}
