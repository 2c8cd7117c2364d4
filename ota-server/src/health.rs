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
use edge_protocol::rest::{
    ArmSummary, ExperimentLook, ExperimentMetric, FeedbackHealth, ShadowHealth,
};
use edge_protocol::{FeedbackStats, Histogram, ShadowAgreement, TelemetryWindow};
use serde::{Deserialize, Serialize};

use crate::experiment::{self, Arm, Better, Experiment};
use crate::rollout::{PhaseHealth, Rollout};
use crate::store::{Records, Store, StoreError, Table};
use crate::telemetry_keys::{arms_key, installs_key, phase_key};

/// The health of rollout `r`'s current phase now: its devices (`in_phase`, those the rollout
/// reaches at the current percentage), the phase's merged telemetry and install tally, and PSI
/// against `reference`, the reference statistics of the rollout's bundle; in an experiment
/// phase, the sequential test's look at its arms at `now`. What the gate judges is exactly what
/// operators see.
pub fn phase_health<S: Store + ?Sized>(
    records: &Records<S>,
    r: &Rollout,
    in_phase: u64,
    reference: &ReferenceStats,
    now: u64,
) -> Result<PhaseHealth, StoreError> {
    let aggregate: PhaseAggregate = records
        .get(Table::Telemetry, &phase_key(&r.id, r.phase))?
        .unwrap_or_default();
    let installs: InstallTally = records
        .get(Table::Telemetry, &installs_key(&r.id, r.phase))?
        .unwrap_or_default();
    let (installed, failed) = installs.counts();
    let mut health = aggregate.health(in_phase, installed, failed, reference);
    if let Some(spec) = &r.current_phase().experiment {
        let arms: ArmsAggregate = records
            .get(Table::Telemetry, &arms_key(&r.id, r.phase))?
            .unwrap_or_default();
        let mut look = arms.look(spec, r.phase, now);
        // the always-valid p-value is the running minimum over the phase's looks
        look.p_value = r
            .looks
            .iter()
            .filter(|l| l.phase == r.phase)
            .map(|l| l.p_value)
            .fold(look.p_value, f64::min);
        health.experiment = Some(look);
    }
    // a shadow phase is judged on its shadow runs (none yet is a verdict to wait for), the
    // others never are
    health.shadow = match r.current_phase().shadow {
        Some(_) => Some(health.shadow.unwrap_or_default()),
        None => None,
    };
    Ok(health)
}

/// One experiment arm: the devices that reported and the metric's samples.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ArmTally {
    /// Devices that reported for this arm.
    pub devices: BTreeSet<String>,
    /// The metric's samples, as sums.
    pub samples: Arm,
}

impl ArmTally {
    fn summary(&self) -> ArmSummary {
        ArmSummary {
            devices: self.devices.len() as u64,
            samples: self.samples.n,
            mean: (self.samples.n > 0).then(|| self.samples.mean()),
        }
    }
}

/// The arms of one experiment phase.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ArmsAggregate {
    /// The incumbent's arm (A): devices that kept their version.
    pub incumbent: ArmTally,
    /// The candidate's arm (B).
    pub candidate: ArmTally,
}

/// A window's samples of an experiment metric (`None`: the window has none).
pub fn metric_samples(metric: ExperimentMetric, w: &TelemetryWindow) -> Option<Arm> {
    let f = w.feedback.clone().unwrap_or_default();
    let (n, sum, sum_sq) = match metric {
        ExperimentMetric::Accuracy => (f.labelled, f.correct as f64, f.correct as f64),
        ExperimentMetric::ErrorRate => (w.requests, w.errors as f64, w.errors as f64),
        ExperimentMetric::MeanReward => (f.rewards, f.reward_sum, f.reward_sq_sum),
        ExperimentMetric::Mae => (f.values, f.abs_error, f.sq_error),
    };
    (n > 0 && sum.is_finite() && sum_sq.is_finite()).then_some(Arm { n, sum, sum_sq })
}

