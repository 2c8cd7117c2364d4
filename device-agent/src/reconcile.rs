//! Reconciling towards the desired state (DESIGN decisions 1, 2, 4, 6).
//!
//! - [`accept_desired`]: a desired document from the broker is believed only if the director key
//!   of the trust root signed it, it names this device, its sequence number is newer than the
//!   last one accepted (replays dropped) and its generation is newer than the one applied. The
//!   accepted document is stored, so a restart re-applies it.
//! - [`apply`]: per model, download (resumable) → store in the candidate slot (fsync, atomic
//!   rename) → verify against the trust root and the anti-rollback floor → load → self-test →
//!   record the trial → swap the served model atomically → the trial window
//!   ([`crate::watch`]) commits or rolls back. Every step is an event for the server.
//! - [`boot`]: at start, load what the slots say (trial, else active, else previous: the first
//!   that verifies), roll back crash-looping trials, restart interrupted trials.
//! - [`sideload`]: bundles shipped in the image are verified and installed with no server.
//! - Shadows (a rollout's shadow phase): a desired shadow is downloaded and verified the same
//!   way, loaded and self-tested, recorded in the model's second slot and run beside the active
//!   model by [`crate::shadow`]; a shadow no longer desired is stopped.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::Result;
use edge_protocol::{envelope, DesiredModel, DesiredShadow, DesiredState, Kind, Step};
use edge_runtime::bundle::inspect;
use edge_runtime::Model;

use crate::core::{Core, RunningTrial};
use crate::download::Downloader;
use crate::failpoint;
use crate::shadow::Shadow;
use crate::slots::SlotRef;
use crate::trial::TrialWindow;

