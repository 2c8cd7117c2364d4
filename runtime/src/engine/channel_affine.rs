//! Per-channel affine maps with an optional clamp, `y = clamp(x · s[c] + b[c])`, for the CPU
//! engine: a tract op substituted for chains of `Mul`/`Add`/`Sub` against per-channel (or
//! one-element) constants, and the `Max`/`Min` against constants that may end them. That is a
//! BatchNorm tract could not fold into a convolution (DenseNet's pre-activation blocks) with
//! its ReLU, or a scale layer.
//!
//! tract 0.23.9 evaluates such broadcasts through ndarray's generic zip, one element and one
//! closure call at a time: ~40% of DenseNet-121's time here. This op streams each contiguous
//! channel run once, in place when tract hands over the only reference to the input, with
//! the loop compiled for AVX2+FMA or AVX-512 when the CPU has them.

use edge_kernels::Isa;
use tract_nnef::tract_core::internal::*;

use super::Floats;
use tract_nnef::tract_core::ops::binary::TypedBinOp;
use tract_nnef::tract_core::ops::math::{Add, Mul, Sub};

/// Replaces every chain this op handles; returns how many it replaced.
pub fn substitute(model: &mut TypedModel) -> TractResult<usize> {
    let mut replaced = 0;
    // nodes of chains already replaced: still in the graph, but no longer read
    let mut absorbed = std::collections::HashSet::new();
    for id in model.eval_order()? {
        if absorbed.contains(&id) {
            continue;
        }
        let Some((input, last, op)) = chain_from(model, id)? else {
            continue;
        };
        let mut node = id;
        while node != last {
            absorbed.insert(node);
            node = model.node(node).outputs[0].successors[0].node;
        }
        absorbed.insert(last);
        super::replace_run(model, input, id, last, op)?;
        replaced += 1;
    }
    Ok(replaced)
}

/// One affine step of a chain: node `id` combines the chain's value with a constant.
pub(crate) enum Step {
    /// `x · k`
    Mul(Vec<f32>),
    /// `x + k`
    Add(Vec<f32>),
    /// `x − k` (the chain's value first)
    Sub(Vec<f32>),
}

/// What node `id` does to its non-constant input `from`, if it is a step a chain can take: the
/// step, broadcast over channel axis `axis` of a `rank`-D value (one value per channel, or one
/// value for all). `None` for anything else.
pub(crate) fn step(
    model: &TypedModel,
    id: usize,
    from: OutletId,
) -> TractResult<Option<(Step, usize)>> {
    let node = model.node(id);
    let Some(bin) = node.op_as::<TypedBinOp>() else {
        return Ok(None);
    };
    if bin.1.is_some() || node.inputs.len() != 2 {
        return Ok(None);
    }
    let Some(slot) = node.inputs.iter().position(|&i| i == from) else {
        return Ok(None);
    };
    let other = node.inputs[1 - slot];
    let x = model.outlet_fact(from)?;
    let Some(k) = model.outlet_fact(other)?.konst.clone() else {
        return Ok(None);
    };
    let out = model.outlet_fact(OutletId::new(id, 0))?;
    if x.datum_type != f32::datum_type()
        || k.datum_type() != f32::datum_type()
        || out.shape != x.shape
        || k.rank() > x.rank()
    {
        return Ok(None);
    }
    // the constant's shape, right-aligned against x's: every dim 1 but at most one, the channels
    let lead = x.rank() - k.rank();
    let spread: Vec<usize> = k
        .shape()
        .iter()
        .enumerate()
        .filter(|(_, &d)| d != 1)
        .map(|(ix, _)| ix + lead)
        .collect();
    let axis = match spread[..] {
        [] => usize::MAX, // one value for all channels
        [axis] if x.shape[axis].to_usize().ok() == Some(k.len()) => axis,
        _ => return Ok(None),
    };
    let values = super::f32_values(&k)?;
    let step = if bin.0.is::<Mul>() {
        Step::Mul(values)
    } else if bin.0.is::<Add>() {
        Step::Add(values)
    } else if bin.0.is::<Sub>() && slot == 0 {
        Step::Sub(values)
    } else {
        return Ok(None);
    };
    Ok(Some((step, axis)))
}

