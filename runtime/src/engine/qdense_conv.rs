//! Integer im2col convolution for QDQ graphs on AVX-512 VNNI + VBMI: where an ordinary
//! (one-group) channel-first convolution ([`super::dense_conv`]'s case: MobileNetV2's first
//! 3×3 stride-2 layer) reads a quantize→dequantize pair and its weights are int8 values times
//! a per-channel scale, the products run on the pair's bytes instead of their float images.
//!
//! Each input plane is quantized (the pair's rounding) into [`edge_kernels::BytePlane`]'s
//! layout, padded with the input's zero point; for every kernel row's group of up to four taps,
//! one byte permute per 16 outputs gathers each output's taps into a 32-bit word, so the
//! im2col matrix comes out already in VNNI order (`[C·groups][points]` words: a 3×3 layer's
//! three taps per word, the fourth byte against a zero weight). That matrix goes through
//! [`super::qpointwise`]'s integer 8×48 micro-kernel as a 1×1 convolution with `C·groups·4`
//! inputs, whose store writes f32 or, linked by [`super::u8_activations`], the next pair's
//! bytes. Exact as the other integer ops: the same sums, float rounding only in the scale.
//!
//! On MobileNetV2's first layer (3 → 32 channels, 112×112 outputs) the float op ran 27 FMAs
//! per output at the FMA units' peak; in words of four bytes the reduction is 9 `vpdpbusd`.

use std::cell::Cell;

use edge_kernels::qdepthwise::Kernel;
use edge_kernels::quant::integer_rows;
use edge_kernels::{BytePlane, Geometry, Isa, U8Form};
use tract_nnef::tract_core::internal::*;
use tract_nnef::tract_core::ops::cnn::Conv;

use super::activations::{Dst, Src};
use super::conv1x1::Channels;
use super::conv2d::{constant_kernel_and_bias, conv_geometry, Planes};
use super::qpointwise::QPointwise;
use super::threads::par_rows;

/// The integer op for the one-group convolution `conv` at `node` (its clamp `clamp` fused in)
/// and the outlet it should read, or `None` when its input is not a pair's output, its weights
/// are not int8 multiples, a kernel row does not fit the byte gather or the CPU lacks the
/// kernels' features.
pub(crate) fn integer_variant(
    model: &TypedModel,
    node: &TypedNode,
    conv: &Conv,
    clamp: Option<(f32, f32)>,
) -> TractResult<Option<(OutletId, QDenseConv)>> {
    if conv.group != 1 {
        return Ok(None);
    }
    let Some(kernel) = Kernel::best(Isa::host()) else {
        return Ok(None);
    };
    let Some((geometry, batched)) = conv_geometry(model, node, conv)? else {
        return Ok(None);
    };
    let Some((read_from, form)) = super::fake_quant::quantizing_read(model, node.inputs[0])? else {
        return Ok(None);
    };
    let spec = &conv.pool_spec;
    let (channels, outputs) = (spec.input_channels, spec.output_channels);
    let depth = channels * geometry.kh * geometry.kw;
    let Some((weights, bias)) = constant_kernel_and_bias(model, node, outputs, depth)? else {
        return Ok(None);
    };
    let Some(mut op) = QDenseConv::new(kernel, geometry, channels, &weights, &bias, clamp, form)?
    else {
        return Ok(None);
    };
    op.batched = batched;
    Ok(Some((read_from, op)))
}

/// The op: input `[N, C, H, W]` (or `[C, H, W]`) f32, quantized inside; output `[N, O, ho,
/// wo]`, f32 or 8-bit.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct QDenseConv {
    /// The integer gather (AVX-512 VNNI + VBMI).
    kernel: Kernel,
    plane: BytePlane,
    batched: bool,
    channels: usize,
    outputs: usize,
    /// The product of the gathered taps and the weights, with bias, clamp and output form.
    product: QPointwise,
    /// The quantizer of the input (the pair it replaced).
    input: U8Form,
}

