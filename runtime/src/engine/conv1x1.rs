//! The 1×1 convolutions our ops replace, as tract's decluttered graph has them: the f32
//! `EinSum` a channel-first 1×1 `Conv` becomes (`IHW,OI->OHW`: output channel `o` is `Σ_i W[o,
//! i] · X[i, ·]`) with the per-channel bias `Add` and the clamp that follow it ([`Conv1x1`]), or
//! a matrix–vector product over one point (a classifier); and what the float and the integer
//! op share: their shapes, checks and blocked walk over output tiles ([`Channels`]), and the
//! output pointer their threads share ([`SharedOut`]).

use super::threads::par_rows;
/// The output pointer, shared by the threads that each write their own tiles' rows.
pub(crate) use edge_kernels::parallel::SharedOut;
use edge_kernels::tile::{COLS, ROWS};
use tract_nnef::tract_core::internal::*;
use tract_nnef::tract_core::ops::einsum::EinSum;

use super::activations::{Dst, Src};
use super::channel_affine::Step;

/// Bytes of input a column block may span (kept in L2 across all weight tiles).
pub(crate) const BLOCK_BYTES: usize = 256 * 1024;

/// A 1×1 convolution found in the graph: the einsum with its weights, and the bias and clamp
/// that follow it.
#[derive(Debug, Clone)]
pub(crate) struct Conv1x1 {
    pub shape: Channels,
    /// `[O, I]`, row-major.
    pub weights: Vec<f32>,
    /// `[O]`: the bias `Add` after the einsum, zeros when there is none.
    pub bias: Vec<f32>,
    /// The ReLU/ReLU6 after the bias.
    pub clamp: Option<(f32, f32)>,
    /// The last node the op replaces (the einsum, its bias `Add` or the clamp).
    pub last: usize,
}

impl Conv1x1 {
    /// The convolution whose einsum is node `id`, or `None` when it is not one this op handles.
    pub(crate) fn at(model: &TypedModel, id: usize) -> TractResult<Option<Conv1x1>> {
        let node = model.node(id);
        let Some((weights, [input, weight_axes], output)) = f32_einsum_with_constant(model, id)?
        else {
            return Ok(None);
        };
        let Some((batched, batched_out)) = channel_first_1x1(&input, &weight_axes, &output) else {
            return Ok(None);
        };
        let fact = model.outlet_fact(node.inputs[0])?;
        if fact.datum_type != f32::datum_type()
            || weights.datum_type() != f32::datum_type()
            || weights.rank() != 2
            || fact.rank() != input.len()
            || (batched && fact.shape[0] != 1.into())
        {
            return Ok(None);
        }
        let (cout, cin) = (weights.shape()[0], weights.shape()[1]);
        if fact.shape[batched as usize] != cin.into() {
            return Ok(None);
        }
        let weights = super::f32_values(&weights)?;
        let (mut last, mut bias) = (id, vec![0f32; cout]);
        // the channels are axis 1 of a batched output (`NOHW`), else axis 0
        if let Some((add, extra)) = following_bias(model, id, batched_out as usize, cout)? {
            bias = extra;
            last = add;
        }
        let (last, clamp) = super::following_clamp(model, last)?;
        Ok(Some(Conv1x1 {
            shape: Channels {
                cin,
                cout,
                batched,
                batched_out,
            },
            weights,
            bias,
            clamp,
            last,
        }))
    }

