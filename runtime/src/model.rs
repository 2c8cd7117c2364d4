//! A loaded model: verified bundle → engine → self-test passed → `predict`. The only way to make
//! a [`Model`] is from a [`VerifiedBundle`], and it is returned only once every self-test vector
//! reproduced its expected outputs on this device.

use std::borrow::BorrowMut;
use std::time::Instant;

use edge_protocol::{ModelRef, PredictResponse, RawOutput};

use crate::bundle::{verify_bytes, Manifest, Task, VerifiedBundle, VerifyPolicy};
use crate::engine::{self, Engine, EngineChoice, EngineOptions};
use crate::error::ModelError;
use crate::input_buffer::InputBuffer;
use crate::postprocess::{answer, raw_output, Answers};
use crate::preprocess::{check_input, check_normalization, normalize, validate, InputLimits};
use crate::stats::{FeatureMap, Histogram, ModelStats, StatsSnapshot};
use crate::tensor::Tensor;
use crate::trust::TrustRoot;

/// Input elements sampled per request for the drift statistics.
pub const MAX_FEATURE_SAMPLES: usize = 4096;

/// How to load a model.
#[derive(Clone, Debug, Default)]
pub struct LoadOptions {
    /// Bundle verification policy (limits, expiry, anti-rollback floor).
    pub verify: VerifyPolicy,
    /// Engine choice and threads.
    pub engine: EngineOptions,
    /// Limits on caller inputs.
    pub input_limits: InputLimits,
}

/// Per-call options.
#[derive(Clone, Debug, Default)]
pub struct PredictOptions {
    /// Labels per classification answer (default: the bundle's `top_k`).
    pub top_k: Option<usize>,
    /// Also return the raw output tensors.
    pub raw: bool,
}

/// A verified, self-tested model ready to serve.
#[derive(Debug)]
pub struct Model {
    manifest: Manifest,
    model_ref: ModelRef,
    engine: Box<dyn Engine>,
    engine_choice: EngineChoice,
    stats: ModelStats,
    input_limits: InputLimits,
    /// How long the self-test took at load.
    self_test_ms: f64,
}

impl Model {
    /// Verifies `bundle` against `trust`, then loads and self-tests it.
    pub fn load(
        bundle: &[u8],
        trust: &TrustRoot,
        options: &LoadOptions,
    ) -> Result<Model, ModelError> {
        // the optimized payload's reader is built while the signatures and digests are checked
        let _reader = engine::PayloadReader::prefetch();
        let verified = verify_bytes(bundle, trust, &options.verify)?;
        Model::from_verified(verified, options)
    }

    /// Loads an already verified bundle and runs its self-test.
    pub fn from_verified(
        bundle: VerifiedBundle,
        options: &LoadOptions,
    ) -> Result<Model, ModelError> {
        let manifest = bundle.manifest().clone();
        check_spec(&manifest)?;
        let (engine, engine_choice) = engine::prepare(&bundle, &options.engine)?;
        let (classes, prediction_edges) = match &manifest.output.task {
            Task::Classification { labels, .. } => (labels.len(), None),
            Task::Regression { .. } => (
                0,
                manifest
                    .reference
                    .prediction
                    .as_ref()
                    .map(|h| h.edges.clone()),
            ),
            Task::Raw => (0, None),
        };
        let feature_edges = manifest
            .reference
            .features
            .iter()
            .map(|f| f.histogram.edges.clone())
            .collect();
        let model = Model {
            model_ref: ModelRef {
                model: manifest.name.clone(),
                version: manifest.version.clone(),
                bundle: bundle.digest_text(),
            },
            manifest,
            engine,
            engine_choice,
            stats: ModelStats::new(classes, prediction_edges, feature_edges),
            input_limits: options.input_limits.clone(),
            self_test_ms: 0.0,
        };
        let start = std::time::Instant::now();
        let mut model = model;
        model.self_test()?;
        model.self_test_ms = start.elapsed().as_secs_f64() * 1e3;
        Ok(model)
    }

    /// Where loading took its time after verification: the engine's steps, then the self-test
    /// (milliseconds each, in order).
    pub fn load_steps(&self) -> Vec<(&'static str, f64)> {
        let mut steps = self.engine.load_steps().to_vec();
        steps.push(("self_test", self.self_test_ms));
        steps
    }

