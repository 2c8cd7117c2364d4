//! Fast depthwise convolution for the `cpu` engine: a tract op that replaces every f32, NCHW,
//! two-dimensional `Conv` whose groups equal its input and output channels (MobileNet's 3×3
//! depthwise layers), substituted in the decluttered model before tract optimizes it.
//!
//! tract 0.23.9 runs these with a generic zone walk and a per-row AVX kernel that stays scalar
//! at stride 2; they were 31–39% of MobileNetV2's time. Here each channel plane is copied once
//! into a zero-padded scratch split into stride phases, so every tap of every output row is
//! one contiguous run of the scratch, and [`edge_kernels::depthwise`]'s kernel for this CPU
//! (AVX2+FMA or NEON rows, the AVX-512 flat plane, plain Rust elsewhere; chosen when the op is
//! built) computes the plane. A ReLU/ReLU6 that follows (`Max`/`Min` against a constant) is
//! fused into the store. Channels are split over the plan's thread pool. Reading 8-bit values
//! with int8 weights, it runs [`edge_kernels::qdepthwise`]'s integer kernel where the CPU has
//! one ([`super::qdepthwise`] holds its plan).
//!
//! Channel-last graphs are left to tract: on aarch64 tract declutters MobileNet-style models to
//! HWC and runs its own NEON channel-last depthwise kernel, which this op does not replace.

use super::threads::par_rows;
use edge_kernels::depthwise::Kernel;
use edge_kernels::geometry::{fill_phases, Plain, Rounded};
use edge_kernels::qdepthwise::PlaneOut;
use edge_kernels::{Geometry, Isa, U8Form};
use tract_nnef::tract_core::internal::*;
use tract_nnef::tract_core::ops::cnn::Conv;

use super::activations::{Dst, Src};
use super::conv2d::{constant_kernel_and_bias, conv_geometry, Planes};
use super::qdepthwise::IntegerPlan;
use super::Floats;

/// Replaces every depthwise `Conv` this op handles, with the clamps that follow it (ReLU,
/// ReLU6: `Max`/`Min` against a constant) fused in; returns how many it replaced.
pub fn substitute(model: &mut TypedModel) -> TractResult<usize> {
    let mut replaced = 0;
    for id in model.eval_order()? {
        let Some(conv) = model.node(id).op_as::<Conv>() else {
            continue;
        };
        let Some(mut op) = DepthwiseConv::from_conv(model, model.node(id), conv)? else {
            continue;
        };
        let (last, clamp) = super::following_clamp(model, id)?;
        op.clamp = clamp.map(|(lo, hi)| (lo.to_bits(), hi.to_bits()));
        let mut input = model.node(id).inputs[0];
        // reading a pair: quantize in the fill and run in integers, where that is possible
        if let Some((read_from, form)) = super::fake_quant::quantizing_read(model, input)? {
            let integer = op.with_input(form);
            if integer.is_integer() {
                op = DepthwiseConv {
                    quantizes: true,
                    ..integer
                };
                input = read_from;
            }
        }
        super::replace_run(model, input, id, last, op)?;
        replaced += 1;
    }
    Ok(replaced)
}

/// The depthwise convolution op: input `[N, C, H, W]` (or `[C, H, W]`), constant kernel
/// `[C, 1, kh, kw]` and bias; input and output f32, or 8-bit values of a quantize→dequantize
/// pair's form ([`super::u8_activations`] links it to its neighbours).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DepthwiseConv {
    geometry: Geometry,
    /// `[N, C, H, W]` rather than `[C, H, W]`
    batched: bool,
    /// Outputs clamped to `[lo, hi]` (f32 bits): a fused ReLU or ReLU6.
    clamp: Option<(u32, u32)>,
    channels: usize,
    /// `[C, kh·kw]`
    kernel: Floats,
    /// `[C]`
    bias: Floats,
    /// The row kernel, picked for this CPU when the op is built (not per call).
    kind: Kernel,
    /// The input arrives as this form's 8-bit values rather than f32.
    input: Option<U8Form>,
    /// The outputs are written as this form's 8-bit values rather than f32.
    output: Option<U8Form>,
    /// The integer kernel's plan, when the input is 8-bit, the weights int8 multiples and
    /// the CPU runs it ([`super::qdepthwise`]).
    integer: Option<Box<IntegerPlan>>,
    /// The input is f32, quantized to the `input` form as it is copied (the pair it replaced).
    quantizes: bool,
}