/// Why a desired document was ignored.
#[derive(Debug, thiserror::Error)]
pub enum Rejected {
    /// Bad envelope, signature, sender or replayed sequence number.
    #[error(transparent)]
    Envelope(#[from] envelope::EnvelopeError),
    /// The trust root names no director.
    #[error("the trust root names no director key; desired states cannot be verified")]
    NoDirector,
    /// For another device.
    #[error("desired state is for device '{0}'")]
    OtherDevice(String),
    /// Not newer than what was applied.
    #[error("desired generation {got} is not newer than the applied generation {applied}")]
    StaleGeneration {
        /// Received.
        got: u64,
        /// Applied.
        applied: u64,
    },
    /// The state store failed.
    #[error("state store: {0}")]
    Store(#[from] redb::Error),
}

/// Checks a sealed desired document from the broker and records it as accepted.
pub fn accept_desired(core: &Core, bytes: &[u8]) -> Result<DesiredState, Rejected> {
    let director = core.director().ok_or(Rejected::NoDirector)?;
    let (header, doc): (_, DesiredState) = envelope::open(bytes, Kind::Desired, |sender| {
        (sender == "director").then_some(director)
    })?;
    let mut guard = envelope::ReplayGuard::default();
    let last = core.state.director_seq()?;
    if last > 0 {
        guard.restore("director", last);
    }
    guard.accept(&header)?;
    if doc.device_id != core.device_id {
        return Err(Rejected::OtherDevice(doc.device_id));
    }
    let applied = core.state.applied_generation()?;
    if doc.generation <= applied {
        return Err(Rejected::StaleGeneration {
            got: doc.generation,
            applied,
        });
    }
    core.state
        .accept_desired(doc.generation, header.seq, bytes)?;
    Ok(doc)
}

/// The stored desired document, re-read at start (already accepted once: only decoded).
pub fn stored_desired(core: &Core) -> Option<DesiredState> {
    let bytes = core.state.desired_doc().ok()??;
    let director = core.director()?;
    envelope::open::<DesiredState>(&bytes, Kind::Desired, |_| Some(director))
        .ok()
        .map(|(_, d)| d)
}

/// Where a bundle comes from.
pub enum Source<'a> {
    /// The OTA server's artifact store.
    Server(&'a Downloader),
    /// A file on the device (sideload).
    File(PathBuf),
}

/// Applies a desired state. `fresh` is true for a newly accepted generation (versions marked
/// bad get another chance), false when re-applying the stored one at start.
pub fn apply(core: &Core, doc: &DesiredState, downloader: Option<&Downloader>, fresh: bool) {
    let keep: Vec<String> = doc
        .models
        .iter()
        .chain(doc.shadows.iter().map(|s| &s.model))
        .map(|m| hex::encode(m.bundle_sha256.as_ref()))
        .collect();
    // shadows no longer desired stop first (a shadow promoted to a trial is loaded again)
    for (name, _) in core.host.shadows() {
        if !doc.shadows.iter().any(|s| s.model.name == name) {
            stop_shadow(core, &name);
        }
    }
    for m in &doc.models {
        if fresh {
            if let Err(e) = core.slots.clear_bad(&m.name) {
                tracing::error!(error = %e, "slot store");
            }
        }
        match downloader {
            Some(d) => reconcile_model(core, doc.generation, m, Source::Server(d)),
            None => core.event(
                doc.generation,
                &m.name,
                &m.version,
                Step::Failed,
                Some("no server configured to download from".into()),
            ),
        }
    }
    for shadow in &doc.shadows {
        match downloader {
            Some(d) => reconcile_shadow(core, doc.generation, shadow, d),
            None => core.event(
                doc.generation,
                &shadow.model.name,
                &shadow.model.version,
                Step::Failed,
                Some("no server configured to download the shadow from".into()),
            ),
        }
    }
    if let Some(d) = downloader {
        d.clean(&keep);
    }
}

/// Stops a model's shadow (served nothing, so nothing to roll back).
fn stop_shadow(core: &Core, name: &str) {
    if let Some(s) = core.host.remove_shadow(name) {
        tracing::info!(model = %name, version = %s.slot.version, "shadow stopped");
    }
    match core.slots.set_shadow(name, None) {
        Ok(_) => {
            if let Err(e) = core.queue_hello() {
                tracing::error!(error = %e, "cannot queue the reported state");
            }
        }
        Err(e) => tracing::error!(error = %e, "slot store"),
    }
}

/// Brings one model's shadow to the desired candidate: download, verify, load, self-test, then
/// run it beside the active model.
fn reconcile_shadow(core: &Core, generation: u64, want: &DesiredShadow, downloader: &Downloader) {
    let m = &want.model;
    let sha = hex::encode(m.bundle_sha256.as_ref());
    let slot = SlotRef {
        version: m.version.clone(),
        sha256: sha.clone(),
    };
    let fail = |detail: String| {
        core.event(generation, &m.name, &m.version, Step::Failed, Some(detail));
    };
    if let Some(current) = core.host.shadow(&m.name) {
        if current.slot == slot
            && current.sample_ppm == want.sample_ppm
            && (current.budget * 1000.0).round() as u32 == want.cpu_millicores
        {
            return; // already running as desired
        }
        if current.slot == slot {
            // the same candidate with another share or budget: no reload
            core.host.set_shadow(
                &m.name,
                Shadow::new(
                    current.model.clone(),
                    slot,
                    generation,
                    want.sample_ppm,
                    want.cpu_millicores,
                ),
            );
            return;
        }
    }
    if !core.slots.bundle_path(&sha).exists() {
        let file = match download(core, generation, m, downloader) {
            Ok(f) => f,
            Err(e) => return fail(e),
        };
        if let Err(e) = core.slots.adopt_file(&file, &sha) {
            return fail(format!("store: {e}"));
        }
    }
    let bytes = match core.slots.read_bundle(&slot) {
        Ok(b) => b,
        Err(e) => return fail(format!("read back: {e}")),
    };
    let model = match Model::load(&bytes, &core.trust, &core.load_options_for(&m.name)) {
        Ok(model) => model,
        Err(e) => return fail(format!("shadow not started: {e}")),
    };
    if let Err(e) = check_identity(&model, &m.name, &m.version) {
        return fail(e);
    }
    if let Err(e) = core.slots.set_shadow(&m.name, Some(slot.clone())) {
        return fail(format!("slot store: {e}"));
    }
    let shadow = Shadow::new(
        Arc::new(model),
        slot,
        generation,
        want.sample_ppm,
        want.cpu_millicores,
    );
    let detail = format!(
        "shadow beside the active model: {:.1} % of requests, {:.2} cores",
        f64::from(shadow.sample_ppm) / 1e4,
        shadow.budget
    );
    core.host.set_shadow(&m.name, shadow);
    core.event(
        generation,
        &m.name,
        &m.version,
        Step::Shadowing,
        Some(detail),
    );
}

/// Brings one model to the desired version, from `source`.
pub fn reconcile_model(core: &Core, generation: u64, want: &DesiredModel, source: Source<'_>) {
    let sha = hex::encode(want.bundle_sha256.as_ref());
    let slots = match core.slots.get(&want.name) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "slot store");
            return;
        }
    };
    let wanted = SlotRef {
        version: want.version.clone(),
        sha256: sha.clone(),
    };
    if slots.trial.as_ref() == Some(&wanted)
        || (slots.trial.is_none() && slots.active.as_ref() == Some(&wanted))
    {
        return; // already there (or on trial)
    }
    if slots.bad.contains(&want.version) {
        tracing::info!(model = %want.name, version = %want.version, "skipping a version marked bad for this generation");
        return;
    }
    let fail = |detail: String| {
        core.event(
            generation,
            &want.name,
            &want.version,
            Step::Failed,
            Some(detail),
        );
    };
    match (
        semver::Version::parse(&want.version),
        slots.floor.as_deref().map(semver::Version::parse),
    ) {
        (Err(e), _) => {
            return fail(format!(
                "desired version '{}' is not semver: {e}",
                want.version
            ))
        }
        (Ok(v), Some(Ok(floor))) if v < floor => {
            return fail(format!(
                "version {v} is below the anti-rollback floor {floor}; refused"
            ))
        }
        _ => {}
    }

    // 1. download (unless a complete copy is already in the store: a restart after the write)
    let downloaded = matches!(source, Source::Server(_));
    let stored = core.slots.bundle_path(&sha);
    let file = match source {
        Source::Server(_) if stored.exists() => stored,
        Source::Server(d) => match download(core, generation, want, d) {
            Ok(p) => p,
            Err(e) => return fail(e),
        },
        Source::File(p) => p,
    };
    install(
        core,
        generation,
        &want.name,
        &want.version,
        &sha,
        &file,
        downloaded,
    );
}

