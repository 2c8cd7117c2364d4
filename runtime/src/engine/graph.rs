//! The verified payload as a typed graph, whatever its format: an ONNX payload parsed, given the
//! manifest's input facts and typed (feature `onnx`), or the pack-time optimized payload
//! ([`super::nnef`]) read back; either way checked against the manifest's inputs (count, names,
//! element types, shapes) before any engine sees it.

use tract_nnef::prelude::*;

use super::manifest_facts::{check_input_names, datum, load_err, manifest_dims};
use crate::bundle::{InputSpec, PayloadFormat, VerifiedBundle};
use crate::error::ModelError;

/// The payload formats this build reads (what a device reports in its capabilities).
pub fn payload_formats() -> Vec<PayloadFormat> {
    let mut formats = vec![PayloadFormat::Nnef];
    if cfg!(feature = "onnx") {
        formats.push(PayloadFormat::Onnx);
    }
    formats
}

/// The bundle's graph, typed, with the manifest's input facts (named dims as symbols). An ONNX
/// payload comes out as tract types it (not yet decluttered); an optimized payload as the packer
/// decluttered it.
#[cfg(any(feature = "gpu", feature = "cuda"))]
pub(crate) fn typed(bundle: &VerifiedBundle) -> Result<TypedModel, ModelError> {
    typed_and_decluttered(bundle).map(|(model, _)| model)
}

/// [`typed`], and whether the graph is as decluttered as the packer could make it (an
/// optimized payload whose weights were not 8-bit: folding those gives declutter new constants
/// to work with).
pub(crate) fn typed_and_decluttered(
    bundle: &VerifiedBundle,
) -> Result<(TypedModel, bool), ModelError> {
    let manifest = bundle.manifest();
    match manifest.payload.format {
        PayloadFormat::Onnx => onnx_typed(bundle).map(|m| (m, false)),
        PayloadFormat::Nnef => {
            let mut model = super::nnef::load(bundle.payload()).map_err(load_err)?;
            check_inputs(&model, &manifest.inputs)?;
            let folded =
                super::const_weights::fold_quantized_weights(&mut model).map_err(load_err)?;
            // the packer decluttered it as it is now, or (a payload of an earlier packer) with
            // the weights still 8-bit: then tract's declutter has the constants to see again
            let decluttered = folded.is_empty()
                || model
                    .properties
                    .contains_key(super::const_weights::DECLUTTERED_FOLDED);
            Ok((model, decluttered))
        }
    }
}

#[cfg(feature = "onnx")]
fn onnx_typed(bundle: &VerifiedBundle) -> Result<TypedModel, ModelError> {
    super::onnx::typed_payload(bundle)
}

#[cfg(not(feature = "onnx"))]
fn onnx_typed(_: &VerifiedBundle) -> Result<TypedModel, ModelError> {
    Err(ModelError::UnsupportedPayload {
        format: PayloadFormat::Onnx,
        hint: "this device build reads only the optimized payload ('nnef'); repack the model \
               with `edgectl pack` (which writes it by default), or build the agent with the \
               runtime's `onnx` feature"
            .into(),
    })
}

/// The graph's inputs against the manifest's: as many, the same names in order, the same
/// element types and ranks, and equal fixed dims (a named dim is the symbol of that name).
fn check_inputs(model: &TypedModel, inputs: &[InputSpec]) -> Result<(), ModelError> {
    let outlets = model.input_outlets().map_err(load_err)?;
    check_input_names(
        outlets.iter().map(|o| model.node(o.node).name.as_str()),
        inputs,
    )?;
    for (outlet, spec) in outlets.iter().zip(inputs) {
        let name = &model.node(outlet.node).name;
        let fact = model.outlet_fact(*outlet).map_err(load_err)?;
        let want = manifest_dims(spec, &model.symbols);
        if fact.datum_type.unquantized() != datum(spec.dtype) || fact.shape.to_tvec() != want {
            return Err(ModelError::Spec(format!(
                "graph input '{name}' is {:?} {:?}, the manifest says {:?} {:?}",
                fact.datum_type, fact.shape, spec.dtype, spec.shape
            )));
        }
    }
    Ok(())
}
