//! A/B slots on disk (DESIGN decision 6): where each model's bundles live, which one is active,
//! which is the previous one (kept for instant rollback), which is on trial, the anti-rollback
//! floor and the versions marked bad.
//!
//! - Bundle files are content-addressed (`bundles/<sha256>.efb`), written to a `.part` file,
//!   fsync'd, renamed into place and the directory fsync'd: a file with the final name is always
//!   complete.
//! - Slot state is one redb record per model. Every transition (trial, commit, rollback) is one
//!   write transaction, so a kill -9 leaves either the old state or the new one.
//! - At boot, [`Slots::boot`] counts the boots of a model still on trial: a trial that keeps
//!   dying (crash loop) is rolled back after `max_trial_boots` (boot counting, as RAUC and U-Boot
//!   do). The caller then loads [`BootPlan::candidates`] in order and serves the first that
//!   verifies; a corrupted or missing file falls through to the next.

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use edge_runtime::trust::TrustRoot;
use edge_runtime::{LoadOptions, Model};
use minicbor::{Decode, Encode};
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use sha2::{Digest, Sha256};

const SLOTS: TableDefinition<&str, &[u8]> = TableDefinition::new("slots");

/// One installed bundle.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
pub struct SlotRef {
    /// Semver version.
    #[n(0)]
    pub version: String,
    /// sha256 of the bundle file, hex.
    #[n(1)]
    pub sha256: String,
}

/// The slot state of one model.
#[derive(Clone, Debug, Default, PartialEq, Eq, Encode, Decode)]
pub struct ModelSlots {
    /// The committed, serving bundle.
    #[n(0)]
    pub active: Option<SlotRef>,
    /// The bundle before it, kept for rollback.
    #[n(1)]
    pub previous: Option<SlotRef>,
    /// A bundle activated but not yet committed (in its trial window).
    #[n(2)]
    pub trial: Option<SlotRef>,
    /// Boots since the trial started (crash-loop detection).
    #[n(3)]
    pub trial_boots: u32,
    /// Anti-rollback floor: versions below it are refused.
    #[n(4)]
    pub floor: Option<String>,
    /// Versions rolled back, not retried until the desired generation changes.
    #[n(5)]
    pub bad: Vec<String>,
    /// A candidate running as a shadow beside the active bundle (the second slot in a shadow
    /// phase; it answers nothing).
    #[n(6)]
    pub shadow: Option<SlotRef>,
}