/// Downloads `want`'s bundle (resuming, retrying), announced by a `Downloading` event; the
/// complete, digest-checked file, or why not.
fn download(
    core: &Core,
    generation: u64,
    want: &DesiredModel,
    downloader: &Downloader,
) -> Result<PathBuf, String> {
    let sha = hex::encode(want.bundle_sha256.as_ref());
    core.event(
        generation,
        &want.name,
        &want.version,
        Step::Downloading,
        None,
    );
    downloader
        .fetch(&sha, want.size, |attempt, e, pause| {
            tracing::warn!(model = %want.name, attempt, error = %e, pause_ms = pause.as_millis() as u64, "download failed; retrying");
        })
        .map_err(|e| format!("download: {e}"))
}

/// Whether a loaded bundle is the model and version that was asked for.
fn check_identity(model: &Model, name: &str, version: &str) -> Result<(), String> {
    let m = model.manifest();
    if m.name != name || m.version != version {
        return Err(format!(
            "bundle is {} {}, but {name} {version} was expected",
            m.name, m.version
        ));
    }
    Ok(())
}

/// Stores, verifies, loads, self-tests and activates a complete bundle file, then starts its
/// trial (downloads) or commits it at once (sideloads, which ship with the image).
fn install(
    core: &Core,
    generation: u64,
    name: &str,
    version: &str,
    sha: &str,
    file: &Path,
    trial: bool,
) {
    let fail = |detail: String| {
        core.event(generation, name, version, Step::Failed, Some(detail));
    };
    let mut trials = core.transitions();
    // 2. write into the candidate slot
    let stored = if trial {
        core.slots.adopt_file(file, sha)
    } else {
        std::fs::read(file)
            .map_err(|e| crate::slots::SlotError::Io {
                path: file.to_path_buf(),
                source: e,
            })
            .and_then(|b| core.slots.store_bundle(&b).map(|_| ()))
    };
    if let Err(e) = stored {
        return fail(format!("store: {e}"));
    }
    failpoint::hit("write");
    let slot = SlotRef {
        version: version.to_string(),
        sha256: sha.to_string(),
    };
    // 3. verify + load + self-test
    let bytes = match core.slots.read_bundle(&slot) {
        Ok(b) => b,
        Err(e) => return fail(format!("read back: {e}")),
    };
    let model = match Model::load(&bytes, &core.trust, &core.load_options_for(name)) {
        Ok(m) => m,
        Err(e) => {
            let _ = core.slots.mark_bad(name, version);
            return fail(format!("not activated: {e}"));
        }
    };
    drop(bytes);
    if let Err(e) = check_identity(&model, name, version) {
        let _ = core.slots.mark_bad(name, version);
        return fail(e);
    }
    let choice = model.engine_choice();
    let engine_note = choice
        .is_notable()
        .then(|| format!("engine {}", choice.summary()));
    core.event(generation, name, version, Step::Verified, engine_note);
    failpoint::hit("verify");
    // 4. activate: record the trial first (a crash after this boots into it and counts), then swap
    if trials.remove(name).is_some()
        || core
            .slots
            .get(name)
            .map(|s| s.trial.is_some())
            .unwrap_or(false)
    {
        if let Ok(Some(old)) = core.slots.abandon_trial(name) {
            core.event(
                generation,
                name,
                &old.version,
                Step::RolledBack,
                Some(format!("trial superseded by {version}")),
            );
        }
    }
    if let Err(e) = core.slots.begin_trial(name, slot.clone()) {
        return fail(format!("slot store: {e}"));
    }
    let model = Arc::new(model);
    let fallback = core.host.activate(model.clone());
    core.event(generation, name, version, Step::Activated, None);
    failpoint::hit("activate");
    if trial {
        trials.insert(
            name.to_string(),
            RunningTrial {
                slot,
                window: TrialWindow::start(&model, Instant::now()),
                model,
                fallback,
                generation,
            },
        );
    } else {
        let min = model
            .manifest()
            .min_version
            .as_deref()
            .and_then(|v| semver::Version::parse(v).ok());
        match core.slots.commit(name, min.as_ref()) {
            Ok(_) => core.event(
                generation,
                name,
                version,
                Step::Committed,
                Some("sideloaded".into()),
            ),
            Err(e) => fail(format!("commit: {e}")),
        }
    }
}

