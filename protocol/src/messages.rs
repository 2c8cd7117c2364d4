//! The bodies carried in signed envelopes: desired state (server → device), and hello with the
//! reported state, reconcile events and telemetry windows (device → server). Desired state, not
//! commands (DESIGN decision 1): the latest generation wins, so lost or repeated messages are
//! harmless. Telemetry is aggregates only (decision 8): no raw input leaves the device.

use minicbor::bytes::ByteArray;
use minicbor::{Decode, Encode};

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
}

/// A batch of telemetry windows.
#[derive(Clone, Debug, PartialEq, Encode, Decode)]
pub struct Telemetry {
    /// Windows, oldest first.
    #[n(0)]
    pub windows: Vec<TelemetryWindow>,
}
