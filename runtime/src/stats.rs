//! The per-model counters kept on the device (requests, errors, latency, confidence, classes)
//! that the agent exports. Reference statistics and PSI are `edge-bundle`'s, re-exported here.

use std::sync::Mutex;
use std::time::Duration;

use serde::Serialize;

pub use edge_bundle::stats::{
    psi, quantile_histogram, FeatureMap, Histogram, MAX_ELEMENT_FEATURES,
};

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
    /// Raw input values per drift feature, over the reference feature bins.
    pub features: Vec<Histogram>,
}

/// Thread-safe counters for one loaded model.
#[derive(Debug)]
pub struct ModelStats {
    inner: Mutex<StatsSnapshot>,
    /// Empty input feature histograms over the reference bins, copied per request.
    feature_template: Vec<Histogram>,
}

impl ModelStats {
    /// Fresh counters; `classes` sizes the class counts, `prediction_edges` the regression
    /// histogram and `feature_edges` the input feature histograms (the reference's bins, so PSI
    /// can be computed against the bundle's reference statistics).
    pub fn new(
        classes: usize,
        prediction_edges: Option<Vec<f64>>,
        feature_edges: Vec<Vec<f64>>,
    ) -> ModelStats {
        let features: Vec<Histogram> = feature_edges
            .into_iter()
            .map(Histogram::with_edges)
            .collect();
        ModelStats {
            feature_template: features.clone(),
            inner: Mutex::new(StatsSnapshot {
                latency_ms: Histogram::with_edges(LATENCY_BUCKETS_MS.to_vec()),
                confidence: Histogram::uniform(0.0, 1.0, 10),
                class_counts: vec![0; classes],
                prediction: prediction_edges.map(Histogram::with_edges),
                features,
                ..Default::default()
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, StatsSnapshot> {
        // counters stay usable even if a thread panicked while holding the lock
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Empty histograms with this model's feature bins, to fill outside the lock (the bins are
    /// fixed at load, so no lock is taken).
    pub fn feature_scratch(&self) -> Vec<Histogram> {
        self.feature_template.clone()
    }

    /// Records a successful call (with the input feature histograms of its rows).
    pub fn record_success(
        &self,
        latency: Duration,
        classes: &[(usize, f32)],
        values: &[f64],
        features: &[Histogram],
    ) {
        let mut s = self.lock();
        for (total, add) in s.features.iter_mut().zip(features) {
            total.merge(add);
        }
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
