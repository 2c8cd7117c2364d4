//! The bundle manifest: everything a device needs to know about a model besides its graph —
//! identity and version, payload digest, engine hints, input and output specs (pre- and
//! post-processing travel with the model), self-test vectors and reference statistics.
//!
//! Encoded as CBOR (minicbor, array encoding with stable field indices: new optional fields get
//! new indices, old readers ignore nothing they need). The same types deserialize from a pack
//! spec (TOML) where that makes sense, and serialize to JSON for `edgectl inspect --json`.

use minicbor::bytes::ByteArray;
use minicbor::{Decode, Encode};
use serde::{Deserialize, Serialize};

use crate::tensor::{DType, Tensor};
use edge_protocol::Histogram;

/// What the payload bytes are.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Encode, Decode, Serialize, Deserialize)]
#[cbor(index_only)]
#[serde(rename_all = "lowercase")]
pub enum PayloadFormat {
    /// An ONNX protobuf graph: the device translates and types it at load (needs the runtime's
    /// `onnx` feature).
    #[n(0)]
    Onnx,
    /// The pack-time optimized graph: tract's NNEF (an uncompressed tar of `graph.nnef`, the
    /// quantization file and the weights as `.dat` tensors) with the `tract_core`, `tract_onnx`
    /// and `edgefleet` extensions, translated from ONNX, typed and decluttered by `edgectl pack`.
    /// The device loads it without the ONNX front end and runs only its own CPU passes on it.
    #[n(1)]
    Nnef,
}

impl PayloadFormat {
    /// The name in `inspect`, reported capabilities and errors (`onnx`, `nnef`).
    pub fn name(self) -> &'static str {
        match self {
            PayloadFormat::Onnx => "onnx",
            PayloadFormat::Nnef => "nnef",
        }
    }
}

impl std::fmt::Display for PayloadFormat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Payload identity: format, sha256 and size. Signed with the manifest.
#[derive(Clone, Debug, PartialEq, Encode, Decode, Serialize)]
pub struct PayloadInfo {
    /// Format of the payload bytes.
    #[n(0)]
    pub format: PayloadFormat,
    /// sha256 of the payload bytes.
    #[n(1)]
    #[serde(serialize_with = "hex_bytes")]
    pub sha256: ByteArray<32>,
    /// Payload length in bytes.
    #[n(2)]
    pub size: u64,
    /// sha256 of the ONNX file the payload was translated from (an optimized payload's
    /// provenance; absent when the payload is that file).
    #[n(3)]
    #[serde(
        serialize_with = "hex_bytes_opt",
        skip_serializing_if = "Option::is_none"
    )]
    pub source_sha256: Option<ByteArray<32>>,
}

fn hex_bytes_opt<S: serde::Serializer, const N: usize>(
    b: &Option<ByteArray<N>>,
    s: S,
) -> Result<S::Ok, S::Error> {
    match b {
        Some(b) => hex_bytes(b, s),
        None => s.serialize_none(),
    }
}

fn hex_bytes<S: serde::Serializer, const N: usize>(
    b: &ByteArray<N>,
    s: S,
) -> Result<S::Ok, S::Error> {
    s.serialize_str(&hex::encode(&b[..]))
}

/// Hints for the engine; the device may override them.
#[derive(Clone, Debug, Default, PartialEq, Encode, Decode, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EngineHints {
    /// Preferred engine (`cpu`, later `gpu`, `cuda`, `auto`).
    #[n(0)]
    #[serde(default)]
    pub engine: Option<String>,
    /// Preferred intra-op thread count.
    #[n(1)]
    #[serde(default)]
    pub threads: Option<u32>,
}

/// One dimension of an input shape: fixed, or named and dynamic (e.g. the batch `N`).
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Dim {
    /// A fixed size.
    #[n(0)]
    Fixed(#[n(0)] u64),
    /// A dynamic dimension with a symbolic name.
    #[n(1)]
    Named(#[n(0)] String),
}

impl std::fmt::Display for Dim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Dim::Fixed(n) => write!(f, "{n}"),
            Dim::Named(s) => f.write_str(s),
        }
    }
}

