//! The REST contract: every request and response body of the OTA server's `/v1` API and of the
//! device agent's local predict API, as types. The server builds its answers from them, the CLI
//! and the tests read them back, and the OpenAPI document (`/v1/openapi.json`) is derived from
//! them (feature `openapi`, utoipa), so the three cannot drift apart.
//!
//! **API boundary**: the JSON shape of these types is a promise to operators' scripts and the
//! dashboard. Golden tests in `tests/rest.rs` pin it.
//!
//! The rollout state machine (gates, ticks, operator actions) is the server's; here is only the
//! data it keeps and shows.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::cohort::in_phase;
use crate::selector::Selector;

// ---------------------------------------------------------------- rollouts

/// One phase of a rollout.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Phase {
    /// Share of the selected devices, (0, 100].
    pub percent: f64,
    /// Time to watch the phase before it may advance (0 for the last phase is usual).
    #[serde(default)]
    pub soak_seconds: u64,
    /// A shadow phase: the phase's devices run the candidate beside their active model on a
    /// share of live requests without answering; the shadow gates judge it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shadow: Option<ShadowPhase>,
    /// An A/B experiment phase: the phase's devices are split into arms by a stable hash, the
    /// candidate's arm runs the new version, and a sequential test on `metric` decides.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub experiment: Option<ExperimentPhase>,
}

impl Phase {
    /// A plain (canary) phase.
    pub fn canary(percent: f64, soak_seconds: u64) -> Phase {
        Phase {
            percent,
            soak_seconds,
            shadow: None,
            experiment: None,
        }
    }
}

/// How a shadow phase mirrors live requests.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ShadowPhase {
    /// Share of answered requests also run on the candidate, (0, 1]. Default 1.
    #[serde(default = "one_f64")]
    pub sample: f64,
    /// CPU the candidate may use, in cores (over any stretch of time), (0, 1]. Default 0.5.
    #[serde(default = "half")]
    pub cpu_budget: f64,
}

fn one_f64() -> f64 {
    1.0
}

fn half() -> f64 {
    0.5
}

/// The metric an experiment compares its arms on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum ExperimentMetric {
    /// Share of labelled answers that were right (feedback `label`); higher is better.
    Accuracy,
    /// Failed predictions / predictions; lower is better.
    ErrorRate,
    /// Mean of the rewards apps sent (feedback `reward`); higher is better.
    MeanReward,
    /// Mean absolute error against true values (feedback `value`); lower is better.
    Mae,
}

impl ExperimentMetric {
    /// Whether a larger value is better.
    pub fn higher_is_better(self) -> bool {
        matches!(
            self,
            ExperimentMetric::Accuracy | ExperimentMetric::MeanReward
        )
    }
}

/// What an experiment does when its maximum duration ends undecided.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum Inconclusive {
    /// Go on to the next phase (the candidate is not worse by what could be seen).
    Promote,
    /// Roll the candidate back.
    #[default]
    Rollback,
}

/// How an experiment phase is judged.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ExperimentPhase {
    /// The metric compared.
    pub metric: ExperimentMetric,
    /// False-positive rate the test keeps however often it looks, (0, 1). Default 0.05.
    #[serde(default = "five_percent")]
    pub alpha: f64,
    /// The difference the test is tuned to find, in the metric's units (e.g. 0.02 for two
    /// points of accuracy). Default 0.02.
    #[serde(default = "two_points")]
    pub tau: f64,
    /// Samples each arm needs before a look counts. Default 100.
    #[serde(default = "hundred")]
    pub min_samples: u64,
    /// Longest the experiment runs before `on_inconclusive` applies.
    pub max_seconds: u64,
    /// What happens when it ends undecided. Default `rollback`.
    #[serde(default)]
    pub on_inconclusive: Inconclusive,
}

fn five_percent() -> f64 {
    0.05
}

fn two_points() -> f64 {
    0.02
}

fn hundred() -> u64 {
    100
}