impl DepthwiseConv {
    /// The op for `conv` at `node`, or `None` when it is not a case this op handles.
    fn from_conv(model: &TypedModel, node: &TypedNode, conv: &Conv) -> TractResult<Option<Self>> {
        let spec = &conv.pool_spec;
        if conv.group < 2 || conv.group != spec.input_channels || conv.group != spec.output_channels
        {
            return Ok(None);
        }
        let Some((geometry, batched)) = conv_geometry(model, node, conv)? else {
            return Ok(None);
        };
        let channels = conv.group;
        let taps = geometry.kh * geometry.kw;
        let Some((kernel, bias)) = constant_kernel_and_bias(model, node, channels, taps)? else {
            return Ok(None);
        };
        let mut op = DepthwiseConv::new(geometry, channels, kernel, bias)?;
        op.batched = batched;
        Ok(Some(op))
    }

    fn planes(&self) -> Planes {
        Planes {
            geometry: self.geometry,
            batched: self.batched,
            inputs: self.channels,
            outputs: self.channels,
        }
    }

    /// The op for explicit weights: `kernel` is `[C, kh·kw]`, `bias` is `[C]`.
    pub fn new(
        geometry: Geometry,
        channels: usize,
        kernel: Vec<f32>,
        bias: Vec<f32>,
    ) -> TractResult<Self> {
        ensure!(geometry.valid(), "invalid depthwise geometry {geometry:?}");
        ensure!(kernel.len() == channels * geometry.kh * geometry.kw);
        ensure!(bias.len() == channels);
        Ok(DepthwiseConv {
            geometry,
            batched: true,
            clamp: None,
            channels,
            kernel: Floats(kernel),
            bias: Floats(bias),
            kind: Kernel::best(Isa::host()),
            input: None,
            output: None,
            integer: None,
            quantizes: false,
        })
    }

    /// The form of its 8-bit input, `None` when it reads f32.
    pub(crate) fn input_form(&self) -> Option<U8Form> {
        self.input
    }

    /// The op reading `form`'s 8-bit values instead of f32 (their dequantized values).
    pub(crate) fn with_input(&self, form: U8Form) -> DepthwiseConv {
        let integer = self
            .kind
            .integer_variant(Isa::host())
            .and_then(|kernel| {
                IntegerPlan::new(
                    kernel,
                    self.geometry,
                    &self.kernel.0,
                    &self.bias.0,
                    form.zero_point() as u8,
                    form.scale(),
                )
            })
            .map(Box::new);
        DepthwiseConv {
            input: Some(form),
            integer,
            quantizes: false,
            ..self.clone()
        }
    }

    /// The quantizer this op applies to an f32 input (`None` when it reads f32 as is or
    /// 8-bit values).
    pub(crate) fn quantizes_f32_input(&self) -> Option<U8Form> {
        self.input.filter(|_| self.quantizes)
    }

    /// The op reading its quantizer's 8-bit values instead of f32.
    pub(crate) fn with_u8_input(&self) -> DepthwiseConv {
        DepthwiseConv {
            quantizes: false,
            ..self.clone()
        }
    }

    /// Whether it runs on the integer kernel.
    pub(crate) fn is_integer(&self) -> bool {
        self.integer.is_some()
    }

    /// The form of its 8-bit output, `None` when it writes f32.
    pub(crate) fn output_form(&self) -> Option<U8Form> {
        self.output
    }

    /// The op writing `form`'s 8-bit values of its outputs instead of f32.
    pub(crate) fn with_output(&self, form: U8Form) -> DepthwiseConv {
        DepthwiseConv {
            output: Some(form),
            ..self.clone()
        }
    }

