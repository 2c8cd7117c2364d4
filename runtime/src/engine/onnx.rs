//! The ONNX front end (feature `onnx`): tract's ONNX parser with the operators the runtime adds,
//! the payload's inputs checked against the manifest, and [`translate`], the packer's step from
//! an ONNX graph to the optimized payload ([`super::nnef`]). Device builds leave it out: they
//! read only the optimized payload.

use tract_onnx::prelude::*;

use super::manifest_facts::{check_input_names, datum, load_err, manifest_dims};
use crate::bundle::{InputSpec, VerifiedBundle};
use crate::error::ModelError;

/// tract's ONNX parser as the runtime uses it everywhere (engine, quantizer, packer): with the
/// operators the runtime adds (QOperator ops, classical ML, a vectorizable LRN) and the shape
/// hints in the file ignored (tract loads models with symbolic dims reliably only so; the
/// runtime sets the input facts itself).
pub fn onnx_parser() -> tract_onnx::Onnx {
    let mut onnx = tract_onnx::onnx();
    super::qops::register(&mut onnx.op_register);
    super::ml::register(&mut onnx.op_register);
    if super::own_kernels() {
        super::lrn::register(&mut onnx.op_register);
    }
    onnx.with_ignore_output_shapes(true)
        .with_ignore_value_info(true)
}

/// [`onnx_parser`] for the packer's translation: constant weights behind `DequantizeLinear` stay
/// 8-bit ([`super::const_weights::QuantizedWeights`]) so the optimized payload stays as small as
/// the ONNX file.
fn translation_parser() -> tract_onnx::Onnx {
    let mut onnx = onnx_parser();
    super::qops::register_for_translation(&mut onnx.op_register);
    onnx
}

/// `onnx` parsed by `parser`, its inputs checked against the manifest's (count, names), given
/// their facts (named dims as symbols) and typed.
fn typed(
    parser: tract_onnx::Onnx,
    onnx: &[u8],
    inputs: &[InputSpec],
) -> Result<TypedModel, ModelError> {
    let mut model = parser.model_for_read(&mut &onnx[..]).map_err(load_err)?;
    let outlets = model.input_outlets().map_err(load_err)?.to_vec();
    check_input_names(
        outlets.iter().map(|o| model.node(o.node).name.as_str()),
        inputs,
    )?;
    for (ix, spec) in inputs.iter().enumerate() {
        let dims = manifest_dims(spec, &model.symbols);
        model
            .set_input_fact(ix, InferenceFact::dt_shape(datum(spec.dtype), dims))
            .map_err(load_err)?;
    }
    model.into_typed().map_err(load_err)
}

/// A verified bundle's ONNX payload, typed ([`typed`] with [`onnx_parser`]).
pub(crate) fn typed_payload(bundle: &VerifiedBundle) -> Result<TypedModel, ModelError> {
    typed(onnx_parser(), bundle.payload(), &bundle.manifest().inputs)
}

/// An ONNX graph as the optimized payload: parsed (inputs checked against `inputs`), typed with
/// the manifest's input facts, decluttered by tract (a quantized graph without its layout pass,
/// `ChangeAxes`, which the device runs or skips for its own instruction set), tract-onnx's private
/// `DynamicQuantizeLinear` replaced by ours, and written as NNEF. What the translation gave up
/// (a declutter pass that failed on this graph) comes back as warnings.
pub fn translate(onnx: &[u8], inputs: &[InputSpec]) -> Result<(Vec<u8>, Vec<String>), ModelError> {
    let mut typed = typed(translation_parser(), onnx, inputs)?;
    // decluttered with the 8-bit weights as the constants the device will fold them to (so that
    // tract's rules that need constant weights run here, once), then put back in 8 bits
    let quantized = super::const_weights::fold_quantized_weights(&mut typed).map_err(load_err)?;
    let mut warnings = Vec::new();
    let mut portable = super::optimize::portable_declutter(typed, &mut warnings);
    super::dynamic_quant::replace_tracts_op(&mut portable).map_err(load_err)?;
    if !quantized.is_empty() {
        super::const_weights::requantize(&mut portable, &quantized).map_err(load_err)?;
        portable.properties.insert(
            super::const_weights::DECLUTTERED_FOLDED.to_string(),
            tensor0(1i64).into_arc_tensor(),
        );
    }
    let payload = super::nnef::write(&portable).map_err(|e| ModelError::EngineLoad {
        engine: "cpu",
        reason: format!("the graph has no optimized (NNEF) form: {e:#}"),
    })?;
    Ok((payload, warnings))
}
