//! Engines run a verified model's graph. One trait, chosen by name; the rest of the system never
//! knows which engine runs. Today: `cpu` (tract). `gpu` (wgpu) and `cuda` come with issue 9.

mod cpu;
mod qops;

use crate::bundle::VerifiedBundle;
use crate::error::ModelError;
use crate::tensor::Tensor;

pub use cpu::CpuEngine;

/// tract's ONNX parser as the runtime uses it everywhere (engine, quantizer): with the operators
/// the runtime adds (QOperator ops) and the shape hints in the file ignored (tract loads models
/// with symbolic dims reliably only so; the runtime sets the input facts itself).
pub fn onnx_parser() -> tract_onnx::Onnx {
    let mut onnx = tract_onnx::onnx();
    qops::register(&mut onnx.op_register);
    onnx.with_ignore_output_shapes(true)
        .with_ignore_value_info(true)
}

/// A tensor's values as f32 (any numeric type, any layout).
pub(crate) fn f32_values(
    t: &tract_onnx::prelude::Tensor,
) -> tract_onnx::prelude::TractResult<Vec<f32>> {
    Ok(t.cast_to::<f32>()?
        .to_plain_array_view::<f32>()?
        .iter()
        .copied()
        .collect())
}

/// A prepared model graph, ready to run. Implementations are shared across threads.
pub trait Engine: Send + Sync + std::fmt::Debug {
    /// Engine name (`cpu`, ...).
    fn name(&self) -> &'static str;
    /// Output names, in the order `run` returns them.
    fn output_names(&self) -> &[String];
    /// Runs the graph on already validated and normalized inputs (graph input order).
    fn run(&self, inputs: Vec<Tensor>) -> Result<Vec<Tensor>, ModelError>;
}

/// Which engine to use.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum EngineKind {
    /// tract on the CPU.
    #[default]
    Cpu,
}

impl std::str::FromStr for EngineKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "cpu" | "auto" => Ok(EngineKind::Cpu),
            "gpu" | "cuda" => Err(format!(
                "engine '{s}' is not built into this runtime yet; use 'cpu'"
            )),
            other => Err(format!(
                "unknown engine '{other}' (expected cpu, gpu, cuda or auto)"
            )),
        }
    }
}

/// Engine settings from the device (they override the bundle's hints).
#[derive(Clone, Debug, Default)]
pub struct EngineOptions {
    /// Engine to use; `None` = the bundle's hint, else cpu.
    pub kind: Option<EngineKind>,
    /// Intra-op threads; `None` = the bundle's hint, else 1.
    pub threads: Option<usize>,
}

/// Prepares the engine for a verified bundle.
pub fn prepare(
    bundle: &VerifiedBundle,
    options: &EngineOptions,
) -> Result<Box<dyn Engine>, ModelError> {
    let hints = &bundle.manifest().engine;
    let kind = match options.kind {
        Some(k) => k,
        None => match hints.engine.as_deref() {
            // a hint for an engine this build lacks falls back to the CPU
            Some(h) => h.parse().unwrap_or_default(),
            None => EngineKind::Cpu,
        },
    };
    let threads = options
        .threads
        .or(hints.threads.map(|t| t as usize))
        .unwrap_or(1)
        .max(1);
    match kind {
        EngineKind::Cpu => Ok(Box::new(CpuEngine::prepare(bundle, threads)?)),
    }
}
