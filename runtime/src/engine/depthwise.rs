//! Fast depthwise convolution for the `cpu` engine: a tract op that replaces every f32, NCHW,
//! two-dimensional `Conv` whose groups equal its input and output channels (MobileNet's 3×3
//! depthwise layers), substituted in the decluttered model before tract optimizes it.
//!
//! tract 0.23.9 runs these with a generic zone walk and a per-row AVX kernel that stays scalar
//! at stride 2; they were 31–39% of MobileNetV2's time. Here each channel plane is copied once
//! into a zero-padded scratch split into stride phases (`plane[py][px][i][j] = padded[i·sy+py]
//! [j·sx+px]`), so every tap of every output row is one contiguous run of the scratch: an
//! output row is `bias + Σ w_t · run_t`, computed with FMA on AVX2+FMA or NEON, chosen at run
//! time, with a scalar fallback for every other target (armv7 included). AVX-512 goes further
//! and runs the whole plane as one run (output rows laid flat at the phase row stride, 64
//! points per block, the columns past the output width dropped by a compress before the
//! store): small planes (7×7, 14×14) no longer pay a latency-bound masked tail per row. A ReLU/ReLU6 that follows (`Max`/`Min` against a constant) is
//! fused into the store. Channels are split over the plan's thread pool.
//!
//! Channel-last graphs are left to tract: on aarch64 tract declutters MobileNet-style models to
//! HWC and runs its own NEON channel-last depthwise kernel, which this op does not replace.

use tract_linalg::multithread::par_chunks_mut;
use tract_onnx::tract_hir::internal::*;

#[cfg(target_arch = "x86_64")]
use super::qdepthwise;
use super::qdepthwise::IntegerPlan;
use super::u8_activations::{Dst, Src, U8Form};
use super::Floats;
use tract_onnx::tract_hir::tract_core::ops::cnn::{Conv, KernelFormat};
use tract_onnx::tract_hir::tract_core::ops::nn::DataFormat;

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

/// Where the convolution reads: kernel size, strides, dilations and explicit padding, for one
/// concrete input plane size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Geometry {
    /// Input rows.
    pub h: usize,
    /// Input columns.
    pub w: usize,
    /// Kernel rows.
    pub kh: usize,
    /// Kernel columns.
    pub kw: usize,
    /// Vertical stride.
    pub sy: usize,
    /// Horizontal stride.
    pub sx: usize,
    /// Vertical dilation.
    pub dy: usize,
    /// Horizontal dilation.
    pub dx: usize,
    /// Zero rows above.
    pub pad_top: usize,
    /// Zero columns to the left.
    pub pad_left: usize,
    /// Zero rows below.
    pub pad_bottom: usize,
    /// Zero columns to the right.
    pub pad_right: usize,
}

impl Geometry {
    /// The geometry of a float, channel-first, two-dimensional `conv` at `node` whose input
    /// plane size is known, with whether its input has a batch axis (`NCHW` rather than
    /// `CHW`); `None` for any other convolution.
    pub(crate) fn of_conv(
        model: &TypedModel,
        node: &TypedNode,
        conv: &Conv,
    ) -> TractResult<Option<(Geometry, bool)>> {
        let spec = &conv.pool_spec;
        if conv.q_params.is_some()
            || node.inputs.len() != 3
            || !matches!(spec.data_format, DataFormat::NCHW | DataFormat::CHW)
            || conv.kernel_fmt != KernelFormat::OIHW
            || spec.kernel_shape.len() != 2
        {
            return Ok(None);
        }
        let batched = spec.data_format == DataFormat::NCHW;
        let input = model.outlet_fact(node.inputs[0])?;
        let rank = if batched { 4 } else { 3 };
        if input.datum_type != f32::datum_type() || input.rank() != rank {
            return Ok(None);
        }
        let (Ok(h), Ok(w)) = (
            input.shape[rank - 2].to_usize(),
            input.shape[rank - 1].to_usize(),
        ) else {
            return Ok(None);
        };
        let padding = spec.computed_padding(&[h, w]);
        let geometry = Geometry {
            h,
            w,
            kh: spec.kernel_shape[0],
            kw: spec.kernel_shape[1],
            sy: spec.stride(0),
            sx: spec.stride(1),
            dy: spec.dilation(0),
            dx: spec.dilation(1),
            pad_top: padding[0].pad_before,
            pad_left: padding[1].pad_before,
            pad_bottom: padding[0].pad_after,
            pad_right: padding[1].pad_after,
        };
        let fits =
            geometry.valid() && geometry.output() == (padding[0].convoluted, padding[1].convoluted);
        Ok(fits.then_some((geometry, batched)))
    }

    fn padded(&self) -> (usize, usize) {
        (
            self.pad_top + self.h + self.pad_bottom,
            self.pad_left + self.w + self.pad_right,
        )
    }

    /// Output rows and columns.
    pub fn output(&self) -> (usize, usize) {
        let (hp, wp) = self.padded();
        let span_y = self.dy * (self.kh - 1) + 1;
        let span_x = self.dx * (self.kw - 1) + 1;
        (
            (hp.saturating_sub(span_y)) / self.sy + 1,
            (wp.saturating_sub(span_x)) / self.sx + 1,
        )
    }

    /// Rows and columns of one stride phase of the padded plane.
    pub(crate) fn phase(&self) -> (usize, usize) {
        let (hp, wp) = self.padded();
        (hp.div_ceil(self.sy), wp.div_ceil(self.sx))
    }

    /// Floats of scratch: every phase, plus slack so that a tap's run over all output rows
    /// (which ends up to one phase row past its phase) and full-vector reads past the run's
    /// end stay inside the buffer.
    pub(crate) fn scratch_len(&self) -> usize {
        let (hq, wq) = self.phase();
        self.sy * self.sx * hq * wq + wq + 64
    }

