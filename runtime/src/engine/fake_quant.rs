//! `QuantizeLinear → DequantizeLinear` pairs on activations (every QDQ model, ours and ONNX
//! Runtime's) as one f32 → f32 op for the CPU engine:
//! `y = (clamp(round_even(x / s_q) + z_q, lo, hi) − z_d) · s_d`.
//!
//! tract 0.23.9 runs the convolutions between them in float anyway, so the pair's only job is
//! the rounding; it ran as two element-wise passes through an 8-bit tensor, the quantize one
//! a closure call per element (~45% of a QDQ MobileNetV2's time here). This op computes the
//! same values (ties to even, saturation, NaN → zero point) in one pass
//! ([`edge_kernels::elementwise::apply_pair`]: AVX-512 intrinsics, the plain loop compiled for
//! AVX2 or any target elsewhere).

use edge_kernels::{Isa, Pair, U8Form};
use tract_nnef::tract_core::internal::*;

use tract_nnef::tract_core::ops::element_wise::ElementWiseOp;
use tract_nnef::tract_core::ops::quant::{DequantizeLinearF32, QuantizeLinearI8, QuantizeLinearU8};

/// Replaces every `DequantizeLinearF32` fed by a `QuantizeLinear` of an f32 value by one op on
/// that value; returns how many it replaced.
pub fn substitute(model: &mut TypedModel) -> TractResult<usize> {
    let mut replaced = 0;
    for id in model.eval_order()? {
        let node = model.node(id);
        let Some(dq) = node.op_as::<DequantizeLinearF32>() else {
            continue;
        };
        let (q_id, moved) = axis_ops_before(model, node.inputs[0].node);
        let q_node = model.node(q_id);
        let Some(q) = q_node.op_as::<ElementWiseOp>() else {
            continue;
        };
        let (inv_scale, zero_point, lo, hi) =
            if let Some(q) = q.0.downcast_ref::<QuantizeLinearU8>() {
                (q.scale, q.zero_point as f32, 0f32, 255f32)
            } else if let Some(q) = q.0.downcast_ref::<QuantizeLinearI8>() {
                (q.scale, q.zero_point as f32, -128f32, 127f32)
            } else {
                continue;
            };
        let x = q_node.inputs[0];
        if model.outlet_fact(x)?.datum_type != f32::datum_type() {
            continue;
        }
        let op = FakeQuant {
            inv_scale: inv_scale.to_bits(),
            zero_point: zero_point.to_bits(),
            lo: lo.to_bits(),
            hi: hi.to_bits(),
            dq_scale: dq.scale.to_bits(),
            dq_zero_point: dq.zero_point,
        };
        // axis ops between the two steps (tract's declutter moves a classifier's flatten in
        // there) commute with them: they go in front, on the f32 values, so the pair is one
        // op that its reader can take (with none, this is `replace_run`'s patch)
        let mut patch = TypedModelPatch::default();
        let mut wire = patch.tap_model(model, x)?;
        for &axis in moved.iter().rev() {
            let n = model.node(axis);
            wire = patch.wire_node(format!("{}.f32", n.name), n.op.clone(), &[wire])?[0];
        }
        let pair = patch.wire_node(&model.node(id).name, op, &[wire])?[0];
        patch.shunt_outside(model, OutletId::new(id, 0), pair)?;
        patch.apply(model)?;
        replaced += 1;
    }
    Ok(replaced)
}

/// The node in front of a chain of axis ops that ends at `node` (each read by the next alone),
/// and the chain, nearest `node` first (empty when `node` is not an axis op).
fn axis_ops_before(model: &TypedModel, mut node: usize) -> (usize, Vec<usize>) {
    let mut chain = Vec::new();
    while model.node(node).op_as::<AxisOp>().is_some()
        && model.node(node).outputs[0].successors.len() == 1
        && model.node(node).inputs.len() == 1
    {
        chain.push(node);
        node = model.node(node).inputs[0].node;
    }
    (node, chain)
}

/// For an op at `input` that can quantize an f32 input itself: when `input` is a pair's output
/// with an 8-bit form, that form and the outlet the op should read instead, the pair's input
/// when the op is its only reader (the pair then drops out of the graph), else the pair's
/// output (whose values quantize back to the same bytes).
pub(crate) fn quantizing_read(
    model: &TypedModel,
    input: OutletId,
) -> TractResult<Option<(OutletId, U8Form)>> {
    let pair = model.node(input.node);
    let Some(form) = pair.op_as::<FakeQuant>().and_then(FakeQuant::as_u8) else {
        return Ok(None);
    };
    let outputs = model.output_outlets()?;
    let read_from = if pair.outputs[0].successors.len() == 1 && !outputs.contains(&input) {
        pair.inputs[0]
    } else {
        input
    };
    Ok(Some((read_from, form)))
}

