//! The `cpu` engine: tract. Reads the payload as a typed graph ([`super::graph`]; named dims
//! become tract symbols), optimizes it once at load, and runs the plan on a
//! single-thread or a per-model thread-pool executor. With `threads > 1` each run is also a run
//! of the engine's `edge_kernels::parallel::Workers` (one at a time): our ops split their
//! parallel parts over those (helpers that spin while the run is on); tract's own ops over
//! tract's rayon pool of the same size.

use tract_nnef::prelude::multithread::Executor;
use tract_nnef::prelude::*;

use super::manifest_facts::load_err;
use super::{Engine, OpTime};
use crate::bundle::VerifiedBundle;
use crate::error::ModelError;
use crate::tensor::{Tensor as EfTensor, TensorData};

/// The smallest element-wise op (elements) that tract splits over its threads, in processes
/// with multi-threaded engines (a process-wide setting of tract's).
const TRACT_ELEMENTWISE_SPLIT: usize = 1 << 20;

/// tract, optimized plan.
#[derive(Debug)]
pub struct CpuEngine {
    plan: Arc<TypedSimplePlan>,
    outputs: Vec<String>,
    threads: usize,
    /// The threads our ops split their parts over (`threads > 1`).
    workers: Option<edge_kernels::parallel::Workers>,
    fallbacks: Vec<String>,
    load_steps: Vec<(&'static str, f64)>,
}

fn run_err(e: impl std::fmt::Display) -> ModelError {
    ModelError::EngineRun {
        engine: "cpu",
        reason: format!("{e:#}"),
    }
}

/// The graph's output names (labels, else node names), in output order.
pub(crate) fn output_labels(typed: &TypedModel) -> TractResult<Vec<String>> {
    Ok(typed
        .output_outlets()?
        .iter()
        .map(|&o| {
            typed
                .outlet_label(o)
                .unwrap_or(&typed.node(o.node).name)
                .to_string()
        })
        .collect())
}

impl CpuEngine {
    /// Reads (an ONNX payload: parses and types) and optimizes the verified payload.
    pub fn prepare(bundle: &VerifiedBundle, threads: usize) -> Result<CpuEngine, ModelError> {
        let start = std::time::Instant::now();
        let (model, decluttered) = super::graph::typed_and_decluttered(bundle)?;
        let mut load_steps = vec![("graph", start.elapsed().as_secs_f64() * 1e3)];
        let optimized = super::optimize::optimize(model, decluttered).map_err(load_err)?;
        load_steps.extend(optimized.steps);
        let planning = std::time::Instant::now();
        let typed = optimized.model;
        let outputs = output_labels(&typed).map_err(load_err)?;
        let workers = if threads > 1 {
            let workers = edge_kernels::parallel::Workers::new(threads, "edge-cpu")
                .map_err(|e| load_err(format!("starting {threads} threads: {e}")))?;
            Some(workers)
        } else {
            None
        };
        let executor = if threads > 1 {
            // tract splits element-wise ops from 32 Ki elements on; a split wakes its rayon
            // threads, which then spin beside our workers: MobileNetV2's residual adds (75 Ki
            // elements) took 73 µs at two threads against 15 µs at one. Its matrix products
            // keep their own thresholds.
            tract_linalg::multithread::set_threading_element_threshold(TRACT_ELEMENTWISE_SPLIT);
            Executor::multithread(threads)
        } else {
            Executor::SingleThread
        };
        let options = RunOptions {
            executor: Some(executor),
            ..Default::default()
        };
        let plan = typed
            .into_runnable_with_options(&options)
            .map_err(load_err)?;
        load_steps.push(("plan", planning.elapsed().as_secs_f64() * 1e3));
        Ok(CpuEngine {
            plan,
            outputs,
            threads,
            workers,
            fallbacks: optimized.warnings,
            load_steps,
        })
    }

    /// What the optimizer gave up on this graph (empty when every stage ran).
    pub fn fallbacks(&self) -> &[String] {
        &self.fallbacks
    }