    /// The matrix–vector product at node `id` as a 1×1 convolution over one point: an einsum
    /// of a vector (`K` values, any other axes of size 1) and constant `[N, K]` weights whose
    /// output is `N` values (other axes of size 1): a `Gemm` or `MatMul` on one row, such as a
    /// classifier. With the input's and output's shapes, for the reshapes around the op. Only
    /// worth running as the integer op (the f32 tile is shaped for many points).
    pub(crate) fn matrix_vector_at(
        model: &TypedModel,
        id: usize,
    ) -> TractResult<Option<(Conv1x1, InOutShapes)>> {
        let node = model.node(id);
        let Some((weights, [x_axes, w_axes], y_axes)) = f32_einsum_with_constant(model, id)? else {
            return Ok(None);
        };
        let (x_axes, y_axes) = (x_axes.as_str(), y_axes.as_str());
        let w: Vec<char> = w_axes.chars().collect();
        let (o, i) = match w[..] {
            [o, i] if o != i => (o, i),
            _ => return Ok(None),
        };
        let (x_fact, y_fact) = (
            model.outlet_fact(node.inputs[0])?,
            model.outlet_fact(OutletId::new(id, 0))?,
        );
        if x_fact.datum_type != f32::datum_type()
            || weights.datum_type() != f32::datum_type()
            || weights.rank() != 2
            || x_fact.rank() != x_axes.len()
            || y_fact.rank() != y_axes.len()
        {
            return Ok(None);
        }
        let (cout, cin) = (weights.shape()[0], weights.shape()[1]);
        // every axis but the named one has size 1 (and is not the weights' other axis)
        let only = |axes: &str, fact: &TypedFact, named: char, size: usize, other: char| {
            axes.chars().filter(|&c| c == named).count() == 1
                && !axes.contains(other)
                && axes
                    .chars()
                    .zip(fact.shape.iter())
                    .all(|(c, d)| d.to_usize().ok() == Some(if c == named { size } else { 1 }))
        };
        if !only(x_axes, x_fact, i, cin, o) || !only(y_axes, y_fact, o, cout, i) {
            return Ok(None);
        }
        let conv = Conv1x1 {
            shape: Channels::unbatched(cin, cout),
            weights: super::f32_values(&weights)?,
            bias: vec![0f32; cout],
            clamp: None,
            last: id,
        };
        Ok(Some((
            conv,
            (x_fact.shape.to_tvec(), y_fact.shape.to_tvec()),
        )))
    }
}

/// An einsum's constant input, its inputs' axis letters (`[input, constant]`) and its output's.
pub(crate) type EinsumWithConstant = (Arc<Tensor>, [String; 2], String);

/// Puts the constant operand of every two-input f32 einsum second (`mk,akbn->mbn` with the
/// weights first becomes `akbn,mk->mbn`): the form [`f32_einsum_with_constant`] and every
/// substitution after it read. tract's declutter of an ONNX convolution leaves the weights
/// second; of the same convolution read back from the optimized payload, first. Returns how
/// many it swapped.
pub(crate) fn constant_operand_second(model: &mut TypedModel) -> TractResult<usize> {
    let mut swapped = 0;
    for id in model.eval_order()? {
        let node = model.node(id);
        let Some(einsum) = node.op_as::<EinSum>() else {
            continue;
        };
        if einsum.q_params.is_some()
            || einsum.operating_dt != f32::datum_type()
            || node.inputs.len() != 2
            || model.outlet_fact(node.inputs[0])?.konst.is_none()
            || model.outlet_fact(node.inputs[1])?.konst.is_some()
        {
            continue;
        }
        let (inputs, outputs) = einsum.axes.to_strs();
        let axes = AxesMapping::from_strs(&[&inputs[1], &inputs[0]], &outputs)?;
        let op = EinSum::new(axes, einsum.operating_dt);
        let mut patch = TypedModelPatch::default();
        let a = patch.tap_model(model, node.inputs[0])?;
        let b = patch.tap_model(model, node.inputs[1])?;
        let y = patch.wire_node(&node.name, op, &[b, a])?[0];
        patch.shunt_outside(model, OutletId::new(id, 0), y)?;
        patch.apply(model)?;
        swapped += 1;
    }
    Ok(swapped)
}