/// Health limits of a phase. (`Default`, for a spec without `gates`, has no limits and
/// `min_reporting_devices` 0; a `gates` object without that field gets 1.)
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Gates {
    /// Failed installs (self-test, verify, download, trial rollback) / installs attempted.
    #[serde(default)]
    pub max_install_failure_rate: Option<f64>,
    /// Failed predictions / predictions.
    #[serde(default)]
    pub max_error_rate: Option<f64>,
    /// p99 latency, ms.
    #[serde(default)]
    pub max_p99_latency_ms: Option<f64>,
    /// PSI of predictions against the bundle's reference.
    #[serde(default)]
    pub max_psi: Option<f64>,
    /// Mean top-1 confidence (classification).
    #[serde(default)]
    pub min_mean_confidence: Option<f64>,
    /// Devices of the phase that must report telemetry before a verdict (capped at the phase's
    /// size).
    #[serde(default = "one")]
    pub min_reporting_devices: u64,
    /// Predictions the phase must have served before a verdict on the model signals (error
    /// rate, latency, PSI, confidence are noise on a handful of requests). Default 0.
    #[serde(default)]
    pub min_requests: u64,
    /// Shadow phases: share of compared answers on which the candidate agreed with the active
    /// model (top-1 label; for regression, the share inside the active model's interval).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_shadow_agreement: Option<f64>,
    /// Shadow phases: p99 of the candidate's own latency, ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_shadow_p99_ms: Option<f64>,
    /// Shadow phases: mirrored requests the candidate must have run before a verdict.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub min_shadow_requests: u64,
    /// Share of labelled answers that were right (app feedback).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_accuracy: Option<f64>,
    /// Mean absolute error against true values (app feedback).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_mae: Option<f64>,
    /// Labelled answers (labels, values) needed before a verdict on accuracy or MAE.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub min_labels: u64,
}

fn is_zero(v: &u64) -> bool {
    *v == 0
}

fn one() -> u64 {
    1
}

/// What to do when a gate fails.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum OnGateFailure {
    /// Stop advancing; devices keep what they have.
    #[default]
    Pause,
    /// Send the rollout's devices back to their previous version.
    Rollback,
}

/// A rollout as created (`POST /v1/rollouts`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct RolloutSpec {
    /// `sha256:<hex>` of the bundle.
    pub bundle: String,
    /// Cohort selector over device tags; parsed when read, refused if it does not parse.
    #[serde(default)]
    pub selector: Selector,
    /// Phases, increasing percentages (shadow phases excepted: they ship nothing).
    pub phases: Vec<Phase>,
    /// Gates for every phase.
    #[serde(default)]
    pub gates: Gates,
    /// Pause or roll back on a failing gate.
    #[serde(default)]
    pub on_gate_failure: OnGateFailure,
}

impl RolloutSpec {
    /// Checks phases and gates; the message names the problem.
    pub fn check(&self) -> Result<(), String> {
        if self.phases.is_empty() {
            return Err("a rollout needs at least one phase".into());
        }
        let mut last = 0.0;
        for (i, p) in self.phases.iter().enumerate() {
            if !(p.percent > 0.0 && p.percent <= 100.0) {
                return Err(format!(
                    "phase {i}: percent {} is not in (0, 100]",
                    p.percent
                ));
            }
            // the phases that ship grow; a shadow phase ships nothing and may reach any share
            if p.shadow.is_none() {
                if p.percent < last {
                    return Err(format!(
                        "phase {i}: percent {} is below the previous phase's {last}",
                        p.percent
                    ));
                }
                last = p.percent;
            }
            p.check().map_err(|e| format!("phase {i}: {e}"))?;
        }
        if self.phases.last().is_some_and(|p| p.shadow.is_some()) {
            return Err("the last phase cannot be a shadow phase: nothing would ship".into());
        }
        let g = &self.gates;
        for (name, v) in [
            ("max_install_failure_rate", g.max_install_failure_rate),
            ("max_error_rate", g.max_error_rate),
            ("min_mean_confidence", g.min_mean_confidence),
            ("min_shadow_agreement", g.min_shadow_agreement),
            ("min_accuracy", g.min_accuracy),
        ] {
            if let Some(v) = v {
                if !(0.0..=1.0).contains(&v) {
                    return Err(format!("gates.{name} {v} is not in [0, 1]"));
                }
            }
        }
        for (name, v) in [
            ("max_p99_latency_ms", g.max_p99_latency_ms),
            ("max_psi", g.max_psi),
            ("max_shadow_p99_ms", g.max_shadow_p99_ms),
            ("max_mae", g.max_mae),
        ] {
            if let Some(v) = v {
                if !(v.is_finite() && v >= 0.0) {
                    return Err(format!("gates.{name} {v} must be a non-negative number"));
                }
            }
        }
        Ok(())
    }
}