    /// Runs the convolution over `input` (`[N, C, H, W]`, row-major) with `kind`'s kernels;
    /// input and output as the op's forms say.
    pub(crate) fn run(&self, kind: Kernel, input: Src, n: usize, output: Dst) -> TractResult<()> {
        let g = self.geometry;
        let (ho, wo) = g.output();
        let plane_in = g.h * g.w;
        let plane_out = ho * wo;
        ensure!(input.len() == n * self.channels * plane_in);
        ensure!(output.len() == n * self.channels * plane_out);
        let fill = match (input, self.input) {
            (Src::F32(x), None) => Fill::F32(x),
            (Src::F32(x), Some(form)) if self.quantizes => Fill::Quantize(x, form),
            (Src::U8(x), Some(form)) if !self.quantizes => Fill::U8(x, form),
            _ => bail!("input type is not the op's"),
        };
        if plane_out == 0 {
            return Ok(());
        }
        if let Some(plan) = &self.integer {
            // the integer kernel stands in for the kernel it was planned for
            if kind.integer_variant(Isa::host()) == Some(plan.kernel) {
                return self.run_integer(plan, fill, n, output);
            }
        }
        let taps = g.kh * g.kw;
        let offsets = g.tap_offsets();
        let (_, wq) = g.phase();
        let masks = g.flat_masks();
        let clamp = self
            .clamp
            .map(|(lo, hi)| (f32::from_bits(lo), f32::from_bits(hi)));
        // one channel plane of `plane`'s output into `out`, through `scratch`
        let prepare = |plane: usize, scratch: &mut [f32], tap_ptrs: &mut [*const f32]| {
            let c = plane % self.channels;
            let input = at_plane(fill, plane, plane_in);
            match input {
                Fill::F32(x) => fill_phases(&g, x, scratch, &Plain),
                Fill::U8(x, form) => kind.fill_u8(&g, x, scratch, form),
                Fill::Quantize(x, form) => fill_phases(&g, x, scratch, &Rounded(form)),
            }
            for (p, &o) in tap_ptrs.iter_mut().zip(&offsets) {
                *p = scratch[o..].as_ptr();
            }
            (&self.kernel.0[c * taps..][..taps], self.bias.0[c])
        };
        // SAFETY (every `plane` call below): each tap's run for the last output row ends
        // inside its phase, before the scratch's slack (see `Geometry::scratch_len`), so the
        // taps cover the kernel's reads; `out` is one output plane; `scratch` is not written
        // until the next channel.
        let work = n * self.channels * plane_in * taps;
        match (output, self.output) {
            (Dst::F32(output), None) => par_rows(output, plane_out, work, |first, chunk| {
                let mut scratch = vec![0f32; g.scratch_len()];
                let mut tap_ptrs = vec![std::ptr::null::<f32>(); taps];
                for (ix, out) in chunk.chunks_exact_mut(plane_out).enumerate() {
                    let (weights, bias) = prepare(first + ix, &mut scratch, &mut tap_ptrs);
                    // SAFETY: see above.
                    unsafe { kind.plane(out, wo, wq, &masks, &tap_ptrs, weights, bias, clamp) };
                }
                Ok(())
            }),
            (Dst::U8(output), Some(form)) => {
                let q = form.requantizer(clamp);
                par_rows(output, plane_out, work, |first, chunk| {
                    let mut scratch = vec![0f32; g.scratch_len()];
                    let mut tap_ptrs = vec![std::ptr::null::<f32>(); taps];
                    // the f32 plane for kernels without a byte store (not AVX-512)
                    let mut floats = Vec::new();
                    for (ix, out) in chunk.chunks_exact_mut(plane_out).enumerate() {
                        let (weights, bias) = prepare(first + ix, &mut scratch, &mut tap_ptrs);
                        // SAFETY: see above.
                        unsafe {
                            kind.plane_u8(
                                out,
                                wo,
                                wq,
                                &masks,
                                &tap_ptrs,
                                weights,
                                bias,
                                q,
                                &mut floats,
                            )
                        };
                    }
                    Ok(())
                })
            }
            _ => bail!("output type is not the op's"),
        }
    }

