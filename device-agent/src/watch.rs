//! The watcher: judges running trials ([`crate::trial`]) and commits or rolls them back, and
//! turns the served models' counters into telemetry windows (DESIGN decision 8: aggregates
//! only, no raw input) queued in the outbox.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use edge_protocol::{Step, Telemetry, TelemetryWindow};
use edge_runtime::stats::StatsSnapshot;
use edge_runtime::Model;

use crate::core::{unix_now, Core, RunningTrial};
use crate::failpoint;
use crate::slots::BootPlan;
use crate::trial::{minus, minus_counts, Verdict};

/// Evaluates every running trial once.
pub fn check_trials(core: &Core) {
    let mut trials = core.transitions();
    let now = Instant::now();
    let names: Vec<String> = trials.keys().cloned().collect();
    for name in names {
        let verdict = {
            let t = &trials[&name];
            t.window.evaluate(&t.model, now)
        };
        match verdict {
            Verdict::Pending(r) => {
                if r.requests > 0 {
                    failpoint::hit("trial");
                }
            }
            Verdict::Pass(r) => {
                let t = trials.remove(&name).expect("listed");
                let min = t
                    .model
                    .manifest()
                    .min_version
                    .as_deref()
                    .and_then(|v| semver::Version::parse(v).ok());
                match core.slots.commit(&name, min.as_ref()) {
                    Ok(_) => core.event(
                        t.generation,
                        &name,
                        &t.slot.version,
                        Step::Committed,
                        Some(format!(
                            "trial passed: {} requests, error rate {:.4}, p99 {} ms",
                            r.requests,
                            r.error_rate,
                            r.p99_ms.map_or("-".into(), |p| format!("{p:.2}"))
                        )),
                    ),
                    Err(e) => tracing::error!(error = %e, model = %name, "commit failed"),
                }
            }
            Verdict::Fail(reason, _) => {
                let t = trials.remove(&name).expect("listed");
                roll_back(core, &name, t, &reason);
            }
        }
    }
}

/// Rolls a failed trial back: the slot store first (durable), then the served model.
fn roll_back(core: &Core, name: &str, t: RunningTrial, reason: &str) {
    let state = match core.slots.rollback(name) {
        Ok((state, _)) => state,
        Err(e) => {
            tracing::error!(error = %e, model = %name, "rollback failed in the slot store");
            return;
        }
    };
    let restored = match t.fallback {
        Some(m) => Some(m),
        None => {
            let plan = BootPlan {
                model: name.to_string(),
                candidates: [state.active.clone(), state.previous.clone()]
                    .into_iter()
                    .flatten()
                    .collect(),
                crash_loop_rollback: None,
            };
            core.slots
                .load_first(&plan, &core.trust, &core.load_options)
                .ok()
                .map(|(_, m)| Arc::new(m))
        }
    };
    let detail = match restored {
        Some(m) => {
            let back = m.model_ref().version.clone();
            core.host.activate(m);
            format!("{reason}; serving {back} again")
        }
        None => {
            core.host.remove(name);
            format!("{reason}; no earlier version to serve")
        }
    };
    core.event(
        t.generation,
        name,
        &t.slot.version,
        Step::RolledBack,
        Some(detail),
    );
}

/// Telemetry windows: counters of each served model since the last window.
#[derive(Default)]
pub struct TelemetryWindows {
    last: HashMap<String, (Arc<Model>, StatsSnapshot)>,
    window_start: u64,
}

fn delta(now: &StatsSnapshot, before: Option<&StatsSnapshot>) -> StatsSnapshot {
    match before {
        None => now.clone(),
        Some(b) => StatsSnapshot {
            requests: now.requests.saturating_sub(b.requests),
            errors: now.errors.saturating_sub(b.errors),
            rows: now.rows.saturating_sub(b.rows),
            latency_ms: minus(&now.latency_ms, &b.latency_ms),
            confidence: minus(&now.confidence, &b.confidence),
            class_counts: minus_counts(&now.class_counts, &b.class_counts),
            prediction: match (&now.prediction, &b.prediction) {
                (Some(n), Some(p)) => Some(minus(n, p)),
                (n, _) => n.clone(),
            },
            features: now
                .features
                .iter()
                .enumerate()
                .map(|(i, n)| b.features.get(i).map_or(n.clone(), |p| minus(n, p)))
                .collect(),
        },
    }
}