/// Node `id` when it is an f32 einsum (no quantization parameters) of an input and a constant:
/// the constant, the inputs' axis letters (`[input, constant]`) and the output's.
pub(crate) fn f32_einsum_with_constant(
    model: &TypedModel,
    id: usize,
) -> TractResult<Option<EinsumWithConstant>> {
    let node = model.node(id);
    let Some(einsum) = node.op_as::<EinSum>() else {
        return Ok(None);
    };
    if einsum.q_params.is_some()
        || einsum.operating_dt != f32::datum_type()
        || node.inputs.len() != 2
    {
        return Ok(None);
    }
    let Some(weights) = model.outlet_fact(node.inputs[1])?.konst.clone() else {
        return Ok(None);
    };
    let (inputs, outputs) = einsum.axes.to_strs();
    Ok(match (&inputs[..], &outputs[..]) {
        ([x, w], [y]) => Some((weights, [x.to_string(), w.to_string()], y.to_string())),
        _ => None,
    })
}

/// A node's input and output shapes.
pub(crate) type InOutShapes = (TVec<TDim>, TVec<TDim>);

/// The `Add` of a per-channel (or single) f32 constant that alone reads node `id`'s output,
/// whose channels are axis `axis` (a step [`super::channel_affine`] recognizes): the node and
/// the `cout` values it adds.
pub(crate) fn following_bias(
    model: &TypedModel,
    id: usize,
    axis: usize,
    cout: usize,
) -> TractResult<Option<(usize, Vec<f32>)>> {
    let from = OutletId::new(id, 0);
    let node = model.node(id);
    if model.output_outlets()?.contains(&from) || node.outputs[0].successors.len() != 1 {
        return Ok(None);
    }
    let next = node.outputs[0].successors[0].node;
    Ok(match super::channel_affine::step(model, next, from)? {
        Some((Step::Add(values), at)) if at == axis => Some((next, values)),
        Some((Step::Add(values), usize::MAX)) => Some((next, vec![values[0]; cout])),
        _ => None,
    })
}

/// The shapes of a 1×1 convolution op (input `[I, S…]` or `[1, I, S…]` f32, output `[O, S…]`
/// f32) and what both of ours do with them: check and allocate in `eval`, facts, cost, and the
/// blocked walk over output tiles.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct Channels {
    pub cin: usize,
    pub cout: usize,
    /// The input has a leading axis of size 1 (`NIHW`).
    pub batched: bool,
    /// The output keeps it (`NOHW` rather than `OHW`).
    pub batched_out: bool,
}

impl Channels {
    /// Input `[I, S…]`, output `[O, S…]`: no batch axis.
    pub(crate) fn unbatched(cin: usize, cout: usize) -> Channels {
        Channels {
            cin,
            cout,
            batched: false,
            batched_out: false,
        }
    }

    /// Checks `input`'s shape (f32 or 8-bit values), allocates the output (8-bit when
    /// `u8_out`, else f32) and calls `run(input, points, output)` (points per channel), which
    /// must write every output element. Ops that take f32 only pass their run through
    /// [`super::u8_activations::f32_only`].
    pub(crate) fn eval(
        &self,
        input: TValue,
        u8_out: bool,
        run: impl FnOnce(Src, usize, Dst) -> TractResult<()>,
    ) -> TractResult<TVec<TValue>> {
        let shape = input.shape();
        let lead = self.batched as usize;
        ensure!(
            shape.len() >= 2 + lead && shape[lead] == self.cin && (!self.batched || shape[0] == 1),
            "1×1 convolution expects [{}{}, …], got {shape:?}",
            if self.batched { "1, " } else { "" },
            self.cin
        );
        let spatial = &shape[lead + 1..];
        let points: usize = spatial.iter().product();
        let mut out_shape: TVec<usize> = tvec![self.cout];
        out_shape.extend(spatial.iter().copied());
        if self.batched_out {
            out_shape.insert(0, 1);
        }
        super::activations::eval_into(&input, u8_out, &out_shape, |x, out| run(x, points, out))
    }

    /// The output fact, of `dt`.
    pub(crate) fn output_facts(
        &self,
        inputs: &[&TypedFact],
        dt: DatumType,
    ) -> TractResult<TVec<TypedFact>> {
        let lead = self.batched as usize;
        ensure!(inputs[0].rank() >= 2 + lead);
        let mut shape: TVec<TDim> = tvec![self.cout.into()];
        shape.extend(inputs[0].shape.iter().skip(lead + 1).cloned());
        if self.batched_out {
            shape.insert(0, 1.into());
        }
        Ok(tvec!(dt.fact(shape)))
    }