    /// Each tap's start in the scratch for output row 0 (tap order: row-major over the kernel).
    pub(crate) fn tap_offsets(&self) -> Vec<usize> {
        let (hq, wq) = self.phase();
        let mut offsets = Vec::with_capacity(self.kh * self.kw);
        for ky in 0..self.kh {
            for kx in 0..self.kw {
                let (ry, rx) = (ky * self.dy, kx * self.dx);
                let plane = (ry % self.sy) * self.sx + rx % self.sx;
                offsets.push(plane * hq * wq + (ry / self.sy) * wq + rx / self.sx);
            }
        }
        offsets
    }

    /// Which lanes of each 16-float vector over the output rows laid flat at the phase row
    /// stride are outputs: vector `v`, lane `l` is flat position `16v + l`, row `(16v + l) /
    /// wq`, column `(16v + l) % wq`, an output when the column is below the output width.
    /// One mask per vector, padded with empty masks to a multiple of four vectors (the flat
    /// kernel's block). Outputs of consecutive set lanes are consecutive in the output plane.
    pub(crate) fn flat_masks(&self) -> Vec<u16> {
        let ((ho, wo), (_, wq)) = (self.output(), self.phase());
        let len = (ho.max(1) - 1) * wq + wo;
        let mut masks = vec![0u16; len.div_ceil(64) * 4];
        for y in 0..ho {
            let (mut f, end) = (y * wq, y * wq + wo);
            while f < end {
                let (word, lo) = (f / 16, f % 16);
                let hi = (end - word * 16).min(16);
                masks[word] |= ((1u32 << hi) - (1u32 << lo)) as u16;
                f = word * 16 + hi;
            }
        }
        masks
    }

    pub(crate) fn valid(&self) -> bool {
        let (hp, wp) = self.padded();
        self.kh > 0
            && self.kw > 0
            && self.sy > 0
            && self.sx > 0
            && self.dy > 0
            && self.dx > 0
            && hp > self.dy * (self.kh - 1)
            && wp > self.dx * (self.kw - 1)
    }
}

/// A convolution node's constant f32 kernel (`outputs · per_output` values) and bias (one per
/// output, a single value repeated), or `None` when either is not such a constant.
pub(crate) fn constant_kernel_and_bias(
    model: &TypedModel,
    node: &TypedNode,
    outputs: usize,
    per_output: usize,
) -> TractResult<Option<(Vec<f32>, Vec<f32>)>> {
    let (Some(kernel), Some(bias)) = (
        model.outlet_fact(node.inputs[1])?.konst.clone(),
        model.outlet_fact(node.inputs[2])?.konst.clone(),
    ) else {
        return Ok(None);
    };
    if kernel.datum_type() != f32::datum_type()
        || kernel.len() != outputs * per_output
        || bias.datum_type() != f32::datum_type()
        || (bias.len() != outputs && bias.len() != 1)
    {
        return Ok(None);
    }
    let bias = super::f32_values(&bias)?;
    let bias = if bias.len() == 1 {
        vec![bias[0]; outputs]
    } else {
        bias
    };
    Ok(Some((super::f32_values(&kernel)?, bias)))
}

/// The shapes of a channel-first 2-D convolution op (input `[N, C, H, W]` or `[C, H, W]` f32,
/// output `[N, O, ho, wo]` or `[O, ho, wo]`) and what ours (this one, [`super::dense_conv`]) do
/// with them: check the input and allocate the output in `eval`, facts, cost.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Planes {
    pub geometry: Geometry,
    pub batched: bool,
    pub inputs: usize,
    pub outputs: usize,
}

impl Planes {
    /// Checks `input`'s shape (f32 or 8-bit values), allocates the output (8-bit when
    /// `u8_out`, else f32) and calls `run(input, images, output)`, which must write every
    /// output element. Ops that take f32 only pass their run through
    /// [`super::u8_activations::f32_only`].
    pub(crate) fn eval(
        &self,
        input: TValue,
        u8_out: bool,
        run: impl FnOnce(Src, usize, Dst) -> TractResult<()>,
    ) -> TractResult<TVec<TValue>> {
        let shape = input.shape();
        let g = self.geometry;
        let chw = &shape[shape.len().saturating_sub(3)..];
        ensure!(
            shape.len() == 3 + self.batched as usize && chw == [self.inputs, g.h, g.w],
            "convolution expects [{}{}, {}, {}], got {shape:?}",
            if self.batched { "N, " } else { "" },
            self.inputs,
            g.h,
            g.w
        );
        let n = if self.batched { shape[0] } else { 1 };
        let (ho, wo) = g.output();
        let mut out_shape: TVec<usize> = tvec![self.outputs, ho, wo];
        if self.batched {
            out_shape.insert(0, n);
        }
        super::u8_activations::eval_into(&input, u8_out, &out_shape, |x, out| run(x, n, out))
    }

    /// The output fact, of `dt`.
    pub(crate) fn output_facts(
        &self,
        inputs: &[&TypedFact],
        dt: DatumType,
    ) -> TractResult<TVec<TypedFact>> {
        ensure!(inputs[0].rank() == 3 + self.batched as usize);
        let (ho, wo) = self.geometry.output();
        let mut shape: TVec<TDim> = tvec![self.outputs.into(), ho.into(), wo.into()];
        if self.batched {
            shape.insert(0, inputs[0].shape[0].clone());
        }
        Ok(tvec!(dt.fact(shape)))
    }