    /// Intra-op threads.
    pub fn threads(&self) -> usize {
        self.threads
    }

    /// Runs `run` (one whole run of the plan) on the calling thread, with the engine's workers
    /// standing by when it has them.
    fn on_workers<R>(&self, run: impl FnOnce() -> R) -> R {
        match &self.workers {
            Some(workers) => workers.run(run),
            None => run(),
        }
    }
}

fn to_tract(t: EfTensor) -> TractResult<Tensor> {
    let shape = t.shape;
    Ok(match t.data {
        TensorData::F32(v) => tract_ndarray::ArrayD::from_shape_vec(shape, v)?.into_tensor(),
        TensorData::F64(v) => tract_ndarray::ArrayD::from_shape_vec(shape, v)?.into_tensor(),
        TensorData::I64(v) => tract_ndarray::ArrayD::from_shape_vec(shape, v)?.into_tensor(),
        TensorData::I32(v) => tract_ndarray::ArrayD::from_shape_vec(shape, v)?.into_tensor(),
        TensorData::U8(v) => tract_ndarray::ArrayD::from_shape_vec(shape, v)?.into_tensor(),
        TensorData::I8(v) => tract_ndarray::ArrayD::from_shape_vec(shape, v)?.into_tensor(),
    })
}

fn from_tract(t: &Tensor) -> TractResult<EfTensor> {
    let shape = t.shape().to_vec();
    let dt = t.datum_type();
    let data = if dt == i64::datum_type()
        || dt == i32::datum_type()
        || dt.is_integer() && !dt.is_quantized()
    {
        let c = t.cast_to::<i64>()?;
        TensorData::I64(c.to_plain_array_view::<i64>()?.iter().copied().collect())
    } else {
        let c = t.cast_to::<f32>()?;
        TensorData::F32(c.to_plain_array_view::<f32>()?.iter().copied().collect())
    };
    Ok(EfTensor { shape, data })
}

/// A tract tensor as the runtime's tensor of the same element type (inputs the caller wrote in
/// place, for engines that do not run tract plans).
pub(crate) fn runtime_tensor(t: &Tensor) -> Result<EfTensor, ModelError> {
    fn values<T: Datum + Copy>(t: &Tensor) -> TractResult<Vec<T>> {
        Ok(t.try_as_plain_ram()?.as_slice::<T>()?.to_vec())
    }
    let dt = t.datum_type();
    let data = if dt == f32::datum_type() {
        values::<f32>(t).map(TensorData::F32)
    } else if dt == f64::datum_type() {
        values::<f64>(t).map(TensorData::F64)
    } else if dt == i64::datum_type() {
        values::<i64>(t).map(TensorData::I64)
    } else if dt == i32::datum_type() {
        values::<i32>(t).map(TensorData::I32)
    } else if dt == u8::datum_type() {
        values::<u8>(t).map(TensorData::U8)
    } else if dt == i8::datum_type() {
        values::<i8>(t).map(TensorData::I8)
    } else {
        return Err(run_err(format!("input of type {dt:?}")));
    };
    Ok(EfTensor {
        shape: t.shape().to_vec(),
        data: data.map_err(run_err)?,
    })
}

/// The runtime's tensors as a tract plan's inputs (moved, not copied, where tract allows).
pub(crate) fn tract_inputs(
    inputs: Vec<EfTensor>,
    engine: &'static str,
) -> Result<TVec<TValue>, ModelError> {
    inputs
        .into_iter()
        .map(|t| to_tract(t).map(|t| t.into_tvalue()))
        .collect::<TractResult<_>>()
        .map_err(|e| ModelError::EngineRun {
            engine,
            reason: format!("{e:#}"),
        })
}

/// Runs a tract plan and converts its outputs.
pub(crate) fn run_plan(
    plan: &dyn Runnable,
    inputs: TVec<TValue>,
    engine: &'static str,
) -> Result<Vec<EfTensor>, ModelError> {
    let err = |e: TractError| ModelError::EngineRun {
        engine,
        reason: format!("{e:#}"),
    };
    let outputs = plan.run(inputs).map_err(err)?;
    outputs
        .iter()
        .map(|t| from_tract(t))
        .collect::<TractResult<Vec<_>>>()
        .map_err(err)
}

impl Engine for CpuEngine {
    fn name(&self) -> &'static str {
        "cpu"
    }