    /// Runs every self-test vector and compares all outputs within the bundle's tolerance.
    fn self_test(&self) -> Result<(), ModelError> {
        let tolerance = self.manifest.self_test.tolerance;
        for (index, vector) in self.manifest.self_test.vectors.iter().enumerate() {
            let bad = |what: &str| ModelError::Spec(format!("self-test vector {index}: {what}"));
            let inputs = vector
                .inputs
                .iter()
                .map(|t| {
                    t.to_tensor()
                        .ok_or_else(|| bad("input bytes do not match its shape"))
                })
                .collect::<Result<Vec<_>, _>>()?;
            let got = self.run(inputs)?;
            if got.len() != vector.outputs.len() {
                return Err(bad(&format!(
                    "{} outputs, {} expected",
                    got.len(),
                    vector.outputs.len()
                )));
            }
            for (o, (g, want)) in got.iter().zip(&vector.outputs).enumerate() {
                let want = want
                    .to_tensor()
                    .ok_or_else(|| bad("expected output bytes do not match its shape"))?;
                let output = self
                    .engine
                    .output_names()
                    .get(o)
                    .cloned()
                    .unwrap_or_default();
                if g.shape != want.shape {
                    return Err(bad(&format!(
                        "output '{output}' has shape {:?}, expected {:?}",
                        g.shape, want.shape
                    )));
                }
                for (element, (a, b)) in g
                    .to_f64_vec()
                    .into_iter()
                    .zip(want.to_f64_vec())
                    .enumerate()
                {
                    let ok =
                        (a - b).abs() <= tolerance * (1.0 + b.abs()) || (a.is_nan() && b.is_nan());
                    if !ok {
                        return Err(ModelError::SelfTest {
                            index,
                            output,
                            element,
                            got: a,
                            expected: b,
                            tolerance,
                        });
                    }
                }
            }
        }
        Ok(())
    }

    /// Where a run's time goes, per op kind, slowest first ([`crate::engine::Engine::profile`]):
    /// `inputs` validated and normalized as for [`Model::run`], then `runs` timed runs.
    pub fn profile(
        &self,
        inputs: Vec<Tensor>,
        runs: usize,
    ) -> Result<Vec<crate::engine::OpTime>, ModelError> {
        let prepared = self.prepare_inputs(inputs)?;
        self.engine.profile(prepared, runs)
    }

    /// Validates and normalizes raw caller inputs, then runs the engine: the model's raw outputs.
    pub fn run(&self, inputs: Vec<Tensor>) -> Result<Vec<Tensor>, ModelError> {
        let prepared = self.prepare_inputs(inputs)?;
        self.engine.run(prepared)
    }

    /// The caller's inputs checked against the manifest and normalized.
    fn prepare_inputs(&self, inputs: Vec<Tensor>) -> Result<Vec<Tensor>, ModelError> {
        let specs = &self.manifest.inputs;
        if inputs.len() != specs.len() {
            return Err(crate::error::InputError::WrongInputCount {
                expected: specs.len(),
                got: inputs.len(),
            }
            .into());
        }
        let mut prepared = Vec::with_capacity(inputs.len());
        for (spec, mut t) in specs.iter().zip(inputs) {
            validate(spec, &t, &self.input_limits)?;
            normalize(spec, &mut t);
            prepared.push(t);
        }
        Ok(prepared)
    }

    /// Predicts with the bundle's defaults.
    pub fn predict(&self, inputs: Vec<Tensor>) -> Result<PredictResponse, ModelError> {
        self.predict_with(inputs, &PredictOptions::default())
    }

    /// Predicts: validation, preprocessing, inference, postprocessing; counted in the stats.
    pub fn predict_with(
        &self,
        inputs: Vec<Tensor>,
        options: &PredictOptions,
    ) -> Result<PredictResponse, ModelError> {
        let start = Instant::now();
        let features = match inputs.first() {
            Some(t) => self.observe_features(&t.shape, t.len(), |i| t.value_f64(i)),
            None => Vec::new(),
        };
        let batch = inputs
            .first()
            .and_then(|t| t.shape.first().copied())
            .unwrap_or(0);
        let result = self
            .run(inputs)
            .and_then(|outputs| self.answer_outputs(outputs, batch, options));
        self.finish(start, features, result)
    }