    /// [`DepthwiseConv::run`] on the integer kernel.
    fn run_integer(
        &self,
        plan: &IntegerPlan,
        fill: Fill,
        n: usize,
        output: Dst,
    ) -> TractResult<()> {
        let g = self.geometry;
        let (plane_in, (ho, wo)) = (g.h * g.w, g.output());
        let clamp = self
            .clamp
            .map(|(lo, hi)| (f32::from_bits(lo), f32::from_bits(hi)));
        let work = n * self.channels * ho * wo * g.kh * g.kw;
        let kernel = plan.kernel;
        let permutes = kernel.permutes(&plan.plane);
        let per_channel = plan.plane.groups.len();
        // fills the scratch with plane `plane`'s input and returns its channel's words and
        // (scale, offset)
        let prepare = |plane: usize, scratch: &mut [u8]| -> TractResult<(&[i32], (f32, f32))> {
            match at_plane(fill, plane, plane_in) {
                Fill::U8(x, _) => kernel.fill_bytes(&plan.plane, x, scratch),
                Fill::Quantize(x, form) => kernel.fill_quantized(&plan.plane, x, scratch, form),
                Fill::F32(_) => bail!("the integer kernel reads 8-bit values"),
            }
            let c = plane % self.channels;
            let words = &plan.words[c * per_channel..][..per_channel];
            Ok((words, (plan.scale.0[c], plan.offset.0[c])))
        };
        match (output, self.output) {
            (Dst::F32(out), None) => par_rows(out, ho * wo, work, |first, chunk| {
                let mut scratch = kernel.scratch(&plan.plane);
                for (ix, out) in chunk.chunks_exact_mut(ho * wo).enumerate() {
                    let (words, affine) = prepare(first + ix, &mut scratch)?;
                    let out = PlaneOut::F32(out, clamp);
                    kernel.plane(&plan.plane, out, &scratch, &permutes, words, affine);
                }
                Ok(())
            }),
            (Dst::U8(out), Some(form)) => {
                let q = form.requantizer(clamp);
                par_rows(out, ho * wo, work, |first, chunk| {
                    let mut scratch = kernel.scratch(&plan.plane);
                    for (ix, out) in chunk.chunks_exact_mut(ho * wo).enumerate() {
                        let (words, affine) = prepare(first + ix, &mut scratch)?;
                        let out = PlaneOut::U8(out, q);
                        kernel.plane(&plan.plane, out, &scratch, &permutes, words, affine);
                    }
                    Ok(())
                })
            }
            _ => bail!("output type is not the op's"),
        }
    }
}

/// The input of channel plane `plane` (`plane_in` values each).
#[inline(always)]
fn at_plane(fill: Fill, plane: usize, plane_in: usize) -> Fill {
    let at = plane * plane_in;
    match fill {
        Fill::F32(x) => Fill::F32(&x[at..][..plane_in]),
        Fill::U8(x, form) => Fill::U8(&x[at..][..plane_in], form),
        Fill::Quantize(x, form) => Fill::Quantize(&x[at..][..plane_in], form),
    }
}

/// Where a plane's values come from: f32, 8-bit values widened as they are copied, or f32
/// rounded to a form's values as they are copied.
#[derive(Clone, Copy)]
enum Fill<'a> {
    F32(&'a [f32]),
    U8(&'a [u8], U8Form),
    Quantize(&'a [f32], U8Form),
}

impl Op for DepthwiseConv {
    fn name(&self) -> StaticName {
        "EdgeDepthwiseConv".into()
    }

    fn info(&self) -> TractResult<Vec<String>> {
        Ok(vec![format!("{:?}", self.geometry)])
    }

    fn validation(&self) -> Validation {
        Validation::Rounding
    }

    op_as_typed_op!();
}

impl EvalOp for DepthwiseConv {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        self.planes()
            .eval(args_1!(inputs), self.output.is_some(), |x, n, out| {
                self.run(self.kind, x, n, out)
            })
    }
}

impl TypedOp for DepthwiseConv {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        self.planes()
            .output_facts(inputs, super::activations::datum(self.output))
    }

    fn cost(&self, inputs: &[&TypedFact]) -> TractResult<TVec<(Cost, TDim)>> {
        let g = self.geometry;
        self.planes().cost(inputs, g.kh * g.kw)
    }

    as_op!();
}

#[cfg(test)]
mod tests {
    use super::*;
    use edge_kernels::testing::geometries;
    #[allow(unused_imports)]
    use tract_onnx::prelude::{InferenceFact, InferenceModelExt};

    /// The textbook loop.
    fn reference(op: &DepthwiseConv, input: &[f32], n: usize) -> Vec<f32> {
        let g = op.geometry;
        let (ho, wo) = g.output();
        let mut out = vec![0f32; n * op.channels * ho * wo];
        for b in 0..n {
            for c in 0..op.channels {
                let plane = &input[(b * op.channels + c) * g.h * g.w..][..g.h * g.w];
                for y in 0..ho {
                    for x in 0..wo {
                        let mut acc = op.bias.0[c] as f64;
                        for ky in 0..g.kh {
                            for kx in 0..g.kw {
                                let Some((iy, ix)) = g.input_at((y, x), (ky, kx)) else {
                                    continue;
                                };
                                let v = plane[iy * g.w + ix] as f64;
                                acc += v * op.kernel.0[c * g.kh * g.kw + ky * g.kw + kx] as f64;
                            }
                        }
                        out[((b * op.channels + c) * ho + y) * wo + x] = acc as f32;
                    }
                }
            }
        }
        out
    }