impl Phase {
    /// Checks the phase's kind: at most one of shadow and experiment, values in range.
    pub fn check(&self) -> Result<(), String> {
        if self.shadow.is_some() && self.experiment.is_some() {
            return Err("a phase is a shadow phase or an experiment, not both".into());
        }
        if let Some(s) = &self.shadow {
            if !(s.sample > 0.0 && s.sample <= 1.0) {
                return Err(format!("shadow.sample {} is not in (0, 1]", s.sample));
            }
            if !(s.cpu_budget > 0.0 && s.cpu_budget <= 1.0) {
                return Err(format!(
                    "shadow.cpu_budget {} is not in (0, 1] cores",
                    s.cpu_budget
                ));
            }
        }
        if let Some(e) = &self.experiment {
            if !(e.alpha > 0.0 && e.alpha < 1.0) {
                return Err(format!("experiment.alpha {} is not in (0, 1)", e.alpha));
            }
            if !(e.tau > 0.0 && e.tau.is_finite()) {
                return Err(format!("experiment.tau {} must be positive", e.tau));
            }
            if e.max_seconds == 0 {
                return Err("experiment.max_seconds must be positive".into());
            }
        }
        Ok(())
    }
}

/// Where a rollout stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum RolloutStatus {
    /// Advancing through its phases.
    Running,
    /// Stopped by a gate or an operator; devices keep what they have.
    Paused,
    /// Every phase passed.
    Completed,
    /// Stopped for good by an operator; devices keep what they have.
    Aborted,
    /// Devices sent back to their previous version.
    RolledBack,
}

impl RolloutStatus {
    /// No further transitions.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            RolloutStatus::Completed | RolloutStatus::Aborted | RolloutStatus::RolledBack
        )
    }
}

/// The health of one phase's devices for the rollout's version: what the gate judges, and what
/// operators see live (one computation serves both).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PhaseHealth {
    /// Devices in the phase (selected and bucketed in).
    pub devices: u64,
    /// Devices that sent telemetry for the new version during the phase.
    pub reporting_devices: u64,
    /// Install attempts and failures (events).
    pub installs: u64,
    /// Failed installs.
    pub install_failures: u64,
    /// Predictions and failed predictions.
    pub requests: u64,
    /// Failed predictions.
    pub errors: u64,
    /// p99 latency, ms.
    pub p99_ms: Option<f64>,
    /// Prediction PSI against the bundle's reference statistics.
    pub psi: Option<f64>,
    /// Mean top-1 confidence.
    pub mean_confidence: Option<f64>,
    /// Ground truth the apps sent for the phase's answers of the new version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub feedback: Option<FeedbackHealth>,
    /// A shadow phase: how the candidate ran beside the active model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shadow: Option<ShadowHealth>,
    /// An experiment phase: the arms and the test's latest look.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub experiment: Option<ExperimentLook>,
}

/// Ground truth joined to a version's answers (model-performance monitoring).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct FeedbackHealth {
    /// Labelled classification answers.
    pub labelled: u64,
    /// Right / labelled.
    pub accuracy: Option<f64>,
    /// Per true label: right / labelled.
    pub recall: BTreeMap<String, f64>,
    /// Regression answers given a true value.
    pub values: u64,
    /// Mean absolute error.
    pub mae: Option<f64>,
    /// Share of true values inside the answer's interval.
    pub interval_coverage: Option<f64>,
    /// Answers given a reward.
    pub rewards: u64,
    /// Mean reward.
    pub mean_reward: Option<f64>,
}

