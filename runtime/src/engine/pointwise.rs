//! Fast 1×1 convolution for the `cpu` engine on AVX-512: a tract op that replaces the f32
//! `EinSum` tract declutters a channel-first 1×1 `Conv` into (`IHW,OI->OHW`: output channel
//! `o` is `Σ_i W[o, i] · X[i, ·]`), with the per-channel bias `Add` and the ReLU/ReLU6 clamp
//! that follow it fused in.
//!
//! tract 0.23.9 runs this einsum as a matrix product whose every call first packs the
//! activations into panels (6–7% of MobileNetV2's time) and then applies the bias and the
//! clamp as separate passes. Channel-first activations need no packing: each input channel is
//! one contiguous row, so this op's micro-kernel reads 48 output points of a row straight from
//! the input, with the weights of 8 output channels packed at load and the 8×48 block of sums
//! kept in registers for the whole reduction ([`edge_kernels::pointwise`]); the bias starts
//! the sums and the clamp is applied before the one store. Columns are blocked so that a block
//! of the input stays in L2 while every tile of weights passes over it
//! ([`super::conv1x1::Channels::for_each_tile`]). Tiles are split over the plan's thread pool.
//!
//! Substituted only where AVX-512F is present (the tile needs its 32 registers and masked tails;
//! elsewhere tract's packed kernels run these, an AVX2/NEON tile is not written yet); the plain
//! Rust tile is the reference the tests hold it to.

use edge_kernels::pointwise::{pack_weights, Kernel, ROWS};
use edge_kernels::Isa;
use tract_nnef::tract_core::internal::*;

use super::activations::f32_only;
use super::conv1x1::{Channels, Conv1x1, InOutShapes, SharedOut};
use super::Floats;

/// Replaces every 1×1 channel-first convolution einsum this op handles (with a per-channel
/// bias `Add` and a clamp that follow it fused in) by this op, or by the integer one
/// ([`super::qpointwise`]) where its input is quantized, its weights are int8 values times a
/// per-channel scale and the CPU has an integer kernel (AVX-512 VNNI; aarch64 NEON, dotprod,
/// i8mm); returns how many it replaced. The float op needs AVX-512F (elsewhere tract's own
/// matmul runs the float layers: on aarch64 it is the better kernel, see docs/engine.md).
pub fn substitute(model: &mut TypedModel) -> TractResult<usize> {
    let float = Kernel::best(Isa::host()).is_vector();
    let integer = edge_kernels::qpointwise::Kernel::best(Isa::host()).serves_graphs();
    if !float && !integer {
        return Ok(0);
    }
    let mut replaced = 0;
    for id in model.eval_order()? {
        let Some(conv) = Conv1x1::at(model, id)? else {
            // not a 1×1 convolution: perhaps a matrix–vector product, taken only in integers,
            // and not on aarch64: there our tile, made for many points, cost int8 MobileNetV2's
            // classifier 1.7 M more instructions than tract's float product (73.7 against 72.0
            // M on neoverse-n1)
            if cfg!(target_arch = "aarch64") {
                continue;
            }
            if let Some((conv, shapes)) = Conv1x1::matrix_vector_at(model, id)? {
                let input = model.node(id).inputs[0];
                if let Some((input, op)) = super::qpointwise::integer_variant(model, input, &conv)?
                {
                    replace_matrix_vector(model, input, id, op, shapes)?;
                    replaced += 1;
                }
            }
            continue;
        };
        let input = model.node(id).inputs[0];
        if let Some((input, op)) = super::qpointwise::integer_variant(model, input, &conv)? {
            super::replace_run(model, input, id, conv.last, op)?;
        } else if !float {
            continue;
        } else {
            let last = conv.last;
            let op = Pointwise::from_conv(conv)?;
            super::replace_run(model, input, id, last, op)?;
        }
        replaced += 1;
    }
    Ok(replaced)
}

/// Replaces the matrix–vector einsum `id` by `op` over one point, reading `input`: the
/// vector reshaped to `[K, 1]`, the op's `[N, 1]` reshaped to the einsum's output shape.
fn replace_matrix_vector(
    model: &mut TypedModel,
    input: OutletId,
    id: usize,
    op: super::qpointwise::QPointwise,
    (from, to): InOutShapes,
) -> TractResult<()> {
    let name = model.node(id).name.clone();
    let (k, n) = (op.channels().cin, op.channels().cout);
    let mut patch = TypedModelPatch::default();
    let tap = patch.tap_model(model, input)?;
    let column = AxisOp::Reshape(0, from, tvec![k.into(), 1.into()]);
    let x = patch.wire_node(format!("{name}.column"), column, &[tap])?;
    let y = patch.wire_node(&name, op, &x)?;
    let back = AxisOp::Reshape(0, tvec![n.into(), 1.into()], to);
    let y = patch.wire_node(format!("{name}.reshape"), back, &y)?[0];
    patch.shunt_outside(model, OutletId::new(id, 0), y)?;
    patch.apply(model)
}