    /// Multiply-adds: `per_output` for each output element.
    pub(crate) fn cost(
        &self,
        inputs: &[&TypedFact],
        per_output: usize,
    ) -> TractResult<TVec<(Cost, TDim)>> {
        let (ho, wo) = self.geometry.output();
        let images = if self.batched {
            inputs[0].shape[0].clone()
        } else {
            1.into()
        };
        let per_image = self.outputs * ho * wo * per_output;
        Ok(tvec!((Cost::FMA(f32::datum_type()), images * per_image)))
    }
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
        let Some((geometry, batched)) = Geometry::of_conv(model, node, conv)? else {
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
            kind: Kernel::best(),
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
            .has_integer_variant()
            .then(|| {
                IntegerPlan::new(
                    self.geometry,
                    &self.kernel.0,
                    &self.bias.0,
                    form.zero_point() as u8,
                    form.scale(),
                )
            })
            .flatten()
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
        #[cfg(target_arch = "x86_64")]
        if let (Some(plan), Kernel::Avx512) = (&self.integer, kind) {
            return self.run_integer(plan, fill, n, output);
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
            let at = plane * plane_in;
            match fill {
                Fill::F32(x) => fill_phases(&g, &x[at..][..plane_in], scratch, &Plain),
                #[cfg(target_arch = "x86_64")]
                // SAFETY: the CPU has the kernel's features
                Fill::U8(x, form) if kind == Kernel::Avx512 => unsafe {
                    x86::fill_phases_u8(&g, &x[at..][..plane_in], scratch, form)
                },
                Fill::U8(x, form) => fill_phases(&g, &x[at..][..plane_in], scratch, &form),
                Fill::Quantize(x, form) => {
                    fill_phases(&g, &x[at..][..plane_in], scratch, &Rounded(form))
                }
            }
            for (p, &o) in tap_ptrs.iter_mut().zip(&offsets) {
                *p = scratch[o..].as_ptr();
            }
            (&self.kernel.0[c * taps..][..taps], self.bias.0[c])
        };
        // SAFETY (every `plane` call below): each tap's run for the last output row ends
        // inside its phase, before the scratch's slack (see `scratch_len`); `scratch` is not
        // written until the next channel; the kernel's CPU features were checked when `kind`
        // was chosen.
        let work = n * self.channels * plane_in * taps;
        match (output, self.output) {
            (Dst::F32(output), None) => par_chunks_mut(output, plane_out, work, |first, chunk| {
                let mut scratch = vec![0f32; g.scratch_len()];
                let mut tap_ptrs = vec![std::ptr::null::<f32>(); taps];
                for (ix, out) in chunk.chunks_exact_mut(plane_out).enumerate() {
                    let (weights, bias) = prepare(first + ix, &mut scratch, &mut tap_ptrs);
                    // SAFETY: the kernel variant exists only where the CPU has its features (chosen once at load); the slices are the plan's sizes.
                    unsafe { kind.plane(out, wo, wq, &masks, &tap_ptrs, weights, bias, clamp) };
                }
                Ok(())
            }),
            (Dst::U8(output), Some(form)) => {
                let q = form.requantizer(clamp);
                par_chunks_mut(output, plane_out, work, |first, chunk| {
                    let mut scratch = vec![0f32; g.scratch_len()];
                    let mut tap_ptrs = vec![std::ptr::null::<f32>(); taps];
                    // the f32 row for kernels without a byte store (not AVX-512)
                    let mut floats = Vec::new();
                    for (ix, out) in chunk.chunks_exact_mut(plane_out).enumerate() {
                        let (weights, bias) = prepare(first + ix, &mut scratch, &mut tap_ptrs);
                        #[cfg(target_arch = "x86_64")]
                        if kind == Kernel::Avx512 {
                            // SAFETY: `kind` is Avx512, chosen only where the CPU has AVX-512F/BW; `out` is one output plane and `tap_ptrs` point into the filled scratch.
                            unsafe {
                                x86::plane_avx512_u8(out, &masks, &tap_ptrs, weights, bias, q)
                            };
                            continue;
                        }
                        floats.resize(plane_out, 0f32);
                        // SAFETY: the kernel variant exists only where the CPU has its features (chosen once at load); the slices are the plan's sizes.
                        unsafe {
                            kind.plane(&mut floats, wo, wq, &masks, &tap_ptrs, weights, bias, None)
                        };
                        for (o, &v) in out.iter_mut().zip(&floats) {
                            *o = q.apply(v);
                        }
                    }
                    Ok(())
                })
            }
            _ => bail!("output type is not the op's"),
        }
    }
}

