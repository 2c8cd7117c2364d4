//! The trial window (DESIGN decision 7): after a model is activated, its health is judged on
//! *model* signals against the bundle's own [`HealthSpec`] and reference statistics, from the
//! counters the runtime keeps, counting only what happened since the trial started:
//!
//! - error rate (failed requests / requests),
//! - p99 latency against the budget (interpolated within the latency histogram bucket, as
//!   Prometheus' `histogram_quantile` does; `Histogram::quantile`),
//! - PSI of the prediction distribution (predicted classes, or regression values) against the
//!   reference,
//! - PSI of every input feature against the reference (the data-integrity layer: a camera with
//!   the wrong polarity shows up here before any label arrives).
//!
//! A limit broken on at least `min_requests` requests fails the trial at once. It passes after
//! `trial_seconds` with at least `min_requests` requests and no limit broken. Crash loops during
//! the trial are [`crate::slots::Slots::boot`]'s job.

use std::time::{Duration, Instant};

use edge_runtime::bundle::{HealthSpec, Manifest};
use edge_runtime::stats::{psi, Histogram, StatsSnapshot};
use edge_runtime::Model;

/// What the trial measured.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TrialReport {
    /// Requests since the trial started.
    pub requests: u64,
    /// Failed fraction.
    pub error_rate: f64,
    /// Estimated p99 latency, ms.
    pub p99_ms: Option<f64>,
    /// PSI of predictions vs the reference.
    pub prediction_psi: Option<f64>,
    /// The input feature with the highest PSI vs the reference, and that PSI.
    pub worst_feature: Option<(String, f64)>,
}

/// The trial's state.
#[derive(Clone, Debug, PartialEq)]
pub enum Verdict {
    /// Not enough time or requests yet.
    Pending(TrialReport),
    /// Healthy for the whole window: commit.
    Pass(TrialReport),
    /// A limit was broken: roll back. The reason names the limit and the value.
    Fail(String, TrialReport),
}

/// A running trial window for one activated model.
#[derive(Clone, Debug)]
pub struct TrialWindow {
    started: Instant,
    baseline: StatsSnapshot,
    health: HealthSpec,
}

/// Counts of `now` minus those of `before` (same edges), floored at zero.
pub fn minus(now: &Histogram, before: &Histogram) -> Histogram {
    let mut h = now.clone();
    if before.edges == now.edges {
        h.counts
            .iter_mut()
            .zip(&before.counts)
            .for_each(|(a, b)| *a = a.saturating_sub(*b));
    }
    h
}

/// Element-wise `now - before`, floored at zero.
pub fn minus_counts(now: &[u64], before: &[u64]) -> Vec<u64> {
    now.iter()
        .enumerate()
        .map(|(i, a)| a.saturating_sub(before.get(i).copied().unwrap_or(0)))
        .collect()
}

impl TrialWindow {
    /// Starts the trial of `model` now: only what happens from here on counts.
    pub fn start(model: &Model, now: Instant) -> TrialWindow {
        TrialWindow {
            started: now,
            baseline: model.stats(),
            health: model.manifest().health.clone().unwrap_or_default(),
        }
    }

    /// The trial's length.
    pub fn length(&self) -> Duration {
        Duration::from_secs(self.health.trial_seconds as u64)
    }

    /// Measures the trial so far.
    pub fn report(&self, model: &Model) -> TrialReport {
        let now = model.stats();
        let before = &self.baseline;
        let requests = now.requests.saturating_sub(before.requests);
        let errors = now.errors.saturating_sub(before.errors);
        let manifest: &Manifest = model.manifest();
        let reference = &manifest.reference;
        let prediction_psi = if !reference.class_counts.is_empty() {
            psi(
                &reference.class_counts,
                &minus_counts(&now.class_counts, &before.class_counts),
            )
        } else {
            match (&reference.prediction, &now.prediction, &before.prediction) {
                (Some(r), Some(n), Some(b)) => psi(&r.counts, &minus(n, b).counts),
                _ => None,
            }
        };
        let worst_feature = reference
            .features
            .iter()
            .zip(now.features.iter().zip(&before.features))
            .filter_map(|(r, (n, b))| {
                psi(&r.histogram.counts, &minus(n, b).counts).map(|p| (r.name.clone(), p))
            })
            .max_by(|a, b| a.1.total_cmp(&b.1));
        TrialReport {
            requests,
            error_rate: if requests == 0 {
                0.0
            } else {
                errors as f64 / requests as f64
            },
            p99_ms: minus(&now.latency_ms, &before.latency_ms).quantile(0.99),
            prediction_psi,
            worst_feature,
        }
    }

    /// Judges the trial at `now`.
    pub fn evaluate(&self, model: &Model, now: Instant) -> Verdict {
        let r = self.report(model);
        let h = &self.health;
        if r.requests < h.min_requests.max(1) {
            return Verdict::Pending(r);
        }
        if r.error_rate > h.max_error_rate {
            return Verdict::Fail(
                format!(
                    "error rate {:.3} over {:.3}",
                    r.error_rate, h.max_error_rate
                ),
                r,
            );
        }
        if let (Some(budget), Some(p99)) = (h.max_p99_ms, r.p99_ms) {
            if p99 > budget {
                return Verdict::Fail(
                    format!("p99 latency {p99:.3} ms over the budget of {budget} ms"),
                    r,
                );
            }
        }
        if let Some(p) = r.prediction_psi.filter(|&p| p > h.max_psi) {
            return Verdict::Fail(
                format!("prediction distribution PSI {p:.3} over {}", h.max_psi),
                r,
            );
        }
        if let Some((name, p)) = r.worst_feature.clone().filter(|(_, p)| *p > h.max_psi) {
            return Verdict::Fail(
                format!("input feature '{name}' PSI {p:.3} over {}", h.max_psi),
                r,
            );
        }
        if now.duration_since(self.started) >= self.length() {
            Verdict::Pass(r)
        } else {
            Verdict::Pending(r)
        }
    }
}