/// The 1×1 convolution op: input `[I, S…]` or `[1, I, S…]` f32, output `[O, S…]`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Pointwise {
    shape: Channels,
    /// `[ceil(O/8)][I][8]`, zero rows past `O`.
    packed: Floats,
    /// `[ceil(O/8)·8]`, zeros past `O`.
    bias: Floats,
    /// Outputs clamped to `[lo, hi]` (f32 bits): a fused ReLU or ReLU6.
    clamp: Option<(u32, u32)>,
    /// The micro-kernel, picked for this CPU when the op is built.
    kind: Kernel,
}

impl Pointwise {
    /// The op for a convolution found in the graph.
    fn from_conv(conv: Conv1x1) -> TractResult<Self> {
        let mut op = Pointwise::new(conv.shape.cin, conv.shape.cout, &conv.weights, &conv.bias)?
            .with_clamp(conv.clamp);
        op.shape = conv.shape;
        Ok(op)
    }

    /// The op for explicit weights: `weights` is `[O, I]` row-major, `bias` is `[O]`.
    pub fn new(cin: usize, cout: usize, weights: &[f32], bias: &[f32]) -> TractResult<Self> {
        ensure!(cin > 0 && cout > 0);
        ensure!(weights.len() == cout * cin && bias.len() == cout);
        let tiles = cout.div_ceil(ROWS);
        let packed = pack_weights(cin, cout, weights);
        let mut padded_bias = bias.to_vec();
        padded_bias.resize(tiles * ROWS, 0.0);
        Ok(Pointwise {
            shape: Channels::unbatched(cin, cout),
            packed: Floats(packed),
            bias: Floats(padded_bias),
            clamp: None,
            kind: Kernel::best(Isa::host()),
        })
    }

    /// `output[o][p] = clamp(bias[o] + Σ_i W[o][i] · input[i][p])` for `points` points per
    /// channel, with `kind`'s micro-kernel.
    pub fn run(
        &self,
        kind: Kernel,
        input: &[f32],
        points: usize,
        output: &mut [f32],
    ) -> TractResult<()> {
        self.run_strided(kind, (input, points), points, (output, points))
    }

    /// [`Pointwise::run`] over the first `points` points of rows laid out `stride` apart:
    /// input channel `i` at `input.0[i·input.1..]`, output channel `o` at
    /// `output.0[o·output.1..]`.
    pub(crate) fn run_strided(
        &self,
        kind: Kernel,
        input: (&[f32], usize),
        points: usize,
        output: (&mut [f32], usize),
    ) -> TractResult<()> {
        let Channels { cin, cout, .. } = self.shape;
        let ((input, x_stride), (output, out_stride)) = (input, output);
        ensure!(points <= x_stride && points <= out_stride);
        ensure!(input.len() >= (cin - 1) * x_stride + points);
        ensure!(output.len() >= (cout - 1) * out_stride + points);
        let clamp = self
            .clamp
            .map(|(lo, hi)| (f32::from_bits(lo), f32::from_bits(hi)));
        let out = SharedOut(output.as_mut_ptr());
        self.shape.for_each_tile(points, 4 * cin, |t, c0, cols| {
            let rows = ROWS.min(cout - t * ROWS);
            let weights = &self.packed.0[t * cin * ROWS..][..cin * ROWS];
            let bias = &self.bias.0[t * ROWS..][..ROWS];
            // SAFETY: rows `t·8..t·8 + rows` of the output belong to this tile alone (tiles are
            // split between threads, never shared); the reads stay inside `input` (`cols` points
            // from `c0` in each of `cin` rows, checked above).
            unsafe {
                kind.tile(
                    cin,
                    input.as_ptr().add(c0),
                    (x_stride, out_stride),
                    weights,
                    bias,
                    out.at(t * ROWS * out_stride + c0),
                    rows,
                    cols,
                    clamp,
                )
            }
        })
    }