    /// A buffer for input `index` at `shape` (the manifest's shape with its named batch dim
    /// given), owned by the runtime, for the app to fill in place and pass to
    /// [`Model::predict_buffers`]: the input is never copied on the way to the engine, and on the
    /// `cuda` engine the buffer is page-locked and mapped into the device
    /// ([`InputBuffer::is_pinned`]). Allocate once, reuse for every call.
    pub fn input_buffer(&self, index: usize, shape: &[usize]) -> Result<InputBuffer, ModelError> {
        let specs = &self.manifest.inputs;
        let spec = specs
            .get(index)
            .ok_or_else(|| crate::error::InputError::Buffer {
                reason: format!(
                    "input index {index}: the model has {} input(s)",
                    specs.len()
                ),
            })?;
        let mut buffer = InputBuffer::new(index, spec, shape, &self.input_limits)?;
        buffer.pin_for(&*self.engine);
        Ok(buffer)
    }

    /// One buffer per input at the manifest's shapes (a named batch dim at 1).
    pub fn input_buffers(&self) -> Result<Vec<InputBuffer>, ModelError> {
        self.manifest
            .inputs
            .iter()
            .enumerate()
            .map(|(ix, spec)| {
                let shape: Vec<usize> = spec
                    .shape
                    .iter()
                    .map(|d| match d {
                        crate::bundle::Dim::Fixed(n) => *n as usize,
                        crate::bundle::Dim::Named(_) => 1,
                    })
                    .collect();
                self.input_buffer(ix, &shape)
            })
            .collect()
    }

    /// [`Model::predict_with`] on buffers the app filled in place (one per input, in input
    /// order). Validation and normalization run on the buffers themselves: after the call they
    /// hold the normalized values, so fill them again before the next call.
    /// Takes `&mut [InputBuffer]` or `&mut [&mut InputBuffer]`.
    pub fn predict_buffers<B: BorrowMut<InputBuffer>>(
        &self,
        buffers: &mut [B],
        options: &PredictOptions,
    ) -> Result<PredictResponse, ModelError> {
        let start = Instant::now();
        let features = match buffers.first() {
            Some(b) => {
                let b = b.borrow();
                self.observe_features(b.shape(), b.len(), |i| b.value_f64(i))
            }
            None => Vec::new(),
        };
        let batch = buffers
            .first()
            .and_then(|b| b.borrow().shape().first().copied())
            .unwrap_or(0);
        let result = self
            .run_buffers(buffers)
            .and_then(|outputs| self.answer_outputs(outputs, batch, options));
        self.finish(start, features, result)
    }

    /// [`Model::run`] on buffers the app filled in place: the model's raw outputs.
    pub fn run_buffers<B: BorrowMut<InputBuffer>>(
        &self,
        buffers: &mut [B],
    ) -> Result<Vec<Tensor>, ModelError> {
        let specs = &self.manifest.inputs;
        if buffers.len() != specs.len() {
            return Err(crate::error::InputError::WrongInputCount {
                expected: specs.len(),
                got: buffers.len(),
            }
            .into());
        }
        let mut inputs = tract_nnef::prelude::TVec::new();
        for (ix, (spec, buffer)) in specs.iter().zip(buffers.iter_mut()).enumerate() {
            let buffer: &mut InputBuffer = buffer.borrow_mut();
            if buffer.index() != ix {
                return Err(crate::error::InputError::Buffer {
                    reason: format!(
                        "buffer {ix} was made for input {}; pass one buffer per input, in order",
                        buffer.index()
                    ),
                }
                .into());
            }
            check_input(
                spec,
                buffer.dtype(),
                buffer.shape(),
                buffer.len(),
                buffer.floats(),
                &self.input_limits,
            )?;
            buffer.normalize(spec)?;
            inputs.push(tract_nnef::prelude::TValue::from_const(
                buffer.tensor.clone(),
            ));
        }
        self.engine.run_in_place(inputs)
    }

