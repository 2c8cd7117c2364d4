//! Engines run a verified model's graph. One trait, chosen by name; the rest of the system never
//! knows which engine runs. `cpu` (tract) always; `gpu` (wgpu compute) with the `gpu` feature;
//! `cuda` (tract's CUDA backend) with the `cuda` feature.
//! The choice (`auto`, `cpu`, `gpu`, `cuda`) comes from the device's options, else the bundle's
//! hint; a model the chosen engine cannot run loads on the CPU, and the reason travels with it
//! ([`EngineChoice`]).

mod activations;
pub mod channel_affine;
pub mod const_weights;
mod conv1x1;
mod conv2d;
mod cpu;
#[cfg(feature = "cuda")]
pub mod cuda;
pub mod dense_conv;
pub mod depthwise;
pub mod dynamic_quant;
pub mod fake_quant;
#[cfg(feature = "gpu")]
pub mod gpu;
mod graph;
pub mod lrn;
mod manifest_facts;
pub mod ml;
pub mod nnef;
pub mod nnef_text;
#[cfg(feature = "onnx")]
pub mod onnx;
mod optimize;
pub mod plane_softmax;
pub mod pointwise;
pub mod pointwise_last;
pub mod pool;
pub mod qdense_conv;
pub mod qdepthwise;
#[cfg(feature = "onnx")]
mod qops;
pub mod qpointwise;
mod scratch;
mod threads;
pub mod u8_activations;

use tract_nnef::prelude::{TValue, TVec};
use tract_nnef::tract_core::internal::{
    Datum, OutletId, TractResult, TypedModel, TypedModelPatch, TypedOp,
};
use tract_nnef::tract_core::ops::binary::TypedBinOp;
use tract_nnef::tract_core::ops::math::{Max, Min};

use crate::bundle::VerifiedBundle;
use crate::error::ModelError;
use crate::tensor::Tensor;

pub use cpu::CpuEngine;
/// The CPU kernels our ops run (`edge-kernels`), for benchmarks and tools.
pub use edge_kernels as kernels;
pub use graph::payload_formats;
pub(crate) use manifest_facts::datum;
#[cfg(feature = "onnx")]
pub use onnx::{onnx_parser, translate};

/// Page-locked memory registered with an engine's device ([`Engine::pin`]); unregisters when
/// dropped.
pub trait PinnedMemory: Send + Sync {}

/// Whether the CPU engine uses our own kernels where tract's are slow (depthwise, 1×1 and
/// other convolutions, integer 1×1 convolution in QDQ graphs with 8-bit tensors between our
/// ops, constant weight dequantization, dynamic quantization, per-channel affine chains,
/// quantize→dequantize pairs, LRN): yes unless `EDGE_CPU_OWN_KERNELS=0`, which leaves every
/// node to tract (same-run A/B benchmarks, or ruling our kernels out when chasing a wrong
/// output).
pub fn own_kernels() -> bool {
    std::env::var("EDGE_CPU_OWN_KERNELS").map_or(true, |v| v.trim() != "0")
}

/// f32 values compared and hashed by their bits (our ops hold weights and must be `Eq + Hash`).
#[derive(Debug, Clone)]
pub(crate) struct Floats(pub(crate) Vec<f32>);

impl PartialEq for Floats {
    fn eq(&self, other: &Self) -> bool {
        self.0.len() == other.0.len()
            && self
                .0
                .iter()
                .zip(&other.0)
                .all(|(a, b)| a.to_bits() == b.to_bits())
    }
}

impl Eq for Floats {}

impl std::hash::Hash for Floats {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        for v in &self.0 {
            v.to_bits().hash(state);
        }
    }
}

/// Replaces the run of nodes from `first` to `last` (each the only reader of the one before)
/// by `op` reading `input`: the one patch every substitution of ours applies.
pub(crate) fn replace_run(
    model: &mut TypedModel,
    input: OutletId,
    first: usize,
    last: usize,
    op: impl Into<Box<dyn TypedOp>>,
) -> TractResult<()> {
    let mut patch = TypedModelPatch::default();
    let tap = patch.tap_model(model, input)?;
    let wire = patch.wire_node(&model.node(first).name, op, &[tap])?[0];
    patch.shunt_outside(model, OutletId::new(last, 0), wire)?;
    patch.apply(model)
}