/// The longest chain starting at node `id`: its input, its last node and the op computing it.
/// A chain is affine steps, then the clamp that may follow them (`super::following_clamp`).
fn chain_from(
    model: &TypedModel,
    id: usize,
) -> TractResult<Option<(OutletId, usize, ChannelAffine)>> {
    let node = model.node(id);
    // the chain's input: the first non-constant input of its first node
    let Some(&input) = node
        .inputs
        .iter()
        .find(|&&i| model.outlet_fact(i).is_ok_and(|f| f.konst.is_none()))
    else {
        return Ok(None);
    };
    let fact = model.outlet_fact(input)?;
    let Some(shape) = fact.shape.as_concrete().map(|s| s.to_vec()) else {
        return Ok(None);
    };
    let outputs = model.output_outlets()?;
    let (mut axis, mut channels) = (usize::MAX, 1);
    let mut scale: Vec<f32> = vec![1.0];
    let mut shift: Vec<f32> = vec![0.0];
    let (mut at, mut last, mut steps) = (input, id, 0);
    let mut current = id;
    while let Some((step, step_axis)) = step(model, current, at)? {
        if step_axis != usize::MAX {
            if axis != usize::MAX && axis != step_axis {
                break;
            }
            if axis == usize::MAX {
                axis = step_axis;
                channels = shape[axis];
                scale = vec![scale[0]; channels];
                shift = vec![shift[0]; channels];
            }
        }
        let per = |v: &[f32], c: usize| if v.len() == 1 { v[0] } else { v[c] };
        match step {
            Step::Mul(k) => {
                for c in 0..scale.len() {
                    scale[c] *= per(&k, c);
                    shift[c] *= per(&k, c);
                }
            }
            Step::Add(k) => shift
                .iter_mut()
                .enumerate()
                .for_each(|(c, b)| *b += per(&k, c)),
            Step::Sub(k) => shift
                .iter_mut()
                .enumerate()
                .for_each(|(c, b)| *b -= per(&k, c)),
        }
        steps += 1;
        last = current;
        at = OutletId::new(current, 0);
        let node = model.node(current);
        if outputs.contains(&at) || node.outputs[0].successors.len() != 1 {
            break;
        }
        current = node.outputs[0].successors[0].node;
    }
    if steps == 0 {
        return Ok(None);
    }
    let (last, clamp) = super::following_clamp(model, last)?;
    // a lone Mul or Add, a broadcast over the last axes (a LayerNorm's gamma) and a value of
    // one element are as fast in tract (by-scalar and unicast kernels); chains of per-channel
    // broadcasts over planes are what this op is for
    if steps + usize::from(clamp.is_some()) < 2 || axis == usize::MAX {
        return Ok(None);
    }
    let inner: usize = shape[axis + 1..].iter().product();
    if inner < 16 {
        return Ok(None);
    }
    Ok(Some((
        input,
        last,
        ChannelAffine {
            shape,
            channels,
            inner,
            scale: Floats(scale),
            shift: Floats(shift),
            clamp: clamp.map(|(lo, hi)| (lo.to_bits(), hi.to_bits())),
        },
    )))
}

/// `y = clamp(x · scale[c] + shift[c])` over a concrete-shaped f32 tensor whose axis of
/// `channels` is followed by `inner` contiguous elements.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ChannelAffine {
    shape: Vec<usize>,
    channels: usize,
    inner: usize,
    scale: Floats,
    shift: Floats,
    /// `[lo, hi]` as f32 bits
    clamp: Option<(u32, u32)>,
}

impl ChannelAffine {
    /// Applies the map to `data` in place.
    pub fn apply(&self, data: &mut [f32]) {
        let clamp = self
            .clamp
            .map(|(lo, hi)| (f32::from_bits(lo), f32::from_bits(hi)));
        let params = (&self.scale.0[..], &self.shift.0[..]);
        edge_kernels::elementwise::channel_affine(Isa::host(), data, self.inner, params, clamp)
    }
}

impl Op for ChannelAffine {
    fn name(&self) -> StaticName {
        "EdgeChannelAffine".into()
    }

    fn info(&self) -> TractResult<Vec<String>> {
        Ok(vec![format!(
            "{} channels × {}, clamp {:?}",
            self.channels, self.inner, self.clamp
        )])
    }

    fn validation(&self) -> Validation {
        Validation::Rounding
    }

    op_as_typed_op!();
}

impl EvalOp for ChannelAffine {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let input = args_1!(inputs);
        ensure!(
            input.shape() == self.shape.as_slice() && input.datum_type() == f32::datum_type(),
            "channel affine expects f32 {:?}, got {:?} {:?}",
            self.shape,
            input.datum_type(),
            input.shape()
        );
        Ok(tvec!(
            super::map_f32_in_place(input, |data| self.apply(data))?
        ))
    }
}

impl TypedOp for ChannelAffine {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        Ok(tvec!(inputs[0].without_value()))
    }

    as_op!();
}

#[cfg(test)]
mod tests {
    use super::*;
    use tract_nnef::tract_core::ops::math;