impl DepthwiseConv {
    /// [`DepthwiseConv::run`] on the integer kernel.
    #[cfg(target_arch = "x86_64")]
    fn run_integer(
        &self,
        plan: &IntegerPlan,
        fill: Fill,
        n: usize,
        output: Dst,
    ) -> TractResult<()> {
        use x86::{Bytes, Floats, Sink};
        let g = self.geometry;
        let (ho, wo) = g.output();
        let clamp = self
            .clamp
            .map(|(lo, hi)| (f32::from_bits(lo), f32::from_bits(hi)));
        let work = n * self.channels * ho * wo * g.kh * g.kw;
        #[allow(clippy::too_many_arguments)]
        fn planes<S: Sink>(
            op: &DepthwiseConv,
            plan: &IntegerPlan,
            fill: Fill,
            out: &mut [S::Out],
            work: usize,
            sink: S,
        ) -> TractResult<()> {
            let g = op.geometry;
            let plane_in = g.h * g.w;
            let (ho, wo) = g.output();
            // SAFETY (here and below): the plan exists only where the CPU has the kernel's
            // features; the scratch is the plan's, filled before each plane.
            // SAFETY: the plan exists only where the CPU has AVX-512 VNNI + VBMI; `plan.plane` holds 64-byte permute indices.
            let groups = unsafe { qdepthwise::x86::permutes(&plan.plane) };
            let per_channel = groups.len();
            par_chunks_mut(out, ho * wo, work, |first, chunk| {
                let mut scratch = plan.plane.scratch();
                for (ix, out) in chunk.chunks_exact_mut(ho * wo).enumerate() {
                    let plane = first + ix;
                    let c = plane % op.channels;
                    let at = plane * plane_in;
                    // SAFETY: the plan exists only where the CPU has the kernel's features; the scratch is the plan's, filled before each plane.
                    unsafe {
                        match fill {
                            Fill::U8(x, _) => qdepthwise::x86::fill_bytes(
                                &plan.plane,
                                &x[at..][..plane_in],
                                &mut scratch,
                            ),
                            Fill::Quantize(x, form) => qdepthwise::x86::fill_quantized(
                                &plan.plane,
                                &x[at..][..plane_in],
                                &mut scratch,
                                form,
                            ),
                            Fill::F32(_) => bail!("the integer kernel reads 8-bit values"),
                        }
                        qdepthwise::x86::plane(
                            out,
                            &scratch,
                            g.sx,
                            &plan.plane.flat,
                            &groups,
                            &plan.words[c * per_channel..][..per_channel],
                            plan.scale.0[c],
                            plan.offset.0[c],
                            sink,
                        )
                    }
                }
                Ok(())
            })
        }
        // SAFETY (the finishing stores): the CPU has AVX-512F.
        match (output, self.output) {
            (Dst::F32(out), None) => {
                // SAFETY: this path runs only where the CPU has AVX-512F (the plan was built for it).
                planes(self, plan, fill, out, work, unsafe { Floats::new(clamp) })
            }
            (Dst::U8(out), Some(form)) => {
                // SAFETY: this path runs only where the CPU has AVX-512F/BW (the plan was built for it).
                let sink = unsafe { Bytes::new(form.requantizer(clamp)) };
                planes(self, plan, fill, out, work, sink)
            }
            _ => bail!("output type is not the op's"),
        }
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

/// How [`fill_phases`] turns input values into the scratch's floats.
pub(crate) trait PhaseValues<T: Copy> {
    /// `dst[i] = value(src[i])`.
    fn copy_row(&self, src: &[T], dst: &mut [f32]);
    /// `even[k] = value(src[2k])`, `odd[k] = value(src[2k + 1])` for every whole pair.
    fn copy_pairs(&self, src: &[T], even: &mut [f32], odd: &mut [f32]);
    fn value(&self, v: T) -> f32;
}

/// f32 input, copied as is.
pub(crate) struct Plain;

impl PhaseValues<f32> for Plain {
    #[inline(always)]
    fn copy_row(&self, src: &[f32], dst: &mut [f32]) {
        dst.copy_from_slice(src)
    }

    #[inline(always)]
    fn copy_pairs(&self, src: &[f32], even: &mut [f32], odd: &mut [f32]) {
        // (vectorized shuffles)
        for ((e, o), pair) in even.iter_mut().zip(odd.iter_mut()).zip(src.chunks_exact(2)) {
            *e = pair[0];
            *o = pair[1];
        }
    }

    #[inline(always)]
    fn value(&self, v: f32) -> f32 {
        v
    }
}

/// f32 input through a quantize→dequantize pair's rounding (the kernels without an integer
/// variant).
struct Rounded(U8Form);

impl PhaseValues<f32> for Rounded {
    fn copy_row(&self, src: &[f32], dst: &mut [f32]) {
        for (d, &v) in dst.iter_mut().zip(src) {
            *d = self.value(v);
        }
    }

    fn copy_pairs(&self, src: &[f32], even: &mut [f32], odd: &mut [f32]) {
        for ((e, o), pair) in even.iter_mut().zip(odd.iter_mut()).zip(src.chunks_exact(2)) {
            *e = self.value(pair[0]);
            *o = self.value(pair[1]);
        }
    }

    fn value(&self, v: f32) -> f32 {
        self.0.dequantize(self.0.quantize(v))
    }
}

/// 8-bit input, dequantized (the values the pair it replaces would have written).
impl PhaseValues<u8> for U8Form {
    #[inline(always)]
    fn copy_row(&self, src: &[u8], dst: &mut [f32]) {
        self.dequantize_row(src, dst)
    }

    #[inline(always)]
    fn copy_pairs(&self, src: &[u8], even: &mut [f32], odd: &mut [f32]) {
        self.dequantize_pairs(&src[..src.len() / 2 * 2], even, odd)
    }

    #[inline(always)]
    fn value(&self, v: u8) -> f32 {
        self.dequantize(v)
    }
}

/// Copies one input plane into the zero-padded stride phases of `scratch` (through `values`).
/// Only interior positions are written; padding positions keep the zeros the scratch was
/// created with.
pub(crate) fn fill_phases<T: Copy>(
    g: &Geometry,
    input: &[T],
    scratch: &mut [f32],
    values: &impl PhaseValues<T>,
) {
    let (hq, wq) = g.phase();
    if g.sy == 1 && g.sx == 1 {
        let mut at = g.pad_top * wq + g.pad_left;
        for row in input.chunks_exact(g.w) {
            values.copy_row(row, &mut scratch[at..at + g.w]);
            at += wq;
        }
        return;
    }
    // padded row r = iy + pad_top is row i = r / sy of phase py = r % sy (kept incrementally:
    // no division per row)
    let (mut py, mut i) = (g.pad_top % g.sy, g.pad_top / g.sy);
    for row in input.chunks_exact(g.w) {
        let (this_py, this_i) = (py, i);
        py += 1;
        if py == g.sy {
            py = 0;
            i += 1;
        }
        let (py, i) = (this_py, this_i);
        if g.sx == 1 {
            let start = py * hq * wq + i * wq + g.pad_left;
            values.copy_row(row, &mut scratch[start..start + g.w]);
            continue;
        }
        if g.sx == 2 {
            // input column 2k lands in phase pl % 2 at k + pl / 2, column 2k + 1 in phase
            // (pl + 1) % 2 at k + (pl + 1) / 2; one pass over pairs
            let pl = g.pad_left;
            let phase_base = |px: usize| (py * 2 + px) * hq * wq + i * wq;
            let (even_at, odd_at) = (
                phase_base(pl % 2) + pl / 2,
                phase_base((pl + 1) % 2) + pl.div_ceil(2),
            );
            let (even, odd) = if even_at < odd_at {
                let (lo, hi) = scratch.split_at_mut(odd_at);
                (&mut lo[even_at..], hi)
            } else {
                let (lo, hi) = scratch.split_at_mut(even_at);
                (hi, &mut lo[odd_at..])
            };
            if g.w % 2 == 1 {
                even[g.w / 2] = values.value(row[g.w - 1]);
            }
            let n = g.w / 2;
            values.copy_pairs(&row[..2 * n], &mut even[..n], &mut odd[..n]);
            continue;
        }
        for px in 0..g.sx {
            // input columns ix with (ix + pad_left) % sx == px land at j = (ix + pad_left) / sx
            let first_ix = (px + g.sx - g.pad_left % g.sx) % g.sx;
            if first_ix >= g.w {
                continue;
            }
            let j0 = (first_ix + g.pad_left) / g.sx;
            let base = (py * g.sx + px) * hq * wq + i * wq + j0;
            for (dst, src) in scratch[base..]
                .iter_mut()
                .zip(row[first_ix..].iter().step_by(g.sx))
            {
                *dst = values.value(*src);
            }
        }
    }
}

/// The row kernel: `out[x] = bias + Σ_t weights[t] · taps[t][x]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kernel {
    /// Plain Rust, any target.
    Scalar,
    /// 8 lanes with FMA (x86-64 with AVX2 and FMA).
    #[cfg(target_arch = "x86_64")]
    Avx2Fma,
    /// 16 lanes with FMA and masked tails (x86-64 with AVX-512F).
    #[cfg(target_arch = "x86_64")]
    Avx512,
    /// 4 lanes with FMA (aarch64).
    #[cfg(target_arch = "aarch64")]
    Neon,
}

impl Kernel {
    /// The fastest kernel this CPU runs.
    pub fn best() -> Kernel {
        *Kernel::available().last().unwrap_or(&Kernel::Scalar)
    }