    fn values(len: usize, seed: u32) -> Vec<f32> {
        (0..len)
            .map(|i| (i as f32 * 0.618 + seed as f32 * 1.3).sin() * 2.0)
            .collect()
    }

    #[test]
    fn every_kernel_matches_the_textbook_loop() {
        let mut cases = 0;
        for g in geometries(
            &[(1, 1), (5, 7), (7, 7), (14, 14), (17, 70), (112, 112)],
            &[(1, 1), (3, 3), (5, 5), (3, 1)],
            &[(0, 0, 0, 0), (1, 1, 1, 1), (0, 1, 2, 0), (2, 2, 2, 2)],
        ) {
            let Geometry {
                h,
                w,
                kh,
                kw,
                sy,
                dy,
                ..
            } = g;
            if h == 112 && (kh, sy, dy) != (3, 2, 1) {
                continue;
            }
            let (channels, n) = (3, 2);
            let mut op = DepthwiseConv::new(
                g,
                channels,
                values(channels * kh * kw, 1),
                values(channels, 2),
            )
            .unwrap();
            let input = values(n * channels * h * w, 3);
            let clamp = [None, Some((0.0f32, 6.0f32)), Some((-0.5, 0.75))][cases % 3];
            op.clamp = clamp.map(|(lo, hi)| (lo.to_bits(), hi.to_bits()));
            let mut want = reference(&op, &input, n);
            if let Some((lo, hi)) = clamp {
                want.iter_mut().for_each(|v| *v = v.clamp(lo, hi));
            }
            for kind in Kernel::available(Isa::host()) {
                let mut got = vec![f32::NAN; want.len()];
                op.run(kind, Src::F32(&input), n, Dst::F32(&mut got))
                    .unwrap();
                crate::engine::assert_close(&got, &want, (kind, g));
            }
            cases += 1;
        }
        assert!(cases > 300, "only {cases} geometries checked");
    }

    /// With 8-bit input and output, every kernel gives the bytes of its own f32 path run on
    /// the dequantized input, clamped and quantized.
    #[test]
    fn eight_bit_input_and_output_are_the_float_paths_values() {
        let (form_in, form_out) = (
            U8Form::new(1.0 / 0.04, 121.0, 0.04),
            U8Form::new(1.0 / 0.03, 7.0, 0.03),
        );
        for (h, w, s, pad) in [
            (14, 14, 1, 1),
            (17, 70, 2, 1),
            (7, 9, 2, 0),
            (112, 112, 2, 1),
        ] {
            let g = Geometry {
                h,
                w,
                kh: 3,
                kw: 3,
                sy: s,
                sx: s,
                dy: 1,
                dx: 1,
                pad_top: pad,
                pad_left: pad,
                pad_bottom: pad,
                pad_right: pad,
            };
            let (channels, n) = (5, 1);
            let mut op =
                DepthwiseConv::new(g, channels, values(channels * 9, 4), values(channels, 5))
                    .unwrap();
            op.clamp = Some((0f32.to_bits(), 1.5f32.to_bits()));
            let bytes: Vec<u8> = (0..channels * h * w)
                .map(|i| (i * 53 % 256) as u8)
                .collect();
            let floats: Vec<f32> = bytes.iter().map(|&q| form_in.dequantize(q)).collect();
            let linked = op.with_input(form_in).with_output(form_out);
            let (ho, wo) = g.output();
            for kind in Kernel::available(Isa::host()) {
                let mut want = vec![0f32; channels * ho * wo];
                op.run(kind, Src::F32(&floats), n, Dst::F32(&mut want))
                    .unwrap();
                let mut got = vec![0u8; want.len()];
                linked
                    .run(kind, Src::U8(&bytes), n, Dst::U8(&mut got))
                    .unwrap();
                for (i, (a, b)) in got.iter().zip(&want).enumerate() {
                    assert_eq!(*a, form_out.quantize(*b), "{kind:?} {g:?} at {i}");
                }
                // a mismatched input type is an error, not a misread
                let mut out = vec![0u8; want.len()];
                assert!(linked
                    .run(kind, Src::F32(&floats), n, Dst::U8(&mut out))
                    .is_err());
            }
        }
    }