    /// The product over gathered rows (a convolution read straight from its padded planes,
    /// [`edge_kernels::pointwise::Kernel::tile_gathered`]): input row `i` is
    /// `input[offsets[i] + f]` for flat positions `f` in `0..16·lanes.len()`; vector `v`'s lanes
    /// set in `lanes[v].0` are outputs, packed from `lanes[v].1` in output channel `o`'s row
    /// `output.0[o·output.1..]`.
    pub(crate) fn run_gathered(
        &self,
        kind: Kernel,
        (input, offsets): (&[f32], &[usize]),
        lanes: &[(u16, u32)],
        (output, out_stride): (&mut [f32], usize),
    ) -> TractResult<()> {
        let Channels { cin, cout, .. } = self.shape;
        ensure!(offsets.len() == cin);
        let flat = lanes.len() * 16;
        let reach = offsets.iter().max().map_or(0, |&o| o + flat);
        ensure!(
            reach <= input.len(),
            "gathered rows reach {reach} of {}",
            input.len()
        );
        let kept = lanes
            .last()
            .map_or(0, |&(m, at)| at as usize + m.count_ones() as usize);
        ensure!(kept <= out_stride && output.len() >= (cout - 1) * out_stride + kept);
        let clamp = self
            .clamp
            .map(|(lo, hi)| (f32::from_bits(lo), f32::from_bits(hi)));
        let out = SharedOut(output.as_mut_ptr());
        self.shape.for_each_tile(flat, 4 * cin, |t, c0, cols| {
            let rows = ROWS.min(cout - t * ROWS);
            let weights = &self.packed.0[t * cin * ROWS..][..cin * ROWS];
            let bias = &self.bias.0[t * ROWS..][..ROWS];
            // SAFETY: rows `t·8..t·8 + rows` of the output belong to this tile alone (tiles are
            // split between threads, never shared); every row's reads end before `reach` and
            // the kept lanes' writes before `kept` (both checked above); `c0` and `cols` are
            // whole vectors (`flat` is).
            unsafe {
                kind.tile_gathered(
                    offsets,
                    input.as_ptr().add(c0),
                    weights,
                    bias,
                    out.at(t * ROWS * out_stride),
                    out_stride,
                    &lanes[c0 / 16..][..cols / 16],
                    rows,
                    clamp,
                )
            }
        })
    }

    /// Sets the fused clamp (a ReLU or ReLU6 after the convolution).
    pub(crate) fn with_clamp(mut self, clamp: Option<(f32, f32)>) -> Self {
        self.clamp = clamp.map(|(lo, hi)| (lo.to_bits(), hi.to_bits()));
        self
    }

    /// The micro-kernel picked for this CPU when the op was built.
    pub(crate) fn kernel(&self) -> Kernel {
        self.kind
    }
}

impl Op for Pointwise {
    fn name(&self) -> StaticName {
        "EdgePointwiseConv".into()
    }

    fn info(&self) -> TractResult<Vec<String>> {
        Ok(vec![format!(
            "{} -> {} channels, {}, clamp {:?}",
            self.shape.cin,
            self.shape.cout,
            self.kind.name(),
            self.clamp
        )])
    }

    fn validation(&self) -> Validation {
        Validation::Rounding
    }

    op_as_typed_op!();
}

impl EvalOp for Pointwise {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let input = args_1!(inputs);
        self.shape.eval(
            input,
            false,
            f32_only(|x, points, out| self.run(self.kind, x, points, out)),
        )
    }
}

impl TypedOp for Pointwise {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        self.shape.output_facts(inputs, f32::datum_type())
    }

    fn cost(&self, inputs: &[&TypedFact]) -> TractResult<TVec<(Cost, TDim)>> {
        self.shape.cost(inputs, f32::datum_type())
    }

    as_op!();
}

#[cfg(test)]
mod tests {
    use super::*;
    use edge_kernels::testing::values;
    #[allow(unused_imports)]
    use tract_onnx::prelude::{InferenceFact, InferenceModelExt};

    fn reference(
        cin: usize,
        cout: usize,
        w: &[f32],
        b: &[f32],
        x: &[f32],
        points: usize,
        clamp: Option<(f32, f32)>,
    ) -> Vec<f32> {
        let mut out = vec![0f32; cout * points];
        for o in 0..cout {
            for p in 0..points {
                let mut acc = b[o] as f64;
                for i in 0..cin {
                    acc += w[o * cin + i] as f64 * x[i * points + p] as f64;
                }
                let mut v = acc as f32;
                if let Some((lo, hi)) = clamp {
                    v = v.max(lo).min(hi);
                }
                out[o * points + p] = v;
            }
        }
        out
    }