    /// Every kernel this CPU runs, slowest first (for tests and benchmarks).
    #[allow(unused_mut)] // only Scalar on some targets
    pub fn available() -> Vec<Kernel> {
        let mut all = vec![Kernel::Scalar];
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx2")
                && std::arch::is_x86_feature_detected!("fma")
            {
                all.push(Kernel::Avx2Fma);
            }
            if super::u8_activations::x86::available() {
                all.push(Kernel::Avx512);
            }
        }
        #[cfg(target_arch = "aarch64")]
        {
            if std::arch::is_aarch64_feature_detected!("neon") {
                all.push(Kernel::Neon);
            }
        }
        all
    }

    /// Whether [`super::qdepthwise`]'s integer kernel stands in for this one on 8-bit input
    /// (AVX-512 with VNNI and VBMI).
    fn has_integer_variant(self) -> bool {
        #[cfg(target_arch = "x86_64")]
        if self == Kernel::Avx512 {
            return qdepthwise::available();
        }
        false
    }

    /// One channel: output row `y` (`out[y·wo..][..wo]`) is `bias + Σ_t weights[t] ·
    /// taps[t][y·in_row..][..wo]`, clamped. AVX-512 runs the rows laid flat, with `flat` the
    /// geometry's [`Geometry::flat_masks`]; the row kernels ignore it.
    ///
    /// # Safety
    /// Each `taps[t]` must be readable for `(rows − 1)·in_row + wo` floats plus 64 (the widest
    /// kernel's full-vector reads), `out.len()` must be `rows · wo`, and the CPU must have this
    /// kernel's features.
    #[allow(clippy::too_many_arguments)]
    #[cfg_attr(not(target_arch = "x86_64"), allow(unused_variables))]
    unsafe fn plane(
        self,
        out: &mut [f32],
        wo: usize,
        in_row: usize,
        flat: &[u16],
        taps: &[*const f32],
        weights: &[f32],
        bias: f32,
        clamp: Option<(f32, f32)>,
    ) {
        // SAFETY: the kernel variant exists only where the CPU has its features (chosen once at load); the slices are the plan's sizes.
        unsafe {
            match self {
                Kernel::Scalar => {
                    for (y, row) in out.chunks_exact_mut(wo).enumerate() {
                        row_scalar(row, taps, y * in_row, weights, bias, clamp)
                    }
                }
                #[cfg(target_arch = "x86_64")]
                Kernel::Avx2Fma => x86::plane_avx2(out, wo, in_row, taps, weights, bias, clamp),
                #[cfg(target_arch = "x86_64")]
                Kernel::Avx512 => x86::plane_avx512(out, flat, taps, weights, bias, clamp),
                #[cfg(target_arch = "aarch64")]
                Kernel::Neon => arm::plane_neon(out, wo, in_row, taps, weights, bias, clamp),
            }
        }
    }
}

unsafe fn row_scalar(
    out: &mut [f32],
    taps: &[*const f32],
    in_off: usize,
    weights: &[f32],
    bias: f32,
    clamp: Option<(f32, f32)>,
) {
    out.fill(bias);
    for (&p, &w) in taps.iter().zip(weights) {
        // SAFETY: the caller guarantees `out.len()` readable floats at each tap.
        let run = unsafe { std::slice::from_raw_parts(p.add(in_off), out.len()) };
        for (o, x) in out.iter_mut().zip(run) {
            *o += w * x;
        }
    }
    if let Some((lo, hi)) = clamp {
        for o in out {
            *o = o.max(lo).min(hi);
        }
    }
}

