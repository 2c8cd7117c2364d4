//! The bodies carried in signed envelopes: desired state (server → device), and hello with the
//! reported state, reconcile events and telemetry windows (device → server). Desired state, not
//! commands (DESIGN decision 1): the latest generation wins, so lost or repeated messages are
//! harmless. Telemetry is aggregates only (decision 8): no raw input leaves the device.

use minicbor::bytes::ByteArray;
use minicbor::{Decode, Encode};
use serde::{Deserialize, Serialize};

use crate::histogram::Histogram;

/// One model the device should run.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
pub struct DesiredModel {
    /// Model name (the slot key).
    #[n(0)]
    pub name: String,
    /// Semver version.
    #[n(1)]
    pub version: String,
    /// sha256 of the bundle file: where to fetch it (`/v1/artifacts/{hex}`) and what to expect.
    #[n(2)]
    pub bundle_sha256: ByteArray<32>,
    /// Bundle size in bytes (for the disk-space check before download).
    #[n(3)]
    pub size: u64,
}

/// What the server wants one device to run. Signed by the director key.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
pub struct DesiredState {
    /// The device this is for (a desired state for another device is refused).
    #[n(0)]
    pub device_id: String,
    /// Monotonic per device: a device applies only a generation newer than the one it applied.
    #[n(1)]
    pub generation: u64,
    /// The models to run; a model not listed is left as it is.
    #[n(2)]
    pub models: Vec<DesiredModel>,
    /// Candidates to run beside the active model of the same name, on a share of live requests,
    /// never answering (a rollout's shadow phase). A model not listed runs no shadow.
    #[n(3)]
    #[cbor(default, skip_if = "no_shadows")]
    pub shadows: Vec<DesiredShadow>,
}

fn no_shadows(v: &[DesiredShadow]) -> bool {
    v.is_empty()
}

/// A candidate the device loads into its second slot and runs beside the active model, after
/// each sampled answer has gone back; its answers are compared, never returned.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
pub struct DesiredShadow {
    /// The candidate bundle.
    #[n(0)]
    pub model: DesiredModel,
    /// Share of answered requests mirrored to the candidate, in parts per million.
    #[n(1)]
    pub sample_ppm: u32,
    /// CPU time the candidate may use, in thousandths of one core (over any stretch of time).
    #[n(2)]
    pub cpu_millicores: u32,
}

/// Where one model stands on the device.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
pub struct ReportedModel {
    /// Model name.
    #[n(0)]
    pub name: String,
    /// Active version and bundle digest.
    #[n(1)]
    pub active: Option<(String, ByteArray<32>)>,
    /// Previous version kept for rollback.
    #[n(2)]
    pub previous: Option<(String, ByteArray<32>)>,
    /// A candidate in its trial window, if any.
    #[n(3)]
    pub trial: Option<(String, ByteArray<32>)>,
    /// Versions marked bad for the current generation.
    #[n(4)]
    pub bad_versions: Vec<String>,
    /// A candidate running as a shadow beside the active version.
    #[n(5)]
    pub shadow: Option<(String, ByteArray<32>)>,
}

/// Device → server at connect: identity, agent version and reported state. The server answers
/// by re-publishing the device's desired state.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
pub struct Hello {
    /// `edge-agent` version.
    #[n(0)]
    pub agent_version: String,
    /// Last desired generation applied.
    #[n(1)]
    pub applied_generation: u64,
    /// Per model.
    #[n(2)]
    pub models: Vec<ReportedModel>,
    /// Telemetry dropped because the outbox was full, since first boot.
    #[n(3)]
    pub dropped_telemetry: u64,
    /// What this agent can run. Absent from agents older than the optimized payload, which read
    /// only ONNX payloads.
    #[n(4)]
    pub capabilities: Option<Capabilities>,
}

