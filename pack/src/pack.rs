//! Packing: an ONNX graph + a spec (TOML) + calibration data → a signed bundle. The packer runs
//! the model on the calibration data to record self-test vectors, reference statistics (input
//! feature and prediction histograms for drift detection) and, for regression, the
//! split-conformal interval half-width from calibration residuals.
//!
//! It runs the model through the same path a device does: the provisional bundle is signed with
//! a throwaway key, verified and loaded as a [`Model`], so no code path feeds unverified bytes to
//! an engine even here.

use ed25519_dalek::SigningKey;
use serde::Deserialize;

use edge_bundle::stats::{quantile_histogram, FeatureMap, Histogram};
use edge_bundle::tensor::{DType, Tensor, TensorData};
use edge_bundle::trust::{self, RootAnchor, TrustRoot, TrustSpec};
use edge_bundle::{
    self as bundle, self, EngineHints, FeatureHistogram, InputSpec, Manifest, OutputSpec,
    PayloadFormat, PayloadInfo, ReferenceStats, SelfTest, SelfTestVector, StoredTensor, Task,
    VerifyPolicy,
};
use edge_runtime::engine::EngineOptions;
use edge_runtime::{LoadOptions, Model, ModelError};

use crate::onnx_graph;
use edge_protocol::Prediction;

/// The pack spec (`spec.toml`).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PackSpec {
    /// Model name.
    pub name: String,
    /// Semver version.
    pub version: String,
    /// Description.
    #[serde(default)]
    pub description: String,
    /// Anti-rollback floor this bundle sets.
    #[serde(default)]
    pub min_version: Option<String>,
    /// Days until the bundle expires.
    #[serde(default)]
    pub expires_days: Option<u64>,
    /// Engine hints.
    #[serde(default)]
    pub engine: EngineHints,
    /// The input (single-input models).
    #[serde(default)]
    pub input: Option<InputSpec>,
    /// The inputs (multi-input models).
    #[serde(default)]
    pub inputs: Vec<InputSpec>,
    /// The task output.
    pub output: OutputSpec,
    /// Self-test settings.
    #[serde(default)]
    pub self_test: SelfTestSpec,
    /// Reference statistics settings.
    #[serde(default)]
    pub reference: ReferenceSpec,
    /// Quantization note.
    #[serde(default)]
    pub quantization: Option<String>,
    /// Trial-window health limits.
    #[serde(default)]
    pub health: Option<bundle::HealthSpec>,
    /// The payload to ship (`auto`, `nnef`, `onnx`; `edgectl pack --payload` overrides it).
    #[serde(default)]
    pub payload: PayloadChoice,
}

/// Which payload a bundle carries.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PayloadChoice {
    /// The optimized payload (NNEF), or the ONNX file when the graph has no NNEF form (the
    /// report says why; such a bundle needs devices built with the `onnx` feature).
    #[default]
    Auto,
    /// The optimized payload, or an error.
    Nnef,
    /// The ONNX file as given (devices need the `onnx` feature).
    Onnx,
}

impl std::str::FromStr for PayloadChoice {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(PayloadChoice::Auto),
            "nnef" => Ok(PayloadChoice::Nnef),
            "onnx" => Ok(PayloadChoice::Onnx),
            other => Err(format!("payload '{other}': expected auto, nnef or onnx")),
        }
    }
}

/// The payload for `onnx` as `choice` asks: its bytes, its manifest entry (digest and size
/// filled in when the bundle is built) and, for `auto` falling back to ONNX, why.
pub fn payload_for(
    onnx: &[u8],
    inputs: &[InputSpec],
    choice: PayloadChoice,
) -> Result<(Vec<u8>, PayloadInfo, Option<String>), PackError> {
    let onnx_info = PayloadInfo {
        format: PayloadFormat::Onnx,
        sha256: [0u8; 32].into(),
        size: 0,
        source_sha256: None,
    };
    if choice == PayloadChoice::Onnx {
        return Ok((onnx.to_vec(), onnx_info, None));
    }
    match edge_runtime::engine::translate(onnx, inputs) {
        Ok((nnef, _warnings)) => {
            use sha2::Digest;
            let source: [u8; 32] = sha2::Sha256::digest(onnx).into();
            let info = PayloadInfo {
                format: PayloadFormat::Nnef,
                sha256: [0u8; 32].into(),
                size: 0,
                source_sha256: Some(source.into()),
            };
            Ok((nnef, info, None))
        }
        Err(e) if choice == PayloadChoice::Auto => Ok((
            onnx.to_vec(),
            onnx_info,
            Some(format!(
                "the payload is the ONNX file (devices need the `onnx` feature to run it): {e}"
            )),
        )),
        Err(e) => Err(PackError::Model(e)),
    }
}