/// A per-channel loop over output rows around a row kernel, compiled with its features so
/// the row kernel inlines.
#[allow(unused_macros)] // no SIMD kernel on some targets (armv7)
macro_rules! plane_fn {
    ($name:ident, $row:ident, $features:literal) => {
        #[target_feature(enable = $features)]
        #[allow(clippy::too_many_arguments)]
        pub unsafe fn $name(
            out: &mut [f32],
            wo: usize,
            in_row: usize,
            taps: &[*const f32],
            weights: &[f32],
            bias: f32,
            clamp: Option<(f32, f32)>,
        ) {
            for (y, row) in out.chunks_exact_mut(wo).enumerate() {
                // SAFETY: this fn's caller upholds its contract (the CPU has the target features; pointers cover the lengths it names).
                unsafe { $row(row, taps, y * in_row, weights, bias, clamp) }
            }
        }
    };
}

#[cfg(target_arch = "x86_64")]
pub(crate) mod x86 {
    use std::arch::x86_64::*;

    /// `a` clamped to `[lo, hi]` when `on`.
    macro_rules! clamp {
        ($on:expr, $a:expr, $lo:expr, $hi:expr, $max:ident, $min:ident) => {
            if $on {
                $min($max($a, $lo), $hi)
            } else {
                $a
            }
        };
    }

    plane_fn!(plane_avx2, row_avx2, "avx2,fma");

    /// Where [`plane_flat`] puts 16 finished sums: f32 values (clamped when `on`), or bytes.
    pub(crate) trait Sink: Copy + Send + Sync {
        type Out: Send;
        /// Stores the lanes of `mask`, packed together in lane order, at `o`.
        unsafe fn store(self, o: *mut Self::Out, mask: __mmask16, v: __m512);
    }

    /// The first `n` lanes (`n ≤ 16`).
    #[inline(always)]
    fn first(n: u32) -> __mmask16 {
        ((1u32 << n) - 1) as __mmask16
    }

    #[derive(Clone, Copy)]
    pub(crate) struct Floats {
        on: bool,
        lo: __m512,
        hi: __m512,
    }

    impl Floats {
        /// Clamped to `clamp` when there is one.
        #[target_feature(enable = "avx512f")]
        pub(crate) fn new(clamp: Option<(f32, f32)>) -> Floats {
            let (lo, hi) = clamp.unwrap_or((0.0, 0.0));
            Floats {
                on: clamp.is_some(),
                lo: _mm512_set1_ps(lo),
                hi: _mm512_set1_ps(hi),
            }
        }
    }

    impl Sink for Floats {
        type Out = f32;
        #[inline(always)]
        unsafe fn store(self, o: *mut f32, mask: __mmask16, v: __m512) {
            // SAFETY: this fn's caller upholds its contract (the CPU has the target features; pointers cover the lengths it names).
            unsafe {
                let v = clamp!(self.on, v, self.lo, self.hi, _mm512_max_ps, _mm512_min_ps);
                if mask == 0xffff {
                    _mm512_storeu_ps(o, v)
                } else {
                    let packed = _mm512_maskz_compress_ps(mask, v);
                    _mm512_mask_storeu_ps(o, first(mask.count_ones()), packed)
                }
            }
        }
    }

    /// Clamped and quantized by a requantizer (the op's clamp folded in).
    #[derive(Clone, Copy)]
    pub(crate) struct Bytes {
        inv: __m512,
        lo: __m512,
        hi: __m512,
        zp: __m512i,
    }

    impl Bytes {
        /// Requantized by `q`.
        #[target_feature(enable = "avx512f")]
        pub(crate) fn new(q: super::super::u8_activations::Requantizer) -> Bytes {
            Bytes {
                inv: _mm512_set1_ps(q.inv_scale),
                lo: _mm512_set1_ps(q.lo),
                hi: _mm512_set1_ps(q.hi),
                zp: _mm512_set1_epi32(q.zero_point),
            }
        }
    }

    impl Sink for Bytes {
        type Out = u8;
        #[inline(always)]
        unsafe fn store(self, o: *mut u8, mask: __mmask16, v: __m512) {
            use super::super::u8_activations::x86::{requantize, store_bytes};
            // SAFETY: this fn's caller upholds its contract (the CPU has the target features; pointers cover the lengths it names).
            unsafe {
                let q = requantize(v, self.inv, self.lo, self.hi, self.zp);
                if mask == 0xffff {
                    store_bytes(o, mask, q)
                } else {
                    let packed = _mm512_maskz_compress_epi32(mask, q);
                    store_bytes(o, first(mask.count_ones()), packed)
                }
            }
        }
    }

    /// [`super::fill_phases`] from bytes, compiled for AVX-512 (the row conversions inline).
    ///
    /// # Safety
    /// The CPU has AVX-512F, BW and VL.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl")]
    pub unsafe fn fill_phases_u8(
        g: &super::Geometry,
        input: &[u8],
        scratch: &mut [f32],
        form: super::U8Form,
    ) {
        super::fill_phases(g, input, scratch, &Avx512Bytes(form))
    }

    /// [`super::PhaseValues`] for bytes with the AVX-512 conversions, for `fill_phases_u8`.
    struct Avx512Bytes(super::U8Form);

    impl super::PhaseValues<u8> for Avx512Bytes {
        #[inline(always)]
        fn copy_row(&self, src: &[u8], dst: &mut [f32]) {
            use super::super::u8_activations::x86::dequantize_row;
            // SAFETY: only built inside `fill_phases_u8`, whose caller checked the features;
            // `fill_phases` passes equal lengths.
            unsafe { dequantize_row(&self.0, src, dst) }
        }

