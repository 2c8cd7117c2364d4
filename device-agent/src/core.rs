//! The agent's shared state and the operations every part of it uses: identity, trust root,
//! the one redb file (slots, outbox, facts), the served models, the running trials, and the
//! signed events and hello messages the device sends.
//!
//! Every slot transition (install, trial start, commit, rollback) happens under one lock
//! ([`Core::transitions`]), so the reconciler and the trial watcher never interleave. Requests
//! never take it: they only read [`ModelHost`].

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, Context, Result};
use edge_protocol::{envelope, Event, Events, Header, Hello, Kind, ReportedModel, Step, Telemetry};
use edge_runtime::trust::{RootAnchor, TrustRoot};
use edge_runtime::{LoadOptions, Model, SigningKey};
use minicbor::bytes::ByteArray;
use redb::Database;

use crate::config::Config;
use crate::host::ModelHost;
use crate::identity;
use crate::outbox::{Class, Outbox};
use crate::slots::{SlotRef, Slots};
use crate::state::AgentState;
use crate::trial::TrialWindow;

/// Unix seconds now.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// A model in its trial window.
pub struct RunningTrial {
    /// The slot on trial.
    pub slot: SlotRef,
    /// The model serving it.
    pub model: Arc<Model>,
    /// The window.
    pub window: TrialWindow,
    /// The model it replaced, kept loaded for an instant rollback (none after a restart or for
    /// a first install).
    pub fallback: Option<Arc<Model>>,
    /// Generation that asked for it (0: sideload or boot).
    pub generation: u64,
}

/// Running trials by model name; holding this is holding the transition lock.
pub type Trials = HashMap<String, RunningTrial>;

/// The agent's shared state.
pub struct Core {
    /// Configuration.
    pub config: Config,
    /// Device id.
    pub device_id: String,
    /// Device key.
    pub key: SigningKey,
    /// Fleet trust root.
    pub trust: TrustRoot,
    /// A/B slots.
    pub slots: Slots,
    /// Outgoing messages.
    pub outbox: Outbox,
    /// Small facts.
    pub state: AgentState,
    /// Served models.
    pub host: ModelHost,
    /// How bundles are loaded.
    pub load_options: LoadOptions,
    trials: Mutex<Trials>,
    /// Wakes the uplink when the outbox has something new.
    pub outbox_signal: tokio::sync::Notify,
    /// Process start.
    pub started: Instant,
}

impl Core {
    /// Opens everything in `config.state_dir`: creates the device key at first start, reads the
    /// trust root, opens the state database.
    pub fn open(config: Config) -> Result<Core> {
        let device_id = identity::device_id(&config)?;
        std::fs::create_dir_all(&config.state_dir)
            .with_context(|| format!("cannot create state_dir {}", config.state_dir.display()))?;
        let key = identity::device_key(&config.state_dir)?;
        let trust = read_trust(&config.trust_root, config.root_key.as_deref())?;
        let db = Arc::new(Database::create(config.db_path()).with_context(|| {
            format!(
                "cannot open the state database {} (is another edge-agent running on this state_dir?)",
                config.db_path().display()
            )
        })?);
        let slots = Slots::open(
            db.clone(),
            &config.state_dir.join("bundles"),
            config.trial.max_boots,
        )?;
        let outbox = Outbox::with_db(db.clone(), config.telemetry.outbox_max_bytes)?;
        let state = AgentState::open(db)?;
        let mut load_options = LoadOptions::default();
        load_options.engine.threads = config.inference_threads.map(|t| t as usize);
        load_options.engine.kind = config.inference_engine;
        let host = ModelHost::new(config.feedback.limits());
        Ok(Core {
            config,
            device_id,
            key,
            trust,
            slots,
            outbox,
            state,
            host,
            load_options,
            trials: Mutex::new(HashMap::new()),
            outbox_signal: tokio::sync::Notify::new(),
            started: Instant::now(),
        })
    }

    /// Takes the transition lock.
    pub fn transitions(&self) -> MutexGuard<'_, Trials> {
        self.trials.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Load options with this model's anti-rollback floor.
    pub fn load_options_for(&self, model: &str) -> LoadOptions {
        let mut options = self.load_options.clone();
        options.verify.floor = self
            .slots
            .get(model)
            .ok()
            .and_then(|s| s.floor)
            .and_then(|f| semver::Version::parse(&f).ok());
        options
    }

    fn header(&self, seq: u64, kind: Kind) -> Header {
        Header {
            sender: self.device_id.clone(),
            seq,
            sent_at: unix_now(),
            kind,
        }
    }