/// Slot store failures.
#[derive(Debug, thiserror::Error)]
pub enum SlotError {
    /// The state store failed.
    #[error("slot store: {0}")]
    Store(#[from] redb::Error),
    /// Writing or reading a bundle file failed (a full disk shows up here).
    #[error("bundle file {path}: {source}")]
    Io {
        /// File.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// A stored record could not be decoded.
    #[error("slot record for '{0}' is corrupt")]
    Corrupt(String),
    /// Commit or rollback with nothing on trial.
    #[error("model '{0}' has no bundle on trial")]
    NoTrial(String),
}

fn store<E: Into<redb::Error>>(e: E) -> SlotError {
    SlotError::Store(e.into())
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> SlotError + '_ {
    move |source| SlotError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// What to load for one model at boot, in order of preference.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BootPlan {
    /// Model name.
    pub model: String,
    /// Slots to try, best first (trial, then active, then previous).
    pub candidates: Vec<SlotRef>,
    /// A trial rolled back at this boot because it kept crashing, with its boot count.
    pub crash_loop_rollback: Option<(SlotRef, u32)>,
}

/// The slot store.
pub struct Slots {
    db: Arc<Database>,
    dir: PathBuf,
    max_trial_boots: u32,
}

impl Slots {
    /// Opens the store: `db` holds the state, `dir` the bundle files. A trial that has booted
    /// more than `max_trial_boots` times is rolled back at the next boot.
    pub fn open(db: Arc<Database>, dir: &Path, max_trial_boots: u32) -> Result<Slots, SlotError> {
        fs::create_dir_all(dir).map_err(io(dir))?;
        let tx = db.begin_write().map_err(store)?;
        tx.open_table(SLOTS).map_err(store)?;
        tx.commit().map_err(store)?;
        Ok(Slots {
            db,
            dir: dir.to_path_buf(),
            max_trial_boots,
        })
    }

    /// Path of a bundle file by digest.
    pub fn bundle_path(&self, sha256: &str) -> PathBuf {
        self.dir.join(format!("{sha256}.efb"))
    }

    /// Writes bundle bytes durably under their digest; returns the hex digest. Idempotent.
    pub fn store_bundle(&self, bytes: &[u8]) -> Result<String, SlotError> {
        let sha = hex::encode(Sha256::digest(bytes));
        let path = self.bundle_path(&sha);
        if path.exists() {
            return Ok(sha);
        }
        edge_runtime::bundle::write_durably(&self.dir, &format!("{sha}.efb"), bytes)
            .map_err(io(&path))?;
        Ok(sha)
    }

    /// Moves a complete, digest-checked file (a finished download) into the store under its
    /// digest: fsync'd, renamed atomically, directory fsync'd. The file must be on the same
    /// filesystem as the store.
    pub fn adopt_file(&self, file: &Path, sha256: &str) -> Result<(), SlotError> {
        let path = self.bundle_path(sha256);
        if path.exists() {
            if file != path {
                let _ = fs::remove_file(file);
            }
            return Ok(());
        }
        File::open(file)
            .and_then(|f| f.sync_all())
            .map_err(io(file))?;
        fs::rename(file, &path).map_err(io(&path))?;
        File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(io(&self.dir))?;
        Ok(())
    }

    /// Reads a stored bundle.
    pub fn read_bundle(&self, slot: &SlotRef) -> Result<Vec<u8>, SlotError> {
        let path = self.bundle_path(&slot.sha256);
        fs::read(&path).map_err(io(&path))
    }

    /// The state of one model (default when never installed).
    pub fn get(&self, model: &str) -> Result<ModelSlots, SlotError> {
        let tx = self.db.begin_read().map_err(store)?;
        let t = tx.open_table(SLOTS).map_err(store)?;
        match t.get(model).map_err(store)? {
            Some(v) => minicbor::decode(v.value()).map_err(|_| SlotError::Corrupt(model.into())),
            None => Ok(ModelSlots::default()),
        }
    }

    /// Every model with state, sorted by name.
    pub fn models(&self) -> Result<Vec<(String, ModelSlots)>, SlotError> {
        let tx = self.db.begin_read().map_err(store)?;
        let t = tx.open_table(SLOTS).map_err(store)?;
        let mut out = Vec::new();
        for entry in t.iter().map_err(store)? {
            let (k, v) = entry.map_err(store)?;
            let name = k.value().to_string();
            let slots =
                minicbor::decode(v.value()).map_err(|_| SlotError::Corrupt(name.clone()))?;
            out.push((name, slots));
        }
        Ok(out)
    }

    /// Applies `change` to a model's state in one transaction; returns the new state.
    fn update(
        &self,
        model: &str,
        change: impl FnOnce(&mut ModelSlots) -> Result<(), SlotError>,
    ) -> Result<ModelSlots, SlotError> {
        let tx = self.db.begin_write().map_err(store)?;
        let next = {
            let mut t = tx.open_table(SLOTS).map_err(store)?;
            let mut slots = match t.get(model).map_err(store)? {
                Some(v) => {
                    minicbor::decode(v.value()).map_err(|_| SlotError::Corrupt(model.into()))?
                }
                None => ModelSlots::default(),
            };
            change(&mut slots)?;
            let bytes = minicbor::to_vec(&slots).expect("encoding into a Vec cannot fail");
            t.insert(model, bytes.as_slice()).map_err(store)?;
            slots
        };
        tx.commit().map_err(store)?;
        Ok(next)
    }

    /// Records the shadow running beside a model (`None`: none).
    pub fn set_shadow(&self, model: &str, slot: Option<SlotRef>) -> Result<ModelSlots, SlotError> {
        self.update(model, |s| {
            s.shadow = slot;
            Ok(())
        })
    }

    /// Records that `slot` was activated and its trial window started (a shadow of the same
    /// bundle is over: it is the trial now).
    pub fn begin_trial(&self, model: &str, slot: SlotRef) -> Result<ModelSlots, SlotError> {
        self.update(model, |s| {
            if s.shadow.as_ref() == Some(&slot) {
                s.shadow = None;
            }
            s.trial = Some(slot);
            s.trial_boots = 0;
            Ok(())
        })
    }

    /// The trial passed: it becomes active, the active one previous; the floor rises to
    /// `min_version` if that is higher. Bundle files no slot refers to are deleted.
    pub fn commit(
        &self,
        model: &str,
        min_version: Option<&semver::Version>,
    ) -> Result<ModelSlots, SlotError> {
        let next = self.update(model, |s| {
            let trial = s
                .trial
                .take()
                .ok_or_else(|| SlotError::NoTrial(model.into()))?;
            if s.active.as_ref() != Some(&trial) {
                s.previous = s.active.take();
            }
            s.active = Some(trial);
            s.trial_boots = 0;
            if let Some(min) = min_version {
                let current = s
                    .floor
                    .as_deref()
                    .and_then(|f| semver::Version::parse(f).ok());
                if current.as_ref().is_none_or(|c| min > c) {
                    s.floor = Some(min.to_string());
                }
            }
            Ok(())
        })?;
        self.collect_garbage()?;
        Ok(next)
    }

    /// The trial failed: back to the active slot, and the trial's version is marked bad.
    pub fn rollback(&self, model: &str) -> Result<(ModelSlots, SlotRef), SlotError> {
        let mut rolled = None;
        let next = self.update(model, |s| {
            let trial = s
                .trial
                .take()
                .ok_or_else(|| SlotError::NoTrial(model.into()))?;
            if !s.bad.contains(&trial.version) {
                s.bad.push(trial.version.clone());
            }
            s.trial_boots = 0;
            rolled = Some(trial);
            Ok(())
        })?;
        Ok((next, rolled.expect("set by update")))
    }

    /// Marks a version bad without it ever having been on trial (it failed verification or its
    /// self-test): it is not tried again until the desired generation changes.
    pub fn mark_bad(&self, model: &str, version: &str) -> Result<ModelSlots, SlotError> {
        self.update(model, |s| {
            if !s.bad.iter().any(|v| v == version) {
                s.bad.push(version.to_string());
            }
            Ok(())
        })
    }

    /// Ends a trial without judging it (a newer desired state replaced it): back to the active
    /// slot, the version is not marked bad. Returns the abandoned slot, if there was one.
    pub fn abandon_trial(&self, model: &str) -> Result<Option<SlotRef>, SlotError> {
        let mut abandoned = None;
        self.update(model, |s| {
            abandoned = s.trial.take();
            s.trial_boots = 0;
            Ok(())
        })?;
        Ok(abandoned)
    }

    /// A new desired generation: versions marked bad may be tried again.
    pub fn clear_bad(&self, model: &str) -> Result<ModelSlots, SlotError> {
        self.update(model, |s| {
            s.bad.clear();
            Ok(())
        })
    }

    /// Called once per process start: counts trial boots, rolls back crash-looping trials, and
    /// says what to load for each model. Stray `.part` files (a download or copy cut short) are
    /// removed.
    pub fn boot(&self) -> Result<Vec<BootPlan>, SlotError> {
        self.remove_partial_files()?;
        let mut plans = Vec::new();
        for (model, _) in self.models()? {
            let mut crash = None;
            let max = self.max_trial_boots;
            let slots = self.update(&model, |s| {
                if let Some(trial) = &s.trial {
                    s.trial_boots += 1;
                    if s.trial_boots > max {
                        crash = Some((trial.clone(), s.trial_boots));
                        if !s.bad.contains(&trial.version) {
                            s.bad.push(trial.version.clone());
                        }
                        s.trial = None;
                        s.trial_boots = 0;
                    }
                }
                Ok(())
            })?;
            let candidates = [&slots.trial, &slots.active, &slots.previous]
                .into_iter()
                .flatten()
                .cloned()
                .collect();
            plans.push(BootPlan {
                model,
                candidates,
                crash_loop_rollback: crash,
            });
        }
        Ok(plans)
    }

    /// Loads the first candidate of `plan` that verifies (against `trust`, with this model's
    /// anti-rollback floor) and passes its self-test. Returns it, or every candidate's failure.
    pub fn load_first(
        &self,
        plan: &BootPlan,
        trust: &TrustRoot,
        options: &LoadOptions,
    ) -> Result<(SlotRef, Model), Vec<(SlotRef, String)>> {
        let mut failures = Vec::new();
        let floor = self
            .get(&plan.model)
            .ok()
            .and_then(|s| s.floor)
            .and_then(|f| semver::Version::parse(&f).ok());
        let mut options = options.clone();
        options.verify.floor = floor;
        for slot in &plan.candidates {
            let loaded = self
                .read_bundle(slot)
                .map_err(|e| e.to_string())
                .and_then(|bytes| Model::load(&bytes, trust, &options).map_err(|e| e.to_string()));
            match loaded {
                Ok(model) => return Ok((slot.clone(), model)),
                Err(reason) => failures.push((slot.clone(), reason)),
            }
        }
        Err(failures)
    }

    fn remove_partial_files(&self) -> Result<(), SlotError> {
        for entry in fs::read_dir(&self.dir).map_err(io(&self.dir))? {
            let path = entry.map_err(io(&self.dir))?.path();
            if path.extension().is_some_and(|e| e == "part") {
                fs::remove_file(&path).map_err(io(&path))?;
            }
        }
        Ok(())
    }

    /// Deletes bundle files that no model's active, previous or trial slot refers to.
    fn collect_garbage(&self) -> Result<(), SlotError> {
        let keep: Vec<String> = self
            .models()?
            .into_iter()
            .flat_map(|(_, s)| [s.active, s.previous, s.trial, s.shadow])
            .flatten()
            .map(|r| format!("{}.efb", r.sha256))
            .collect();
        for entry in fs::read_dir(&self.dir).map_err(io(&self.dir))? {
            let path = entry.map_err(io(&self.dir))?.path();
            let name = path
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or_default()
                .to_string();
            if name.ends_with(".efb") && !keep.contains(&name) {
                fs::remove_file(&path).map_err(io(&path))?;
            }
        }
        Ok(())
    }
}