/// The chain of `Max`/`Min` against a one-element f32 constant that alone reads node `id`'s
/// output, keeping its shape: the chain's last node (`id` when there is none) and the clamp it
/// amounts to (a ReLU, a ReLU6), to fuse into the op that replaces `id`.
pub(crate) fn following_clamp(
    model: &TypedModel,
    id: usize,
) -> TractResult<(usize, Option<(f32, f32)>)> {
    let shape = model.outlet_fact(OutletId::new(id, 0))?.shape.clone();
    let outputs = model.output_outlets()?;
    let (mut last, mut clamp) = (id, None);
    loop {
        let node = model.node(last);
        if outputs.contains(&OutletId::new(last, 0)) || node.outputs[0].successors.len() != 1 {
            break;
        }
        let succ = node.outputs[0].successors[0];
        let next = model.node(succ.node);
        let Some(bin) = next.op_as::<TypedBinOp>() else {
            break;
        };
        if bin.1.is_some() || next.inputs.len() != 2 {
            break;
        }
        let other = next.inputs[1 - succ.slot];
        let Some(value) = model.outlet_fact(other)?.konst.clone() else {
            break;
        };
        if value.datum_type() != f32::datum_type()
            || value.len() != 1
            || model.outlet_fact(OutletId::new(next.id, 0))?.shape != shape
        {
            break;
        }
        let v = f32_values(&value)?[0];
        let (lo, hi) = clamp.unwrap_or((f32::NEG_INFINITY, f32::INFINITY));
        // max(clamp(x, lo, hi), v) = clamp(x, max(lo, v), max(hi, v)); min likewise
        clamp = if bin.0.is::<Max>() {
            Some((lo.max(v), hi.max(v)))
        } else if bin.0.is::<Min>() {
            Some((lo.min(v), hi.min(v)))
        } else {
            break;
        };
        last = next.id;
    }
    Ok((last, clamp))
}

/// `f` applied to an f32 value's elements, in place when the plan hands over the only
/// reference (else on a copy): the eval of our element-wise ops.
pub(crate) fn map_f32_in_place(
    value: TValue,
    f: impl FnOnce(&mut [f32]),
) -> tract_nnef::prelude::TractResult<TValue> {
    use tract_nnef::prelude::*;
    let mut data = value.into_tensor();
    {
        let mut plain = data.try_as_plain_ram_mut()?;
        f(plain.as_slice_mut::<f32>()?);
    }
    Ok(data.into_tvalue())
}

/// Test helper for our ops: runs `model` (optimized by tract first when `optimize`) on one
/// input and returns its first output as f32 values.
#[cfg(test)]
pub(crate) fn run_f32(
    model: tract_nnef::prelude::TypedModel,
    input: &tract_nnef::prelude::Tensor,
    optimize: bool,
) -> Vec<f32> {
    use tract_nnef::prelude::*;
    let model = if optimize {
        model.into_optimized().unwrap()
    } else {
        model
    };
    let out = model
        .into_runnable()
        .unwrap()
        .run(tvec![input.clone().into_tvalue()])
        .unwrap();
    f32_values(&out[0]).unwrap()
}

/// Test helper: one channel-first `Conv` (constant kernel and bias from [`test_values`]), then
/// `Max 0` and `Min hi` when `clamp` is `Some(hi)`, input `shape` (`[N, C, H, W]`).
#[cfg(test)]
pub(crate) struct TestConv {
    pub shape: [usize; 4],
    pub outputs: usize,
    pub group: usize,
    pub kernel: [usize; 2],
    pub strides: [usize; 2],
    pub dilations: [usize; 2],
    pub padding: tract_nnef::tract_core::ops::cnn::PaddingSpec,
    pub clamp: Option<f32>,
}