/// A shadow phase's candidate as it ran beside the active model.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ShadowHealth {
    /// Devices that reported shadow runs.
    pub reporting_devices: u64,
    /// Mirrored requests the candidate ran.
    pub requests: u64,
    /// Of those, failed.
    pub errors: u64,
    /// Rows compared with the active model's answers.
    pub compared: u64,
    /// Agreement: top-1 equal rate (classification) or share inside the active model's
    /// interval (regression).
    pub agreement: Option<f64>,
    /// Mean top-k overlap (classification).
    pub topk_overlap: Option<f64>,
    /// Mean |shadow − active| (regression).
    pub mean_abs_delta: Option<f64>,
    /// p99 of the candidate's latency, ms.
    pub p99_ms: Option<f64>,
    /// Sampled requests not mirrored (CPU budget spent, queue full).
    pub skipped: u64,
}

/// One experiment arm at a look.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ArmSummary {
    /// Devices of the arm that reported.
    pub devices: u64,
    /// Samples of the metric.
    pub samples: u64,
    /// The metric's mean.
    pub mean: Option<f64>,
}

/// One look of an experiment's sequential test (its decision log and its chart).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ExperimentLook {
    /// Unix seconds.
    pub at: u64,
    /// The phase.
    pub phase: usize,
    /// The metric.
    pub metric: ExperimentMetric,
    /// The incumbent's arm (A).
    pub incumbent: ArmSummary,
    /// The candidate's arm (B).
    pub candidate: ArmSummary,
    /// `mean_B − mean_A`.
    pub estimate: f64,
    /// The confidence sequence at this look (absent before each arm has `min_samples`).
    pub interval: Option<(f64, f64)>,
    /// The always-valid p-value so far.
    pub p_value: f64,
    /// `continue`, `candidate_better` or `candidate_worse`.
    pub verdict: String,
}

/// One transition of a rollout (its decision log).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Transition {
    /// Unix seconds.
    pub at: u64,
    /// Phase before.
    pub from_phase: usize,
    /// Phase after.
    pub to_phase: usize,
    /// Status before.
    pub from_status: RolloutStatus,
    /// Status after.
    pub to_status: RolloutStatus,
    /// Why (gate values, operator action).
    pub reason: String,
    /// The health the engine saw, for gate-driven transitions.
    pub health: Option<PhaseHealth>,
}

/// A rollout's state (as stored, and as `GET /v1/rollouts` lists it).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Rollout {
    /// Id (`r-1`, `r-2`, ... in creation order).
    pub id: String,
    /// Model name (from the bundle).
    pub model: String,
    /// Model version (from the bundle).
    pub version: String,
    /// As created.
    pub spec: RolloutSpec,
    /// Status.
    pub status: RolloutStatus,
    /// Current phase index.
    pub phase: usize,
    /// When the current phase started, unix seconds.
    pub phase_started: u64,
    /// Every transition, oldest first.
    pub transitions: Vec<Transition>,
    /// Experiment phases: the test's looks, oldest first (the server thins them to a few
    /// hundred).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub looks: Vec<ExperimentLook>,
}

impl Rollout {
    /// The current phase.
    pub fn current_phase(&self) -> &Phase {
        &self.spec.phases[self.phase.min(self.spec.phases.len() - 1)]
    }

    /// A new rollout, running its first phase from `now`.
    pub fn new(id: String, model: String, version: String, spec: RolloutSpec, now: u64) -> Rollout {
        Rollout {
            id,
            model,
            version,
            spec,
            status: RolloutStatus::Running,
            phase: 0,
            phase_started: now,
            transitions: Vec::new(),
            looks: Vec::new(),
        }
    }

    /// The current phase's percentage.
    pub fn percent(&self) -> f64 {
        self.spec.phases[self.phase.min(self.spec.phases.len() - 1)].percent
    }

    /// Whether devices of this rollout should run its version now (running, paused, completed or
    /// aborted keep what they were given; rolled back do not).
    pub fn delivers(&self) -> bool {
        !matches!(self.status, RolloutStatus::RolledBack)
    }