/// `[self_test]` in the spec.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SelfTestSpec {
    /// Vectors to record (default 4).
    #[serde(default = "default_count")]
    pub count: usize,
    /// Relative-and-absolute tolerance (default 1e-4).
    #[serde(default = "default_tolerance")]
    pub tolerance: f64,
}

fn default_count() -> usize {
    4
}
fn default_tolerance() -> f64 {
    1e-4
}
impl Default for SelfTestSpec {
    fn default() -> Self {
        SelfTestSpec {
            count: default_count(),
            tolerance: default_tolerance(),
        }
    }
}

/// `[reference]` in the spec.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReferenceSpec {
    /// Bins per histogram (default 10).
    #[serde(default = "default_bins")]
    pub bins: usize,
}
fn default_bins() -> usize {
    10
}
impl Default for ReferenceSpec {
    fn default() -> Self {
        ReferenceSpec {
            bins: default_bins(),
        }
    }
}

/// Calibration data: representative raw inputs (single-input models) and, for regression,
/// their true targets.
#[derive(Clone, Debug)]
pub struct Calibration {
    /// Inputs, batch first.
    pub inputs: Tensor,
    /// Targets, one per row (regression).
    pub targets: Option<Tensor>,
}

/// What the packer did.
#[derive(Clone, Debug, serde::Serialize)]
pub struct PackReport {
    /// Calibration rows used.
    pub calibration_rows: usize,
    /// Self-test vectors recorded.
    pub self_test_vectors: usize,
    /// Feature histograms recorded.
    pub feature_histograms: usize,
    /// Interval half-width (regression).
    pub interval_half_width: Option<f64>,
    /// Empirical coverage of that interval on the calibration rows themselves.
    pub calibration_coverage: Option<f64>,
    /// Bundle size in bytes.
    pub bundle_bytes: usize,
    /// The payload's format.
    pub payload_format: PayloadFormat,
    /// Why the payload is not the optimized one, when `auto` fell back to ONNX.
    pub payload_note: Option<String>,
    /// Why the bundle's self-test tolerance is wider than the spec's (a quantized graph).
    pub tolerance_note: Option<String>,
}

/// A quantized graph's self-test slack, as a share of its largest self-test output: our
/// instruction-set paths give int8 MobileNetV2 outputs up to 0.44 % of that range apart
/// (x86-64 AVX-512 VNNI against AVX-VNNI, AVX2, the scalar kernels and tract's own; measured
/// 2026-12-06, `docs/guide.md`, "Load"), so 2 % leaves a margin and still fails a device whose
/// kernels are wrong (those miss by the whole range).
pub const QUANTIZED_SELF_TEST_SHARE: f64 = 0.02;

/// A quantized graph's self-test tolerance: at least [`QUANTIZED_SELF_TEST_SHARE`] of the
/// largest |output| of its vectors (the device compares `|got − want| ≤ tol · (1 + |want|)`, so
/// that is at least the slack in absolute terms). Returns what it did, for the pack's report.
fn widen_for_quantized(self_test: &mut SelfTest) -> Option<String> {
    let range = self_test
        .vectors
        .iter()
        .flat_map(|v| &v.outputs)
        .filter_map(|t| t.to_tensor())
        .filter_map(|t| match t.data {
            TensorData::F32(values) => values
                .iter()
                .filter(|v| v.is_finite())
                .map(|v| v.abs() as f64)
                .reduce(f64::max),
            _ => None,
        })
        .reduce(f64::max)?;
    let wanted = QUANTIZED_SELF_TEST_SHARE * range;
    (wanted > self_test.tolerance).then(|| {
        let note = format!(
            "the graph is quantized: self-test tolerance {:.3e} instead of {:.3e} ({} % of its \
             largest self-test output, {range:.4}), since 8-bit outputs differ between \
             instruction sets by a step or two",
            wanted,
            self_test.tolerance,
            QUANTIZED_SELF_TEST_SHARE * 100.0
        );
        self_test.tolerance = wanted;
        note
    })
}