impl QDenseConv {
    /// The op on `kernel`'s gather for `weights` (`[O, C·kh·kw]`, int8 multiples of a
    /// per-row scale) and `bias` (`[O]`) reading f32 quantized by `input`; `None` when the
    /// weights are not int8 multiples or a kernel row does not fit the byte gather.
    pub fn new(
        kernel: Kernel,
        geometry: Geometry,
        channels: usize,
        weights: &[f32],
        bias: &[f32],
        clamp: Option<(f32, f32)>,
        input: U8Form,
    ) -> TractResult<Option<Self>> {
        let outputs = bias.len();
        let depth = channels * geometry.kh * geometry.kw;
        ensure!(channels > 0 && outputs > 0 && weights.len() == outputs * depth);
        let Some(plane) = BytePlane::new(geometry, input.zero_point() as u8) else {
            return Ok(None);
        };
        let Some((q, sw)) = integer_rows(weights, outputs, depth) else {
            return Ok(None);
        };
        // `[O][C][groups]` words, one byte per gathered tap: the 1×1 product's `[O, C·groups·4]`
        let qw: Vec<i8> = plane
            .words(&q)
            .into_iter()
            .flat_map(i32::to_le_bytes)
            .map(|b| b as i8)
            .collect();
        let shape = Channels::unbatched(channels * plane.groups.len() * 4, outputs);
        let product = QPointwise::from_parts(shape, &qw, &sw, bias, clamp, input)?.with_u8_input();
        Ok(Some(QDenseConv {
            kernel,
            plane,
            batched: true,
            channels,
            outputs,
            product,
            input,
        }))
    }

    fn planes(&self) -> Planes {
        Planes {
            geometry: self.plane.geometry,
            batched: self.batched,
            inputs: self.channels,
            outputs: self.outputs,
        }
    }

    /// The form of its 8-bit output, `None` when it writes f32.
    pub(crate) fn output_form(&self) -> Option<U8Form> {
        self.product.output_form()
    }

    /// The op writing `form`'s 8-bit values of its outputs instead of f32.
    pub(crate) fn with_output(&self, form: U8Form) -> QDenseConv {
        QDenseConv {
            product: self.product.with_output(form),
            ..self.clone()
        }
    }

    /// Runs the convolution over `input` (`[n, C, H, W]` f32) into `output` (`[n, O, ho,
    /// wo]`, of the op's output type).
    pub(crate) fn run(&self, input: &[f32], n: usize, output: Dst) -> TractResult<()> {
        let g = self.plane.geometry;
        let (ho, wo) = g.output();
        let (plane_in, points) = (g.h * g.w, ho * wo);
        ensure!(input.len() == n * self.channels * plane_in);
        ensure!(output.len() == n * self.outputs * points);
        if points == 0 {
            return Ok(());
        }
        let per_plane = self.plane.groups.len();
        thread_local! {
            /// The gathered taps, kept between calls (sized by the largest).
            static PACKED: Cell<Vec<u32>> = const { Cell::new(Vec::new()) };
        }
        let permutes = self.kernel.permutes(&self.plane);
        let mut output = output;
        super::scratch::with(&PACKED, |packed| {
            packed.resize(self.channels * per_plane * points, 0);
            for (image, x) in input.chunks_exact(self.channels * plane_in).enumerate() {
                // the input channels' gathers, a share of channels per thread
                let work = self.channels * per_plane * 4 * points;
                par_rows(packed, per_plane * points, work, |first, channels| {
                    let mut scratch = self.kernel.scratch(&self.plane);
                    for (c, words) in channels.chunks_exact_mut(per_plane * points).enumerate() {
                        let plane = &x[(first + c) * plane_in..][..plane_in];
                        self.kernel
                            .fill_quantized(&self.plane, plane, &mut scratch, self.input);
                        self.kernel
                            .gather_rows(&self.plane, &scratch, &permutes, words);
                    }
                    Ok(())
                })?;
                let at = image * self.outputs * points;
                let out = match &mut output {
                    Dst::F32(o) => Dst::F32(&mut o[at..][..self.outputs * points]),
                    Dst::U8(o) => Dst::U8(&mut o[at..][..self.outputs * points]),
                };
                self.product
                    .multiply(packed, self.kernel.flip(), points, out)?;
            }
            Ok(())
        })
    }
}

impl Op for QDenseConv {
    fn name(&self) -> StaticName {
        "EdgeQuantizedConv".into()
    }

    fn info(&self) -> TractResult<Vec<String>> {
        Ok(vec![format!(
            "{} -> {} channels, int8, {:?}",
            self.channels, self.outputs, self.plane.geometry
        )])
    }

    fn validation(&self) -> Validation {
        Validation::Rounding
    }

    op_as_typed_op!();
}

impl EvalOp for QDenseConv {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let u8_out = self.output_form().is_some();
        self.planes()
            .eval(args_1!(inputs), u8_out, |x, n, out| match x {
                Src::F32(x) => self.run(x, n, out),
                Src::U8(_) => bail!("the integer convolution takes f32 input"),
            })
    }
}

