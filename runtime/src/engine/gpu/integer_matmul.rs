//! Integer matrix products (ONNX `MatMulInteger`, which tract parses into an `EinSum` with
//! quantization inputs and an int32 output) as float ones for the `gpu` engine:
//! `(a - a0) · (b - b0)` with the constant `b - b0` folded at load, then [`IntegralToI32`], whose
//! round trip with the graph's cast back to f32 `dynamic_quant::substitute` drops. The sum is the
//! int32 one while it stays under 2^24 and within float rounding past that; the graph scales it
//! by `a_scale · b_scale` right after, as with `ConvInteger` (see `qops`). Only the form every
//! quantizer emits is rewritten: unit scales, a zero output offset and bias, constant weights,
//! one zero point per operand; any other stays and the lowering reports it.

use tract_nnef::prelude::*;
use tract_nnef::tract_core::ops::cast::cast;
use tract_nnef::tract_core::ops::change_axes::wire_with_rank_broadcast;
use tract_nnef::tract_core::ops::change_axes::InOut;
use tract_nnef::tract_core::ops::einsum::EinSum;
use tract_nnef::tract_core::ops::math;

use crate::engine::dynamic_quant::IntegralToI32;
use crate::engine::f32_values;

/// Rewrites every integer `EinSum` of the supported form; returns how many.
pub(crate) fn substitute(model: &mut TypedModel) -> TractResult<usize> {
    let mut changed = 0;
    for id in model.eval_order()? {
        let node = model.node(id);
        let Some(op) = node.op_as::<EinSum>() else {
            continue;
        };
        if op.q_params != Some(i32::datum_type()) || node.inputs.len() != 9 {
            continue;
        }
        let konst = |slot: usize| -> TractResult<Option<Vec<f32>>> {
            match &model.outlet_fact(node.inputs[slot])?.konst {
                Some(k) => Ok(Some(f32_values(k)?)),
                None => Ok(None),
            }
        };
        let all = |v: Option<Vec<f32>>, x: f32| v.is_some_and(|v| v.iter().all(|&e| e == x));
        let (Some(b), Some(b0)) = (&model.outlet_fact(node.inputs[1])?.konst, konst(5)?) else {
            continue;
        };
        let a0_volume = model.outlet_fact(node.inputs[3])?.shape.volume();
        let unit_scales = [4, 6, 8]
            .into_iter()
            .map(|slot| konst(slot).map(|k| all(k, 1.0)))
            .collect::<TractResult<Vec<bool>>>()?;
        let no_offsets = all(konst(7)?, 0.0) && all(konst(2)?, 0.0);
        let supported = unit_scales.iter().all(|&u| u) && no_offsets;
        if !supported || b0.len() != 1 || !a0_volume.is_one() {
            continue;
        }
        let centered: Vec<f32> = f32_values(b)?.iter().map(|&v| v - b0[0]).collect();
        let centered = Tensor::from_shape(b.shape(), &centered)?;
        let mut axes = op.axes.clone();
        for slot in (2..9).rev() {
            axes = axes.remove_slot(InOut::In(slot))?;
        }
        let name = node.name.clone();
        let mut patch = TypedModelPatch::default();
        let a = patch.tap_model(model, node.inputs[0])?;
        let a0 = patch.tap_model(model, node.inputs[3])?;
        let float = f32::datum_type();
        let a = patch.wire_node(format!("{name}.a"), cast(float), &[a])?[0];
        let a0 = patch.wire_node(format!("{name}.a0"), cast(float), &[a0])?[0];
        let a = wire_with_rank_broadcast(
            format!("{name}.a_centered"),
            &mut patch,
            math::sub(),
            &[a, a0],
        )?[0];
        let b = patch.add_const(format!("{name}.b_centered"), centered)?;
        let y = patch.wire_node(&name, EinSum::new(axes, float), &[a, b])?[0];
        let y = patch.wire_node(format!("{name}.int"), IntegralToI32, &[y])?[0];
        patch.shunt_outside(model, OutletId::new(id, 0), y)?;
        patch.apply(model)?;
        changed += 1;
    }
    Ok(changed)
}