    /// Whether a device with this id and these tags is in the rollout's first `percent` of its
    /// selected devices (its selector matches and its stable bucket is in).
    pub fn reaches_at(&self, device: &str, tags: &BTreeMap<String, String>, percent: f64) -> bool {
        self.spec.selector.matches(tags) && in_phase(device, &self.id, percent)
    }

    /// [`Rollout::reaches_at`] the current phase.
    pub fn reaches(&self, device: &str, tags: &BTreeMap<String, String>) -> bool {
        self.reaches_at(device, tags, self.percent())
    }

    /// Whether the current phase's gates count a device: reached, and running the new version
    /// (as a shadow, or not in the incumbent's arm of an experiment).
    pub fn judged_on(&self, device: &str, tags: &BTreeMap<String, String>) -> bool {
        self.reaches(device, tags) && self.role(device) != PhaseRole::Incumbent
    }

    /// Whether a device is in the candidate's arm of this rollout's experiments (a stable
    /// half of its devices, independent of the phase buckets).
    pub fn candidate_arm(&self, device: &str) -> bool {
        in_phase(device, &format!("{}/arm", self.id), 50.0)
    }

    /// How the current phase gives the rollout's version to a device it reaches.
    pub fn role(&self, device: &str) -> PhaseRole {
        let phase = self.current_phase();
        if phase.shadow.is_some() {
            // an aborted rollout's shadows stop: they would otherwise run for good
            match self.status {
                RolloutStatus::Aborted => PhaseRole::Incumbent,
                _ => PhaseRole::Shadow,
            }
        } else if phase.experiment.is_some()
            && self.status != RolloutStatus::Completed
            && !self.candidate_arm(device)
        {
            PhaseRole::Incumbent
        } else {
            PhaseRole::Candidate
        }
    }
}

/// What a rollout asks of a device it reaches in the current phase.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PhaseRole {
    /// Run the new version (a canary phase, or the candidate's arm of an experiment).
    Candidate,
    /// Run the new version as a shadow beside the active one.
    Shadow,
    /// Keep the version it runs (the incumbent's arm of an experiment).
    Incumbent,
}

/// Progress of one phase (cumulative, as phases are).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PhaseProgress {
    /// Phase index.
    pub phase: usize,
    /// Its share of the selected devices.
    pub percent: f64,
    /// Its soak time.
    pub soak_seconds: u64,
    /// Devices it targets.
    pub targeted: u64,
    /// Of those, running this version.
    pub updated: u64,
    /// Of those, that rolled this version back.
    pub rolled_back: u64,
    /// Updated and reporting telemetry in that phase.
    pub healthy: u64,
    /// Whether the rollout has reached it.
    pub reached: bool,
}

/// `GET /v1/rollouts/{id}`: a rollout with the live health of its current phase (the same
/// [`PhaseHealth`] the gate judges, PSI included) and its device counts.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RolloutView {
    /// The rollout.
    #[serde(flatten)]
    pub rollout: Rollout,
    /// Devices its selector matches.
    pub selected_devices: u64,
    /// Devices in the current phase.
    pub phase_devices: u64,
    /// The current phase's health.
    pub health: PhaseHealth,
    /// Every phase's progress.
    pub phases_detail: Vec<PhaseProgress>,
}

/// `GET /v1/rollouts`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RolloutList {
    /// Every rollout, in key order.
    pub rollouts: Vec<Rollout>,
}

/// One point of a rollout chart: a span's gate metrics.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ChartPoint {
    /// Span start, unix seconds.
    pub t: u64,
    /// Span length, seconds (60 or 3600).
    pub resolution: u64,
    /// Predictions.
    pub requests: u64,
    /// Failed predictions.
    pub errors: u64,
    /// errors / requests.
    pub error_rate: Option<f64>,
    /// p99 latency, ms.
    pub p99_ms: Option<f64>,
    /// Prediction PSI against the bundle's reference.
    pub psi: Option<f64>,
    /// Mean top-1 confidence.
    pub mean_confidence: Option<f64>,
    /// Devices that reported.
    pub reporting_devices: u64,
    /// Install outcomes reported.
    pub installs: u64,
    /// Failed installs / installs.
    pub install_failure_rate: Option<f64>,
    /// Shadow phases: the candidate's agreement with the active model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shadow_agreement: Option<f64>,
    /// Accuracy on the labels apps sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub accuracy: Option<f64>,
}