/// What an agent build can run: the server refuses a rollout whose bundle some targeted device
/// cannot read, before any device downloads it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Encode, Decode)]
pub struct Capabilities {
    /// Bundle payload formats it reads (`nnef`; `onnx` with the agent's `onnx` feature).
    #[n(0)]
    pub payload_formats: Vec<String>,
    /// Engines built in (`cpu`; `gpu`, `cuda` with those features).
    #[n(1)]
    pub engines: Vec<String>,
}

/// A step of reconciling one model.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
pub enum Step {
    /// Download started.
    #[n(0)]
    Downloading,
    /// Bundle verified against the trust root.
    #[n(1)]
    Verified,
    /// Self-test passed; activated, trial window started.
    #[n(2)]
    Activated,
    /// Trial passed; committed.
    #[n(3)]
    Committed,
    /// Rolled back to the previous slot.
    #[n(4)]
    RolledBack,
    /// A step failed (download, verify, self-test, ...).
    #[n(5)]
    Failed,
    /// Self-test passed; loaded as a shadow beside the active model (answers nothing).
    #[n(6)]
    Shadowing,
}

/// One reconcile event.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
pub struct Event {
    /// When, unix seconds.
    #[n(0)]
    pub at: u64,
    /// Desired generation being applied.
    #[n(1)]
    pub generation: u64,
    /// Model name.
    #[n(2)]
    pub model: String,
    /// Version concerned.
    #[n(3)]
    pub version: String,
    /// Step reached.
    #[n(4)]
    pub step: Step,
    /// Why (for failures and rollbacks), e.g. `p99 latency 80 ms over budget 50 ms`.
    #[n(5)]
    pub detail: Option<String>,
}

/// A batch of events.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
pub struct Events {
    /// Events, oldest first.
    #[n(0)]
    pub events: Vec<Event>,
}

/// Aggregates of one model version over one time window.
#[derive(Clone, Debug, PartialEq, Encode, Decode)]
pub struct TelemetryWindow {
    /// Model name.
    #[n(0)]
    pub model: String,
    /// Version that served.
    #[n(1)]
    pub version: String,
    /// Window start, unix seconds.
    #[n(2)]
    pub window_start: u64,
    /// Window length, seconds.
    #[n(3)]
    pub window_secs: u32,
    /// Predict calls.
    #[n(4)]
    pub requests: u64,
    /// Failed calls.
    #[n(5)]
    pub errors: u64,
    /// Latency histogram, milliseconds.
    #[n(6)]
    pub latency_ms: Histogram,
    /// Top-1 confidence histogram (classification).
    #[n(7)]
    pub confidence: Option<Histogram>,
    /// Predicted class counts (classification).
    #[n(8)]
    pub class_counts: Vec<u64>,
    /// Predicted value histogram over the bundle's reference bins (regression).
    #[n(9)]
    pub prediction: Option<Histogram>,
    /// Per-feature counts over the bundle's reference bins (for input PSI).
    #[n(10)]
    pub features: Vec<Histogram>,
    /// Present when this version ran as a shadow: its requests were mirrored live requests it
    /// did not answer, and this is how its answers compared with the active model's.
    #[n(11)]
    pub shadow: Option<ShadowAgreement>,
    /// Ground truth the apps sent for this version's answers in the window.
    #[n(12)]
    pub feedback: Option<FeedbackStats>,
}