impl TypedOp for QDenseConv {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        self.planes()
            .output_facts(inputs, super::activations::datum(self.output_form()))
    }

    fn cost(&self, inputs: &[&TypedFact]) -> TractResult<TVec<(Cost, TDim)>> {
        let g = self.plane.geometry;
        self.planes().cost(inputs, self.channels * g.kh * g.kw)
    }

    as_op!();
}

#[cfg(test)]
mod tests {
    use super::*;
    use edge_kernels::testing::values;

    /// f32 outputs to float rounding and 8-bit ones within one step (a rounding tie may land
    /// either side) of the textbook loop on the pair's values, across kernel sizes, strides,
    /// dilations, paddings, channel counts that leave partial tiles, and a batch of two.
    #[test]
    fn matches_the_textbook_loop_on_the_pairs_values() {
        let Some(gather) = Kernel::best(Isa::host()) else {
            return;
        };
        let (form_in, form_out) = (
            U8Form::new(1.0 / 0.01, 128.0, 0.01),
            U8Form::new(1.0 / 0.05, 3.0, 0.05),
        );
        let cases = [
            // (h, w, kh, kw, s, d, pad, channels, outputs)
            (224, 224, 3, 3, 2, 1, 1, 3, 32),
            (15, 17, 3, 3, 1, 1, 1, 5, 9),
            (16, 16, 7, 7, 2, 1, 3, 3, 8),
            (9, 11, 5, 5, 1, 2, 2, 2, 17),
            (12, 12, 1, 1, 2, 1, 0, 6, 7),
            (7, 40, 3, 1, 1, 1, 0, 4, 3),
        ];
        for (h, w, kh, kw, s, d, pad, channels, outputs) in cases {
            let g = Geometry {
                h,
                w,
                kh,
                kw,
                sy: s,
                sx: s,
                dy: d,
                dx: d,
                pad_top: pad,
                pad_left: pad,
                pad_bottom: pad,
                pad_right: pad,
            };
            let depth = channels * kh * kw;
            let kernel: Vec<f32> = (0..outputs * depth)
                .map(|i| ((i * 37 % 255) as f32 - 127.0) * 0.002 * (1 + i / depth) as f32)
                .collect();
            let bias = values(outputs, 2);
            let n = 2;
            // about ±1.5, past the form's range at both ends
            let x: Vec<f32> = values(n * channels * h * w, 3)
                .iter()
                .map(|v| v * 1.5)
                .collect();
            let seen: Vec<f32> = x
                .iter()
                .map(|&v| form_in.dequantize(form_in.quantize(v)))
                .collect();
            let clamp = Some((0.0, 6.0));
            // the textbook loop over the input as the pair leaves it (quantized, dequantized)
            let mut want =
                edge_kernels::testing::conv_reference(&g, channels, &kernel, &bias, &seen, n);
            want.iter_mut().for_each(|v| *v = v.clamp(0.0, 6.0));
            let op = QDenseConv::new(gather, g, channels, &kernel, &bias, clamp, form_in)
                .unwrap()
                .unwrap();
            let mut got = vec![f32::NAN; want.len()];
            op.run(&x, n, Dst::F32(&mut got)).unwrap();
            for (i, (a, b)) in got.iter().zip(&want).enumerate() {
                assert!(
                    (a - b).abs() <= 1e-4 * (1.0 + b.abs()),
                    "{g:?} at {i}: {a} vs {b}"
                );
            }
            let linked = op.with_output(form_out);
            let mut got = vec![0u8; want.len()];
            linked.run(&x, n, Dst::U8(&mut got)).unwrap();
            for (i, (&a, &b)) in got.iter().zip(&want).enumerate() {
                let b = form_out.quantize(b);
                assert!(a.abs_diff(b) <= 1, "{g:?} at {i}: {a} vs {b}");
            }
            // the wrong output type is an error, not a misread
            assert!(linked.run(&x, n, Dst::F32(&mut want)).is_err());
        }
        // weights that are not int8 multiples keep the float op
        let g = Geometry {
            h: 8,
            w: 8,
            kh: 3,
            kw: 3,
            sy: 1,
            sx: 1,
            dy: 1,
            dx: 1,
            pad_top: 1,
            pad_left: 1,
            pad_bottom: 1,
            pad_right: 1,
        };
        let kernel = values(2 * 9, 5);
        assert!(
            QDenseConv::new(gather, g, 1, &kernel, &[0.0, 0.0], None, form_in)
                .unwrap()
                .is_none()
        );
    }
}