/// Packing failures.
#[derive(Debug, thiserror::Error)]
pub enum PackError {
    /// The spec is wrong.
    #[error("spec: {0}")]
    Spec(String),
    /// The calibration data is wrong.
    #[error("calibration data: {0}")]
    Calibration(String),
    /// The model failed to load or run.
    #[error(transparent)]
    Model(#[from] ModelError),
    /// No signing key.
    #[error("no signing key given; pass at least one --key")]
    NoKey,
}

/// A throwaway trust root + key to load the provisional bundle.
fn ephemeral_trust() -> Result<(SigningKey, TrustRoot), PackError> {
    let key = edge_bundle::keys::generate().map_err(|e| PackError::Spec(e.to_string()))?;
    let spec = TrustSpec::ephemeral(&key.verifying_key());
    let doc = trust::create(&spec, &key, None).map_err(|e| PackError::Spec(e.to_string()))?;
    let trust = TrustRoot::from_bytes(&doc, RootAnchor::Pinned(key.verifying_key()))
        .map_err(|e| PackError::Spec(e.to_string()))?;
    Ok((key, trust))
}

/// A bundle for a plain ONNX file, signed with a throwaway key, and the trust root that accepts
/// it: raw outputs, no normalization, no self-test vectors, no reference statistics. This is how
/// `edgectl bench` runs any `.onnx` a user has through the same load path as a real bundle.
pub fn throwaway_bundle(
    onnx: &[u8],
    name: &str,
    inputs: Vec<InputSpec>,
    output: &str,
    now: u64,
) -> Result<(Vec<u8>, TrustRoot), PackError> {
    throwaway_bundle_with(onnx, name, inputs, output, now, PayloadChoice::Auto)
}

/// [`throwaway_bundle`] with the payload `choice` asks for.
pub fn throwaway_bundle_with(
    onnx: &[u8],
    name: &str,
    inputs: Vec<InputSpec>,
    output: &str,
    now: u64,
    choice: PayloadChoice,
) -> Result<(Vec<u8>, TrustRoot), PackError> {
    if inputs.is_empty() {
        return Err(PackError::Spec("the graph has no inputs".into()));
    }
    let (payload, info, _) = payload_for(onnx, &inputs, choice)?;
    let name: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_.".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    let manifest = Manifest {
        name: if name.is_empty() {
            "model".into()
        } else {
            name
        },
        version: "0.0.0".into(),
        description: "packed on the fly with a throwaway key".into(),
        created: now,
        expires: None,
        min_version: None,
        payload: info,
        engine: EngineHints::default(),
        inputs,
        output: OutputSpec {
            name: output.to_string(),
            task: Task::Raw,
        },
        self_test: SelfTest {
            tolerance: default_tolerance(),
            vectors: Vec::new(),
        },
        reference: ReferenceStats::default(),
        quantization: None,
        health: None,
    };
    let (key, trust) = ephemeral_trust()?;
    Ok((bundle::build(manifest, &payload, &[key]), trust))
}

/// [`throwaway_bundle`] for ONNX bytes as they are: the inputs the graph declares, made concrete
/// with `shapes` ([`onnx_graph::concrete_inputs`]), and its first output.
pub fn throwaway_bundle_for_onnx(
    onnx: &[u8],
    name: &str,
    shapes: &[(String, Vec<u64>)],
    now: u64,
    choice: PayloadChoice,
) -> Result<(Vec<u8>, TrustRoot), PackError> {
    let itf = onnx_graph::interface(onnx).map_err(PackError::Spec)?;
    let inputs = onnx_graph::concrete_inputs(&itf, shapes).map_err(PackError::Spec)?;
    let output = itf
        .outputs
        .first()
        .ok_or_else(|| PackError::Spec("the graph has no outputs".into()))?;
    throwaway_bundle_with(onnx, name, inputs, &output.name, now, choice)
}

/// One batch of [`synthetic_rows`] per input of `specs` (input `i` from seed `seed + i`), as many
/// rows as a fixed first dim says, else one.
pub fn synthetic_inputs(specs: &[InputSpec], seed: u64) -> Vec<Tensor> {
    specs
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let rows = match s.shape.first() {
                Some(bundle::Dim::Fixed(n)) => *n as usize,
                _ => 1,
            };
            synthetic_rows(s, rows, seed + i as u64)
        })
        .collect()
}