/// One phase's chart.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PhaseSeries {
    /// Phase index.
    pub phase: usize,
    /// Its percentage.
    pub percent: f64,
    /// Its minute (then hour) points.
    pub points: Vec<ChartPoint>,
}

/// One version's fleet-wide chart.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct VersionSeries {
    /// The version (`None`: a first rollout has no previous version).
    pub version: Option<String>,
    /// Its points.
    pub points: Vec<ChartPoint>,
}

/// `GET /v1/rollouts/{id}/series`: what the dashboard's rollout charts draw.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RolloutCharts {
    /// Rollout id.
    pub id: String,
    /// Model.
    pub model: String,
    /// Its version.
    pub version: String,
    /// The gates (thresholds drawn on the charts).
    pub gates: Gates,
    /// Every phase reached.
    pub phases: Vec<PhaseSeries>,
    /// The new version, fleet-wide.
    pub new: VersionSeries,
    /// The version it replaces, fleet-wide.
    pub previous: VersionSeries,
    /// The decision log.
    pub transitions: Vec<Transition>,
}

// ---------------------------------------------------------------- devices

/// One model on a device, as it last reported.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ReportedModel {
    /// Model name.
    pub name: String,
    /// Active version.
    pub active: Option<String>,
    /// Previous version, kept for rollback.
    pub previous: Option<String>,
    /// Version in its trial window.
    pub trial: Option<String>,
    /// Versions marked bad.
    pub bad_versions: Vec<String>,
}

/// A device's reported state, from its last hello.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Reported {
    /// When, unix seconds (server clock).
    pub at: u64,
    /// Last desired generation it applied.
    pub applied_generation: u64,
    /// Per model.
    pub models: Vec<ReportedModel>,
    /// Telemetry it dropped because its outbox was full, since first boot.
    pub dropped_telemetry: u64,
    /// Bundle payload formats it reads (`nnef`, `onnx`); `["onnx"]` for an agent that reports
    /// none (agents from before the optimized payload read only ONNX).
    #[serde(default = "onnx_only")]
    pub payload_formats: Vec<String>,
    /// Engines it has built in (`cpu`, `gpu`, `cuda`); empty when it reports none.
    #[serde(default)]
    pub engines: Vec<String>,
}

fn onnx_format() -> String {
    "onnx".into()
}

fn onnx_only() -> Vec<String> {
    vec!["onnx".into()]
}

/// One minute of one device's telemetry for one model version.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DeviceMinute {
    /// Minute start, unix seconds (server clock).
    pub t: u64,
    /// Model.
    pub model: String,
    /// Version.
    pub version: String,
    /// Predict calls.
    pub requests: u64,
    /// Failed calls.
    pub errors: u64,
    /// The worst p99 latency of the windows in this minute, ms.
    pub p99_ms: Option<f64>,
    /// Mean top-1 confidence, weighted by requests.
    pub mean_confidence: Option<f64>,
}

/// A device's uplink counters.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct UplinkCounters {
    /// Signed messages accepted from it, ever.
    pub messages: u64,
    /// Highest sequence number accepted (with nothing lost, equals `messages`).
    pub last_seq: u64,
    /// Redeliveries refused by the replay guard, ever.
    pub duplicates: u64,
    /// Predictions counted in its telemetry windows, ever.
    pub requests: u64,
}

/// A device as the API shows it (`GET /v1/devices`, `GET /v1/devices/{id}`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DeviceView {
    /// Id.
    pub id: String,
    /// Tags.
    pub tags: BTreeMap<String, String>,
    /// ed25519 public key, hex.
    pub public_key: String,
    /// Agent version at enrollment or last hello.
    pub agent_version: String,
    /// Enrollment time, unix seconds.
    pub enrolled_at: u64,
    /// Last message, unix seconds (0: never).
    pub last_seen: u64,
    /// Connected now.
    pub online: bool,
    /// What it last said it runs.
    pub reported: Option<Reported>,
    /// Uplink counters.
    pub uplink: UplinkCounters,
    /// Its own recent telemetry per minute: on one device's page only, not in the list.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recent: Option<Vec<DeviceMinute>>,
}