#[cfg(test)]
impl TestConv {
    pub(crate) fn model(&self) -> tract_nnef::prelude::TypedModel {
        use tract_nnef::prelude::*;
        use tract_nnef::tract_core::ops::cnn::{Conv, KernelFormat, PoolSpec};
        use tract_nnef::tract_core::ops::math;
        use tract_nnef::tract_core::ops::nn::DataFormat;
        let [_, c, _, _] = self.shape;
        let [kh, kw] = self.kernel;
        let per_group = c / self.group;
        let mut model = TypedModel::default();
        let x = model.add_source("x", f32::fact(self.shape)).unwrap();
        let k = test_values(self.outputs * per_group * kh * kw, 7);
        let k =
            tract_ndarray::Array4::from_shape_vec((self.outputs, per_group, kh, kw), k).unwrap();
        let k = model.add_const("k", k.into_tensor()).unwrap();
        let b = model
            .add_const("b", tensor1(&test_values(self.outputs, 8)))
            .unwrap();
        let conv = Conv {
            pool_spec: PoolSpec {
                data_format: DataFormat::NCHW,
                kernel_shape: self.kernel[..].into(),
                padding: self.padding.clone(),
                dilations: Some(self.dilations[..].into()),
                strides: Some(self.strides[..].into()),
                input_channels: c,
                output_channels: self.outputs,
            },
            kernel_fmt: KernelFormat::OIHW,
            group: self.group,
            q_params: None,
        };
        let mut y = model.wire_node("conv", conv, &[x, k, b]).unwrap();
        if let Some(hi) = self.clamp {
            let zero = model.add_const("zero", tensor4(&[[[[0f32]]]])).unwrap();
            let hi = model.add_const("hi", tensor4(&[[[[hi]]]])).unwrap();
            y = model.wire_node("max", math::max(), &[y[0], zero]).unwrap();
            y = model.wire_node("min", math::min(), &[y[0], hi]).unwrap();
        }
        model.select_output_outlets(&y).unwrap();
        model
    }
}

#[cfg(test)]
pub(crate) use edge_kernels::testing::{assert_close, values as test_values};

/// A tensor's values as f32 (any numeric type, any layout).
pub fn f32_values(t: &tract_nnef::prelude::Tensor) -> tract_nnef::prelude::TractResult<Vec<f32>> {
    // a tensor's values are contiguous: one slice copy (an ndarray iterator over dynamic dims
    // costs an index update per value)
    Ok(t.cast_to::<f32>()?
        .try_as_plain_ram()?
        .as_slice::<f32>()?
        .to_vec())
}

/// One kind of op in a profile ([`Engine::profile`]).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct OpTime {
    /// The op's name in the optimized plan (ours start with `Edge`).
    pub op: String,
    /// Nodes of this kind in the plan.
    pub nodes: usize,
    /// Milliseconds per run, all its nodes together (median of the runs).
    pub ms: f64,
}

/// A prepared model graph, ready to run. Implementations are shared across threads.
pub trait Engine: Send + Sync + std::fmt::Debug {
    /// Engine name (`cpu`, ...).
    fn name(&self) -> &'static str;
    /// Output names, in the order `run` returns them.
    fn output_names(&self) -> &[String];
    /// Where preparing took its time: milliseconds per step, in order (`parse`, `type`,
    /// `declutter`, `substitute`, `codegen`, `plan` on the CPU; empty where not measured).
    fn load_steps(&self) -> &[(&'static str, f64)] {
        &[]
    }
    /// Runs the graph on already validated and normalized inputs (graph input order).
    fn run(&self, inputs: Vec<Tensor>) -> Result<Vec<Tensor>, ModelError>;

    /// Where one run's time goes: the graph run `runs` times on these inputs (validated and
    /// normalized), each op's time summed per op kind, slowest first. Only engines that run a
    /// plan node by node can say.
    fn profile(&self, _inputs: Vec<Tensor>, _runs: usize) -> Result<Vec<OpTime>, ModelError> {
        Err(ModelError::EngineRun {
            engine: self.name(),
            reason: "per-op profiles are measured on the cpu engine only (try --engine cpu)".into(),
        })
    }

    /// Runs the graph on tract tensors the caller filled in place ([`crate::InputBuffer`]s,
    /// validated and normalized). Engines that run tract plans take them as they are; the
    /// default copies them into the runtime's tensors for [`Engine::run`].
    fn run_in_place(&self, inputs: TVec<TValue>) -> Result<Vec<Tensor>, ModelError> {
        let tensors = inputs
            .iter()
            .map(|t| cpu::runtime_tensor(t))
            .collect::<Result<Vec<_>, _>>()?;
        self.run(tensors)
    }

    /// Page-locks `len` bytes at `ptr` for this engine's device, so inputs written there reach
    /// it without a staging copy; `Err(why)` when the engine reads ordinary memory or the device
    /// refuses.
    ///
    /// # Safety
    /// The region stays valid, and is not moved or freed, until the returned guard is dropped.
    unsafe fn pin(&self, _ptr: *mut u8, _len: usize) -> Result<Box<dyn PinnedMemory>, String> {
        Err(format!("the {} engine reads ordinary memory", self.name()))
    }
}

/// Which engine to use.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EngineKind {
    /// CUDA, else the GPU through wgpu, else the CPU: the first that can run the model.
    Auto,
    /// tract on the CPU.
    #[default]
    Cpu,
    /// WGSL compute through wgpu (Vulkan, Metal).
    Gpu,
    /// CUDA (Jetson, NVIDIA GPUs).
    Cuda,
}