/// Deterministic synthetic inputs (xorshift from `seed`), shaped by `spec` with `rows` rows (a
/// named dim counts 1): floats uniform over the spec's image range (default [0, 1)); integers
/// all ones for `*mask*` inputs, zeros for `*type*` inputs, else in [1, 100) (valid token ids for
/// any vocabulary). The packer's self-test rows without calibration data, and `edgectl bench`'s
/// inputs for models that carry no self-test vector.
pub fn synthetic_rows(spec: &InputSpec, rows: usize, seed: u64) -> Tensor {
    let mut shape: Vec<usize> = spec
        .shape
        .iter()
        .map(|d| match d {
            bundle::Dim::Fixed(n) => *n as usize,
            bundle::Dim::Named(_) => 1,
        })
        .collect();
    if let Some(first) = shape.first_mut() {
        *first = rows;
    }
    let count: usize = shape.iter().product();
    let (lo, hi) = spec
        .image
        .as_ref()
        .map(|i| (i.range[0], i.range[1]))
        .unwrap_or((0.0, 1.0));
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let unit = |v: u64| (v >> 40) as f32 / (1u64 << 24) as f32;
    let name = spec.name.to_ascii_lowercase();
    let int = |v: u64| -> i64 {
        if name.contains("mask") {
            1
        } else if name.contains("type") {
            0
        } else {
            1 + (v % 99) as i64
        }
    };
    let data = match spec.dtype {
        DType::F32 => TensorData::F32((0..count).map(|_| lo + (hi - lo) * unit(next())).collect()),
        DType::F64 => TensorData::F64(
            (0..count)
                .map(|_| (lo + (hi - lo) * unit(next())) as f64)
                .collect(),
        ),
        DType::I64 => TensorData::I64((0..count).map(|_| int(next())).collect()),
        DType::I32 => TensorData::I32((0..count).map(|_| int(next()) as i32).collect()),
        DType::U8 => TensorData::U8((0..count).map(|_| next() as u8).collect()),
        DType::I8 => TensorData::I8((0..count).map(|_| next() as i8).collect()),
    };
    Tensor { shape, data }
}

/// Per-feature reference histograms of raw inputs (see [`FeatureMap`]).
fn feature_histograms(spec: &InputSpec, inputs: &Tensor, bins: usize) -> Vec<FeatureHistogram> {
    let Some(map) = FeatureMap::new(spec.layout, &inputs.shape) else {
        return Vec::new();
    };
    map.split(&inputs.to_f64_vec())
        .iter()
        .enumerate()
        .map(|(f, values)| FeatureHistogram {
            name: map.name(f, &spec.feature_names),
            histogram: quantile_histogram(values, bins),
        })
        .collect()
}

/// Split-conformal half-width: the ⌈(n+1)·coverage⌉-th smallest absolute residual.
pub fn conformal_half_width(residuals: &mut [f64], coverage: f64) -> Option<f64> {
    residuals.sort_by(f64::total_cmp);
    let n = residuals.len();
    let k = ((n as f64 + 1.0) * coverage).ceil() as usize;
    (k >= 1 && k <= n).then(|| residuals[k - 1])
}

