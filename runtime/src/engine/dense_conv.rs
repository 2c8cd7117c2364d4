//! Ordinary (one group) two-dimensional f32 convolutions for the `cpu` engine on AVX-512: a
//! tract op that replaces a channel-first `Conv` with constant weights (MobileNetV2's first
//! 3×3 stride-2 layer, ResNet's 3×3 and 7×7 ones, strided 1×1 shortcuts, YOLO's and DBNet's
//! 3×3 layers), with the ReLU/ReLU6 clamp that follows it fused in.
//!
//! tract 0.23.9 runs these as a lazy im2col, a packed matrix product and then the clamp as its
//! own pass. Here the input planes are copied once into zero-padded stride phases (the layout
//! [`super::depthwise`] uses, so every tap of every output row is one contiguous run), and
//! [`super::pointwise`]'s 8×48 micro-kernel reads its rows straight from them: row `(c, tap)`
//! of the product starts at that tap's run in channel `c`'s phases, the output rows laid flat
//! at the phase row stride, so the few padding columns between rows are computed and dropped
//! at the store ([`edge_kernels::pointwise::Kernel::tile_gathered`]). The bias starts the
//! sums and the clamp is applied before the one store.
//!
//! (Until issue 23 the runs were first gathered into an im2col band, `[C·kh·kw][rows·wo]`:
//! that copy, and the product's strided reads of the band, cost 1.15–2.5× the time on every
//! shape measured, most on the few-channel layers of detectors: YOLOv8n's 16→16 3×3 at 80×80
//! took 0.52 ms through the band and takes 0.21 ms read straight.)
//!
//! Substituted only where that micro-kernel is vectorized (AVX-512F); elsewhere tract runs
//! these.

use std::cell::Cell;

use edge_kernels::geometry::{fill_phases, Plain};
use edge_kernels::pointwise::Kernel;
use edge_kernels::{Geometry, Isa};
use tract_nnef::tract_core::internal::*;
use tract_nnef::tract_core::ops::cnn::Conv;

use super::activations::f32_only;
use super::conv2d::{constant_kernel_and_bias, conv_geometry, Planes};
use super::pointwise::Pointwise;

/// Replaces every one-group convolution this op handles, with the clamp that follows it (ReLU,
/// ReLU6) fused in; returns how many it replaced. The float op needs AVX-512F; the integer one
/// ([`super::qdense_conv`]) its own kernels (AVX-512 VNNI + VBMI, aarch64 dotprod or i8mm).
pub fn substitute(model: &mut TypedModel) -> TractResult<usize> {
    let float = Kernel::best(Isa::host()).is_vector();
    if !float && edge_kernels::qdepthwise::Kernel::best(Isa::host()).is_none() {
        return Ok(0);
    }
    let mut replaced = 0;
    for id in model.eval_order()? {
        let Some(conv) = model.node(id).op_as::<Conv>() else {
            continue;
        };
        let (last, clamp) = super::following_clamp(model, id)?;
        // reading a pair: in integers, where that is possible (the float op not built)
        if let Some((input, op)) =
            super::qdense_conv::integer_variant(model, model.node(id), conv, clamp)?
        {
            super::replace_run(model, input, id, last, op)?;
            replaced += 1;
            continue;
        }
        if !float {
            continue;
        }
        let Some(op) = DenseConv::from_conv(model, model.node(id), conv)? else {
            continue;
        };
        let op = DenseConv {
            product: op.product.with_clamp(clamp),
            ..op
        };
        super::replace_run(model, model.node(id).inputs[0], id, last, op)?;
        replaced += 1;
    }
    Ok(replaced)
}

/// The convolution op: input `[N, C, H, W]` (or `[C, H, W]`) f32, output `[N, O, ho, wo]`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DenseConv {
    geometry: Geometry,
    /// `[N, C, H, W]` rather than `[C, H, W]`
    batched: bool,
    /// Input channels.
    channels: usize,
    /// The product of the weights `[O, C·kh·kw]` and an im2col band, with bias and clamp.
    product: Pointwise,
    outputs: usize,
    /// Where the product reads its rows and puts its outputs.
    gathered: Gathered,
}

/// What the product needs to read a convolution straight from its padded stride phases: the
/// output rows laid flat at the phase row stride (the padding columns computed and dropped).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Gathered {
    /// Where row `(c, tap)` of the product starts in the phases of all channels.
    offsets: Vec<usize>,
    /// Per 16 flat positions: which are outputs, and where the first of them goes.
    lanes: Vec<(u16, u32)>,
}

impl Gathered {
    fn new(geometry: &Geometry, channels: usize) -> Self {
        let taps = geometry.tap_offsets();
        let plane = geometry.scratch_len();
        let offsets = (0..channels)
            .flat_map(|c| taps.iter().map(move |&t| c * plane + t))
            .collect();
        let ((ho, wo), (_, wq)) = (geometry.output(), geometry.phase());
        let flat = (ho.max(1) - 1) * wq + wo;
        let mut at = 0u32;
        let lanes = geometry.flat_masks()[..flat.div_ceil(16)]
            .iter()
            .map(|&mask| {
                let lane = (mask, at);
                at += mask.count_ones();
                lane
            })
            .collect();
        Gathered { offsets, lanes }
    }
}