    /// Records a reconcile event durably (outbox) and in the log.
    pub fn event(
        &self,
        generation: u64,
        model: &str,
        version: &str,
        step: Step,
        detail: Option<String>,
    ) {
        match (&step, &detail) {
            (Step::Failed | Step::RolledBack, Some(d)) => {
                tracing::warn!(model, version, generation, ?step, detail = %d, "reconcile")
            }
            _ => tracing::info!(model, version, generation, ?step, detail = ?detail, "reconcile"),
        }
        let slots_changed = matches!(
            step,
            Step::Activated | Step::Committed | Step::RolledBack | Step::Shadowing
        );
        let body = Events {
            events: vec![Event {
                at: unix_now(),
                generation,
                model: model.to_string(),
                version: version.to_string(),
                step,
                detail,
            }],
        };
        let appended = self.outbox.append([(Class::Event, body)], |seq, body| {
            envelope::seal(&self.key, self.header(seq, Kind::Events), &body)
        });
        match appended {
            Ok(_) => self.outbox_signal.notify_one(),
            Err(e) => tracing::error!(error = %e, "cannot queue event"),
        }
        // the slots changed: the server's view of this device (its reported state) follows
        // now, not at the next reconnect
        if slots_changed {
            if let Err(e) = self.queue_hello() {
                tracing::error!(error = %e, "cannot queue the reported state");
            }
        }
    }

    /// Queues telemetry windows as one message.
    pub fn queue_telemetry(&self, telemetry: Telemetry) -> Result<()> {
        self.outbox
            .append([(Class::Telemetry, telemetry)], |seq, body| {
                envelope::seal(&self.key, self.header(seq, Kind::Telemetry), &body)
            })
            .context("cannot queue telemetry")?;
        self.outbox_signal.notify_one();
        Ok(())
    }

    /// Queues a hello with the reported state (sent first thing after each connect, and after
    /// each activation, commit and rollback).
    pub fn queue_hello(&self) -> Result<()> {
        let hello = self.hello()?;
        self.outbox
            .append([(Class::Event, hello)], |seq, body| {
                envelope::seal(&self.key, self.header(seq, Kind::Hello), &body)
            })
            .context("cannot queue hello")?;
        self.outbox_signal.notify_one();
        Ok(())
    }

    /// The reported state.
    pub fn hello(&self) -> Result<Hello> {
        let digest = |s: &SlotRef| -> Option<(String, ByteArray<32>)> {
            let bytes: [u8; 32] = hex::decode(&s.sha256).ok()?.try_into().ok()?;
            Some((s.version.clone(), ByteArray::from(bytes)))
        };
        let models = self
            .slots
            .models()?
            .into_iter()
            .map(|(name, s)| ReportedModel {
                name,
                active: s.active.as_ref().and_then(digest),
                previous: s.previous.as_ref().and_then(digest),
                trial: s.trial.as_ref().and_then(digest),
                bad_versions: s.bad.clone(),
                shadow: s.shadow.as_ref().and_then(digest),
            })
            .collect();
        Ok(Hello {
            agent_version: env!("CARGO_PKG_VERSION").to_string(),
            applied_generation: self.state.applied_generation()?,
            models,
            dropped_telemetry: self.outbox.stats()?.dropped_telemetry,
            capabilities: Some(capabilities()),
        })
    }

    /// The director key, which alone may sign desired states.
    pub fn director(&self) -> Option<edge_runtime::VerifyingKey> {
        self.trust.director().copied()
    }
}

/// Reads and checks the trust document.
pub fn read_trust(path: &Path, root_key: Option<&Path>) -> Result<TrustRoot> {
    let bytes = std::fs::read(path)
        .with_context(|| format!("cannot read the trust root {}", path.display()))?;
    let anchor = match root_key {
        Some(k) => RootAnchor::Pinned(
            edge_runtime::keys::read_public_key(k)
                .with_context(|| format!("cannot read root_key {}", k.display()))?,
        ),
        None => RootAnchor::SelfSigned,
    };
    let trust = TrustRoot::from_bytes(&bytes, anchor)
        .map_err(|e| anyhow!("trust root {}: {e}", path.display()))?;
    trust
        .check_expiry(unix_now())
        .map_err(|e| anyhow!("trust root {}: {e}", path.display()))?;
    Ok(trust)
}

/// What this build can run, for the hello: the payload formats the runtime reads and the engines
/// compiled in.
pub fn capabilities() -> edge_protocol::Capabilities {
    let mut engines = vec!["cpu".to_string()];
    if cfg!(feature = "gpu") {
        engines.push("gpu".into());
    }
    if cfg!(feature = "cuda") {
        engines.push("cuda".into());
    }
    edge_protocol::Capabilities {
        payload_formats: edge_runtime::engine::payload_formats()
            .iter()
            .map(|f| f.name().to_string())
            .collect(),
        engines,
    }
}

#[cfg(test)]
mod tests {
    /// The hello says what this build reads: the optimized payload always, ONNX exactly when
    /// the runtime was built with its ONNX front end; the CPU engine always.
    #[test]
    fn capabilities_name_the_payload_formats_this_build_reads() {
        let c = super::capabilities();
        assert!(c.payload_formats.iter().any(|f| f == "nnef"), "{c:?}");
        assert_eq!(
            c.payload_formats.iter().any(|f| f == "onnx"),
            edge_runtime::engine::payload_formats()
                .contains(&edge_runtime::bundle::PayloadFormat::Onnx),
            "{c:?}"
        );
        assert_eq!(c.engines[0], "cpu");
    }
}
