//! Histograms, the population stability index (PSI), and the per-model counters kept on the
//! device (requests, errors, latency, confidence, classes) that the agent exports.

use std::sync::Mutex;
use std::time::Duration;

use serde::Serialize;

pub use edge_protocol::Histogram;

/// Equal-frequency bins from `values` (cut points at the quantiles, duplicates merged), then
/// filled with them: the usual reference for PSI.
pub fn quantile_histogram(values: &[f64], bins: usize) -> Histogram {
    let mut sorted: Vec<f64> = values.iter().copied().filter(|v| v.is_finite()).collect();
    sorted.sort_by(f64::total_cmp);
    let mut edges: Vec<f64> = Vec::new();
    if !sorted.is_empty() {
        for i in 1..bins.max(1) {
            let e = sorted[(i * sorted.len() / bins).min(sorted.len() - 1)];
            if edges.last().is_none_or(|&last| e > last) {
                edges.push(e);
            }
        }
        // a cut at the minimum would leave the first bin empty by construction
        if edges.first() == sorted.first() {
            edges.remove(0);
        }
    }
    let mut h = Histogram::with_edges(edges);
    values.iter().for_each(|&v| h.observe(v));
    h
}

/// Population stability index of `observed` against `reference` counts over the same bins:
/// `sum((o - r) * ln(o / r))` over bin proportions, each floored at 1e-4 so empty bins stay
/// finite. Rule of thumb: < 0.1 stable, 0.1–0.25 moderate shift, > 0.25 major shift.
/// `None` if the bins differ or either side is empty.
pub fn psi(reference: &[u64], observed: &[u64]) -> Option<f64> {
    if reference.len() != observed.len() || reference.is_empty() {
        return None;
    }
    let (rt, ot) = (
        reference.iter().sum::<u64>() as f64,
        observed.iter().sum::<u64>() as f64,
    );
    if rt == 0.0 || ot == 0.0 {
        return None;
    }
    const FLOOR: f64 = 1e-4;
    Some(
        reference
            .iter()
            .zip(observed)
            .map(|(&r, &o)| {
                let (r, o) = ((r as f64 / rt).max(FLOOR), (o as f64 / ot).max(FLOOR));
                (o - r) * (o / r).ln()
            })
            .sum(),
    )
}

/// Latency bucket upper bounds in milliseconds (Prometheus-style, cumulative when exported).
pub const LATENCY_BUCKETS_MS: [f64; 16] = [
    0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0,
    10000.0,
];

/// A point-in-time copy of a model's counters.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct StatsSnapshot {
    /// `predict` calls.
    pub requests: u64,
    /// Calls that failed (bad input or engine failure).
    pub errors: u64,
    /// Rows predicted.
    pub rows: u64,
    /// Latency per call; edges are [`LATENCY_BUCKETS_MS`].
    pub latency_ms: Histogram,
    /// Top-1 probability per row (classification), 10 bins over \[0, 1\].
    pub confidence: Histogram,
    /// Predicted class counts (classification).
    pub class_counts: Vec<u64>,
    /// Predicted values (regression), over the reference prediction bins.
    pub prediction: Option<Histogram>,
}

/// Thread-safe counters for one loaded model.
#[derive(Debug)]
pub struct ModelStats {
    inner: Mutex<StatsSnapshot>,
}

impl ModelStats {
    /// Fresh counters; `classes` sizes the class counts, `prediction_edges` the regression
    /// histogram (the reference's, so PSI can be computed).
    pub fn new(classes: usize, prediction_edges: Option<Vec<f64>>) -> ModelStats {
        ModelStats {
            inner: Mutex::new(StatsSnapshot {
                latency_ms: Histogram::with_edges(
                    LATENCY_BUCKETS_MS[..LATENCY_BUCKETS_MS.len() - 1].to_vec(),
                ),
                confidence: Histogram::uniform(0.0, 1.0, 10),
                class_counts: vec![0; classes],
                prediction: prediction_edges.map(Histogram::with_edges),
                ..Default::default()
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, StatsSnapshot> {
        // counters stay usable even if a thread panicked while holding the lock
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records a successful call.
    pub fn record_success(&self, latency: Duration, classes: &[(usize, f32)], values: &[f64]) {
        let mut s = self.lock();
        s.requests += 1;
        s.rows += (classes.len() + values.len()) as u64;
        s.latency_ms.observe(latency.as_secs_f64() * 1e3);
        for &(class, p) in classes {
            if let Some(c) = s.class_counts.get_mut(class) {
                *c += 1;
            }
            s.confidence.observe(p as f64);
        }
        if let Some(h) = s.prediction.as_mut() {
            values.iter().for_each(|&v| h.observe(v));
        }
    }

    /// Records a failed call.
    pub fn record_error(&self, latency: Duration) {
        let mut s = self.lock();
        s.requests += 1;
        s.errors += 1;
        s.latency_ms.observe(latency.as_secs_f64() * 1e3);
    }

    /// Copies the counters.
    pub fn snapshot(&self) -> StatsSnapshot {
        self.lock().clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantile_bins_are_roughly_equal_frequency() {
        let values: Vec<f64> = (0..1000).map(|i| i as f64).collect();
        let h = quantile_histogram(&values, 10);
        assert_eq!(h.counts.len(), 10);
        assert!(h.counts.iter().all(|&c| c == 100), "{:?}", h.counts);
        // constant data collapses to one bin instead of failing
        let h = quantile_histogram(&[3.0; 50], 10);
        assert_eq!(h.total(), 50);
    }

    #[test]
    fn psi_is_zero_for_same_distribution_and_large_for_a_shift() {
        let r = [100, 100, 100, 100];
        assert!(psi(&r, &[50, 50, 50, 50]).unwrap().abs() < 1e-12);
        let shifted = psi(&r, &[0, 0, 10, 190]).unwrap();
        assert!(shifted > 1.0, "{shifted}");
        let mild = psi(&r, &[90, 100, 110, 100]).unwrap();
        assert!(mild < 0.01, "{mild}");
        assert_eq!(psi(&r, &[1, 2]), None);
        assert_eq!(psi(&r, &[0, 0, 0, 0]), None);
    }

    #[test]
    fn histogram_edges_are_half_open() {
        let mut h = Histogram::with_edges(vec![1.0, 2.0]);
        for v in [0.5, 1.0, 1.5, 2.0, 9.0, f64::NAN] {
            h.observe(v);
        }
        assert_eq!(h.counts, vec![1, 2, 3]);
    }
}
