//! The watcher: judges running trials ([`crate::trial`]) and commits or rolls them back, and
//! turns the served models' counters into telemetry windows (DESIGN decision 8: aggregates
//! only, no raw input) queued in the outbox.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use edge_protocol::{Step, Telemetry, TelemetryWindow};
use edge_runtime::stats::{Histogram, StatsSnapshot, LATENCY_BUCKETS_MS};
use edge_runtime::Model;

use crate::core::{unix_now, Core, RunningTrial};
use crate::failpoint;
use crate::shadow::Shadow;
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
        for (key, m, _) in counted(core) {
            let s = m.stats();
            w.last.insert(key, (m, s));
        }
        w
    }

    /// Closes the window: one [`TelemetryWindow`] per model version that served requests, one
    /// per shadow that ran (with its agreement), and the feedback joined to each version.
    pub fn close(&mut self, core: &Core) -> Telemetry {
        let now_secs = unix_now();
        let current: HashMap<String, (Arc<Model>, Option<Arc<Shadow>>)> = counted(core)
            .into_iter()
            .map(|(k, m, s)| (k, (m, s)))
            .collect();
        // models swapped out during the window still report their last requests
        let mut all: Vec<(String, Arc<Model>, Option<Arc<Shadow>>)> = current
            .iter()
            .map(|(k, (m, s))| (k.clone(), m.clone(), s.clone()))
            .collect();
        let mut before: HashMap<String, StatsSnapshot> = HashMap::new();
        for (k, (m, stats)) in std::mem::take(&mut self.last) {
            if !current.contains_key(&k) {
                all.push((k.clone(), m, None));
            }
            before.insert(k, stats);
        }
        let mut windows = Vec::new();
        let mut next = HashMap::new();
        for (key, model, shadow) in all {
            let now = model.stats();
            let d = delta(&now, before.get(&key));
            let agreement = shadow.as_ref().map(|s| {
                let mut a = s.take();
                a.active_version = core
                    .host
                    .get(&model.model_ref().model)
                    .map(|m| m.model_ref().version.clone())
                    .unwrap_or_default();
                a
            });
            let ran_as_shadow = key.starts_with(SHADOW_KEY);
            if d.requests > 0
                || agreement
                    .as_ref()
                    .is_some_and(|a| a.skipped_budget + a.skipped_busy > 0)
            {
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
                    shadow: if ran_as_shadow {
                        Some(agreement.unwrap_or_default())
                    } else {
                        None
                    },
                    feedback: None,
                });
            }
            // a swapped-out model stays counted while anything else holds it (a request that
            // began before the swap may still finish on it): its last requests land in a later
            // window instead of being lost (a staged-rollout test saw 1 of 2593 go missing)
            if current.contains_key(&key) || Arc::strong_count(&model) > 1 {
                next.insert(key, (model, now));
            }
        }
        for (name, log) in core.host.feedback_logs() {
            for (version, stats) in log.take() {
                let served = windows
                    .iter_mut()
                    .find(|w| w.model == name && w.version == version && w.shadow.is_none());
                match served {
                    Some(w) => w.feedback = Some(stats),
                    None => windows.push(TelemetryWindow {
                        model: name.clone(),
                        version,
                        window_start: self.window_start,
                        window_secs: now_secs.saturating_sub(self.window_start).max(1) as u32,
                        requests: 0,
                        errors: 0,
                        latency_ms: Histogram::with_edges(LATENCY_BUCKETS_MS.to_vec()),
                        confidence: None,
                        class_counts: Vec::new(),
                        prediction: None,
                        features: Vec::new(),
                        shadow: None,
                        feedback: Some(stats),
                    }),
                }
            }
        }
        self.last = next;
        self.window_start = now_secs;
        windows.sort_by(|a, b| {
            (&a.model, &a.version, a.shadow.is_some()).cmp(&(
                &b.model,
                &b.version,
                b.shadow.is_some(),
            ))
        });
        Telemetry { windows }
    }
}

/// Key prefix of a shadow's counters (its bundle may also be loaded as the trial).
const SHADOW_KEY: &str = "shadow:";

/// Every model counted in telemetry: the served ones by bundle, the shadows by
/// [`SHADOW_KEY`] + bundle, with their shadow.
fn counted(core: &Core) -> Vec<(String, Arc<Model>, Option<Arc<Shadow>>)> {
    let mut out = Vec::new();
    for (name, _) in core.host.list() {
        if let Some(m) = core.host.get(&name) {
            out.push((m.model_ref().bundle.clone(), m, None));
        }
    }
    for (_, s) in core.host.shadows() {
        let key = format!("{SHADOW_KEY}{}", s.model.model_ref().bundle);
        out.push((key, s.model.clone(), Some(s)));
    }
    out
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