    /// Counts a finished prediction in the stats and shapes the response.
    fn finish(
        &self,
        start: Instant,
        features: Vec<Histogram>,
        result: Result<(Answers, Vec<RawOutput>), ModelError>,
    ) -> Result<PredictResponse, ModelError> {
        let latency = start.elapsed();
        match result {
            Ok((answers, raw)) => {
                self.stats
                    .record_success(latency, &answers.classes, &answers.values, &features);
                Ok(PredictResponse {
                    model: self.model_ref.clone(),
                    results: answers.predictions,
                    latency_ms: latency.as_secs_f64() * 1e3,
                    raw,
                    prediction_id: None,
                })
            }
            Err(e) => {
                self.stats.record_error(latency);
                Err(e)
            }
        }
    }

    /// Histograms of the raw input values per drift feature, over the reference bins (empty when
    /// the bundle has no reference statistics or the input does not fit them). At most
    /// [`MAX_FEATURE_SAMPLES`] elements are sampled per request, so the cost is bounded for large
    /// images; the offset inside each stride moves from sample to sample so the sample cannot lock
    /// onto one channel of a channels-last image.
    fn observe_features(
        &self,
        shape: &[usize],
        n: usize,
        value_f64: impl Fn(usize) -> Option<f64>,
    ) -> Vec<Histogram> {
        let mut hists = self.stats.feature_scratch();
        let Some(spec) = self.manifest.inputs.first() else {
            return Vec::new();
        };
        match FeatureMap::new(spec.layout, shape) {
            Some(map) if !hists.is_empty() && map.count() == hists.len() => {
                let step = n.div_ceil(MAX_FEATURE_SAMPLES).max(1);
                for k in 0..n.div_ceil(step) {
                    let i = k * step + (k * 7919) % step;
                    if let Some(v) = value_f64(i) {
                        hists[map.feature_of(i)].observe(v);
                    }
                }
                hists
            }
            _ => Vec::new(),
        }
    }

    /// Post-processes the engine's outputs into answers (and the raw outputs when asked).
    fn answer_outputs(
        &self,
        outputs: Vec<Tensor>,
        batch: usize,
        options: &PredictOptions,
    ) -> Result<(Answers, Vec<RawOutput>), ModelError> {
        let names = self.engine.output_names();
        let task_ix = names
            .iter()
            .position(|n| n == &self.manifest.output.name)
            .unwrap_or(0);
        let task_output = outputs
            .get(task_ix)
            .ok_or_else(|| ModelError::Output("the model returned no output".into()))?;
        let answers = answer(
            &self.manifest.output.task,
            task_output,
            names,
            &outputs,
            batch,
            options.top_k,
        )?;
        let raw = if options.raw {
            names
                .iter()
                .zip(&outputs)
                .map(|(n, t)| raw_output(n, t))
                .collect()
        } else {
            Vec::new()
        };
        Ok((answers, raw))
    }

    /// The signed manifest.
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// Name, version and bundle digest.
    pub fn model_ref(&self) -> &ModelRef {
        &self.model_ref
    }

    /// The engine serving this model.
    pub fn engine_name(&self) -> &'static str {
        self.engine.name()
    }

    /// The engine asked for, the one that runs, on which device, and why they differ.
    pub fn engine_choice(&self) -> &EngineChoice {
        &self.engine_choice
    }

    /// Output names in graph order.
    pub fn output_names(&self) -> &[String] {
        self.engine.output_names()
    }

    /// A copy of the counters.
    pub fn stats(&self) -> StatsSnapshot {
        self.stats.snapshot()
    }
}

/// Consistency checks on the manifest that the packer should have made (a bundle from another
/// packer is checked too).
fn check_spec(m: &Manifest) -> Result<(), ModelError> {
    if m.inputs.is_empty() {
        return Err(ModelError::Spec("the manifest describes no input".into()));
    }
    for spec in &m.inputs {
        check_normalization(spec).map_err(ModelError::Spec)?;
        if spec
            .shape
            .iter()
            .skip(1)
            .any(|d| matches!(d, crate::bundle::Dim::Named(_)))
        {
            return Err(ModelError::Spec(format!(
                "input '{}': only the first (batch) dimension may be dynamic",
                spec.name
            )));
        }
    }
    if let Task::Regression {
        coverage: Some(c), ..
    } = m.output.task
    {
        if !(0.0..1.0).contains(&c) || c <= 0.0 {
            return Err(ModelError::Spec(format!(
                "regression coverage {c} must be in (0, 1)"
            )));
        }
    }
    Ok(())
}