/// Quantize then dequantize, f32 → f32; parameters as f32 bits (ops are `Eq + Hash`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct FakeQuant {
    /// `1 / scale` of the quantize step (tract's convention)
    inv_scale: u32,
    zero_point: u32,
    lo: u32,
    hi: u32,
    dq_scale: u32,
    dq_zero_point: i32,
}

impl FakeQuant {
    /// The quantize step in unsigned terms, `q = clamp(round_even(x · inv_scale) + zero_point,
    /// 0, 255)` (an i8 pair shifted by 128), when the dequantize step undoes it (same zero
    /// point, scale = 1 / inv_scale): then the pair's output is exactly `(q − zero_point) ·
    /// scale` and an integer kernel may take `q` in its place.
    pub(crate) fn as_u8(&self) -> Option<U8Form> {
        let f = f32::from_bits;
        let (inv, zp, lo, hi, scale) = (
            f(self.inv_scale),
            f(self.zero_point),
            f(self.lo),
            f(self.hi),
            f(self.dq_scale),
        );
        let shift = match (lo, hi) {
            (0.0, 255.0) => 0.0,
            (-128.0, 127.0) => 128.0,
            _ => return None,
        };
        let consistent = zp == self.dq_zero_point as f32
            && scale > 0.0
            && scale.is_finite()
            && ((inv * scale) - 1.0).abs() <= 1e-6;
        consistent.then(|| U8Form::new(inv, zp + shift, scale))
    }

    /// `[1 / scale, zero point, lo, hi]` of the quantize step and `[scale, zero point]` of the
    /// dequantize step, as f32: `y = (clamp(round_even(x · inv) + zp, lo, hi) − dzp) · s`.
    pub(crate) fn parameters(&self) -> [f32; 6] {
        let f = f32::from_bits;
        [
            f(self.inv_scale),
            f(self.zero_point),
            f(self.lo),
            f(self.hi),
            f(self.dq_scale),
            self.dq_zero_point as f32,
        ]
    }

    /// Both steps' parameters, for the kernels.
    pub(crate) fn pair(&self) -> Pair {
        let [inv_scale, zero_point, lo, hi, dq_scale, dq_zero_point] = self.parameters();
        Pair {
            inv_scale,
            zero_point,
            lo,
            hi,
            dq_scale,
            dq_zero_point,
        }
    }

    /// Applies the pair to `data` in place.
    pub fn apply(&self, data: &mut [f32]) {
        edge_kernels::elementwise::apply_pair(Isa::host(), &self.pair(), data)
    }
}

impl Op for FakeQuant {
    fn name(&self) -> StaticName {
        "EdgeQuantizeDequantize".into()
    }

    fn validation(&self) -> Validation {
        Validation::Rounding
    }

    op_as_typed_op!();
}

impl EvalOp for FakeQuant {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let input = args_1!(inputs);
        ensure!(input.datum_type() == f32::datum_type(), "expects f32");
        Ok(tvec!(
            super::map_f32_in_place(input, |data| self.apply(data))?
        ))
    }
}

impl TypedOp for FakeQuant {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        Ok(tvec!(f32::fact(inputs[0].shape.clone())))
    }

    as_op!();
}

#[cfg(test)]
mod tests {
    use super::*;
    use tract_nnef::tract_core::ops::quant::{quantize_linear_i8, quantize_linear_u8};

    /// tract's own pair and ours give the same values, including ties, saturation both ways
    /// and a NaN. (Not ±∞ or |x/s| past i32: tract's own pair overflows there.)
    #[test]
    fn matches_tracts_quantize_then_dequantize() {
        let mut xs: Vec<f32> = (0..500).map(|i| (i as f32 - 250.0) * 0.0173).collect();
        xs.extend([0.025, -0.025, 0.075, 100.0, -100.0, f32::NAN]);
        for signed in [false, true] {
            let mut model = TypedModel::default();
            let x = model.add_source("x", f32::fact([xs.len()])).unwrap();
            let (q, zp) = if signed {
                (quantize_linear_i8(1.0 / 0.05, -3), -3)
            } else {
                (quantize_linear_u8(1.0 / 0.05, 128), 128)
            };
            let y = model.wire_node("q", q, &[x]).unwrap();
            let dq = DequantizeLinearF32 {
                scale: 0.05,
                zero_point: zp,
            };
            let y = model.wire_node("dq", dq, &y).unwrap();
            model.select_output_outlets(&y).unwrap();
            let input = tensor1(&xs);
            let run = |model: TypedModel| super::super::run_f32(model, &input, false);
            let want = run(model.clone());
            let mut ours = model;
            assert_eq!(substitute(&mut ours).unwrap(), 1);
            let got = run(ours);
            for ((a, b), x) in got.iter().zip(&want).zip(&xs) {
                assert_eq!(a.to_bits(), b.to_bits(), "x = {x}: {a} vs {b}");
            }
        }
    }
}