/// How the axes of an input are laid out; decides which axis is the channel axis.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Encode, Decode, Serialize, Deserialize)]
#[cbor(index_only)]
pub enum Layout {
    /// Batch, channels, height, width.
    #[n(0)]
    NCHW,
    /// Batch, height, width, channels.
    #[n(1)]
    NHWC,
    /// Batch, features (tabular).
    #[n(2)]
    NC,
    /// Anything else: normalization must then be scalar.
    #[n(3)]
    #[serde(rename = "other")]
    Other,
}

impl Layout {
    /// Index of the channel (feature) axis for a tensor of `rank`.
    pub fn channel_axis(self, rank: usize) -> Option<usize> {
        match self {
            Layout::NCHW | Layout::NC => Some(1).filter(|&a| a < rank),
            Layout::NHWC => rank.checked_sub(1),
            Layout::Other => None,
        }
    }
}

/// What to do with NaN or infinite input values.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Encode, Decode, Serialize, Deserialize)]
#[cbor(index_only)]
#[serde(rename_all = "lowercase")]
pub enum NanPolicy {
    /// Refuse the request (default).
    #[default]
    #[n(0)]
    Reject,
    /// Pass non-finite values to the model.
    #[n(1)]
    Allow,
}

/// Normalization the runtime applies to raw float inputs: `x' = (x * scale - mean[c]) / std[c]`,
/// with `c` the channel of the element (or one value for all elements).
#[derive(Clone, Debug, Default, PartialEq, Encode, Decode, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Normalize {
    /// Multiplier applied first (e.g. 1/255).
    #[n(0)]
    #[serde(default)]
    pub scale: Option<f32>,
    /// Per-channel (or single) mean subtracted after scaling.
    #[n(1)]
    #[serde(default)]
    pub mean: Vec<f32>,
    /// Per-channel (or single) standard deviation divided by last.
    #[n(2)]
    #[serde(default)]
    pub std: Vec<f32>,
}

/// How an image file becomes this input (for `edgectl run` with a PNG/JPEG).
#[derive(Clone, Debug, PartialEq, Encode, Decode, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageSpec {
    /// Pixel 0 maps to `range[0]`, pixel 255 to `range[1]` (before normalization).
    #[n(0)]
    pub range: [f32; 2],
    /// Invert intensities (dark ink on light paper for a model trained on light-on-dark).
    #[n(1)]
    #[serde(default)]
    pub invert: bool,
}

/// One model input.
#[derive(Clone, Debug, PartialEq, Encode, Decode, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InputSpec {
    /// Input name in the graph.
    #[n(0)]
    pub name: String,
    /// Element type the caller sends.
    #[n(1)]
    pub dtype: DType,
    /// Shape; named dims are dynamic (only the first may be, as the batch).
    #[n(2)]
    pub shape: Vec<Dim>,
    /// Axis layout.
    #[n(3)]
    pub layout: Layout,
    /// Largest batch accepted when the first dim is dynamic (default 64).
    #[n(4)]
    #[serde(default)]
    pub max_batch: Option<u32>,
    /// NaN/Inf handling.
    #[n(5)]
    #[serde(default)]
    pub nan_policy: NanPolicy,
    /// Normalization applied by the runtime.
    #[n(6)]
    #[serde(default)]
    pub normalize: Option<Normalize>,
    /// Image-file conversion.
    #[n(7)]
    #[serde(default)]
    pub image: Option<ImageSpec>,
    /// Names of the features along the channel axis (tabular models).
    #[n(8)]
    #[serde(default)]
    pub feature_names: Vec<String>,
}

/// Default `max_batch` for a dynamic batch dimension.
pub const DEFAULT_MAX_BATCH: u32 = 64;

