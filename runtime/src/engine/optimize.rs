//! The CPU engine's optimization ladder: type the graph, declutter it, swap in our own kernels,
//! then tract's codegen. A stage that fails on a graph does not refuse a model ONNX Runtime
//! runs: a failing tract pass is switched off for the rest of its stage ([`Guarded`]), and a
//! stage that still fails is skipped (the model keeps the previous stage's form). Each fallback
//! is a warning that travels with the model (`EngineChoice::reason`, `edgectl bench`, the
//! agent's reported state). Only typing is required: a graph tract cannot type cannot run.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use tract_nnef::prelude::*;
use tract_nnef::tract_core::optim::change_axes::ChangeAxes;
use tract_nnef::tract_core::optim::{Optimizer, OptimizerSession, TypedPass};

/// A typed, optimized model and what was given up to get it.
pub(crate) struct Optimized {
    pub model: TypedModel,
    /// One line per fallback (`declutter: pass ChangeAxes failed (…); it was skipped`).
    pub warnings: Vec<String>,
    /// Milliseconds per step (`declutter`, `substitute`, `codegen`).
    pub steps: Vec<(&'static str, f64)>,
}

/// Whether to declutter without tract's `ChangeAxes`: for a quantized (QDQ) graph where our
/// integer 1×1 and depthwise kernels both run (aarch64 dotprod or i8mm, x86 AVX-512 VNNI and
/// VBMI). On
/// aarch64 tract moves depthwise layers, and with them the whole graph, to channels-last (its
/// NEON channel-inner depthwise kernel); our integer 1×1, depthwise and 8-bit links are
/// channel-first ops, so the move would leave every quantized layer to tract's float kernels
/// with the pairs paid around them (MobileNetV2 int8: 161.5 M instructions per inference that
/// way, 79.7 M kept channel-first, on neoverse-n1). On x86 our ops matched either way, and the
/// pass was 9 of a ~35 ms int8 load (26 moves on a 687-node graph) for the same latency.
/// Float graphs keep tract's layout, and so does a plain NEON core (Cortex-A72): without an
/// integer depthwise kernel the channel-first graph cost more than tract's (198.6 M against
/// ~161 M).
fn keeps_channels_first(model: &TypedModel) -> bool {
    use edge_kernels::{qdepthwise, qpointwise};
    let isa = edge_kernels::Isa::host();
    super::own_kernels()
        && qpointwise::Kernel::best(isa).serves_graphs()
        && qdepthwise::Kernel::best(isa).is_some()
        && is_qdq(model)
}

/// tract's declutter, without its layout pass (`ChangeAxes`) when `keep_layout`.
fn declutter_keeping_layout(keep_layout: bool) -> Optimizer {
    let mut declutter = Optimizer::declutter();
    if keep_layout {
        declutter
            .passes
            .retain(|p| format!("{p:?}") != "ChangeAxes");
    }
    declutter
}

/// Whether the graph quantizes or dequantizes anywhere (a QDQ or QOperator graph).
fn is_qdq(model: &TypedModel) -> bool {
    model.nodes.iter().any(|n| {
        let name = n.op.name();
        name.contains("DequantizeLinear") || name.contains("QuantizeLinear")
    })
}

/// tract's declutter as [`optimize`] runs it (without `ChangeAxes` where
/// [`keeps_channels_first`] says so), unguarded: for tests that substitute step by step.
#[cfg(test)]
pub(crate) fn declutter(mut model: TypedModel) -> TractResult<TypedModel> {
    declutter_keeping_layout(keeps_channels_first(&model)).optimize(&mut model)?;
    Ok(model)
}

/// The declutter the packer runs for the optimized payload: tract's, guarded like every stage
/// here; without `ChangeAxes` for a quantized graph, whose layout is the device's choice
/// ([`keeps_channels_first`], per instruction set).
#[cfg(feature = "onnx")]
pub(crate) fn portable_declutter(model: TypedModel, warnings: &mut Vec<String>) -> TypedModel {
    let declutter = declutter_keeping_layout(is_qdq(&model));
    stage("declutter", &declutter, model, warnings)
}

/// Declutters (unless `decluttered`: see [`declutter_stage`]), substitutes our kernels (unless
/// `EDGE_CPU_OWN_KERNELS=0`) and optimizes a typed graph.
pub(crate) fn optimize(model: TypedModel, decluttered: bool) -> TractResult<Optimized> {
    optimize_with(model, decluttered, Vec::new())
}

/// [`optimize`] with extra declutter passes (the tests' tripwire: a pass that fails on a graph).
pub(crate) fn optimize_with(
    typed: TypedModel,
    decluttered: bool,
    extra_declutter: Vec<Box<dyn TypedPass>>,
) -> TractResult<Optimized> {
    let mut steps = Vec::new();
    let mut clock = Instant::now();
    let mut lap = |name: &'static str| {
        steps.push((name, clock.elapsed().as_secs_f64() * 1e3));
        clock = Instant::now();
    };
    let mut warnings = Vec::new();