    /// How a test chain's steps combine the running value with a constant.
    #[derive(Clone, Copy)]
    enum T {
        Mul(&'static [usize]),
        Add(&'static [usize]),
        Sub(&'static [usize]),
        Max(f32),
        Min(f32),
    }

    fn constant(shape: &[usize], seed: usize) -> Tensor {
        let n: usize = shape.iter().product();
        let v: Vec<f32> = (0..n)
            .map(|i| ((i + seed) as f32 * 0.9).sin() + 0.1)
            .collect();
        tract_ndarray::ArrayD::from_shape_vec(shape, v)
            .unwrap()
            .into_tensor()
    }

    fn chain_model(shape: &[usize], steps: &[T]) -> TypedModel {
        let mut model = TypedModel::default();
        let mut x = model.add_source("x", f32::fact(shape)).unwrap();
        for (ix, s) in steps.iter().enumerate() {
            let (op, k) = match *s {
                T::Mul(k) => (math::mul(), constant(k, ix)),
                T::Add(k) => (math::add(), constant(k, ix)),
                T::Sub(k) => (math::sub(), constant(k, ix)),
                T::Max(v) => (math::max(), tensor0(v)),
                T::Min(v) => (math::min(), tensor0(v)),
            };
            // typed binary ops take operands of equal rank: leading 1s, as tract's declutter
            // leaves them
            let mut full = vec![1; shape.len() - k.rank()];
            full.extend_from_slice(k.shape());
            let k = k.into_shape(&full).unwrap();
            let k = model.add_const(format!("k{ix}"), k).unwrap();
            x = model.wire_node(format!("s{ix}"), op, &[x, k]).unwrap()[0];
        }
        model.select_output_outlets(&[x]).unwrap();
        model
    }

    /// Runs the chain with tract's ops and with ours: same outputs; returns how many chains
    /// were replaced.
    fn check(shape: &[usize], steps: &[T]) -> usize {
        let model = chain_model(shape, steps);
        let n: usize = shape.iter().product();
        let input = tract_ndarray::ArrayD::from_shape_vec(
            shape,
            (0..n).map(|i| (i as f32 * 0.37).cos() * 8.0).collect(),
        )
        .unwrap()
        .into_tensor();
        let run = |model: TypedModel| super::super::run_f32(model, &input, true);
        let want = run(model.clone());
        let mut ours = model.into_decluttered().unwrap();
        let replaced = substitute(&mut ours).unwrap();
        let got = run(ours);
        assert_eq!(got.len(), want.len());
        for (a, b) in got.iter().zip(&want) {
            assert!((a - b).abs() <= 1e-5 * (1.0 + b.abs()), "{a} vs {b}");
        }
        replaced
    }

    #[test]
    fn chains_over_channel_planes_match_tract() {
        // BatchNorm then ReLU6 (NCHW, constants [1,C,1,1] and [C,1,1])
        let bn_relu6 = [
            T::Mul(&[1, 6, 1, 1]),
            T::Add(&[6, 1, 1]),
            T::Max(0.0),
            T::Min(6.0),
        ];
        assert_eq!(check(&[2, 6, 5, 7], &bn_relu6), 1);
        // scalar factors mixed in, a Sub, CHW without a batch axis
        let mixed = [
            T::Sub(&[4, 1, 1]),
            T::Mul(&[1]),
            T::Mul(&[4, 1, 1]),
            T::Add(&[1]),
        ];
        assert_eq!(check(&[4, 4, 9], &mixed), 1);
        // a clamp ends the chain: the Mul after it stays tract's, and is still right
        let clamp_then = [T::Mul(&[1, 3, 1, 1]), T::Max(0.0), T::Mul(&[1, 3, 1, 1])];
        assert_eq!(check(&[1, 3, 4, 4], &clamp_then), 1);
    }

    #[test]
    fn what_tract_already_runs_fast_is_left_alone() {
        // one step
        assert_eq!(check(&[1, 6, 5, 7], &[T::Mul(&[1, 6, 1, 1])]), 0);
        // broadcast over the last axis (a LayerNorm's gamma and beta)
        assert_eq!(check(&[1, 16, 8], &[T::Mul(&[8]), T::Add(&[8])]), 0);
        // one value for everything
        assert_eq!(check(&[1, 6, 5, 7], &[T::Mul(&[1]), T::Add(&[1])]), 0);
        // constants over two axes
        assert_eq!(
            check(&[1, 6, 5, 7], &[T::Mul(&[6, 5, 1]), T::Add(&[6, 1, 1])]),
            0
        );
    }
}