impl ArmsAggregate {
    /// Adds one device's samples to an arm.
    pub fn observe(&mut self, candidate: bool, device: &str, samples: &Arm) {
        let arm = if candidate {
            &mut self.candidate
        } else {
            &mut self.incumbent
        };
        arm.samples.merge(samples);
        if !arm.devices.contains(device) {
            arm.devices.insert(device.to_string());
        }
    }

    /// The sequential test's look at the arms now.
    pub fn look(
        &self,
        spec: &edge_protocol::rest::ExperimentPhase,
        phase: usize,
        at: u64,
    ) -> ExperimentLook {
        let better = if spec.metric.higher_is_better() {
            Better::Higher
        } else {
            Better::Lower
        };
        let test = Experiment::new(experiment::Spec {
            alpha: spec.alpha,
            tau: spec.tau,
            min_samples: spec.min_samples,
            better,
        });
        let look = test.map(|mut t| t.look(&self.incumbent.samples, &self.candidate.samples));
        let (estimate, interval, p_value, verdict) = match look {
            Ok(l) => (
                l.estimate,
                l.interval.0.is_finite().then_some(l.interval),
                l.p_value,
                match l.verdict {
                    experiment::Verdict::Continue => "continue",
                    experiment::Verdict::CandidateBetter => "candidate_better",
                    experiment::Verdict::CandidateWorse => "candidate_worse",
                },
            ),
            // a spec out of range was refused when the rollout was created
            Err(_) => (0.0, None, 1.0, "continue"),
        };
        ExperimentLook {
            at,
            phase,
            metric: spec.metric,
            incumbent: self.incumbent.summary(),
            candidate: self.candidate.summary(),
            estimate,
            interval,
            p_value,
            verdict: verdict.to_string(),
        }
    }
}

/// Merged shadow runs of one rollout phase.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ShadowAggregate {
    /// Devices that reported shadow runs.
    pub devices: BTreeSet<String>,
    /// Mirrored requests run.
    pub requests: u64,
    /// Failed.
    pub errors: u64,
    /// The candidate's latency.
    pub latency_ms: Option<Histogram>,
    /// The comparison counts.
    pub agreement: ShadowAgreement,
}

/// `x / n`, none of nothing.
fn ratio(x: f64, n: u64) -> Option<f64> {
    (n > 0).then(|| x / n as f64)
}

impl ShadowAggregate {
    /// Adds another's runs (a latency histogram with other bins is left out).
    fn absorb(&mut self, o: &ShadowAggregate) {
        if let Some(h) = &o.latency_ms {
            if check_merge(&self.latency_ms, h, "").is_ok() {
                merge_into(&mut self.latency_ms, h);
            }
        }
        self.requests = self.requests.saturating_add(o.requests);
        self.errors = self.errors.saturating_add(o.errors);
        self.agreement.merge(&o.agreement);
        self.devices.extend(o.devices.iter().cloned());
    }

    fn health(&self) -> ShadowHealth {
        let a = &self.agreement;
        let classified = a.compared.saturating_sub(a.values);
        ShadowHealth {
            reporting_devices: self.devices.len() as u64,
            requests: self.requests,
            errors: self.errors,
            compared: a.compared,
            agreement: if classified > 0 {
                ratio(a.agreed as f64, classified)
            } else {
                ratio(a.inside_interval as f64, a.with_interval)
            },
            topk_overlap: ratio(a.topk_overlap, classified),
            mean_abs_delta: ratio(a.abs_delta, a.values),
            p99_ms: self.latency_ms.as_ref().and_then(|h| h.quantile(0.99)),
            skipped: a.skipped_budget + a.skipped_busy,
        }
    }
}

