//! Dequantize steps on constant weights that tract leaves in the graph, folded into one f32
//! constant at load.
//!
//! tract folds a `DequantizeLinear` of a convolution's int8 weights at declutter, but not the
//! `Cast → Mul` it expands a Gemm's per-channel one into (its constant propagation skips values
//! that grow: int8 → f32). Left there, a QDQ MobileNetV2 cast, scaled and re-packed its
//! 1000×1280 classifier weights on every run (~25% of its time). Folded, tract's optimizer
//! prepacks them once, as for a float model.

use tract_nnef::tract_core::internal::*;
use tract_nnef::tract_core::ops::binary::TypedBinOp;
use tract_nnef::tract_core::ops::cast::Cast;

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
    use tract_nnef::tract_core::ops::cast::cast;
    use tract_nnef::tract_core::ops::math::mul;

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

/// `(k − zp) · scale` over a constant, per tensor (one scale and zero point) or per index of
/// `axis`, as one f32 tensor: one run of values per index of `axis`, no division per value.
pub(crate) fn dequantized_constant(
    k: &Tensor,
    scale: &[f32],
    zp: &[f32],
    axis: usize,
) -> TractResult<Tensor> {
    ensure!(
        !scale.is_empty() && !zp.is_empty(),
        "empty scale or zero point"
    );
    let shape = k.shape().to_vec();
    let per = if scale.len() > 1 || zp.len() > 1 {
        ensure!(
            axis < shape.len(),
            "per-axis parameters on a rank {} tensor",
            shape.len()
        );
        shape[axis]
    } else {
        1
    };
    let inner = shape[axis.min(shape.len())..]
        .iter()
        .skip(1)
        .product::<usize>()
        .max(1);
    // written straight into the tensor's own storage, 8-bit values widened on the way (tract's
    // generic cast and the copy of a vector into a tensor were ~15 % of a QDQ model's load)
    let mut out = Tensor::zero::<f32>(&shape)?;
    let mut view = out.try_as_plain_ram_mut()?;
    let dst = view.as_slice_mut::<f32>()?;
    let plain = k.try_as_plain_ram()?;
    let params = (scale, zp, per, inner);
    match k.datum_type().unquantized() {
        DatumType::I8 => dequantize_runs(dst, plain.as_slice::<i8>()?, params),
        DatumType::U8 => dequantize_runs(dst, plain.as_slice::<u8>()?, params),
        _ => dequantize_runs(dst, &super::f32_values(k)?, params),
    }
    Ok(out)
}

/// `dst = (src − z) · s`, one run of `inner` values per index of the axis (`per` of them, or
/// one set of parameters for the whole tensor when `per` is 1): no division per value.
fn dequantize_runs<T: Copy + Into<f32>>(
    dst: &mut [f32],
    src: &[T],
    (scale, zp, per, inner): (&[f32], &[f32], usize, usize),
) {
    for (j, (run, src)) in dst.chunks_mut(inner).zip(src.chunks(inner)).enumerate() {
        let c = if per > 1 { j % per } else { 0 };
        let (s, z) = (scale[c.min(scale.len() - 1)], zp[c.min(zp.len() - 1)]);
        for (d, &v) in run.iter_mut().zip(src) {
            *d = (v.into() - z) * s;
        }
    }
}

/// Constant 8-bit weights and their dequantization, as one op without inputs: how the optimized
/// payload keeps a QDQ model's weights in 8 bits (an f32 constant would make the payload four
/// times larger). The packer's graph holds it unfolded (`fold: false`: tract's constant
/// propagation leaves it alone); read back on the device it is folded into the f32 constant
/// the ONNX path makes ([`dequantized_constant`]) at the first declutter.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct QuantizedWeights {
    /// The integer values.
    pub(crate) data: Arc<Tensor>,
    /// One scale, or one per index of `axis`.
    pub(crate) scale: super::Floats,
    /// One zero point, or one per index of `axis`.
    pub(crate) zero_point: super::Floats,
    pub(crate) axis: usize,
    /// Whether constant propagation may fold it (on the device).
    pub(crate) fold: bool,
}

impl QuantizedWeights {
    /// The op for `data` with these parameters; checks their lengths against `data`'s `axis`.
    pub fn new(
        data: Arc<Tensor>,
        scale: Vec<f32>,
        zero_point: Vec<f32>,
        axis: usize,
        fold: bool,
    ) -> TractResult<QuantizedWeights> {
        let along = data.shape().get(axis).copied();
        for (what, len) in [("scale", scale.len()), ("zero point", zero_point.len())] {
            ensure!(
                len == 1 || Some(len) == along,
                "quantized weights {:?}: {len} {what} values for axis {axis}",
                data.shape()
            );
        }
        ensure!(
            data.datum_type().unquantized().is_integer(),
            "quantized weights of type {:?}",
            data.datum_type()
        );
        Ok(QuantizedWeights {
            data,
            scale: super::Floats(scale),
            zero_point: super::Floats(zero_point),
            axis,
            fold,
        })
    }
}

impl Op for QuantizedWeights {
    fn name(&self) -> StaticName {
        "EdgeQuantizedWeights".into()
    }

    fn info(&self) -> TractResult<Vec<String>> {
        Ok(vec![format!(
            "{:?} {:?}, {} scale(s) on axis {}",
            self.data.datum_type(),
            self.data.shape(),
            self.scale.0.len(),
            self.axis
        )])
    }

    op_as_typed_op!();
}

impl EvalOp for QuantizedWeights {
    fn eval(&self, _ctx: &EvalContext, _inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let values =
            dequantized_constant(&self.data, &self.scale.0, &self.zero_point.0, self.axis)?;
        Ok(tvec!(values.into_tvalue()))
    }

