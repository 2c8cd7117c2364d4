//! The `gpu` engine: the typed graph ([`super::graph`]) made concrete and decluttered, the exact quantization rewrites make
//! its tensors f32 (`fold_quantization`, `integer_matmul`), `lower` turns it into WGSL compute
//! dispatches (kernels in `kernels`), `exec` plans the device buffers once and runs one command
//! submission per inference. Shapes are fixed per plan: the manifest's shapes with named dims at
//! 1 are planned at load; other input shapes get their own plan on first sight (a few are kept).

mod device;
mod exec;
mod integer_matmul;
mod kernels;
mod lower;

use std::sync::{Arc, Mutex};

use tract_nnef::prelude::*;

use super::cpu::output_labels;
use super::manifest_facts::load_err;
use super::{Engine, Unsupported};
use crate::bundle::{Dim, InputSpec, VerifiedBundle};
use crate::error::ModelError;
use crate::tensor::{Tensor as EfTensor, TensorData};

use exec::Executable;

/// Plans kept per model (one per distinct input shape set).
const MAX_PLANS: usize = 4;

/// wgpu compute.
pub struct GpuEngine {
    gpu: Arc<device::Gpu>,
    /// The bundle's typed graph, named dims symbolic (made concrete per plan).
    typed: TypedModel,
    bundle_inputs: Vec<InputSpec>,
    outputs: Vec<String>,
    /// Each output's element type (integer outputs come back from the device as exact f32).
    output_types: Vec<DatumType>,
    plans: Mutex<Vec<Arc<Executable>>>,
}

impl std::fmt::Debug for GpuEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "GpuEngine({:?})", self.gpu)
    }
}

fn run_err(e: impl std::fmt::Display) -> ModelError {
    ModelError::EngineRun {
        engine: "gpu",
        reason: e.to_string(),
    }
}

/// The adapter the gpu engine would use, or why there is none.
pub fn adapter() -> Result<String, String> {
    device::gpu().map(|g| g.describe())
}

/// The exact rewrites that leave a quantized graph's tensors f32: dequantized constant weights
/// folded into f32 constants, integer matrix products as float ones, dynamic quantization as our
/// one `DynamicQuantize` op (lowered to a range and a quantize kernel) with the int32 round trip
/// after each ConvInteger and MatMulInteger dropped, and each
/// activation's quantize → dequantize pair made one f32 op (what the CPU engine does first too),
/// so QDQ, QOperator and dynamic models lower like float ones.
fn fold_quantization(mut typed: TypedModel) -> TractResult<TypedModel> {
    super::const_weights::substitute(&mut typed)?;
    integer_matmul::substitute(&mut typed)?;
    super::dynamic_quant::substitute(&mut typed)?;
    super::fake_quant::substitute(&mut typed)?;
    Ok(typed)
}

/// Integer inputs (token ids, masks) as the f32 values the kernels hold them in: exact up to
/// 2^24, refused beyond.
fn integers_as_f32(
    values: impl Iterator<Item = i64>,
) -> Result<std::borrow::Cow<'static, [f32]>, ModelError> {
    const EXACT: i64 = 1 << 24;
    values
        .map(|v| {
            if (-EXACT..=EXACT).contains(&v) {
                Ok(v as f32)
            } else {
                Err(run_err(format!(
                    "integer input {v} is beyond 2^24, which the gpu kernels cannot hold exactly"
                )))
            }
        })
        .collect::<Result<Vec<f32>, _>>()
        .map(std::borrow::Cow::Owned)
}

/// `typed` with each named input dim set to its size in `shapes` (one shape per input).
fn concrete(
    typed: &TypedModel,
    inputs: &[InputSpec],
    shapes: &[Vec<usize>],
) -> TractResult<TypedModel> {
    let mut values = std::collections::HashMap::new();
    for (spec, shape) in inputs.iter().zip(shapes) {
        tract_nnef::tract_core::internal::ensure!(
            spec.shape.len() == shape.len(),
            "input '{}' has rank {}, not {}",
            spec.name,
            shape.len(),
            spec.shape.len()
        );
        for (d, &n) in spec.shape.iter().zip(shape) {
            if let Dim::Named(name) = d {
                values.insert(typed.symbols.sym(name), TDim::Val(n as i64));
            }
        }
    }
    typed.set_symbols(&values)
}