impl EngineKind {
    /// The name configs and hints use.
    pub fn as_str(self) -> &'static str {
        match self {
            EngineKind::Auto => "auto",
            EngineKind::Cpu => "cpu",
            EngineKind::Gpu => "gpu",
            EngineKind::Cuda => "cuda",
        }
    }
}

impl std::fmt::Display for EngineKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for EngineKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(EngineKind::Auto),
            "cpu" => Ok(EngineKind::Cpu),
            "gpu" => Ok(EngineKind::Gpu),
            "cuda" => Ok(EngineKind::Cuda),
            other => Err(format!(
                "unknown engine '{other}' (expected auto, cpu, gpu or cuda)"
            )),
        }
    }
}

/// Engine settings from the device (they override the bundle's hints).
#[derive(Clone, Debug, Default)]
pub struct EngineOptions {
    /// Engine to use; `None` = the bundle's hint, else cpu.
    pub kind: Option<EngineKind>,
    /// Intra-op threads; `None` = the bundle's hint, else 1; at most the device's cores.
    pub threads: Option<usize>,
}

/// What was asked for, what runs, and why (reported by the agent and `edgectl`).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct EngineChoice {
    /// The engine asked for (options, else the bundle's hint, else cpu).
    pub requested: String,
    /// The engine that runs the model.
    pub used: &'static str,
    /// The device it runs on (`cpu`, or the adapter).
    pub device: String,
    /// Why `used` differs from `requested`, or what `auto` found.
    pub reason: Option<String>,
}

impl EngineChoice {
    /// One line for people: `gpu on ADAPTER (asked: auto); cuda: not built …`.
    pub fn summary(&self) -> String {
        format!(
            "{} on {} (asked: {}){}",
            self.used,
            self.device,
            self.requested,
            self.reason
                .as_deref()
                .map(|r| format!("; {r}"))
                .unwrap_or_default()
        )
    }

    /// Whether there is something to tell (not the CPU, or not what was asked).
    pub fn is_notable(&self) -> bool {
        self.used != "cpu" || self.reason.is_some()
    }
}

/// The optimized payload's reader, built on another thread while the bundle is verified
/// ([`nnef::prefetch_framework`]); the load's payload read takes it. Held for the whole load
/// ([`crate::Model::load`] does; a caller that verifies first and then calls
/// [`crate::Model::from_verified`] may too): when it goes, a reader the load did not take (an
/// ONNX payload, a refused bundle) goes with it.
#[must_use = "the reader is dropped with this guard"]
pub struct PayloadReader(());

impl PayloadReader {
    /// Starts building the reader.
    pub fn prefetch() -> PayloadReader {
        nnef::prefetch_framework();
        PayloadReader(())
    }
}

impl Drop for PayloadReader {
    fn drop(&mut self) {
        nnef::forget_prefetched()
    }
}