impl DenseConv {
    /// The op for `conv` at `node`, or `None` when it is not a case this op handles.
    fn from_conv(model: &TypedModel, node: &TypedNode, conv: &Conv) -> TractResult<Option<Self>> {
        let spec = &conv.pool_spec;
        if conv.group != 1 {
            return Ok(None);
        }
        let Some((geometry, batched)) = conv_geometry(model, node, conv)? else {
            return Ok(None);
        };
        let (channels, outputs) = (spec.input_channels, spec.output_channels);
        let depth = channels * geometry.kh * geometry.kw;
        let Some((kernel, bias)) = constant_kernel_and_bias(model, node, outputs, depth)? else {
            return Ok(None);
        };
        let mut op = DenseConv::new(geometry, channels, &kernel, &bias)?;
        op.batched = batched;
        Ok(Some(op))
    }

    /// The op for explicit weights: `kernel` is `[O, C, kh, kw]` row-major, `bias` is `[O]`.
    pub fn new(
        geometry: Geometry,
        channels: usize,
        kernel: &[f32],
        bias: &[f32],
    ) -> TractResult<Self> {
        ensure!(
            geometry.valid(),
            "invalid convolution geometry {geometry:?}"
        );
        let depth = channels * geometry.kh * geometry.kw;
        ensure!(channels > 0 && !bias.is_empty() && kernel.len() == bias.len() * depth);
        Ok(DenseConv {
            geometry,
            batched: true,
            channels,
            product: Pointwise::new(depth, bias.len(), kernel, bias)?,
            outputs: bias.len(),
            gathered: Gathered::new(&geometry, channels),
        })
    }

    fn planes(&self) -> Planes {
        Planes {
            geometry: self.geometry,
            batched: self.batched,
            inputs: self.channels,
            outputs: self.outputs,
        }
    }

    /// Runs the convolution over `input` (`[n, C, H, W]`, row-major) into `output`
    /// (`[n, O, ho, wo]`) with `kind`'s micro-kernel.
    pub fn run(
        &self,
        kind: Kernel,
        input: &[f32],
        n: usize,
        output: &mut [f32],
    ) -> TractResult<()> {
        let g = self.geometry;
        let (ho, wo) = g.output();
        let (plane_in, plane_out) = (g.h * g.w, ho * wo);
        ensure!(input.len() == n * self.channels * plane_in);
        ensure!(output.len() == n * self.outputs * plane_out);
        if plane_out == 0 {
            return Ok(());
        }
        thread_local! {
            /// The padded stride phases, kept between calls: zeroed per call (their padding is
            /// never written), but not freshly mapped (a new allocation this size page-faults
            /// on every page it touches).
            static PHASES: Cell<Vec<f32>> = const { Cell::new(Vec::new()) };
        }
        super::scratch::with(&PHASES, |phases| {
            phases.clear();
            phases.resize(self.channels * g.scratch_len(), 0.0);
            self.run_gathered(kind, input, output, phases)
        })
    }

    /// [`DenseConv::run`] read straight from the phases (`phases` zeroed).
    fn run_gathered(
        &self,
        kind: Kernel,
        input: &[f32],
        output: &mut [f32],
        phases: &mut [f32],
    ) -> TractResult<()> {
        let g = self.geometry;
        let (ho, wo) = g.output();
        let (plane_in, plane_out) = (g.h * g.w, ho * wo);
        let phases_len = g.scratch_len();
        for (image, out) in input
            .chunks_exact(self.channels * plane_in)
            .zip(output.chunks_exact_mut(self.outputs * plane_out))
        {
            for (plane, scratch) in image
                .chunks_exact(plane_in)
                .zip(phases.chunks_exact_mut(phases_len))
            {
                fill_phases(&g, plane, scratch, &Plain);
            }
            self.product.run_gathered(
                kind,
                (phases, &self.gathered.offsets),
                &self.gathered.lanes,
                (out, plane_out),
            )?;
        }
        Ok(())
    }
}

impl Op for DenseConv {
    fn name(&self) -> StaticName {
        "EdgeConv".into()
    }

    fn info(&self) -> TractResult<Vec<String>> {
        Ok(vec![format!(
            "{} -> {} channels, {:?}",
            self.channels, self.outputs, self.geometry
        )])
    }

    fn validation(&self) -> Validation {
        Validation::Rounding
    }

    op_as_typed_op!();
}

impl EvalOp for DenseConv {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        // `run` writes every output element
        let kind = self.product.kernel();
        self.planes().eval(
            args_1!(inputs),
            false,
            f32_only(|x, n, out| self.run(kind, x, n, out)),
        )
    }
}

