//! Dequantize steps on constant weights that tract leaves in the graph, folded into one f32
//! constant at load.
//!
//! tract folds a `DequantizeLinear` of a convolution's int8 weights at declutter, but not the
//! `Cast → Mul` it expands a Gemm's per-channel one into (its constant propagation skips values
//! that grow: int8 → f32). Left there, a QDQ MobileNetV2 cast, scaled and re-packed its
//! 1000×1280 classifier weights on every run (~25% of its time). Folded, tract's optimizer
//! prepacks them once, as for a float model.

use tract_onnx::tract_hir::internal::*;
use tract_onnx::tract_hir::tract_core::ops::binary::TypedBinOp;
use tract_onnx::tract_hir::tract_core::ops::cast::Cast;

/// Replaces every `Cast` or binary op whose inputs are all constants and whose output is f32 by
/// its value; returns how many it replaced.
pub fn substitute(model: &mut TypedModel) -> TractResult<usize> {
    let mut replaced = 0;
    for id in model.eval_order()? {
        let node = model.node(id);
        if !(node.op_is::<Cast>() || node.op_is::<TypedBinOp>())
            || node.outputs.len() != 1
            || model.outlet_fact(OutletId::new(id, 0))?.datum_type != f32::datum_type()
        {
            continue;
        }
        let Some(inputs) = node
            .inputs
            .iter()
            .map(|&i| Ok(model.outlet_fact(i)?.konst.clone()))
            .collect::<TractResult<Option<TVec<Arc<Tensor>>>>>()?
        else {
            continue;
        };
        let inputs = inputs.into_iter().map(|t| t.into_tvalue()).collect();
        let Some(mut value) = node.op.eval_out_of_plan(inputs)? else {
            continue;
        };
        let value = value.remove(0).into_tensor();
        let mut patch = TypedModelPatch::default();
        let konst = patch.add_const(&node.name, value)?;
        patch.shunt_outside(model, OutletId::new(id, 0), konst)?;
        patch.apply(model)?;
        replaced += 1;
    }
    Ok(replaced)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tract_onnx::tract_hir::tract_core::ops::cast::cast;
    use tract_onnx::tract_hir::tract_core::ops::math::mul;

    /// An int8 weight cast and scaled per row feeding a matmul-like consumer becomes one
    /// constant with the same values; a chain that reads the input is left alone.
    #[test]
    fn a_cast_and_scaled_constant_becomes_one_constant() {
        // 32 values: tract folds constants under 16 elements itself, as it wires them
        let q: Vec<i8> = (0..32).map(|k| (k * 37 % 256 - 128) as i8).collect();
        let scales = [0.5f32, 0.25, 2.0, 1.0];
        let mut model = TypedModel::default();
        let x = model.add_source("x", f32::fact([4, 8])).unwrap();
        let q_const = Tensor::from_shape(&[4, 8], &q).unwrap();
        let q_wire = model.add_const("q", q_const).unwrap();
        let s = model
            .add_const("s", Tensor::from_shape(&[4, 1], &scales).unwrap())
            .unwrap();
        let f = model
            .wire_node("cast", cast(f32::datum_type()), &[q_wire])
            .unwrap();
        let w = model.wire_node("scale", mul(), &[f[0], s]).unwrap();
        let y = model.wire_node("apply", mul(), &[x, w[0]]).unwrap();
        model.select_output_outlets(&y).unwrap();
        let input = Tensor::from_shape(&[4, 8], &[1f32; 32]).unwrap();
        let want = super::super::run_f32(model.clone(), &input, false);
        assert_eq!(substitute(&mut model).unwrap(), 2);
        let model = model.into_compact().unwrap();
        assert!(!model.nodes().iter().any(|n| n.op_is::<Cast>()));
        assert_eq!(super::super::run_f32(model, &input, false), want);
        let expected: Vec<f32> = (0..32).map(|k| q[k] as f32 * scales[k / 8]).collect();
        assert_eq!(want, expected);
    }
}