    fn load_steps(&self) -> &[(&'static str, f64)] {
        &self.load_steps
    }

    fn output_names(&self) -> &[String] {
        &self.outputs
    }

    fn run(&self, inputs: Vec<EfTensor>) -> Result<Vec<EfTensor>, ModelError> {
        self.on_workers(|| run_plan(&self.plan, tract_inputs(inputs, "cpu")?, "cpu"))
    }

    fn run_in_place(&self, inputs: TVec<TValue>) -> Result<Vec<EfTensor>, ModelError> {
        self.on_workers(|| run_plan(&self.plan, inputs, "cpu"))
    }

    fn profile(&self, inputs: Vec<EfTensor>, runs: usize) -> Result<Vec<OpTime>, ModelError> {
        self.on_workers(|| self.profile_runs(inputs, runs))
    }
}

impl CpuEngine {
    /// [`Engine::profile`] on the calling thread.
    fn profile_runs(&self, inputs: Vec<EfTensor>, runs: usize) -> Result<Vec<OpTime>, ModelError> {
        let err = |e: TractError| run_err(format!("{e:#}"));
        let inputs = tract_inputs(inputs, "cpu")?;
        let mut state = self.plan.spawn().map_err(err)?;
        let nodes = self.plan.model().nodes().len();
        // per run, per node: seconds (a first run warms caches and scratch buffers)
        let mut times = vec![vec![0f64; nodes]; runs.max(1)];
        // EDGE_PROFILE_MARKERS=1: the last run's nodes (but constants, sources and reshapes)
        // bracketed by instruction-counter markers 2·id and 2·id + 1 (`edge_kernels::marker`;
        // armlab keeps 256 per process), each named on stderr
        let markers = std::env::var_os("EDGE_PROFILE_MARKERS").is_some();
        let marked =
            |node: &TypedNode| !matches!(&*node.op().name(), "Const" | "Source" | "IntoShape");
        for run in 0..=runs.max(1) {
            let mut node_times = vec![0f64; nodes];
            let mark = markers && run == runs.max(1);
            state
                .run_plan_with_eval(inputs.clone(), |ctx, op_state, node, values| {
                    let counted = mark && marked(node);
                    if counted {
                        eprintln!("marker {}: {} {}", 2 * node.id, node.name, node.op().name());
                        edge_kernels::marker::mark(2 * node.id as u32);
                    }
                    let start = std::time::Instant::now();
                    let out = tract_nnef::tract_core::plan::eval(ctx, op_state, node, values);
                    node_times[node.id] += start.elapsed().as_secs_f64();
                    if counted {
                        edge_kernels::marker::mark(2 * node.id as u32 + 1);
                    }
                    out
                })
                .map_err(err)?;
            if run > 0 {
                times[run - 1] = node_times;
            }
        }
        let mut kinds: Vec<(String, usize, Vec<f64>)> = vec![];
        for node in self.plan.model().nodes() {
            let name = node.op().name().to_string();
            let ix = match kinds.iter().position(|k| k.0 == name) {
                Some(ix) => ix,
                None => {
                    kinds.push((name, 0, vec![0.0; times.len()]));
                    kinds.len() - 1
                }
            };
            kinds[ix].1 += 1;
            for (run, t) in times.iter().enumerate() {
                kinds[ix].2[run] += t[node.id];
            }
        }
        let mut profile: Vec<OpTime> = kinds
            .into_iter()
            .map(|(op, nodes, mut per_run)| {
                per_run.sort_by(f64::total_cmp);
                let ms = per_run[per_run.len() / 2] * 1e3;
                OpTime { op, nodes, ms }
            })
            .collect();
        profile.sort_by(|a, b| b.ms.total_cmp(&a.ms));
        Ok(profile)
    }
}