    let channels_first = keeps_channels_first(&typed);
    let mut declutter = declutter_keeping_layout(channels_first);
    declutter.passes.extend(extra_declutter);
    let decluttered = declutter_stage(
        &declutter,
        typed,
        decluttered && !channels_first,
        &mut warnings,
    );
    lap("declutter");

    let substituted = if super::own_kernels() {
        let mut candidate = decluttered.clone();
        match substitute(&mut candidate) {
            Ok(()) => candidate,
            Err(e) => {
                warnings.push(format!(
                    "our kernels: {e:#}; tract's kernels run this model instead"
                ));
                decluttered
            }
        }
    } else {
        decluttered
    };

    lap("substitute");
    // tract's own optimize is declutter then codegen: the declutter is run guarded again
    let redeclutter = stage("declutter", &declutter, substituted, &mut warnings);
    let optimized = stage("codegen", &Optimizer::codegen(), redeclutter, &mut warnings);
    lap("codegen");
    warnings.dedup();
    Ok(Optimized {
        model: optimized,
        warnings,
        steps,
    })
}

/// The declutter stage. A graph the packer already decluttered (an optimized payload: all of
/// tract's declutter but its layout pass) gets that pass alone, `ChangeAxes`, and the whole
/// declutter again only if it moved an axis: on MobileNetV2 that saves a ~20 ms fixpoint walk
/// over a graph with nothing left to do.
fn declutter_stage(
    declutter: &Optimizer,
    model: TypedModel,
    layout_only: bool,
    warnings: &mut Vec<String>,
) -> TypedModel {
    if !layout_only {
        return stage("declutter", declutter, model, warnings);
    }
    let moved = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut layout = Optimizer::declutter();
    layout.passes = vec![Box::new(Counted {
        inner: Box::<ChangeAxes>::default(),
        proposed: moved.clone(),
    })];
    let model = stage("declutter", &layout, model, warnings);
    if moved.load(std::sync::atomic::Ordering::Relaxed) > 0 {
        stage("declutter", declutter, model, warnings)
    } else {
        model
    }
}

/// A pass that counts the patches it proposes.
#[derive(Clone, Debug)]
struct Counted {
    inner: Box<dyn TypedPass>,
    proposed: Arc<std::sync::atomic::AtomicUsize>,
}

impl TypedPass for Counted {
    fn reset(&mut self) -> TractResult<()> {
        self.inner.reset()
    }