impl TelemetryWindows {
    /// Starts counting from the models served now.
    pub fn new(core: &Core) -> TelemetryWindows {
        let mut w = TelemetryWindows {
            last: HashMap::new(),
            window_start: unix_now(),
        };
        for (name, _) in core.host.list() {
            if let Some(m) = core.host.get(&name) {
                let s = m.stats();
                w.last.insert(m.model_ref().bundle.clone(), (m, s));
            }
        }
        w
    }

    /// Closes the window: one [`TelemetryWindow`] per model version that served requests.
    pub fn close(&mut self, core: &Core) -> Telemetry {
        let now_secs = unix_now();
        let mut current: HashMap<String, Arc<Model>> = HashMap::new();
        for (name, _) in core.host.list() {
            if let Some(m) = core.host.get(&name) {
                current.insert(m.model_ref().bundle.clone(), m);
            }
        }
        // models swapped out during the window still report their last requests
        let mut all: Vec<(String, Arc<Model>)> = current
            .iter()
            .map(|(k, m)| (k.clone(), m.clone()))
            .collect();
        let mut before: HashMap<String, StatsSnapshot> = HashMap::new();
        for (k, (m, stats)) in std::mem::take(&mut self.last) {
            if !current.contains_key(&k) {
                all.push((k.clone(), m));
            }
            before.insert(k, stats);
        }
        let mut windows = Vec::new();
        let mut next = HashMap::new();
        for (bundle, model) in all {
            let now = model.stats();
            let d = delta(&now, before.get(&bundle));
            if d.requests > 0 {
                let classification = !model.manifest().reference.class_counts.is_empty()
                    || !d.class_counts.is_empty();
                windows.push(TelemetryWindow {
                    model: model.model_ref().model.clone(),
                    version: model.model_ref().version.clone(),
                    window_start: self.window_start,
                    window_secs: now_secs.saturating_sub(self.window_start).max(1) as u32,
                    requests: d.requests,
                    errors: d.errors,
                    latency_ms: d.latency_ms,
                    confidence: classification.then_some(d.confidence),
                    class_counts: d.class_counts,
                    prediction: d.prediction,
                    features: d.features,
                });
            }
            // a swapped-out model stays counted while anything else holds it (a request that
            // began before the swap may still finish on it): its last requests land in a later
            // window instead of being lost (a staged-rollout test saw 1 of 2593 go missing)
            if current.contains_key(&bundle) || Arc::strong_count(&model) > 1 {
                next.insert(bundle, (model, now));
            }
        }
        self.last = next;
        self.window_start = now_secs;
        windows.sort_by(|a, b| (&a.model, &a.version).cmp(&(&b.model, &b.version)));
        Telemetry { windows }
    }
}

/// The watcher loop: trials every `trial.check_interval_ms`, telemetry every
/// `telemetry.window_seconds`, until `stop`.
pub fn run(core: Arc<Core>, stop: Arc<AtomicBool>) {
    let check = Duration::from_millis(core.config.trial.check_interval_ms.max(10));
    let window = Duration::from_secs(core.config.telemetry.window_seconds);
    let mut telemetry = TelemetryWindows::new(&core);
    let mut next_window = Instant::now() + window;
    while !stop.load(Ordering::Relaxed) {
        std::thread::sleep(check);
        check_trials(&core);
        if Instant::now() >= next_window {
            next_window += window;
            let t = telemetry.close(&core);
            if !t.windows.is_empty() {
                if let Err(e) = core.queue_telemetry(t) {
                    tracing::error!(error = %e, "telemetry");
                }
            }
        }
    }
}