/// Packs and signs a bundle.
pub fn pack(
    onnx: &[u8],
    spec: PackSpec,
    calibration: Option<&Calibration>,
    keys: &[SigningKey],
    now: u64,
) -> Result<(Vec<u8>, PackReport), PackError> {
    if keys.is_empty() {
        return Err(PackError::NoKey);
    }
    if spec.name.is_empty()
        || !spec
            .name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
    {
        return Err(PackError::Spec(format!(
            "name '{}' must be non-empty ASCII letters, digits, '-', '_' or '.'",
            spec.name
        )));
    }
    let version = semver::Version::parse(&spec.version)
        .map_err(|e| PackError::Spec(format!("version '{}': {e}", spec.version)))?;
    if let Some(floor) = &spec.min_version {
        let floor = semver::Version::parse(floor)
            .map_err(|e| PackError::Spec(format!("min_version '{floor}': {e}")))?;
        if floor > version {
            return Err(PackError::Spec(format!(
                "min_version {floor} is above the bundle's own version {version}"
            )));
        }
    }
    let inputs: Vec<InputSpec> = spec
        .input
        .iter()
        .cloned()
        .chain(spec.inputs.iter().cloned())
        .collect();
    if inputs.is_empty() {
        return Err(PackError::Spec("no [input] given".into()));
    }
    let mut output = spec.output.clone();
    // a classifier exported from scikit-learn, LightGBM or XGBoost names its classes: a
    // classification output without labels takes them (ZipMap's keys, as the model has them)
    if let Task::Classification { labels, .. } = &mut output.task {
        if labels.is_empty() {
            if let Some(found) = onnx_graph::class_labels(onnx).map_err(PackError::Spec)? {
                *labels = found;
            }
        }
    }
    let (payload, info, payload_note) = payload_for(onnx, &inputs, spec.payload)?;
    let mut manifest = Manifest {
        name: spec.name.clone(),
        version: spec.version.clone(),
        description: spec.description.clone(),
        created: now,
        expires: spec.expires_days.map(|d| now + d * 86_400),
        min_version: spec.min_version.clone(),
        payload: info,
        engine: spec.engine.clone(),
        inputs,
        output,
        self_test: SelfTest {
            tolerance: spec.self_test.tolerance,
            vectors: Vec::new(),
        },
        reference: ReferenceStats::default(),
        quantization: spec.quantization.clone(),
        health: spec.health.clone(),
    };

    // 1. Load the provisional bundle as a device would.
    let (throwaway, trust) = ephemeral_trust()?;
    let provisional = bundle::build(manifest.clone(), &payload, &[throwaway]);
    let policy = VerifyPolicy {
        now: Some(now),
        ..Default::default()
    };
    let options = LoadOptions {
        verify: policy,
        engine: EngineOptions {
            threads: Some(1),
            ..Default::default()
        },
        ..Default::default()
    };
    let model = Model::load(&provisional, &trust, &options)?;

    let single = &manifest.inputs[0];
    // rows per engine call: up to max_batch for a dynamic batch, else exactly the fixed batch
    let step = single.max_batch().max(1);
    // rows per self-test vector
    let unit = if single.dynamic_batch() { 1 } else { step };
    let mut report = PackReport {
        calibration_rows: 0,
        self_test_vectors: 0,
        feature_histograms: 0,
        interval_half_width: None,
        calibration_coverage: None,
        bundle_bytes: 0,
        payload_format: manifest.payload.format,
        payload_note,
        tolerance_note: None,
    };

    // 2. Calibration: run every row, collect predictions for the reference statistics.
    let owned;
    let calib_inputs = match calibration {
        Some(c) => {
            if manifest.inputs.len() != 1 {
                return Err(PackError::Calibration(
                    "calibration data is supported for single-input models".into(),
                ));
            }
            &c.inputs
        }
        None => {
            owned = synthetic_rows(single, spec.self_test.count.max(1) * unit, 1);
            &owned
        }
    };
    let rows = *calib_inputs
        .shape
        .first()
        .ok_or_else(|| PackError::Calibration("calibration input has no batch axis".into()))?;
    if !rows.is_multiple_of(step) && !single.dynamic_batch() {
        return Err(PackError::Calibration(format!(
            "{rows} rows do not split into batches of {step}"
        )));
    }
    let mut predictions: Vec<Prediction> = Vec::with_capacity(rows);
    let mut start = 0;
    while start < rows {
        let end = (start + step).min(rows);
        let response = model
            .predict(vec![calib_inputs.rows(start, end)])
            .map_err(|e| PackError::Calibration(format!("rows {start}..{end}: {e}")))?;
        predictions.extend(response.results);
        start = end;
    }

    // 3. Self-test vectors: the first rows, one batch each, through the raw path.
    let count = spec.self_test.count.min(rows / unit);
    for i in 0..count {
        let input = calib_inputs.rows(i * unit, (i + 1) * unit);
        let outputs = model.run(vec![input.clone()])?;
        manifest.self_test.vectors.push(SelfTestVector {
            inputs: vec![StoredTensor::from_tensor(&input)],
            outputs: outputs.iter().map(StoredTensor::from_tensor).collect(),
        });
    }
    report.self_test_vectors = manifest.self_test.vectors.len();
    if onnx_graph::is_quantized(onnx).map_err(PackError::Spec)? {
        report.tolerance_note = widen_for_quantized(&mut manifest.self_test);
    }

    // 4. Reference statistics and the conformal interval (only from real calibration data).
    if let Some(c) = calibration {
        report.calibration_rows = rows;
        let bins = spec.reference.bins.max(2);
        let mut reference = ReferenceStats {
            rows: rows as u64,
            features: feature_histograms(single, &c.inputs, bins),
            ..Default::default()
        };
        report.feature_histograms = reference.features.len();
        match &mut manifest.output.task {
            Task::Classification { labels, .. } => {
                let mut counts = vec![0u64; labels.len()];
                let mut confidence = Histogram::uniform(0.0, 1.0, 10);
                for p in &predictions {
                    if let Prediction::Classification {
                        class_index,
                        probability,
                        ..
                    } = p
                    {
                        if let Some(c) = counts.get_mut(*class_index) {
                            *c += 1;
                        }
                        confidence.observe(*probability as f64);
                    }
                }
                reference.class_counts = counts;
                reference.confidence = Some(confidence);
            }
            Task::Regression {
                coverage,
                half_width,
                calibration_rows,
            } => {
                let values: Vec<f64> = predictions
                    .iter()
                    .filter_map(|p| match p {
                        Prediction::Regression { value, .. } => Some(*value),
                        _ => None,
                    })
                    .collect();
                reference.prediction = Some(quantile_histogram(&values, bins));
                if let Some(coverage) = *coverage {
                    let targets = c.targets.as_ref().ok_or_else(|| PackError::Calibration("a regression spec with `coverage` needs calibration targets (--calibration-targets)".into()))?;
                    let y = targets.to_f64_vec();
                    if y.len() != values.len() {
                        return Err(PackError::Calibration(format!(
                            "{} targets for {} calibration rows",
                            y.len(),
                            values.len()
                        )));
                    }
                    let mut residuals: Vec<f64> =
                        values.iter().zip(&y).map(|(p, t)| (p - t).abs()).collect();
                    let h = conformal_half_width(&mut residuals, coverage).ok_or_else(|| {
                        PackError::Calibration(format!("{} calibration rows are too few for {coverage} coverage (need at least {})", values.len(), (1.0 / (1.0 - coverage)).ceil() as usize))
                    })?;
                    let inside = values
                        .iter()
                        .zip(&y)
                        .filter(|(p, t)| (*p - *t).abs() <= h)
                        .count();
                    report.interval_half_width = Some(h);
                    report.calibration_coverage = Some(inside as f64 / values.len() as f64);
                    *half_width = Some(h);
                    *calibration_rows = Some(values.len() as u64);
                }
            }
            Task::Raw => {}
        }
        manifest.reference = reference;
    } else if let Task::Regression {
        coverage: Some(_), ..
    } = manifest.output.task
    {
        return Err(PackError::Calibration(
            "a regression spec with `coverage` needs --calibration and --calibration-targets"
                .into(),
        ));
    }

    // 5. Sign the final manifest with the real keys.
    let bytes = bundle::build(manifest, &payload, keys);
    report.bundle_bytes = bytes.len();
    Ok((bytes, report))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A quantized graph's tolerance becomes 2 % of its largest finite |output| over every
    /// vector (never narrower than the spec's); no f32 output, no change.
    #[test]
    fn a_quantized_graphs_self_test_allows_two_percent_of_its_output_range() {
        let vector = |values: Vec<f32>| SelfTestVector {
            inputs: vec![],
            outputs: vec![StoredTensor::from_tensor(&Tensor::f32(
                vec![values.len()],
                values,
            ))],
        };
        let mut st = SelfTest {
            tolerance: 1e-4,
            vectors: vec![
                vector(vec![0.5, -3.0, f32::NAN]),
                vector(vec![2.0, f32::INFINITY]),
            ],
        };
        assert!(widen_for_quantized(&mut st).unwrap().contains("quantized"));
        assert!((st.tolerance - 0.06).abs() < 1e-12, "{}", st.tolerance);
        // wider already: kept
        st.tolerance = 0.5;
        assert!(widen_for_quantized(&mut st).is_none());
        assert_eq!(st.tolerance, 0.5);
        let mut none = SelfTest {
            tolerance: 1e-4,
            vectors: vec![],
        };
        assert!(widen_for_quantized(&mut none).is_none());
        assert_eq!(none.tolerance, 1e-4);
    }
}