    /// Int8 weights on 8-bit input run on the integer kernel (where the CPU has it) and give
    /// the textbook loop's values on the dequantized input: f32 outputs to float rounding,
    /// 8-bit ones within one step (a value at a rounding tie may land either side).
    #[test]
    fn the_integer_kernel_matches_the_textbook_loop() {
        let (form_in, form_out) = (
            U8Form::new(1.0 / 0.04, 121.0, 0.04),
            U8Form::new(1.0 / 0.03, 87.0, 0.03),
        );
        let (mut cases, mut integer) = (0, 0);
        for g in geometries(
            &[(1, 1), (5, 7), (7, 7), (14, 14), (17, 70), (56, 56)],
            &[(1, 1), (3, 3), (5, 5), (3, 1), (1, 7)],
            &[(0, 0, 0, 0), (1, 1, 1, 1), (0, 1, 2, 0)],
        ) {
            let Geometry { h, w, kh, kw, .. } = g;
            let (channels, n) = (3, 2);
            let taps = kh * kw;
            // int8 multiples of a per-channel scale, one channel all zero
            let kernel: Vec<f32> = (0..channels * taps)
                .map(|i| {
                    let c = i / taps;
                    let q = ((i * 37 + cases) % 255) as f32 - 127.0;
                    if c == 1 {
                        0.0
                    } else {
                        q * 0.01 * (c + 1) as f32
                    }
                })
                .collect();
            let mut op = DepthwiseConv::new(g, channels, kernel, values(channels, 2)).unwrap();
            let clamp = [None, Some((0.0f32, 6.0f32))][cases % 2];
            op.clamp = clamp.map(|(lo, hi)| (lo.to_bits(), hi.to_bits()));
            let bytes: Vec<u8> = (0..n * channels * h * w)
                .map(|i| ((i * 53 + cases) % 256) as u8)
                .collect();
            let floats: Vec<f32> = bytes.iter().map(|&q| form_in.dequantize(q)).collect();
            let mut want = reference(&op, &floats, n);
            if let Some((lo, hi)) = clamp {
                want.iter_mut().for_each(|v| *v = v.clamp(lo, hi));
            }
            let linked = op.with_input(form_in);
            integer += linked.is_integer() as usize;
            let mut got = vec![f32::NAN; want.len()];
            linked
                .run(
                    Kernel::best(Isa::host()),
                    Src::U8(&bytes),
                    n,
                    Dst::F32(&mut got),
                )
                .unwrap();
            crate::engine::assert_close(&got, &want, g);
            let linked = linked.with_output(form_out);
            let mut got = vec![0u8; want.len()];
            linked
                .run(
                    Kernel::best(Isa::host()),
                    Src::U8(&bytes),
                    n,
                    Dst::U8(&mut got),
                )
                .unwrap();
            for (i, (&a, &b)) in got.iter().zip(&want).enumerate() {
                let b = form_out.quantize(b);
                assert!(a.abs_diff(b) <= 1, "{g:?} at {i}: {a} vs {b}");
            }
            // f32 input (some of it out of the form's range) quantized as it
            // is copied: the same values as the bytes it rounds to, on every
            // kernel
            let raw: Vec<f32> = floats.iter().map(|v| v * 1.5).collect();
            let rounded: Vec<u8> = raw.iter().map(|&v| form_in.quantize(v)).collect();
            let mut want = vec![0f32; want.len()];
            op.with_input(form_in)
                .run(
                    Kernel::best(Isa::host()),
                    Src::U8(&rounded),
                    n,
                    Dst::F32(&mut want),
                )
                .unwrap();
            let quantizing = DepthwiseConv {
                quantizes: true,
                ..op.with_input(form_in)
            };
            assert_eq!(quantizing.quantizes_f32_input(), Some(form_in));
            for kind in Kernel::available(Isa::host()) {
                let mut got = vec![f32::NAN; want.len()];
                quantizing
                    .run(kind, Src::F32(&raw), n, Dst::F32(&mut got))
                    .unwrap();
                crate::engine::assert_close(&got, &want, (kind, g));
            }
            cases += 1;
        }
        assert!(cases > 300, "only {cases} geometries checked");
        if crate::engine::qdepthwise::available() {
            // all but the windows too wide for one load (stride 3 with a dilated row)
            assert!(
                integer > cases * 9 / 10,
                "{integer} of {cases} on the integer kernel"
            );
        }
    }
}