/// At start: rolls back crash-looping trials, loads each model's best slot, and restarts the
/// trial window of a trial that was interrupted.
pub fn boot(core: &Core) -> Result<()> {
    let plans = core.slots.boot()?;
    let mut trials = core.transitions();
    for plan in plans {
        if let Some((slot, boots)) = &plan.crash_loop_rollback {
            core.event(
                0,
                &plan.model,
                &slot.version,
                Step::RolledBack,
                Some(format!(
                    "crash loop: the agent started {boots} times during the trial window"
                )),
            );
        }
        if plan.candidates.is_empty() {
            continue;
        }
        let state = core.slots.get(&plan.model)?;
        match core
            .slots
            .load_first(&plan, &core.trust, &core.load_options)
        {
            Ok((slot, model)) => {
                let model = Arc::new(model);
                core.host.activate(model.clone());
                let on_trial = state.trial.as_ref() == Some(&slot);
                tracing::info!(model = %plan.model, version = %slot.version, on_trial, "serving");
                if on_trial {
                    trials.insert(
                        plan.model.clone(),
                        RunningTrial {
                            slot,
                            window: TrialWindow::start(&model, Instant::now()),
                            model,
                            fallback: None,
                            generation: 0,
                        },
                    );
                } else if let Some(t) = &state.trial {
                    // the trial did not load: it is bad
                    let _ = core.slots.rollback(&plan.model);
                    core.event(
                        0,
                        &plan.model,
                        &t.version,
                        Step::RolledBack,
                        Some("trial bundle does not load after restart".into()),
                    );
                }
            }
            Err(failures) => {
                for (slot, reason) in failures {
                    core.event(
                        0,
                        &plan.model,
                        &slot.version,
                        Step::Failed,
                        Some(format!("cannot serve after restart: {reason}")),
                    );
                }
            }
        }
    }
    Ok(())
}

/// Installs the bundles of the sideload directory: for each model the highest version that
/// verifies, unless that version (or a higher one) is already installed.
pub fn sideload(core: &Core, dir: &Path) {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) => {
            tracing::warn!(dir = %dir.display(), error = %e, "sideload dir unreadable");
            return;
        }
    };
    let mut best: std::collections::BTreeMap<String, (semver::Version, PathBuf, String)> =
        Default::default();
    for entry in entries.flatten() {
        let path = entry.path();
        if path.extension().is_none_or(|e| e != "efb") {
            continue;
        }
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!(file = %path.display(), error = %e, "sideload: unreadable");
                continue;
            }
        };
        let info = match inspect(&bytes, &core.load_options.verify.limits) {
            Ok(i) => i,
            Err(e) => {
                core.event(
                    0,
                    "(sideload)",
                    "",
                    Step::Failed,
                    Some(format!("{}: {e}", path.display())),
                );
                continue;
            }
        };
        let m = &info.manifest;
        let Ok(v) = semver::Version::parse(&m.version) else {
            continue;
        };
        let sha = hex::encode(info.digest);
        if best.get(&m.name).is_none_or(|(bv, _, _)| v > *bv) {
            best.insert(m.name.clone(), (v, path, sha));
        }
    }
    for (name, (version, path, sha)) in best {
        let installed = core
            .slots
            .get(&name)
            .ok()
            .and_then(|s| s.trial.or(s.active));
        let newer = installed
            .as_ref()
            .and_then(|s| semver::Version::parse(&s.version).ok())
            .is_none_or(|v| version > v);
        if !newer {
            continue;
        }
        let want = DesiredModel {
            name: name.clone(),
            version: version.to_string(),
            bundle_sha256: minicbor::bytes::ByteArray::from(
                <[u8; 32]>::try_from(hex::decode(&sha).unwrap_or_default().as_slice())
                    .unwrap_or([0; 32]),
            ),
            size: 0,
        };
        reconcile_model(core, 0, &want, Source::File(path));
    }
}