    #[test]
    fn every_kernel_matches_the_textbook_sum_on_every_tail() {
        let kernels = Kernel::available(Isa::host());
        for &(cin, cout, points) in &[
            (3, 1, 1),
            (16, 96, 49),
            (24, 13, 48),
            (32, 16, 97),
            (7, 8, 16),
            (960, 20, 17),
            (5, 9, 250),
        ] {
            let w = values(cin * cout, 1);
            let b = values(cout, 2);
            let x = values(cin * points, 3);
            for clamp in [None, Some((0.0, 6.0))] {
                let mut op = Pointwise::new(cin, cout, &w, &b).unwrap();
                op.clamp = clamp.map(|(lo, hi): (f32, f32)| (lo.to_bits(), hi.to_bits()));
                let want = reference(cin, cout, &w, &b, &x, points, clamp);
                for &kind in &kernels {
                    let mut got = vec![f32::NAN; cout * points];
                    op.run(kind, &x, points, &mut got).unwrap();
                    let worst = want
                        .iter()
                        .zip(&got)
                        .map(|(a, b)| (a - b).abs())
                        .fold(0f32, f32::max);
                    assert!(
                        worst < 1e-3,
                        "{kind:?} {cin}->{cout} over {points}: off by {worst}"
                    );
                }
            }
        }
    }

    /// On two threads (tiles split over the pool) every output is written once, with the
    /// one-thread values.
    #[test]
    fn two_threads_give_the_one_thread_values() {
        for &(cin, cout, points) in &[(20, 24, 3001), (16, 8, 12544), (7, 40, 97), (64, 96, 300)] {
            let w = values(cin * cout, 1);
            let b = values(cout, 2);
            let x = values(cin * points, 3);
            let op = Pointwise::new(cin, cout, &w, &b).unwrap();
            let kind = Kernel::best(Isa::host());
            let mut one = vec![f32::NAN; cout * points];
            op.run(kind, &x, points, &mut one).unwrap();
            let mut two = vec![f32::NAN; cout * points];
            let workers = edge_kernels::parallel::Workers::new(2, "test").unwrap();
            workers.run(|| op.run(kind, &x, points, &mut two)).unwrap();
            assert!(
                one.iter()
                    .zip(&two)
                    .all(|(a, b)| a.to_bits() == b.to_bits()),
                "{cin}->{cout} over {points}"
            );
        }
    }

    /// MobileNetV2 on AVX-512: all 34 1×1 convolutions run on this op, biases folded, ReLU6
    /// fused into the 17 that have one, and the model's output unchanged (to rounding).
    #[test]
    fn mobilenetv2_runs_its_1x1_layers_here_with_bias_and_relu6_fused() {
        if !Kernel::best(Isa::host()).is_vector() {
            return;
        }
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../models/mobilenetv2/model.onnx"
        );
        let model = crate::engine::onnx_parser()
            .model_for_path(path)
            .unwrap()
            .with_input_fact(0, f32::fact([1, 3, 224, 224]).into())
            .unwrap();
        let plain = model.into_typed().unwrap().into_decluttered().unwrap();
        let mut ours = plain.clone();
        assert_eq!(substitute(&mut ours).unwrap(), 34);
        let ops: Vec<&Pointwise> = ours
            .nodes()
            .iter()
            .filter_map(|n| n.op_as::<Pointwise>())
            .collect();
        assert_eq!(ops.len(), 34);
        assert!(ops.iter().all(|op| op.bias.0.iter().any(|&b| b != 0.0)));
        let relu6 = Some((0f32.to_bits(), 6f32.to_bits()));
        assert_eq!(ops.iter().filter(|op| op.clamp == relu6).count(), 17);
        let input = Tensor::from_shape(
            &[1, 3, 224, 224],
            &values(3 * 224 * 224, 7)
                .iter()
                .map(|v| v * 2.0)
                .collect::<Vec<_>>(),
        )
        .unwrap();
        let want = crate::engine::run_f32(plain, &input, true);
        let got = crate::engine::run_f32(ours, &input, true);
        let scale = want.iter().fold(0f32, |m, v| m.max(v.abs()));
        let worst = want
            .iter()
            .zip(&got)
            .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
        assert!(
            worst <= 1e-4 * scale.max(1.0),
            "off by {worst} (scale {scale})"
        );
    }
}