/// Prepares the engine for a verified bundle.
pub fn prepare(
    bundle: &VerifiedBundle,
    options: &EngineOptions,
) -> Result<(Box<dyn Engine>, EngineChoice), ModelError> {
    let hints = &bundle.manifest().engine;
    let mut notes: Vec<String> = Vec::new();
    let kind = match options.kind {
        Some(k) => k,
        None => match hints.engine.as_deref() {
            Some(h) => h.parse().unwrap_or_else(|e: String| {
                notes.push(format!("bundle hint: {e}"));
                EngineKind::Cpu
            }),
            None => EngineKind::Cpu,
        },
    };
    // never more than the device's cores: the helpers of a multi-threaded run spin while it is
    // on, and more spinning threads than cores would slow every one of them
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let threads = options
        .threads
        .or(hints.threads.map(|t| t as usize))
        .unwrap_or(1)
        .clamp(1, cores);
    // auto: CUDA, then wgpu, then the CPU; each refusal is noted
    let accelerators: [(EngineKind, &'static str, Preparer); 2] = [
        (EngineKind::Cuda, "cuda", prepare_cuda),
        (EngineKind::Gpu, "gpu", prepare_gpu),
    ];
    for (accelerator, name, prepare) in accelerators {
        if kind != accelerator && kind != EngineKind::Auto {
            continue;
        }
        match prepare(bundle)? {
            Ok((engine, device)) => {
                let reason = (!notes.is_empty()).then(|| notes.join("; "));
                let choice = EngineChoice {
                    requested: kind.to_string(),
                    used: name,
                    device,
                    reason,
                };
                return Ok((engine, choice));
            }
            Err(why) => notes.push(format!("{name}: {why}")),
        }
    }
    let engine = CpuEngine::prepare(bundle, threads)?;
    notes.extend(engine.fallbacks().iter().map(|w| format!("optimizer: {w}")));
    // which of our kernels run: what the CPU has, less what EDGE_ISA caps (or why it was ignored)
    let kernels = match (own_kernels(), edge_kernels::Isa::host_note()) {
        (false, _) => "tract only (EDGE_CPU_OWN_KERNELS=0)".to_string(),
        (true, None) => edge_kernels::Isa::host().to_string(),
        (true, Some(note)) => format!("{} ({note})", edge_kernels::Isa::host()),
    };
    let choice = EngineChoice {
        requested: kind.to_string(),
        used: "cpu",
        device: format!(
            "cpu ({threads} thread{}; kernels: {kernels})",
            if threads == 1 { "" } else { "s" }
        ),
        reason: (!notes.is_empty()).then(|| notes.join("; ")),
    };
    Ok((Box::new(engine), choice))
}

/// A prepared engine and its device, or why that engine cannot run the model.
type Attempt = Result<(Box<dyn Engine>, String), String>;

/// Prepares one accelerator engine: `Ok(Err(reason))` = use another engine.
type Preparer = fn(&VerifiedBundle) -> Result<Attempt, ModelError>;

/// Why a model cannot run on an accelerator engine here (no device or driver, or a graph it does
/// not cover): it loads on the next engine, with this reason.
#[derive(Debug)]
pub struct Unsupported(pub String);

/// An accelerator engine's preparation as an [`Attempt`]: the engine and its device, or the
/// reason to move on, or the model's own error.
#[cfg(any(feature = "gpu", feature = "cuda"))]
fn attempt<E: Engine + 'static>(
    prepared: Result<E, Result<Unsupported, ModelError>>,
    device: impl FnOnce(&E) -> String,
) -> Result<Attempt, ModelError> {
    match prepared {
        Ok(engine) => {
            let device = device(&engine);
            Ok(Ok((Box::new(engine), device)))
        }
        Err(Ok(Unsupported(reason))) => Ok(Err(reason)),
        Err(Err(e)) => Err(e),
    }
}

/// The cuda engine for the bundle, or why it cannot run it (`Ok(Err(reason))`).
#[cfg(feature = "cuda")]
fn prepare_cuda(bundle: &VerifiedBundle) -> Result<Attempt, ModelError> {
    attempt(cuda::CudaEngine::prepare(bundle), cuda::CudaEngine::device)
}

#[cfg(not(feature = "cuda"))]
fn prepare_cuda(_bundle: &VerifiedBundle) -> Result<Attempt, ModelError> {
    Ok(Err("not built into this runtime (feature `cuda`)".into()))
}

/// The gpu engine for the bundle, or why it cannot run it (`Ok(Err(reason))`).
#[cfg(feature = "gpu")]
fn prepare_gpu(bundle: &VerifiedBundle) -> Result<Attempt, ModelError> {
    attempt(gpu::GpuEngine::prepare(bundle), gpu::GpuEngine::adapter)
}

#[cfg(not(feature = "gpu"))]
fn prepare_gpu(_bundle: &VerifiedBundle) -> Result<Attempt, ModelError> {
    Ok(Err("not built into this runtime (feature `gpu`)".into()))
}