impl TypedOp for DenseConv {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        self.planes().output_facts(inputs, f32::datum_type())
    }

    fn cost(&self, inputs: &[&TypedFact]) -> TractResult<TVec<(Cost, TDim)>> {
        let g = self.geometry;
        self.planes().cost(inputs, self.channels * g.kh * g.kw)
    }

    as_op!();
}

#[cfg(test)]
mod tests {
    use super::*;
    use edge_kernels::testing::values;
    use tract_nnef::tract_core::ops::cnn::PaddingSpec;

    /// The textbook loop over the padded input, in f64.
    fn reference(
        op: &DenseConv,
        kernel: &[f32],
        bias: &[f32],
        input: &[f32],
        n: usize,
    ) -> Vec<f32> {
        edge_kernels::testing::conv_reference(&op.geometry, op.channels, kernel, bias, input, n)
    }

    #[test]
    fn every_kernel_matches_the_textbook_loop() {
        // (channels, outputs, h, w, kh, kw, stride, dilation, pads (top, left, bottom, right))
        let cases = [
            (3, 32, 17, 19, 3, 3, 2, 1, (1, 1, 1, 1)),
            (5, 9, 12, 10, 3, 3, 1, 1, (1, 1, 1, 1)),
            (4, 17, 15, 15, 7, 7, 2, 1, (3, 3, 3, 3)),
            (8, 8, 9, 11, 1, 1, 2, 1, (0, 0, 0, 0)),
            (2, 3, 13, 13, 3, 3, 1, 2, (2, 2, 2, 2)),
            (3, 5, 10, 9, 3, 2, 2, 1, (0, 1, 1, 0)),
            // padding columns wider than a vector (some vectors keep no lane)
            (3, 10, 12, 20, 7, 7, 1, 3, (9, 9, 9, 9)),
            // many column blocks and weight tiles (the product's L2 blocking)
            (64, 20, 30, 33, 3, 3, 1, 1, (1, 1, 1, 1)),
        ];
        for (ix, &(c, o, h, w, kh, kw, s, d, (pt, pl, pb, pr))) in cases.iter().enumerate() {
            let g = Geometry {
                h,
                w,
                kh,
                kw,
                sy: s,
                sx: s,
                dy: d,
                dx: d,
                pad_top: pt,
                pad_left: pl,
                pad_bottom: pb,
                pad_right: pr,
            };
            let kernel = values(o * c * kh * kw, ix as u32);
            let bias = values(o, 100 + ix as u32);
            let n = 2;
            let input = values(n * c * h * w, 200 + ix as u32);
            let op = DenseConv::new(g, c, &kernel, &bias).unwrap();
            let want = reference(&op, &kernel, &bias, &input, n);
            let (ho, wo) = g.output();
            for kind in Kernel::available(Isa::host()) {
                let mut got = vec![f32::NAN; want.len()];
                op.run(kind, &input, n, &mut got).unwrap();
                assert_eq!(got.len(), n * o * ho * wo);
                for (a, b) in got.iter().zip(&want) {
                    assert!(
                        (a - b).abs() <= 1e-4 * (1.0 + b.abs()),
                        "case {ix} {kind:?}: {a} vs {b}"
                    );
                }
            }
        }
    }

    #[test]
    fn matches_tracts_own_convolution_with_the_clamp_fused() {
        if !Kernel::best(Isa::host()).is_vector() {
            return;
        }
        let cases = [
            (
                [1, 3, 32, 32],
                32,
                [3, 3],
                [2, 2],
                PaddingSpec::SameUpper,
                true,
            ),
            (
                [1, 16, 14, 14],
                24,
                [3, 3],
                [1, 1],
                PaddingSpec::SameUpper,
                false,
            ),
            (
                [1, 3, 21, 21],
                8,
                [7, 7],
                [2, 2],
                PaddingSpec::Explicit(tvec![3, 3], tvec![3, 3]),
                true,
            ),
        ];
        for (shape, outputs, kernel, strides, padding, relu6) in cases {
            let model = crate::engine::TestConv {
                shape,
                outputs,
                group: 1,
                kernel,
                strides,
                dilations: [1, 1],
                padding: padding.clone(),
                clamp: relu6.then_some(0.5),
            }
            .model();
            let input = tract_ndarray::ArrayD::from_shape_vec(
                &shape[..],
                values(shape.iter().product(), 9),
            )
            .unwrap()
            .into_tensor();
            let run = |model: TypedModel| super::super::run_f32(model, &input, true);
            let want = run(model.clone());
            let mut ours = model.into_decluttered().unwrap();
            assert_eq!(substitute(&mut ours).unwrap(), 1, "{shape:?} {padding:?}");
            // the source and our op: the clamp is fused
            assert_eq!(ours.eval_order().unwrap().len(), 2, "{shape:?}");
            let got = run(ours);
            assert_eq!(got.len(), want.len());
            for (a, b) in got.iter().zip(&want) {
                assert!(
                    (a - b).abs() <= 1e-4 * (1.0 + b.abs()),
                    "{shape:?}: {a} vs {b}"
                );
            }
        }
    }
}
