//! A rollout phase's health from its devices' telemetry for the new version (DESIGN decision
//! 7): windows are merged per phase (requests, errors, latency, confidence, class counts,
//! regression predictions), devices that reported are counted, and the result is judged by
//! [`crate::rollout::evaluate`] as a [`PhaseHealth`]: p99 from the merged latency histogram,
//! mean confidence from the confidence histogram, PSI of the predictions against the bundle's
//! reference statistics. [`phase_health`] is the one place a rollout's live phase health is
//! computed: the engine's gate, `GET /v1/rollouts/{id}` and the dashboard all read it.

use std::collections::{BTreeMap, BTreeSet};

use edge_bundle::stats::psi;
use edge_bundle::ReferenceStats;
use edge_protocol::{Histogram, TelemetryWindow};
use serde::{Deserialize, Serialize};

use crate::rollout::{PhaseHealth, Rollout};
use crate::store::{Records, Store, StoreError, Table};
use crate::telemetry_keys::{installs_key, phase_key};

/// The health of rollout `r`'s current phase now: its devices (`in_phase`, those the rollout
/// reaches at the current percentage), the phase's merged telemetry and install tally, and PSI
/// against `reference`, the reference statistics of the rollout's bundle. What the gate judges
/// is exactly what operators see.
pub fn phase_health<S: Store + ?Sized>(
    records: &Records<S>,
    r: &Rollout,
    in_phase: u64,
    reference: &ReferenceStats,
) -> Result<PhaseHealth, StoreError> {
    let aggregate: PhaseAggregate = records
        .get(Table::Telemetry, &phase_key(&r.id, r.phase))?
        .unwrap_or_default();
    let installs: InstallTally = records
        .get(Table::Telemetry, &installs_key(&r.id, r.phase))?
        .unwrap_or_default();
    let (installed, failed) = installs.counts();
    Ok(aggregate.health(in_phase, installed, failed, reference))
}

/// Installs seen in one rollout phase: the last outcome per device (committed = true; failed
/// or rolled back = false).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct InstallTally {
    /// Outcome per device.
    pub outcomes: BTreeMap<String, bool>,
}

impl InstallTally {
    /// (installs, failures).
    pub fn counts(&self) -> (u64, u64) {
        let failures = self.outcomes.values().filter(|ok| !**ok).count() as u64;
        (self.outcomes.len() as u64, failures)
    }
}

/// Merged telemetry of one rollout phase.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct PhaseAggregate {
    /// Devices that reported.
    pub devices: BTreeSet<String>,
    /// Predict calls.
    pub requests: u64,
    /// Failed calls.
    pub errors: u64,
    /// Latency, ms.
    pub latency_ms: Option<Histogram>,
    /// Top-1 confidence.
    pub confidence: Option<Histogram>,
    /// Predicted classes.
    pub class_counts: Vec<u64>,
    /// Regression predictions.
    pub prediction: Option<Histogram>,
    /// Install outcomes (committed, failed or rolled back) reported in this span: kept in the
    /// time-series points of a rollout phase for the dashboard's chart; the gate itself reads
    /// the phase's install tally (last outcome per device).
    #[serde(default)]
    pub installs: u64,
    /// Of those, failures and rollbacks.
    #[serde(default)]
    pub install_failures: u64,
}

/// Whether `h` can be merged into `slot` (the same bins, or nothing yet).
fn check_merge(slot: &Option<Histogram>, h: &Histogram, what: &str) -> Result<(), String> {
    if !h.is_well_formed() {
        return Err(format!("{what} histogram is malformed"));
    }
    match slot {
        Some(mine) if mine.edges != h.edges || mine.counts.len() != h.counts.len() => Err(format!(
            "{what} histogram has other bins than earlier windows"
        )),
        _ => Ok(()),
    }
}

/// Merges a histogram [`check_merge`] accepted.
fn merge_into(slot: &mut Option<Histogram>, h: &Histogram) {
    match slot {
        None => *slot = Some(h.clone()),
        Some(mine) => {
            mine.merge(h);
        }
    }
}

impl PhaseAggregate {
    /// Adds one device's window. A malformed window is refused whole (nothing merged): every
    /// check runs before anything changes (no copy of the aggregate, whose device set can be
    /// large).
    pub fn observe(&mut self, device: &str, w: &TelemetryWindow) -> Result<(), String> {
        if w.errors > w.requests {
            return Err(format!("{} errors in {} requests", w.errors, w.requests));
        }
        check_merge(&self.latency_ms, &w.latency_ms, "latency")?;
        if let Some(c) = &w.confidence {
            check_merge(&self.confidence, c, "confidence")?;
        }
        if let Some(p) = &w.prediction {
            check_merge(&self.prediction, p, "prediction")?;
        }
        if !w.class_counts.is_empty()
            && !self.class_counts.is_empty()
            && self.class_counts.len() != w.class_counts.len()
        {
            return Err("class counts have another length than earlier windows".into());
        }
        merge_into(&mut self.latency_ms, &w.latency_ms);
        if let Some(c) = &w.confidence {
            merge_into(&mut self.confidence, c);
        }
        if let Some(p) = &w.prediction {
            merge_into(&mut self.prediction, p);
        }
        if !w.class_counts.is_empty() {
            if self.class_counts.is_empty() {
                self.class_counts = vec![0; w.class_counts.len()];
            }
            self.class_counts
                .iter_mut()
                .zip(&w.class_counts)
                .for_each(|(a, b)| *a = a.saturating_add(*b));
        }
        self.requests = self.requests.saturating_add(w.requests);
        self.errors = self.errors.saturating_add(w.errors);
        if !self.devices.contains(device) {
            self.devices.insert(device.to_string());
        }
        Ok(())
    }