/// How a shadow's answers compared with the active model's on the same inputs, in one window.
#[derive(Clone, Debug, Default, PartialEq, Encode, Decode, Serialize, Deserialize)]
pub struct ShadowAgreement {
    /// The active version it was compared with.
    #[n(0)]
    pub active_version: String,
    /// Rows compared.
    #[n(1)]
    pub compared: u64,
    /// Classification rows whose top-1 label was the same.
    #[n(2)]
    pub agreed: u64,
    /// Sum over classification rows of the top-k overlap (shared labels / k).
    #[n(3)]
    pub topk_overlap: f64,
    /// Regression rows compared.
    #[n(4)]
    pub values: u64,
    /// Sum over regression rows of |shadow − active|.
    #[n(5)]
    pub abs_delta: f64,
    /// Regression rows where the shadow's value fell inside the active model's interval.
    #[n(6)]
    pub inside_interval: u64,
    /// Regression rows whose active answer had an interval.
    #[n(7)]
    pub with_interval: u64,
    /// Sampled requests not mirrored because the shadow was over its CPU budget.
    #[n(8)]
    pub skipped_budget: u64,
    /// Sampled requests not mirrored because the shadow's queue was full.
    #[n(9)]
    pub skipped_busy: u64,
}

/// Ground truth joined to one version's answers (per window; sums, so windows merge).
#[derive(Clone, Debug, Default, PartialEq, Encode, Decode, Serialize, Deserialize)]
pub struct FeedbackStats {
    /// Classification answers given a label.
    #[n(0)]
    pub labelled: u64,
    /// Of those, predicted right (top-1).
    #[n(1)]
    pub correct: u64,
    /// Per true label: (label, labelled, correct), sorted by label.
    #[n(2)]
    pub per_class: Vec<(String, u64, u64)>,
    /// Regression answers given a true value.
    #[n(3)]
    pub values: u64,
    /// Sum of |prediction − truth|.
    #[n(4)]
    pub abs_error: f64,
    /// Sum of (prediction − truth)².
    #[n(5)]
    pub sq_error: f64,
    /// True values inside the answer's interval.
    #[n(6)]
    pub inside_interval: u64,
    /// Answers with an interval that were given a true value.
    #[n(7)]
    pub with_interval: u64,
    /// Answers given a reward.
    #[n(8)]
    pub rewards: u64,
    /// Sum of rewards.
    #[n(9)]
    pub reward_sum: f64,
    /// Sum of squared rewards.
    #[n(10)]
    pub reward_sq_sum: f64,
}

impl FeedbackStats {
    /// Whether nothing was joined.
    pub fn is_empty(&self) -> bool {
        self.labelled == 0 && self.values == 0 && self.rewards == 0
    }

    /// Adds another window's sums.
    pub fn merge(&mut self, o: &FeedbackStats) {
        self.labelled += o.labelled;
        self.correct += o.correct;
        for (label, n, ok) in &o.per_class {
            match self.per_class.binary_search_by(|(l, _, _)| l.cmp(label)) {
                Ok(i) => {
                    self.per_class[i].1 += n;
                    self.per_class[i].2 += ok;
                }
                Err(i) => self.per_class.insert(i, (label.clone(), *n, *ok)),
            }
        }
        self.values += o.values;
        self.abs_error += o.abs_error;
        self.sq_error += o.sq_error;
        self.inside_interval += o.inside_interval;
        self.with_interval += o.with_interval;
        self.rewards += o.rewards;
        self.reward_sum += o.reward_sum;
        self.reward_sq_sum += o.reward_sq_sum;
    }
}

impl ShadowAgreement {
    /// Adds another window's counts (the active version of the latest is kept).
    pub fn merge(&mut self, o: &ShadowAgreement) {
        if !o.active_version.is_empty() {
            self.active_version = o.active_version.clone();
        }
        self.compared += o.compared;
        self.agreed += o.agreed;
        self.topk_overlap += o.topk_overlap;
        self.values += o.values;
        self.abs_delta += o.abs_delta;
        self.inside_interval += o.inside_interval;
        self.with_interval += o.with_interval;
        self.skipped_budget += o.skipped_budget;
        self.skipped_busy += o.skipped_busy;
    }
}

/// A batch of telemetry windows.
#[derive(Clone, Debug, PartialEq, Encode, Decode)]
pub struct Telemetry {
    /// Windows, oldest first.
    #[n(0)]
    pub windows: Vec<TelemetryWindow>,
}