impl GpuEngine {
    /// Plans the bundle's graph on the device. `Err(Ok(reason))`: the model should run on the
    /// CPU instead (no device, or an op the kernels lack); `Err(Err(e))`: the model is bad.
    pub fn prepare(bundle: &VerifiedBundle) -> Result<GpuEngine, Result<Unsupported, ModelError>> {
        let gpu = device::gpu().map_err(|e| Ok(Unsupported(e)))?;
        let typed = super::graph::typed(bundle).map_err(Err)?;
        let bundle_inputs = bundle.manifest().inputs.clone();
        let shapes: Vec<Vec<usize>> = bundle_inputs
            .iter()
            .map(|s| {
                s.shape
                    .iter()
                    .map(|d| match d {
                        Dim::Fixed(n) => *n as usize,
                        Dim::Named(_) => 1,
                    })
                    .collect()
            })
            .collect();
        let mut engine = GpuEngine {
            gpu,
            typed,
            bundle_inputs,
            outputs: Vec::new(),
            output_types: Vec::new(),
            plans: Mutex::new(Vec::new()),
        };
        let (typed, plan) = engine.plan(&shapes)?;
        engine.outputs = output_labels(&typed).map_err(|e| Err(load_err(e)))?;
        engine.output_types = typed
            .output_outlets()
            .and_then(|o| {
                o.iter()
                    .map(|&o| Ok(typed.outlet_fact(o)?.datum_type))
                    .collect()
            })
            .map_err(|e| Err(load_err(e)))?;
        engine.plans.lock().unwrap().push(Arc::new(plan));
        Ok(engine)
    }

    /// Lowers and plans the graph for these input shapes.
    fn plan(
        &self,
        shapes: &[Vec<usize>],
    ) -> Result<(TypedModel, Executable), Result<Unsupported, ModelError>> {
        let typed = concrete(&self.typed, &self.bundle_inputs, shapes)
            .and_then(|m| m.into_decluttered())
            .and_then(fold_quantization)
            .map_err(|e| Err(load_err(e)))?;
        let max_groups = self.gpu.limits.max_compute_workgroups_per_dimension;
        let max_binding = self.gpu.limits.max_storage_buffer_binding_size as u64;
        let program =
            lower::lower(&typed, max_groups, max_binding).map_err(|r| Ok(Unsupported(r)))?;
        let exec = Executable::build(self.gpu.clone(), program).map_err(|r| Ok(Unsupported(r)))?;
        Ok((typed, exec))
    }

    /// The plan for these input shapes, made now if new.
    fn plan_for(&self, shapes: &[Vec<usize>]) -> Result<Arc<Executable>, ModelError> {
        let mut plans = self.plans.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(p) = plans.iter().find(|p| p.input_shapes() == shapes) {
            return Ok(p.clone());
        }
        let exec = match self.plan(shapes) {
            Ok((_, exec)) => Arc::new(exec),
            Err(Ok(Unsupported(reason))) => return Err(run_err(reason)),
            Err(Err(e)) => return Err(e),
        };
        if plans.len() >= MAX_PLANS {
            plans.remove(1); // keep the load-time plan
        }
        plans.push(exec.clone());
        Ok(exec)
    }

    /// The adapter this engine runs on.
    pub fn adapter(&self) -> String {
        self.gpu.describe()
    }
}

impl Engine for GpuEngine {
    fn name(&self) -> &'static str {
        "gpu"
    }

    fn output_names(&self) -> &[String] {
        &self.outputs
    }

    fn run(&self, inputs: Vec<EfTensor>) -> Result<Vec<EfTensor>, ModelError> {
        let shapes: Vec<Vec<usize>> = inputs.iter().map(|t| t.shape.clone()).collect();
        let plan = self.plan_for(&shapes)?;
        let held: Vec<std::borrow::Cow<[f32]>> = inputs
            .iter()
            .map(|t| match &t.data {
                TensorData::F32(v) => Ok(std::borrow::Cow::Borrowed(v.as_slice())),
                TensorData::I64(v) => integers_as_f32(v.iter().copied()),
                TensorData::I32(v) => integers_as_f32(v.iter().map(|&x| i64::from(x))),
                _ => Err(run_err("the gpu engine takes f32, i64 or i32 inputs")),
            })
            .collect::<Result<_, _>>()?;
        let data: Vec<&[f32]> = held.iter().map(|v| v.as_ref()).collect();
        let outputs = plan.run(&data).map_err(run_err)?;
        Ok(outputs
            .into_iter()
            .zip(&self.output_types)
            .map(|((shape, values), &dt)| {
                let data = if dt == i64::datum_type() {
                    TensorData::I64(values.iter().map(|&v| v as i64).collect())
                } else if dt == i32::datum_type() {
                    TensorData::I32(values.iter().map(|&v| v as i32).collect())
                } else if dt == u8::datum_type() {
                    TensorData::U8(values.iter().map(|&v| v as u8).collect())
                } else if dt == i8::datum_type() {
                    TensorData::I8(values.iter().map(|&v| v as i8).collect())
                } else {
                    TensorData::F32(values)
                };
                EfTensor { shape, data }
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    /// Integer inputs are held as f32 exactly up to 2^24; beyond, the run is refused.
    #[test]
    fn integer_inputs_beyond_2_to_the_24_are_refused() {
        let held = super::integers_as_f32([3i64, -1, 1 << 24, -(1 << 24)].into_iter()).unwrap();
        assert_eq!(held.as_ref(), [3.0, -1.0, 16_777_216.0, -16_777_216.0]);
        let err = super::integers_as_f32([7i64, (1 << 24) + 1].into_iter()).unwrap_err();
        assert!(err.to_string().contains("16777217"), "{err}");
    }
}