    /// Merges another aggregate in (downsampling time series). Histograms with other bins than
    /// this one's (a model's output changed between versions) are left out of the merge.
    pub fn absorb(&mut self, other: &PhaseAggregate) {
        for (mine, theirs) in [
            (&mut self.latency_ms, &other.latency_ms),
            (&mut self.confidence, &other.confidence),
            (&mut self.prediction, &other.prediction),
        ] {
            if let Some(h) = theirs {
                if check_merge(mine, h, "").is_ok() {
                    merge_into(mine, h);
                }
            }
        }
        if self.class_counts.is_empty() {
            self.class_counts = vec![0; other.class_counts.len()];
        }
        if self.class_counts.len() == other.class_counts.len() {
            self.class_counts
                .iter_mut()
                .zip(&other.class_counts)
                .for_each(|(a, b)| *a = a.saturating_add(*b));
        }
        self.requests = self.requests.saturating_add(other.requests);
        self.errors = self.errors.saturating_add(other.errors);
        self.installs = self.installs.saturating_add(other.installs);
        self.install_failures = self.install_failures.saturating_add(other.install_failures);
        self.devices.extend(other.devices.iter().cloned());
    }

    /// The phase's health, for the gates.
    pub fn health(
        &self,
        devices_in_phase: u64,
        installs: u64,
        install_failures: u64,
        reference: &ReferenceStats,
    ) -> PhaseHealth {
        let psi_value = if !reference.class_counts.is_empty() {
            psi(&reference.class_counts, &self.class_counts)
        } else {
            match (&reference.prediction, &self.prediction) {
                (Some(r), Some(p)) if r.edges == p.edges => psi(&r.counts, &p.counts),
                _ => None,
            }
        };
        PhaseHealth {
            devices: devices_in_phase,
            reporting_devices: self.devices.len() as u64,
            installs,
            install_failures,
            requests: self.requests,
            errors: self.errors,
            p99_ms: self.latency_ms.as_ref().and_then(|h| h.quantile(0.99)),
            psi: psi_value,
            mean_confidence: self
                .confidence
                .as_ref()
                .and_then(|h| h.mean_within(0.0, 1.0)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn window(requests: u64, errors: u64, slow: bool, classes: Vec<u64>) -> TelemetryWindow {
        let mut latency = Histogram::with_edges(vec![1.0, 5.0, 10.0, 50.0, 100.0]);
        for _ in 0..requests {
            latency.observe(if slow { 70.0 } else { 3.0 });
        }
        let mut confidence = Histogram::uniform(0.0, 1.0, 10);
        for _ in 0..requests {
            confidence.observe(0.93);
        }
        TelemetryWindow {
            model: "digits".into(),
            version: "2.0.0".into(),
            window_start: 0,
            window_secs: 60,
            requests,
            errors,
            latency_ms: latency,
            confidence: Some(confidence),
            class_counts: classes,
            prediction: None,
            features: vec![],
        }
    }

    fn reference() -> ReferenceStats {
        ReferenceStats {
            class_counts: vec![100, 100, 100],
            ..Default::default()
        }
    }

    #[test]
    fn windows_merge_into_phase_health() {
        let mut a = PhaseAggregate::default();
        a.observe("dev-1", &window(100, 1, false, vec![30, 35, 35]))
            .unwrap();
        a.observe("dev-2", &window(100, 0, false, vec![35, 30, 35]))
            .unwrap();
        a.observe("dev-1", &window(50, 0, false, vec![20, 15, 15]))
            .unwrap();
        let h = a.health(3, 2, 0, &reference());
        assert_eq!(
            (h.devices, h.reporting_devices, h.requests, h.errors),
            (3, 2, 250, 1)
        );
        assert!(h.p99_ms.unwrap() > 1.0 && h.p99_ms.unwrap() <= 5.0, "{h:?}");
        assert!(
            (h.mean_confidence.unwrap() - 0.95).abs() < 1e-9,
            "bin midpoint"
        );
        assert!(
            h.psi.unwrap() < 0.01,
            "balanced classes match the reference"
        );
        // one slow device pulls p99 up; a skewed one pushes PSI up
        a.observe("dev-3", &window(300, 0, true, vec![300, 0, 0]))
            .unwrap();
        let h = a.health(3, 2, 0, &reference());
        assert!(h.p99_ms.unwrap() > 50.0, "{h:?}");
        assert!(h.psi.unwrap() > 0.2, "{h:?}");
    }

    #[test]
    fn malformed_windows_are_refused_whole() {
        let mut a = PhaseAggregate::default();
        a.observe("dev-1", &window(10, 0, false, vec![1, 2, 3]))
            .unwrap();
        let before = a.clone();
        let mut w = window(10, 0, false, vec![1, 2, 3]);
        w.latency_ms.counts.pop();
        assert!(a.observe("dev-2", &w).unwrap_err().contains("malformed"));
        let mut w = window(10, 0, false, vec![1, 2]);
        w.errors = 0;
        assert!(a.observe("dev-2", &w).unwrap_err().contains("class counts"));
        let w = window(10, 11, false, vec![1, 2, 3]);
        assert!(a.observe("dev-2", &w).is_err());
        let mut w = window(10, 0, false, vec![1, 2, 3]);
        w.latency_ms = Histogram::with_edges(vec![2.0]);
        assert!(a.observe("dev-2", &w).unwrap_err().contains("other bins"));
        assert_eq!(a, before, "nothing merged from a refused window");
    }
}