        #[inline(always)]
        fn copy_pairs(&self, src: &[u8], even: &mut [f32], odd: &mut [f32]) {
            use super::super::u8_activations::x86::dequantize_pairs;
            // SAFETY: as above; `fill_phases` passes `2·n` bytes and `n` floats each.
            unsafe { dequantize_pairs(&self.0, src, even, odd) }
        }

        #[inline(always)]
        fn value(&self, v: u8) -> f32 {
            self.0.dequantize(v)
        }
    }

    /// One channel plane on AVX-512 into f32, over the output rows laid flat (see
    /// [`super::Geometry::flat_masks`]).
    ///
    /// # Safety
    /// As [`plane_flat`].
    #[target_feature(enable = "avx512f,avx512bw,avx512vl")]
    pub unsafe fn plane_avx512(
        out: &mut [f32],
        masks: &[u16],
        taps: &[*const f32],
        weights: &[f32],
        bias: f32,
        clamp: Option<(f32, f32)>,
    ) {
        // SAFETY: the caller chose this kernel only where the CPU has AVX-512F; `out`, `taps` and `masks` describe one plane.
        unsafe { plane_flat(out, masks, taps, weights, bias, Floats::new(clamp)) }
    }

    /// One channel plane on AVX-512 into bytes: the sums requantized in registers.
    ///
    /// # Safety
    /// As [`plane_flat`].
    #[target_feature(enable = "avx512f,avx512bw,avx512vl")]
    pub unsafe fn plane_avx512_u8(
        out: &mut [u8],
        masks: &[u16],
        taps: &[*const f32],
        weights: &[f32],
        bias: f32,
        q: super::super::u8_activations::Requantizer,
    ) {
        // SAFETY: the caller chose this kernel only where the CPU has AVX-512F/BW; `out`, `taps` and `masks` describe one plane.
        unsafe { plane_flat(out, masks, taps, weights, bias, Bytes::new(q)) }
    }

    /// The plane as one run: flat position `f` (output row `f / wq`, column `f % wq`) is
    /// `bias + Σ_t weights[t] · taps[t][f]`, 64 positions per block in four independent
    /// accumulators; each vector's output lanes (`masks`) are packed and stored in order, the
    /// columns past the output width dropped. No per-row tail: a 7-wide row costs no more
    /// than its share of a vector.
    ///
    /// # Safety
    /// `masks` is the geometry's [`super::Geometry::flat_masks`] and `out` holds every output
    /// of the plane; each `taps[t]` is readable for `16 · masks.len()` floats (the scratch's
    /// slack covers the block past the last row); the CPU has AVX-512F, BW and VL.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl")]
    #[inline]
    unsafe fn plane_flat<S: Sink>(
        out: &mut [S::Out],
        masks: &[u16],
        taps: &[*const f32],
        weights: &[f32],
        bias: f32,
        sink: S,
    ) {
        let mut o = out.as_mut_ptr();
        // SAFETY: this fn's caller upholds its contract (the CPU has the target features; pointers cover the lengths it names).
        unsafe {
            let b = _mm512_set1_ps(bias);
            for (block, m) in masks.chunks_exact(4).enumerate() {
                let at = block * 64;
                let (mut a0, mut a1, mut a2, mut a3) = (b, b, b, b);
                for (&p, &w) in taps.iter().zip(weights) {
                    let k = _mm512_set1_ps(w);
                    let p = p.add(at);
                    a0 = _mm512_fmadd_ps(_mm512_loadu_ps(p), k, a0);
                    a1 = _mm512_fmadd_ps(_mm512_loadu_ps(p.add(16)), k, a1);
                    a2 = _mm512_fmadd_ps(_mm512_loadu_ps(p.add(32)), k, a2);
                    a3 = _mm512_fmadd_ps(_mm512_loadu_ps(p.add(48)), k, a3);
                }
                for (a, &m) in [a0, a1, a2, a3].into_iter().zip(m) {
                    sink.store(o, m, a);
                    o = o.add(m.count_ones() as usize);
                }
            }
        }
    }

    #[target_feature(enable = "avx2,fma")]
    #[inline]
    unsafe fn row_avx2(
        out: &mut [f32],
        taps: &[*const f32],
        in_off: usize,
        weights: &[f32],
        bias: f32,
        clamp: Option<(f32, f32)>,
    ) {
        let len = out.len();
        let o = out.as_mut_ptr();
        // SAFETY: this fn's caller upholds its contract (the CPU has the target features; pointers cover the lengths it names).
        unsafe {
            let on = clamp.is_some();
            let (lo, hi) = clamp.unwrap_or((0.0, 0.0));
            let (lo, hi) = (_mm256_set1_ps(lo), _mm256_set1_ps(hi));
            let c = |a| clamp!(on, a, lo, hi, _mm256_max_ps, _mm256_min_ps);
            let b = _mm256_set1_ps(bias);
            let mut i = 0;
            while i + 32 <= len {
                let (mut a0, mut a1, mut a2, mut a3) = (b, b, b, b);
                for (&p, &w) in taps.iter().zip(weights) {
                    let k = _mm256_set1_ps(w);
                    let p = p.add(in_off + i);
                    a0 = _mm256_fmadd_ps(_mm256_loadu_ps(p), k, a0);
                    a1 = _mm256_fmadd_ps(_mm256_loadu_ps(p.add(8)), k, a1);
                    a2 = _mm256_fmadd_ps(_mm256_loadu_ps(p.add(16)), k, a2);
                    a3 = _mm256_fmadd_ps(_mm256_loadu_ps(p.add(24)), k, a3);
                }
                _mm256_storeu_ps(o.add(i), c(a0));
                _mm256_storeu_ps(o.add(i + 8), c(a1));
                _mm256_storeu_ps(o.add(i + 16), c(a2));
                _mm256_storeu_ps(o.add(i + 24), c(a3));
                i += 32;
            }
            while i < len {
                // the reads may run up to 7 floats past the row: the scratch's slack
                let mut a = b;
                for (&p, &w) in taps.iter().zip(weights) {
                    a = _mm256_fmadd_ps(_mm256_loadu_ps(p.add(in_off + i)), _mm256_set1_ps(w), a);
                }
                if i + 8 <= len {
                    _mm256_storeu_ps(o.add(i), c(a));
                    i += 8;
                } else {
                    let mut tail = [0f32; 8];
                    _mm256_storeu_ps(tail.as_mut_ptr(), c(a));
                    std::ptr::copy_nonoverlapping(tail.as_ptr(), o.add(i), len - i);
                    i = len;
                }
            }
        }
    }
}