/// What the apps' ground truth says, as the gates and operators see it.
pub fn feedback_health(f: &FeedbackStats) -> FeedbackHealth {
    FeedbackHealth {
        labelled: f.labelled,
        accuracy: ratio(f.correct as f64, f.labelled),
        recall: f
            .per_class
            .iter()
            .filter(|(_, n, _)| *n > 0)
            .map(|(label, n, ok)| (label.clone(), *ok as f64 / *n as f64))
            .collect(),
        values: f.values,
        mae: ratio(f.abs_error, f.values),
        interval_coverage: ratio(f.inside_interval as f64, f.with_interval),
        rewards: f.rewards,
        mean_reward: ratio(f.reward_sum, f.rewards),
    }
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
    /// Devices that reported (a phase's aggregate: the gate counts them, the dashboard checks
    /// each device against them).
    pub devices: BTreeSet<String>,
    /// Devices that reported, counted without their names (time-series points: a set of names
    /// would make every ingest batch rewrite a record as large as the fleet). A minute counts
    /// each device once (the device record knows its minutes); an hour keeps its busiest
    /// minute's count.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub device_count: u64,
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
    /// Ground truth joined to the answers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub feedback: Option<FeedbackStats>,
    /// Shadow runs (a shadow phase).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shadow: Option<ShadowAggregate>,
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

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl PhaseAggregate {
    /// Adds one device's window. A malformed window is refused whole (nothing merged): every
    /// check runs before anything changes (no copy of the aggregate, whose device set can be
    /// large).
    pub fn observe(&mut self, device: &str, w: &TelemetryWindow) -> Result<(), String> {
        self.merge_window(w)?;
        if !self.devices.contains(device) {
            self.devices.insert(device.to_string());
        }
        Ok(())
    }

    /// Adds one device's window to a time-series point, counting the device if this is its
    /// first window in the point's span (checked and refused whole as [`Self::observe`]).
    pub fn observe_counted(
        &mut self,
        first_in_span: bool,
        w: &TelemetryWindow,
    ) -> Result<(), String> {
        self.merge_window(w)?;
        self.device_count += u64::from(first_in_span);
        Ok(())
    }

    fn merge_window(&mut self, w: &TelemetryWindow) -> Result<(), String> {
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
        if let Some(f) = &w.feedback {
            self.feedback.get_or_insert_with(Default::default).merge(f);
        }
        Ok(())
    }

    /// Adds one device's shadow window (checked like a served one, kept apart from the served
    /// requests).
    pub fn observe_shadow(&mut self, device: &str, w: &TelemetryWindow) -> Result<(), String> {
        if w.errors > w.requests {
            return Err(format!("{} errors in {} requests", w.errors, w.requests));
        }
        let a = w.shadow.clone().unwrap_or_default();
        if a.agreed > a.compared || a.inside_interval > a.with_interval || a.values > a.compared {
            return Err("shadow agreement counts are inconsistent".into());
        }
        if !(a.topk_overlap.is_finite() && a.abs_delta.is_finite()) {
            return Err("shadow agreement sums are not finite".into());
        }
        let earlier = self.shadow.as_ref().map_or(&None, |s| &s.latency_ms);
        check_merge(earlier, &w.latency_ms, "shadow latency")?;
        let window = ShadowAggregate {
            devices: [device.to_string()].into(),
            requests: w.requests,
            errors: w.errors,
            latency_ms: Some(w.latency_ms.clone()),
            agreement: a,
        };
        self.shadow
            .get_or_insert_with(Default::default)
            .absorb(&window);
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
        self.device_count = self.device_count.max(other.device_count);
        if let Some(f) = &other.feedback {
            self.feedback.get_or_insert_with(Default::default).merge(f);
        }
        if let Some(o) = &other.shadow {
            self.shadow.get_or_insert_with(Default::default).absorb(o);
        }
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
            reporting_devices: self.devices.len() as u64 + self.device_count,
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
            feedback: self.feedback.as_ref().map(feedback_health),
            shadow: self.shadow.as_ref().map(ShadowAggregate::health),
            experiment: None,
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
            shadow: None,
            feedback: None,
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