    /// Multiply-adds of `dt`.
    pub(crate) fn cost(
        &self,
        inputs: &[&TypedFact],
        dt: DatumType,
    ) -> TractResult<TVec<(Cost, TDim)>> {
        let lead = self.batched as usize;
        let points: TDim = inputs[0].shape.iter().skip(lead + 1).product();
        Ok(tvec!((Cost::FMA(dt), points * (self.cin * self.cout))))
    }

    /// Calls `tile(t, c0, cols)` for every tile `t` of 8 output channels and every run of up to
    /// 48 points from `c0`, in column blocks whose input (`point_bytes` per point) fits in L2,
    /// with the tiles split over the run's threads (contiguous runs of tiles, one per thread).
    pub(crate) fn for_each_tile(
        &self,
        points: usize,
        point_bytes: usize,
        tile: impl Fn(usize, usize, usize) + Sync + Send,
    ) -> TractResult<()> {
        let block = (BLOCK_BYTES / point_bytes.max(1) / COLS).max(1) * COLS;
        let mut tiles: Vec<usize> = (0..self.cout.div_ceil(ROWS)).collect();
        par_rows(&mut tiles, 1, self.cout * self.cin * points, |_, chunk| {
            for p0 in (0..points).step_by(block) {
                let width = block.min(points - p0);
                for &t in chunk.iter() {
                    for c0 in (p0..p0 + width).step_by(COLS) {
                        tile(t, c0, COLS.min(p0 + width - c0));
                    }
                }
            }
            Ok(())
        })
    }
}

/// Whether `input,weights->output` is a channel-first 1×1 convolution: weights `OI`, input
/// `[N]IS…`, output `[N]OS…` (same spatial letters, in order; `N` kept only if the input has
/// it). `Some((batched input, batched output))` when it is.
fn channel_first_1x1(input: &str, weights: &str, output: &str) -> Option<(bool, bool)> {
    let w: Vec<char> = weights.chars().collect();
    let (o, i) = match w[..] {
        [o, i] if o != i => (o, i),
        _ => return None,
    };
    let x: Vec<char> = input.chars().collect();
    let y: Vec<char> = output.chars().collect();
    let batched = x.first() != Some(&i);
    let batched_out = batched && y.first() == Some(&x[0]);
    let rest = &x[batched as usize..];
    let y = &y[batched_out as usize..];
    if rest.first() != Some(&i) || y.first() != Some(&o) || rest[1..] != y[1..] || y.len() < 2 {
        return None;
    }
    if batched && (y.contains(&x[0]) || x[0] == o) {
        return None;
    }
    let mut all = x.clone();
    all.push(o);
    all.sort_unstable();
    all.dedup();
    (all.len() == x.len() + 1).then_some((batched, batched_out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_einsum_pattern_is_recognized_only_when_it_is_a_1x1_convolution() {
        assert_eq!(channel_first_1x1("IHW", "OI", "OHW"), Some((false, false)));
        assert_eq!(channel_first_1x1("NIHW", "OI", "OHW"), Some((true, false)));
        assert_eq!(channel_first_1x1("NIHW", "OI", "NOHW"), Some((true, true)));
        assert_eq!(channel_first_1x1("IP", "OI", "OP"), Some((false, false)));
        assert_eq!(channel_first_1x1("HIW", "OI", "OHW"), None);
        assert_eq!(channel_first_1x1("IHW", "IO", "OHW"), None);
        assert_eq!(channel_first_1x1("IHW", "OI", "OWH"), None);
        assert_eq!(channel_first_1x1("NIHW", "OI", "ONHW"), None);
        assert_eq!(channel_first_1x1("NIHW", "OI", "NHWO"), None);
        assert_eq!(channel_first_1x1("mk", "nk", "mn"), None);
        assert_eq!(channel_first_1x1("I", "OI", "O"), None);
    }
}