/// `GET /v1/devices`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DeviceList {
    /// Every device.
    pub devices: Vec<DeviceView>,
}

/// One reconcile event of a device.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct EventEntry {
    /// Device time, unix seconds.
    pub at: u64,
    /// Desired generation being applied.
    pub generation: u64,
    /// Model.
    pub model: String,
    /// Version.
    pub version: String,
    /// `downloading`, `verified`, `activated`, `committed`, `rolled_back`, `failed`.
    pub step: String,
    /// Why, for failures and rollbacks.
    pub detail: Option<String>,
}

/// One events message of a device.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct EventRecord {
    /// The message's sequence number.
    pub seq: u64,
    /// When the server received it, unix seconds.
    pub received_at: u64,
    /// The events, oldest first.
    pub events: Vec<EventEntry>,
}

/// `GET /v1/devices/{id}/events`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DeviceEvents {
    /// Device id.
    pub device: String,
    /// Its event messages, oldest first.
    pub events: Vec<EventRecord>,
}

// ---------------------------------------------------------------- bundles

/// A bundle in the registry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Bundle {
    /// sha256 of the file, hex.
    pub sha256: String,
    /// Model name.
    pub name: String,
    /// Version.
    pub version: String,
    /// File size.
    pub size: u64,
    /// Anti-rollback floor the bundle raises, if any.
    pub min_version: Option<String>,
    /// Task (`classification`, `regression`, `raw`).
    pub task: String,
    /// The payload's format (`nnef`: the optimized payload; `onnx`).
    #[serde(default = "onnx_format")]
    pub payload_format: String,
    /// Signing key ids.
    pub signers: Vec<String>,
    /// Upload time, unix seconds.
    pub uploaded_at: u64,
    /// Who uploaded it (token name).
    pub uploaded_by: String,
}

/// A rollout that shipped a bundle.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RolloutRef {
    /// Rollout id.
    pub id: String,
    /// Its status.
    pub status: RolloutStatus,
    /// Its selector.
    pub selector: Selector,
}

/// `GET /v1/bundles/{sha}`: the record, the signed manifest and the rollouts that used it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct BundleView {
    /// The record.
    #[serde(flatten)]
    pub bundle: Bundle,
    /// The signed manifest (inputs, output, self-test, quantization, reference statistics), as
    /// `edgectl inspect` prints it; its type is `edge_bundle::Manifest` (not part of this crate,
    /// which the bundle crate depends on).
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Object>))]
    pub manifest: Option<serde_json::Value>,
    /// Rollouts that shipped it.
    pub rollouts: Vec<RolloutRef>,
}

/// `GET /v1/bundles`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct BundleList {
    /// Every bundle.
    pub bundles: Vec<Bundle>,
}

// ---------------------------------------------------------------- tokens and callers

/// An API token's role: each includes the ones before it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Reads everything.
    Viewer,
    /// Manages bundles and rollouts.
    Operator,
    /// Manages tokens and enrollment.
    Admin,
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Role::Viewer => "viewer",
            Role::Operator => "operator",
            Role::Admin => "admin",
        })
    }
}

impl std::str::FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Role, String> {
        match s {
            "viewer" => Ok(Role::Viewer),
            "operator" => Ok(Role::Operator),
            "admin" => Ok(Role::Admin),
            other => Err(format!("unknown role '{other}' (viewer, operator, admin)")),
        }
    }
}

/// What a route needs of its caller's role.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Read anything.
    Read,
    /// Change bundles and rollouts.
    Operate,
    /// Change tokens and enrollment.
    Administer,
}

impl Role {
    /// Whether this role may do `action`.
    pub fn allows(self, action: Action) -> bool {
        let needed = match action {
            Action::Read => Role::Viewer,
            Action::Operate => Role::Operator,
            Action::Administer => Role::Admin,
        };
        self >= needed
    }