    fn eval_out_of_plan(&self, inputs: TVec<TValue>) -> TractResult<Option<TVec<TValue>>> {
        if !self.fold {
            return Ok(None);
        }
        Ok(Some(self.eval(&EvalContext::out_of_plan(), inputs)?))
    }
}

impl TypedOp for QuantizedWeights {
    fn output_facts(&self, _inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        Ok(tvec!(f32::fact(self.data.shape())))
    }

    as_op!();
}

/// Replaces every [`QuantizedWeights`] by the f32 constant it stands for: the first step on an
/// optimized payload read back on the device (tract's constant propagation would skip the ones
/// whose value grows past its budget, as every int8 → f32 one does), and the packer's before
/// its declutter (so that tract sees the weights as constants, as the device's ONNX path does).
/// In place, node by node: both ops take no input, so nothing else changes (a patch per node
/// cost ~0.3 ms each on MobileNetV2). Returns the ops folded.
pub(crate) fn fold_quantized_weights(model: &mut TypedModel) -> TractResult<Vec<QuantizedWeights>> {
    use tract_nnef::tract_core::ops::konst::Const;
    let mut folded = Vec::new();
    for node in &mut model.nodes {
        let Some(op) = node.op_as::<QuantizedWeights>() else {
            continue;
        };
        let value = dequantized_constant(&op.data, &op.scale.0, &op.zero_point.0, op.axis)?
            .into_arc_tensor();
        folded.push(op.clone());
        node.outputs[0].fact = TypedFact::try_from(value.clone())?;
        node.op = Box::new(Const::new(value)?);
    }
    Ok(folded)
}

/// The model property the packer sets when it decluttered with the 8-bit weights folded to
/// constants (then put back by [`requantize`]): the device's graph after
/// [`fold_quantized_weights`] is then already decluttered.
pub(crate) const DECLUTTERED_FOLDED: &str = "edgefleet_decluttered_with_folded_weights";

#[cfg(feature = "onnx")]
/// The f32 bits of a tensor, and their digest (to find a constant among the dequantized
/// weights).
fn f32_bits(t: &Tensor) -> TractResult<(Vec<u32>, u64)> {
    use std::hash::{Hash, Hasher};
    let bits: Vec<u32> = super::f32_values(t)?.iter().map(|v| v.to_bits()).collect();
    let mut h = std::hash::DefaultHasher::new();
    bits.hash(&mut h);
    Ok((bits, h.finish()))
}

#[cfg(feature = "onnx")]
impl QuantizedWeights {
    /// The same weights for a constant of `shape` holding the same values in the same order
    /// (tract's declutter reshapes weights, e.g. `[O, I, 1, 1]` to `[O, I]`): `None` when the
    /// per-channel runs do not line up with an axis of `shape`.
    fn reshaped(&self, shape: &[usize]) -> TractResult<Option<QuantizedWeights>> {
        let from = self.data.shape();
        if from.iter().product::<usize>() != shape.iter().product::<usize>() {
            return Ok(None);
        }
        let per_axis = self.scale.0.len() > 1 || self.zero_point.0.len() > 1;
        let axis = if per_axis {
            let inner: usize = from[self.axis + 1..].iter().product();
            match (0..shape.len()).find(|&a| {
                shape[a] == from[self.axis] && shape[a + 1..].iter().product::<usize>() == inner
            }) {
                Some(a) => a,
                None => return Ok(None),
            }
        } else {
            0
        };
        let data = (*self.data).clone().into_shape(shape)?.into_arc_tensor();
        QuantizedWeights::new(
            data,
            self.scale.0.clone(),
            self.zero_point.0.clone(),
            axis,
            false,
        )
        .map(Some)
    }
}

#[cfg(feature = "onnx")]
/// Puts 8-bit weights back where the packer's declutter left a constant holding exactly the
/// values of one of `quantized` (the weights [`fold_quantized_weights`] folded), in the same
/// order: the payload keeps them in 8 bits. A constant the declutter changed (scaled, or
/// transposed) stays f32. Each replacement is checked to give the constant's bits back.
/// Returns how many.
pub(crate) fn requantize(
    model: &mut TypedModel,
    quantized: &[QuantizedWeights],
) -> TractResult<usize> {
    use std::collections::HashMap;
    use tract_nnef::tract_core::ops::konst::Const;
    let mut by_digest: HashMap<u64, Vec<&QuantizedWeights>> = HashMap::new();
    for q in quantized {
        let values = dequantized_constant(&q.data, &q.scale.0, &q.zero_point.0, q.axis)?;
        by_digest.entry(f32_bits(&values)?.1).or_default().push(q);
    }
    let mut replaced = 0;
    for node in &mut model.nodes {
        let Some(konst) = node.op_as::<Const>() else {
            continue;
        };
        let value = konst.val().clone();
        if value.datum_type() != f32::datum_type() || value.len() == 0 {
            continue;
        }
        let (bits, digest) = f32_bits(&value)?;
        let Some(candidates) = by_digest.get(&digest) else {
            continue;
        };
        for q in candidates {
            let Some(op) = q.reshaped(value.shape())? else {
                continue;
            };
            let back = dequantized_constant(&op.data, &op.scale.0, &op.zero_point.0, op.axis)?;
            if f32_bits(&back)?.0 == bits {
                node.outputs[0].fact = f32::fact(value.shape());
                node.op = Box::new(op);
                replaced += 1;
                break;
            }
        }
    }
    Ok(replaced)
}