#[cfg(test)]
mod model_tests {
    use super::*;
    use tract_nnef::tract_core::ops::cnn::PaddingSpec;

    /// Same outputs as tract's own depthwise convolution, for paddings tract computes itself.
    #[test]
    fn matches_tracts_own_depthwise_convolution() {
        let cases = [
            (
                [1, 8, 9, 9],
                [3, 3],
                [1, 1],
                [1, 1],
                PaddingSpec::SameUpper,
                true,
            ),
            (
                [2, 4, 10, 7],
                [3, 3],
                [2, 2],
                [1, 1],
                PaddingSpec::SameUpper,
                false,
            ),
            (
                [1, 4, 10, 7],
                [3, 3],
                [2, 2],
                [1, 1],
                PaddingSpec::SameLower,
                true,
            ),
            (
                [1, 3, 11, 13],
                [5, 5],
                [2, 1],
                [1, 1],
                PaddingSpec::Valid,
                false,
            ),
            (
                [1, 16, 14, 14],
                [3, 3],
                [1, 1],
                [2, 2],
                PaddingSpec::SameUpper,
                true,
            ),
            (
                [1, 6, 12, 12],
                [3, 3],
                [2, 2],
                [1, 1],
                PaddingSpec::Explicit(tvec![1, 0], tvec![0, 1]),
                true,
            ),
        ];
        for (shape, kernel, strides, dilations, padding, relu6) in cases {
            let model = crate::engine::TestConv {
                shape,
                outputs: shape[1],
                group: shape[1],
                kernel,
                strides,
                dilations,
                padding: padding.clone(),
                clamp: relu6.then_some(6.0),
            }
            .model();
            let input: Vec<f32> = (0..shape.iter().product::<usize>())
                .map(|i| (i as f32 * 0.11).sin() * 8.0)
                .collect();
            let input = tract_ndarray::ArrayD::from_shape_vec(&shape[..], input)
                .unwrap()
                .into_tensor();
            let run = |model: TypedModel| super::super::run_f32(model, &input, true);
            let want = run(model.clone());
            let mut ours = model.into_decluttered().unwrap();
            assert_eq!(substitute(&mut ours).unwrap(), 1, "{padding:?}");
            let op = ours.nodes().iter().find_map(|n| n.op_as::<DepthwiseConv>());
            assert_eq!(op.unwrap().clamp.is_some(), relu6, "ReLU6 fused");
            let got = run(ours);
            assert_eq!(got.len(), want.len());
            for (a, b) in got.iter().zip(&want) {
                assert!(
                    (a - b).abs() <= 1e-5 * (1.0 + b.abs()),
                    "{padding:?}: {a} vs {b}"
                );
            }
        }
    }

    /// MobileNetV2: every channel-first depthwise layer runs on this op with its ReLU6 fused
    /// (on x86-64 all 17; tract declutters to channel-last on aarch64, where its own NEON kernel
    /// keeps those).
    #[test]
    fn mobilenetv2_runs_its_depthwise_layers_here_with_relu6_fused() {
        use tract_onnx::prelude::InferenceModelExt;
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../models/mobilenetv2/model.onnx"
        );
        let model = crate::engine::onnx_parser()
            .model_for_path(path)
            .unwrap()
            .with_input_fact(0, f32::fact([1, 3, 224, 224]).into())
            .unwrap();
        let mut typed = model.into_typed().unwrap().into_decluttered().unwrap();
        let channel_first = typed
            .nodes()
            .iter()
            .filter_map(|n| n.op_as::<Conv>())
            .filter(|c| c.group > 1 && !c.pool_spec.data_format.c_is_last())
            .count();
        #[cfg(target_arch = "x86_64")]
        assert_eq!(channel_first, 17);
        assert_eq!(substitute(&mut typed).unwrap(), channel_first);
        let typed = typed.into_optimized().unwrap();
        let ours: Vec<&DepthwiseConv> = typed
            .nodes()
            .iter()
            .filter_map(|n| n.op_as::<DepthwiseConv>())
            .collect();
        assert_eq!(ours.len(), channel_first);
        for op in ours {
            assert_eq!(op.clamp, Some((0f32.to_bits(), 6f32.to_bits())), "{op:?}");
        }
    }
}