    /// Everything this role may do.
    pub fn permissions(self) -> Permissions {
        Permissions {
            read: self.allows(Action::Read),
            operate: self.allows(Action::Operate),
            administer: self.allows(Action::Administer),
        }
    }
}

/// `POST /v1/tokens`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct NewToken {
    /// For humans (shown in decision logs: "paused by NAME").
    pub name: String,
    /// Its role.
    pub role: Role,
}

/// The answer to `POST /v1/tokens`: the token, shown once.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TokenCreated {
    /// The secret (`eft_…`); only its hash is stored.
    pub token: String,
    /// Its name.
    pub name: String,
    /// Its role.
    pub role: Role,
}

/// `POST /v1/enrollment-tokens`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct NewEnrollmentToken {
    /// For humans.
    pub name: String,
    /// Enrollments allowed (`None`: unlimited).
    #[serde(default)]
    pub uses: Option<u64>,
    /// Tags every device enrolled with it gets.
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
}

/// The answer to `POST /v1/enrollment-tokens`: the token, shown once.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct EnrollmentTokenCreated {
    /// The secret devices enroll with.
    pub token: String,
    /// Its name.
    pub name: String,
    /// Enrollments allowed.
    pub uses: Option<u64>,
}

/// What a role may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Permissions {
    /// Read everything.
    pub read: bool,
    /// Bundles and rollouts.
    pub operate: bool,
    /// Tokens and enrollment.
    pub administer: bool,
}

/// `GET /v1/whoami`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Whoami {
    /// The token's name.
    pub name: String,
    /// Its role.
    pub role: Role,
    /// What it may do.
    pub may: Permissions,
}

// ---------------------------------------------------------------- service

/// Every refusal: `{"error": reason}` with a 4xx/5xx status; the reason says what was wrong
/// and what to do.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ApiError {
    /// What was wrong.
    pub error: String,
}

/// `GET /healthz`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Healthz {
    /// `ok` or `store unavailable`.
    pub status: String,
    /// Whether the store answers.
    pub store: bool,
    /// Whether the fleet loop is connected to the broker (`None`: no fleet loop).
    pub broker_connected: Option<bool>,
    /// Whether this server runs the rollout engine now (holds the engine lease; among replicas
    /// exactly one does). `None`: no fleet loop.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub engine_leader: Option<bool>,
    /// This server's replica name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replica: Option<String>,
}

// ---------------------------------------------------------------- the agent's local API

/// `POST /v1/models/{name}/predict` on the device agent's local API: one input (`input`) or one
/// per graph input (`inputs`), each a nested JSON array of numbers in the input's shape, batch
/// first (`"NaN"`, `"inf"` accepted as strings and judged by the input's NaN policy).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct PredictRequest {
    /// The input, for single-input models.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Object>))]
    pub input: Option<serde_json::Value>,
    /// One per graph input, in graph order.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Vec<Object>>))]
    pub inputs: Option<Vec<serde_json::Value>>,
    /// Classes per row (classification); the bundle's default when absent.
    #[serde(default)]
    pub top_k: Option<usize>,
    /// Also return the raw output tensors.
    #[serde(default)]
    pub raw: bool,
}

/// The device agent's `POST /v1/models/{name}/feedback`: ground truth for one answer (one row of
/// it), exactly one of `label`, `value` and `reward`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct FeedbackRequest {
    /// The `prediction_id` of the answer.
    pub prediction_id: String,
    /// The row of a batch answer (default 0).
    #[serde(default)]
    pub row: usize,
    /// The true label (classification): its text, or the class number.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Object>))]
    pub label: Option<serde_json::Value>,
    /// The true value (regression).
    #[serde(default)]
    pub value: Option<f64>,
    /// A reward for the answer (any task).
    #[serde(default)]
    pub reward: Option<f64>,
}

/// The answer to a feedback request.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct FeedbackAnswer {
    /// The answer's id.
    pub prediction_id: String,
    /// The version that answered.
    pub version: String,
    /// Whether the answer was right (labels; absent for values and rewards).
    pub correct: Option<bool>,
}
