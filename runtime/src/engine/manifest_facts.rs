//! The manifest's inputs in tract's terms (element types, dims) and the CPU engine's load error:
//! what the payload readers ([`super::graph`], [`super::onnx`]) and the engine ([`super::cpu`])
//! share, so that none of them reaches into another for it.

use tract_nnef::prelude::*;

use crate::bundle::{Dim, InputSpec};
use crate::error::ModelError;
use crate::tensor::DType;

/// A tract failure while preparing a model, as the CPU engine reports it.
pub(crate) fn load_err(e: impl std::fmt::Display) -> ModelError {
    ModelError::EngineLoad {
        engine: "cpu",
        reason: format!("{e:#}"),
    }
}

/// The tract element type of a manifest type.
pub(crate) fn datum(dt: DType) -> DatumType {
    match dt {
        DType::F32 => f32::datum_type(),
        DType::F64 => f64::datum_type(),
        DType::I64 => i64::datum_type(),
        DType::I32 => i32::datum_type(),
        DType::U8 => u8::datum_type(),
        DType::I8 => i8::datum_type(),
    }
}

/// An input's shape as the manifest gives it: fixed dims as numbers, named ones as the symbol of
/// that name in `symbols`.
pub(crate) fn manifest_dims(spec: &InputSpec, symbols: &SymbolScope) -> TVec<TDim> {
    spec.shape
        .iter()
        .map(|d| match d {
            Dim::Fixed(n) => TDim::from(*n as i64),
            Dim::Named(s) => symbols.sym(s).into(),
        })
        .collect()
}

/// The graph's input names (in order) against the manifest's inputs: as many, the same names.
pub(crate) fn check_input_names<'a>(
    names: impl ExactSizeIterator<Item = &'a str>,
    inputs: &[InputSpec],
) -> Result<(), ModelError> {
    if names.len() != inputs.len() {
        return Err(ModelError::Spec(format!(
            "the graph has {} input(s) but the manifest describes {}",
            names.len(),
            inputs.len()
        )));
    }
    for (ix, (name, spec)) in names.zip(inputs).enumerate() {
        if name != spec.name {
            return Err(ModelError::Spec(format!(
                "graph input {ix} is named '{name}', the manifest says '{}'",
                spec.name
            )));
        }
    }
    Ok(())
}