#[cfg(target_arch = "aarch64")]
mod arm {
    use std::arch::aarch64::*;

    plane_fn!(plane_neon, row_neon, "neon");

    #[target_feature(enable = "neon")]
    #[inline]
    unsafe fn row_neon(
        out: &mut [f32],
        taps: &[*const f32],
        in_off: usize,
        weights: &[f32],
        bias: f32,
        clamp: Option<(f32, f32)>,
    ) {
        let len = out.len();
        let o = out.as_mut_ptr();
        unsafe {
            let on = clamp.is_some();
            let (lo, hi) = clamp.unwrap_or((0.0, 0.0));
            let (lo, hi) = (vdupq_n_f32(lo), vdupq_n_f32(hi));
            let c = |a| {
                if on {
                    vminq_f32(vmaxq_f32(a, lo), hi)
                } else {
                    a
                }
            };
            let b = vdupq_n_f32(bias);
            let mut i = 0;
            while i + 16 <= len {
                let (mut a0, mut a1, mut a2, mut a3) = (b, b, b, b);
                for (&p, &w) in taps.iter().zip(weights) {
                    let p = p.add(in_off + i);
                    a0 = vfmaq_n_f32(a0, vld1q_f32(p), w);
                    a1 = vfmaq_n_f32(a1, vld1q_f32(p.add(4)), w);
                    a2 = vfmaq_n_f32(a2, vld1q_f32(p.add(8)), w);
                    a3 = vfmaq_n_f32(a3, vld1q_f32(p.add(12)), w);
                }
                vst1q_f32(o.add(i), c(a0));
                vst1q_f32(o.add(i + 4), c(a1));
                vst1q_f32(o.add(i + 8), c(a2));
                vst1q_f32(o.add(i + 12), c(a3));
                i += 16;
            }
            while i < len {
                // the reads may run up to 3 floats past the row: the scratch's slack
                let mut a = b;
                for (&p, &w) in taps.iter().zip(weights) {
                    a = vfmaq_n_f32(a, vld1q_f32(p.add(in_off + i)), w);
                }
                if i + 4 <= len {
                    vst1q_f32(o.add(i), c(a));
                    i += 4;
                } else {
                    let mut tail = [0f32; 4];
                    vst1q_f32(tail.as_mut_ptr(), c(a));
                    std::ptr::copy_nonoverlapping(tail.as_ptr(), o.add(i), len - i);
                    i = len;
                }
            }
        }
    }
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
            .output_facts(inputs, super::u8_activations::datum(self.output))
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
                                let iy = (y * g.sy + ky * g.dy) as isize - g.pad_top as isize;
                                let ix = (x * g.sx + kx * g.dx) as isize - g.pad_left as isize;
                                if iy < 0 || ix < 0 || iy >= g.h as isize || ix >= g.w as isize {
                                    continue;
                                }
                                let v = plane[iy as usize * g.w + ix as usize] as f64;
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

    /// Every valid geometry over `sizes` (h, w), `kernels` (kh, kw) and `pads` (top, left,
    /// bottom, right), with strides 1×1, 2×2, 1×2, 3×3 and dilations 1 and 2.
    fn geometries(
        sizes: &[(usize, usize)],
        kernels: &[(usize, usize)],
        pads: &[(usize, usize, usize, usize)],
    ) -> Vec<Geometry> {
        let mut all = Vec::new();
        for &(h, w) in sizes {
            for &(kh, kw) in kernels {
                for (sy, sx) in [(1, 1), (2, 2), (1, 2), (3, 3)] {
                    for (dy, dx) in [(1, 1), (2, 2)] {
                        for &(pad_top, pad_left, pad_bottom, pad_right) in pads {
                            all.push(Geometry {
                                h,
                                w,
                                kh,
                                kw,
                                sy,
                                sx,
                                dy,
                                dx,
                                pad_top,
                                pad_left,
                                pad_bottom,
                                pad_right,
                            });
                        }
                    }
                }
            }
        }
        all.retain(Geometry::valid);
        all
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
            for kind in Kernel::available() {
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
            for kind in Kernel::available() {
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
                .run(Kernel::best(), Src::U8(&bytes), n, Dst::F32(&mut got))
                .unwrap();
            crate::engine::assert_close(&got, &want, g);
            let linked = linked.with_output(form_out);
            let mut got = vec![0u8; want.len()];
            linked
                .run(Kernel::best(), Src::U8(&bytes), n, Dst::U8(&mut got))
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
                .run(Kernel::best(), Src::U8(&rounded), n, Dst::F32(&mut want))
                .unwrap();
            let quantizing = DepthwiseConv {
                quantizes: true,
                ..op.with_input(form_in)
            };
            assert_eq!(quantizing.quantizes_f32_input(), Some(form_in));
            for kind in Kernel::available() {
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
    use tract_onnx::tract_hir::tract_core::ops::cnn::PaddingSpec;

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