    fn next(
        &mut self,
        session: &mut OptimizerSession,
        model: &TypedModel,
    ) -> TractResult<Option<TypedModelPatch>> {
        let patch = self.inner.next(session, model)?;
        if patch.is_some() {
            self.proposed
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        Ok(patch)
    }

    fn run_direct(&mut self, model: &mut TypedModel) -> TractResult<bool> {
        let changed = self.inner.run_direct(model)?;
        if changed {
            self.proposed
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        Ok(changed)
    }
}

/// The substitutions of our kernels, in order (each matches what the ones before left).
fn substitute(typed: &mut TypedModel) -> TractResult<()> {
    super::conv1x1::constant_operand_second(typed)?;
    super::const_weights::substitute(typed)?;
    super::dynamic_quant::substitute(typed)?;
    super::fake_quant::substitute(typed)?;
    super::depthwise::substitute(typed)?;
    super::dense_conv::substitute(typed)?;
    super::pointwise::substitute(typed)?;
    super::pointwise_last::substitute(typed)?;
    super::channel_affine::substitute(typed)?;
    super::plane_softmax::substitute(typed)?;
    super::pool::substitute(typed)?;
    super::u8_activations::substitute(typed)?;
    Ok(())
}

/// Runs one optimizer over a copy of `model` with each pass guarded; a failure the guards cannot
/// contain (a patch that fails to apply) leaves `model` as it was.
fn stage(
    name: &str,
    optimizer: &Optimizer,
    model: TypedModel,
    warnings: &mut Vec<String>,
) -> TypedModel {
    let failed = Failures::default();
    let guarded = Optimizer {
        passes: optimizer
            .passes
            .iter()
            .map(|p| {
                Box::new(Guarded {
                    inner: p.clone(),
                    name: format!("{p:?}"),
                    failed: failed.clone(),
                }) as Box<dyn TypedPass>
            })
            .collect(),
        steps: optimizer.steps,
    };
    let mut candidate = model.clone();
    let outcome = guarded.optimize(&mut candidate);
    for (pass, error) in failed.take() {
        warnings.push(format!(
            "{name}: pass {pass} failed on this graph ({error}); it was skipped"
        ));
    }
    match outcome {
        Ok(()) => candidate,
        Err(e) => {
            warnings.push(format!("{name}: {e:#}; the model runs without this stage"));
            model
        }
    }
}

/// The passes of one stage that failed, shared by the copies tract's session makes of each pass.
#[derive(Clone, Debug, Default)]
struct Failures(Arc<Mutex<Vec<(String, String)>>>);

impl Failures {
    fn has(&self, pass: &str) -> bool {
        self.lock().iter().any(|(p, _)| p == pass)
    }
    fn record(&self, pass: &str, error: &TractError) {
        self.lock().push((pass.to_string(), format!("{error:#}")));
    }
    fn take(&self) -> Vec<(String, String)> {
        std::mem::take(&mut *self.lock())
    }
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<(String, String)>> {
        // a panic elsewhere cannot leave the list half-written: recover it
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A tract pass that, once it fails to make a patch, proposes nothing more for the stage. Its
/// failed attempt changed nothing (a pass only proposes; the session applies), so the model is
/// the one before the attempt.
#[derive(Clone, Debug)]
struct Guarded {
    inner: Box<dyn TypedPass>,
    name: String,
    failed: Failures,
}

impl TypedPass for Guarded {
    fn reset(&mut self) -> TractResult<()> {
        if self.failed.has(&self.name) {
            return Ok(());
        }
        if let Err(e) = self.inner.reset() {
            self.failed.record(&self.name, &e);
        }
        Ok(())
    }

    fn next(
        &mut self,
        session: &mut OptimizerSession,
        model: &TypedModel,
    ) -> TractResult<Option<TypedModelPatch>> {
        if self.failed.has(&self.name) {
            return Ok(None);
        }
        match self.inner.next(session, model) {
            Ok(patch) => Ok(patch),
            Err(e) => {
                self.failed.record(&self.name, &e);
                Ok(None)
            }
        }
    }

    fn run_direct(&mut self, model: &mut TypedModel) -> TractResult<bool> {
        if self.failed.has(&self.name) {
            return Ok(false);
        }
        // run_direct mutates in place: on failure the stage cannot vouch for the model, so the
        // error goes up and the stage falls back to its input
        self.inner.run_direct(model)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tract_nnef::tract_core::internal::bail;

    /// Fails to make a patch on any graph holding a convolution, as tract's ChangeAxes fails
    /// on some NHWC exports ("Making patch for AxisChange … RmAxis").
    #[derive(Clone, Debug)]
    struct Tripwire;

    impl TypedPass for Tripwire {
        fn reset(&mut self) -> TractResult<()> {
            Ok(())
        }
        fn next(
            &mut self,
            _session: &mut OptimizerSession,
            model: &TypedModel,
        ) -> TractResult<Option<TypedModelPatch>> {
            if model.nodes.iter().any(|n| n.op.name() == "Conv") {
                bail!("Making patch for AxisChange {{ outlet: 3/0, op: RmAxis(2) }}");
            }
            Ok(None)
        }
    }

    /// Fails while rewriting the model in place: the guard cannot vouch for what it left, so
    /// the whole stage is dropped.
    #[derive(Clone, Debug)]
    struct FailsInPlace;

    impl TypedPass for FailsInPlace {
        fn reset(&mut self) -> TractResult<()> {
            Ok(())
        }
        fn next(
            &mut self,
            _session: &mut OptimizerSession,
            _model: &TypedModel,
        ) -> TractResult<Option<TypedModelPatch>> {
            Ok(None)
        }
        fn run_direct(&mut self, model: &mut TypedModel) -> TractResult<bool> {
            model.nodes[0].name = "half-done".into();
            bail!("in-place rewrite failed")
        }
    }

    const SHAPE: [usize; 4] = [1, 4, 8, 8];

    fn parsed() -> TypedModel {
        use tract_onnx::prelude::*;
        let path = format!(
            "{}/tests/data/gpu_ops/ppocr_backbone_mix.onnx",
            env!("CARGO_MANIFEST_DIR")
        );
        let mut model = crate::engine::onnx_parser()
            .model_for_path(path)
            .expect("fixture");
        model
            .set_input_fact(0, InferenceFact::dt_shape(f32::datum_type(), SHAPE))
            .expect("fact");
        model.into_typed().expect("typed")
    }

    fn run(model: TypedModel) -> Vec<f32> {
        let n: usize = SHAPE.iter().product();
        let x: Vec<f32> = (0..n).map(|i| (i as f32 * 0.37).sin()).collect();
        let x = tract_ndarray::ArrayD::from_shape_vec(&SHAPE[..], x)
            .expect("shape")
            .into_tensor();
        let plan = model.into_runnable().expect("runnable");
        let out = plan.run(tvec!(x.into_tvalue())).expect("run");
        out[0]
            .to_plain_array_view::<f32>()
            .expect("f32")
            .iter()
            .copied()
            .collect()
    }

    fn assert_same(a: &[f32], b: &[f32]) {
        assert_eq!(a.len(), b.len());
        for (i, (x, y)) in a.iter().zip(b).enumerate() {
            assert!((x - y).abs() <= 1e-4 * (1.0 + x.abs()), "{i}: {x} vs {y}");
        }
    }

    #[test]
    fn a_graph_that_trips_a_pass_still_runs_with_a_warning() {
        let clean = optimize(parsed(), false).expect("optimize");
        assert!(clean.warnings.is_empty(), "{:?}", clean.warnings);
        let tripped = optimize_with(parsed(), false, vec![Box::new(Tripwire)]).expect("fallback");
        assert!(
            tripped
                .warnings
                .iter()
                .any(|w| w.contains("pass Tripwire failed") && w.contains("RmAxis")),
            "{:?}",
            tripped.warnings
        );
        assert_same(&run(clean.model), &run(tripped.model));
    }

    #[test]
    fn a_stage_that_fails_in_place_is_dropped_and_the_model_still_runs() {
        let clean = optimize(parsed(), false).expect("optimize");
        let dropped =
            optimize_with(parsed(), false, vec![Box::new(FailsInPlace)]).expect("fallback");
        assert!(
            dropped
                .warnings
                .iter()
                .any(|w| w.contains("in-place rewrite failed") && w.contains("without this stage")),
            "{:?}",
            dropped.warnings
        );
        assert!(dropped.model.nodes.iter().all(|n| n.name != "half-done"));
        assert_same(&run(clean.model), &run(dropped.model));
    }
}
