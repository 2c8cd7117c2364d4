//! Server counters for `/metrics` (Prometheus text format): what the fleet loop did since start.
//! Gauges that come from the store (devices, online devices, rollouts by status) are added by
//! the HTTP handler at scrape time.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

/// The counters.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Device messages accepted.
    pub messages_accepted: AtomicU64,
    /// Device messages (or telemetry windows) dropped.
    pub messages_dropped: AtomicU64,
    /// Of those, replays and duplicates.
    pub replays_dropped: AtomicU64,
    /// Telemetry windows merged.
    pub windows_merged: AtomicU64,
    /// Ingest batches committed.
    pub ingest_batches: AtomicU64,
    /// Microseconds spent ingesting.
    pub ingest_micros: AtomicU64,
    /// Of those, microseconds waiting for the cluster-wide ingest lock.
    pub ingest_lock_wait_micros: AtomicU64,
    /// Desired states signed and published.
    pub desired_published: AtomicU64,
    /// Engine steps run.
    pub engine_steps: AtomicU64,
    /// Engine steps that failed.
    pub engine_errors: AtomicU64,
    /// Rollout transitions made by the engine.
    pub rollout_transitions: AtomicU64,
    /// HTTP requests refused by the rate limiter.
    pub rate_limited: AtomicU64,
    /// Broker (re)connections of the server's own client.
    pub broker_connects: AtomicU64,
}

impl Metrics {
    /// Adds `n` to a counter.
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// The counters in Prometheus text format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let counters: [(&str, &str, &AtomicU64); 13] = [
            (
                "edgefleet_messages_accepted_total",
                "Device messages accepted.",
                &self.messages_accepted,
            ),
            (
                "edgefleet_messages_dropped_total",
                "Device messages or telemetry windows dropped.",
                &self.messages_dropped,
            ),
            (
                "edgefleet_replays_dropped_total",
                "Replayed or duplicate device messages dropped.",
                &self.replays_dropped,
            ),
            (
                "edgefleet_telemetry_windows_total",
                "Telemetry windows merged.",
                &self.windows_merged,
            ),
            (
                "edgefleet_ingest_batches_total",
                "Ingest batches committed.",
                &self.ingest_batches,
            ),
            (
                "edgefleet_ingest_seconds_total",
                "Time spent ingesting.",
                &self.ingest_micros,
            ),
            (
                "edgefleet_ingest_lock_wait_seconds_total",
                "Of the time spent ingesting, the wait for the cluster-wide ingest lock.",
                &self.ingest_lock_wait_micros,
            ),
            (
                "edgefleet_desired_published_total",
                "Desired states signed and published.",
                &self.desired_published,
            ),
            (
                "edgefleet_engine_steps_total",
                "Rollout engine steps.",
                &self.engine_steps,
            ),
            (
                "edgefleet_engine_errors_total",
                "Rollout engine steps that failed.",
                &self.engine_errors,
            ),
            (
                "edgefleet_rollout_transitions_total",
                "Rollout transitions made by the engine.",
                &self.rollout_transitions,
            ),
            (
                "edgefleet_rate_limited_total",
                "Device HTTP requests refused by the rate limiter.",
                &self.rate_limited,
            ),
            (
                "edgefleet_broker_connects_total",
                "Connections of the server to the broker.",
                &self.broker_connects,
            ),
        ];
        for (name, help, value) in counters {
            let v = value.load(Ordering::Relaxed);
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
            if name.ends_with("_seconds_total") {
                let _ = writeln!(out, "{name} {}", v as f64 / 1e6);
            } else {
                let _ = writeln!(out, "{name} {v}");
            }
        }
        out
    }
}

/// A gauge in Prometheus text format.
pub fn gauge(out: &mut String, name: &str, help: &str, samples: &[(&str, u64)]) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge");
    for (labels, v) in samples {
        if labels.is_empty() {
            let _ = writeln!(out, "{name} {v}");
        } else {
            let _ = writeln!(out, "{name}{{{labels}}} {v}");
        }
    }
}