impl InputSpec {
    /// Shape as text, e.g. `[N, 1, 8, 8]`.
    pub fn shape_text(&self) -> String {
        format!(
            "[{}]",
            self.shape
                .iter()
                .map(|d| d.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        )
    }

    /// Whether the first dimension is a dynamic batch.
    pub fn dynamic_batch(&self) -> bool {
        matches!(self.shape.first(), Some(Dim::Named(_)))
    }

    /// Largest batch accepted.
    pub fn max_batch(&self) -> usize {
        if self.dynamic_batch() {
            self.max_batch.unwrap_or(DEFAULT_MAX_BATCH) as usize
        } else {
            match self.shape.first() {
                Some(Dim::Fixed(n)) => *n as usize,
                _ => 1,
            }
        }
    }

    /// Elements per batch row.
    pub fn row_len(&self) -> usize {
        self.shape
            .iter()
            .skip(1)
            .map(|d| match d {
                Dim::Fixed(n) => *n as usize,
                Dim::Named(_) => 1,
            })
            .product()
    }
}

/// What the model's output means, and how to turn it into an answer.
#[derive(Clone, Debug, PartialEq, Encode, Decode, Serialize, Deserialize)]
#[serde(tag = "task", rename_all = "lowercase")]
pub enum Task {
    /// Scores per class.
    #[n(0)]
    Classification {
        /// Class labels, in output order. Left out of a spec, `edgectl pack` takes them from
        /// the model's classifier (`ai.onnx.ml` classlabels); none at all: answers name indices.
        #[n(0)]
        #[serde(default)]
        labels: Vec<String>,
        /// Apply softmax to the scores (they are logits); otherwise they are probabilities.
        #[n(1)]
        #[serde(default)]
        softmax: bool,
        /// Default number of labels in an answer.
        #[n(2)]
        #[serde(default = "default_top_k")]
        top_k: u32,
    },
    /// One value per row.
    #[n(1)]
    Regression {
        /// Stated coverage of the prediction interval (e.g. 0.9).
        #[n(0)]
        #[serde(default)]
        coverage: Option<f64>,
        /// Interval half-width from split-conformal calibration (filled by the packer).
        #[n(1)]
        #[serde(default)]
        half_width: Option<f64>,
        /// Calibration rows the half-width came from.
        #[n(2)]
        #[serde(default)]
        calibration_rows: Option<u64>,
    },
    /// Output tensors returned as they are.
    #[n(2)]
    Raw,
}

fn default_top_k() -> u32 {
    5
}

/// The output the task reads.
#[derive(Clone, Debug, PartialEq, Encode, Decode, Serialize, Deserialize)]
pub struct OutputSpec {
    /// Output name in the graph.
    #[n(0)]
    pub name: String,
    /// Meaning of the output.
    #[n(1)]
    #[serde(flatten)]
    pub task: Task,
}

/// A tensor stored in the manifest (self-test vectors): dtype, shape, little-endian bytes.
#[derive(Clone, Debug, PartialEq, Encode, Decode, Serialize)]
pub struct StoredTensor {
    /// Element type.
    #[n(0)]
    pub dtype: DType,
    /// Shape.
    #[n(1)]
    pub shape: Vec<u64>,
    /// Little-endian element bytes.
    #[n(2)]
    #[cbor(with = "minicbor::bytes")]
    #[serde(skip)]
    pub data: Vec<u8>,
}

impl StoredTensor {
    /// Stores a tensor.
    pub fn from_tensor(t: &Tensor) -> StoredTensor {
        StoredTensor {
            dtype: t.dtype(),
            shape: t.shape.iter().map(|&d| d as u64).collect(),
            data: t.to_le_bytes(),
        }
    }

