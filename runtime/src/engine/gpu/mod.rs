//! The `gpu` engine: tract parses and declutters the graph, `lower` turns it into WGSL compute
//! dispatches (kernels in `kernels`), `exec` plans the device buffers once and runs one command
//! submission per inference. Shapes are fixed per plan: the manifest's shapes with named dims at
//! 1 are planned at load; other input shapes get their own plan on first sight (a few are kept).

mod device;
mod exec;
mod kernels;
mod lower;

use std::sync::{Arc, Mutex};

use tract_onnx::prelude::*;

use super::cpu::{load_err, output_labels, parse_checked, set_input_facts};
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
    parsed: InferenceModel,
    bundle_inputs: Vec<InputSpec>,
    outputs: Vec<String>,
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
/// folded into f32 constants, and each activation's quantize → dequantize pair made one f32 op
/// (what the CPU engine does first too), so QDQ and QOperator models lower like float ones.
fn fold_quantization(mut typed: TypedModel) -> TractResult<TypedModel> {
    super::const_weights::substitute(&mut typed)?;
    super::fake_quant::substitute(&mut typed)?;
    Ok(typed)
}

impl GpuEngine {
    /// Plans the bundle's graph on the device. `Err(Ok(reason))`: the model should run on the
    /// CPU instead (no device, or an op the kernels lack); `Err(Err(e))`: the model is bad.
    pub fn prepare(bundle: &VerifiedBundle) -> Result<GpuEngine, Result<Unsupported, ModelError>> {
        let gpu = device::gpu().map_err(|e| Ok(Unsupported(e)))?;
        let parsed = parse_checked(bundle).map_err(Err)?;
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
            parsed,
            bundle_inputs,
            outputs: Vec::new(),
            plans: Mutex::new(Vec::new()),
        };
        let (typed, plan) = engine.plan(&shapes)?;
        engine.outputs = output_labels(&typed).map_err(|e| Err(load_err(e)))?;
        engine.plans.lock().unwrap().push(Arc::new(plan));
        Ok(engine)
    }

    /// Lowers and plans the graph for these input shapes.
    fn plan(
        &self,
        shapes: &[Vec<usize>],
    ) -> Result<(TypedModel, Executable), Result<Unsupported, ModelError>> {
        let mut model = self.parsed.clone();
        set_input_facts(&mut model, &self.bundle_inputs, Some(shapes))
            .map_err(|e| Err(load_err(e)))?;
        let typed = model
            .into_typed()
            .and_then(|m| m.into_decluttered())
            .and_then(fold_quantization)
            .map_err(|e| Err(load_err(e)))?;
        let max_groups = self.gpu.limits.max_compute_workgroups_per_dimension;
        let program = lower::lower(&typed, max_groups).map_err(|r| Ok(Unsupported(r)))?;
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
        let data: Vec<&[f32]> = inputs
            .iter()
            .map(|t| match &t.data {
                TensorData::F32(v) => Ok(v.as_slice()),
                _ => Err(run_err("the gpu engine takes f32 inputs")),
            })
            .collect::<Result<_, _>>()?;
        let outputs = plan.run(&data).map_err(run_err)?;
        Ok(outputs
            .into_iter()
            .map(|(shape, values)| EfTensor {
                shape,
                data: TensorData::F32(values),
            })
            .collect())
    }
}