    /// Back to a tensor; `None` when bytes and shape disagree.
    pub fn to_tensor(&self) -> Option<Tensor> {
        let shape = self
            .shape
            .iter()
            .map(|&d| usize::try_from(d).ok())
            .collect::<Option<Vec<_>>>()?;
        Tensor::from_le_bytes(self.dtype, shape, &self.data)
    }
}

/// One self-test vector: raw inputs (before normalization) and the outputs expected from them.
#[derive(Clone, Debug, PartialEq, Encode, Decode, Serialize)]
pub struct SelfTestVector {
    /// Raw inputs, one per model input.
    #[n(0)]
    pub inputs: Vec<StoredTensor>,
    /// Expected model outputs, in graph order.
    #[n(1)]
    pub outputs: Vec<StoredTensor>,
}

/// The checks a device runs before it activates the model.
#[derive(Clone, Debug, Default, PartialEq, Encode, Decode, Serialize)]
pub struct SelfTest {
    /// Allowed |got - expected| <= tolerance * (1 + |expected|).
    #[n(0)]
    pub tolerance: f64,
    /// Vectors.
    #[n(1)]
    pub vectors: Vec<SelfTestVector>,
}

/// A histogram of one input feature from the calibration data.
#[derive(Clone, Debug, PartialEq, Encode, Decode, Serialize)]
pub struct FeatureHistogram {
    /// Feature name (or `channel 0`, `element 12`, ...).
    #[n(0)]
    pub name: String,
    /// Histogram with equal-frequency bins on the calibration data.
    #[n(1)]
    pub histogram: Histogram,
}

/// Statistics of the calibration data and of the model's predictions on it: what drift on the
/// device is measured against (PSI).
#[derive(Clone, Debug, Default, PartialEq, Encode, Decode, Serialize)]
pub struct ReferenceStats {
    /// Calibration rows used.
    #[n(0)]
    pub rows: u64,
    /// Per-feature histograms (per element for small inputs, per channel for images).
    #[n(1)]
    pub features: Vec<FeatureHistogram>,
    /// Predicted class counts (classification).
    #[n(2)]
    pub class_counts: Vec<u64>,
    /// Top-1 probability histogram (classification), fixed bins over \[0, 1\].
    #[n(3)]
    pub confidence: Option<Histogram>,
    /// Predicted value histogram (regression), equal-frequency bins.
    #[n(4)]
    pub prediction: Option<Histogram>,
}

/// What the device's trial window checks before it commits this model (DESIGN decision 7).
/// A model is rolled back as soon as a limit is broken on at least `min_requests` requests, and
/// committed after `trial_seconds` with at least `min_requests` requests and no limit broken.
#[derive(Clone, Debug, PartialEq, Encode, Decode, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthSpec {
    /// Length of the trial window in seconds (default 60).
    #[n(0)]
    #[serde(default = "default_trial_seconds")]
    pub trial_seconds: u32,
    /// Requests needed before any verdict (default 100: PSI over fewer rows is mostly noise,
    /// about (bins - 1) / rows under no drift at all).
    #[n(1)]
    #[serde(default = "default_min_requests")]
    pub min_requests: u64,
    /// Largest failed-request fraction (default 0.05).
    #[n(2)]
    #[serde(default = "default_max_error_rate")]
    pub max_error_rate: f64,
    /// Latency budget: largest p99 in milliseconds (default: none).
    #[n(3)]
    #[serde(default)]
    pub max_p99_ms: Option<f64>,
    /// Largest PSI of predictions and of any input feature against the reference (default 0.25,
    /// the usual "major shift" threshold).
    #[n(4)]
    #[serde(default = "default_max_psi")]
    pub max_psi: f64,
}

fn default_trial_seconds() -> u32 {
    60
}
fn default_min_requests() -> u64 {
    100
}
fn default_max_error_rate() -> f64 {
    0.05
}
fn default_max_psi() -> f64 {
    0.25
}

impl Default for HealthSpec {
    fn default() -> Self {
        HealthSpec {
            trial_seconds: default_trial_seconds(),
            min_requests: default_min_requests(),
            max_error_rate: default_max_error_rate(),
            max_p99_ms: None,
            max_psi: default_max_psi(),
        }
    }
}

/// The signed description of a bundle.
#[derive(Clone, Debug, PartialEq, Encode, Decode, Serialize)]
pub struct Manifest {
    /// Model name (the slot key on devices).
    #[n(0)]
    pub name: String,
    /// Semver version.
    #[n(1)]
    pub version: String,
    /// Human description.
    #[n(2)]
    pub description: String,
    /// Creation time, unix seconds.
    #[n(3)]
    pub created: u64,
    /// Optional expiry, unix seconds: refused after it.
    #[n(4)]
    pub expires: Option<u64>,
    /// Anti-rollback floor this bundle raises on the device when installed.
    #[n(5)]
    pub min_version: Option<String>,
    /// Payload identity.
    #[n(6)]
    pub payload: PayloadInfo,
    /// Engine hints.
    #[n(7)]
    pub engine: EngineHints,
    /// Inputs, in graph order.
    #[n(8)]
    pub inputs: Vec<InputSpec>,
    /// The task output.
    #[n(9)]
    pub output: OutputSpec,
    /// Self-test vectors.
    #[n(10)]
    pub self_test: SelfTest,
    /// Reference statistics for drift detection.
    #[n(11)]
    pub reference: ReferenceStats,
    /// Quantization applied, if any (e.g. `int8 static per-channel`).
    #[n(12)]
    pub quantization: Option<String>,
    /// Trial-window health limits (`None`: the defaults of [`HealthSpec`]).
    #[n(13)]
    pub health: Option<HealthSpec>,
}
