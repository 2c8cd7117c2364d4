//! 8-bit activations between our ops in QDQ graphs: where one of our convolutions feeds a
//! quantize→dequantize pair ([`super::fake_quant`]) whose readers are our depthwise or integer
//! 1×1 convolutions (or feeds one of our convolutions that quantizes its input itself),
//! the producer writes the pair's 8-bit values `q` (a `u8` tensor) and the readers take
//! `(q − z) · s` from them: the same values the pair computes, at a quarter of the bytes.
//!
//! In a QDQ MobileNetV2 every inverted-residual block's expanded activation (up to 96×112×112)
//! went through memory four times as f32: the 1×1 convolution's store, the pair's read and
//! write, and the depthwise convolution's read; the depthwise output was read back by the next
//! 1×1 convolution's quantizing pack. Now the expand convolution rounds into bytes in its
//! store, the depthwise convolution copies them into its padded scratch (widening them to
//! floats only where it has no integer kernel) and rounds its own output, and the project
//! convolution's pack only interleaves bytes.
//!
//! This module owns the 8-bit form ([`U8Form`]: the pair's rounding and its inverse, with
//! AVX-512 row kernels), the input/output views our ops evaluate on ([`Src`], [`Dst`],
//! [`eval_into`]), and the pass that links producers and readers ([`substitute`]).

use tract_onnx::tract_hir::internal::*;

use super::depthwise::DepthwiseConv;
use super::fake_quant::FakeQuant;
use super::qdense_conv::QDenseConv;
use super::qpointwise::QPointwise;

/// A quantize→dequantize pair in unsigned terms: `q = clamp(round_even(x · inv_scale) +
/// zero_point, 0, 255)` (NaN → zero point) and `x̂ = (q − zero_point) · scale`; an i8 pair is
/// shifted by 128 (same `x̂`). Kept as f32 bits (ops are `Eq + Hash`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct U8Form {
    inv_scale: u32,
    zero_point: u32,
    scale: u32,
}

impl U8Form {
    /// `zero_point` must be a whole number in 0..=255.
    pub fn new(inv_scale: f32, zero_point: f32, scale: f32) -> U8Form {
        debug_assert!((0.0..=255.0).contains(&zero_point) && zero_point.fract() == 0.0);
        U8Form {
            inv_scale: inv_scale.to_bits(),
            zero_point: zero_point.to_bits(),
            scale: scale.to_bits(),
        }
    }

    /// `1 / s` of the quantize step.
    pub fn inv_scale(&self) -> f32 {
        f32::from_bits(self.inv_scale)
    }

    /// The zero point, in 0..=255.
    pub fn zero_point(&self) -> f32 {
        f32::from_bits(self.zero_point)
    }

    /// `s` of the dequantize step.
    pub fn scale(&self) -> f32 {
        f32::from_bits(self.scale)
    }

    /// The pair's quantize step for one value.
    pub fn quantize(&self, v: f32) -> u8 {
        super::fake_quant::quantize(v, self.inv_scale(), self.zero_point(), 0.0, 255.0) as u8
    }

    /// The pair's dequantize step for one value: the f32 the pair would have output.
    #[inline(always)]
    pub fn dequantize(&self, q: u8) -> f32 {
        (q as f32 - self.zero_point()) * self.scale()
    }

    /// The quantize step of values first clamped to `clamp` (a fused ReLU6), folded into
    /// one multiply and one integer range.
    pub(crate) fn requantizer(&self, clamp: Option<(f32, f32)>) -> Requantizer {
        let zp = self.zero_point();
        let (lo, hi) = clamp.unwrap_or((f32::NEG_INFINITY, f32::INFINITY));
        Requantizer {
            inv_scale: self.inv_scale(),
            lo: self.quantize(lo) as f32 - zp,
            hi: self.quantize(hi) as f32 - zp,
            zero_point: zp as i32,
        }
    }

    /// `dst[i] = dequantize(src[i])`.
    pub fn dequantize_row(&self, src: &[u8], dst: &mut [f32]) {
        assert_eq!(src.len(), dst.len());
        #[cfg(target_arch = "x86_64")]
        if x86::available() {
            // SAFETY: the CPU has the features; the lengths match.
            return unsafe { x86::dequantize_row(self, src, dst) };
        }
        for (d, &q) in dst.iter_mut().zip(src) {
            *d = self.dequantize(q);
        }
    }

    /// `even[k] = dequantize(src[2k])`, `odd[k] = dequantize(src[2k + 1])` (a stride-2
    /// convolution's column phases).
    pub fn dequantize_pairs(&self, src: &[u8], even: &mut [f32], odd: &mut [f32]) {
        let n = src.len() / 2;
        assert!(src.len() == 2 * n && even.len() >= n && odd.len() >= n);
        #[cfg(target_arch = "x86_64")]
        if x86::available() {
            // SAFETY: the CPU has the features; the lengths were checked.
            return unsafe { x86::dequantize_pairs(self, src, &mut even[..n], &mut odd[..n]) };
        }
        for ((e, o), pair) in even.iter_mut().zip(odd.iter_mut()).zip(src.chunks_exact(2)) {
            *e = self.dequantize(pair[0]);
            *o = self.dequantize(pair[1]);
        }
    }
}

/// [`U8Form::quantize`] of values clamped to `[lo, hi]` as the output stage of a convolution
/// computes it: `round_even(clamp(y · inv_scale, lo', hi')) + zero_point` with the clamp and
/// the 8-bit range folded into one integer range (`quantize` is monotonic, so clamping before
/// or after it is the same). The same bytes as clamping then quantizing, for every value but
/// NaN (which goes to the range's low end here, to the zero point there; a convolution's
/// finite products and biases give none).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Requantizer {
    pub inv_scale: f32,
    /// The range less the zero point (whole numbers).
    pub lo: f32,
    pub hi: f32,
    pub zero_point: i32,
}

impl Requantizer {
    /// One value.
    pub(crate) fn apply(&self, y: f32) -> u8 {
        let t = (y * self.inv_scale).max(self.lo).min(self.hi);
        (t.round_ties_even() as i32 + self.zero_point) as u8
    }
}

/// An op's input values: f32, or the 8-bit form its link was given.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Src<'a> {
    F32(&'a [f32]),
    U8(&'a [u8]),
}

impl Src<'_> {
    pub(crate) fn len(&self) -> usize {
        match self {
            Src::F32(v) => v.len(),
            Src::U8(v) => v.len(),
        }
    }
}

/// An op's output values, written in full by the op.
#[derive(Debug)]
pub(crate) enum Dst<'a> {
    F32(&'a mut [f32]),
    U8(&'a mut [u8]),
}

impl Dst<'_> {
    pub(crate) fn len(&self) -> usize {
        match self {
            Dst::F32(v) => v.len(),
            Dst::U8(v) => v.len(),
        }
    }
}

/// `run` for an op that takes and gives f32 only: an error on 8-bit values.
pub(crate) fn f32_only(
    run: impl FnOnce(&[f32], usize, &mut [f32]) -> TractResult<()>,
) -> impl FnOnce(Src, usize, Dst) -> TractResult<()> {
    move |x, n, out| match (x, out) {
        (Src::F32(x), Dst::F32(out)) => run(x, n, out),
        _ => bail!("this op takes and gives f32 values only"),
    }
}

/// The datum type of an activation in `form` (`None`: f32).
pub(crate) fn datum(form: Option<U8Form>) -> DatumType {
    if form.is_some() {
        u8::datum_type()
    } else {
        f32::datum_type()
    }
}

/// Allocates an output of `shape` (u8 when `u8_out`, else f32) and calls `run(input,
/// output)` on `input`'s f32 or u8 values; `run` must write every output element.
pub(crate) fn eval_into(
    input: &TValue,
    u8_out: bool,
    shape: &[usize],
    run: impl FnOnce(Src, Dst) -> TractResult<()>,
) -> TractResult<TVec<TValue>> {
    let dt = input.datum_type();
    // SAFETY: `run` writes every element.
    let mut output = unsafe {
        if u8_out {
            Tensor::uninitialized::<u8>(shape)?
        } else {
            Tensor::uninitialized::<f32>(shape)?
        }
    };
    {
        let input = input.try_as_plain_ram()?;
        let src = if dt == u8::datum_type() {
            Src::U8(input.as_slice::<u8>()?)
        } else if dt == f32::datum_type() {
            Src::F32(input.as_slice::<f32>()?)
        } else {
            bail!("expects an f32 or u8 input, got {dt:?}")
        };
        let mut out = output.try_as_plain_ram_mut()?;
        let dst = if u8_out {
            Dst::U8(out.as_slice_mut::<u8>()?)
        } else {
            Dst::F32(out.as_slice_mut::<f32>()?)
        };
        run(src, dst)?;
    }
    Ok(tvec!(output.into_tvalue()))
}

/// Links producers and readers through 8-bit tensors wherever that gives the same values;
/// returns how many links it made. Runs after our convolutions are substituted.
pub fn substitute(model: &mut TypedModel) -> TractResult<usize> {
    model.compact()?;
    let mut links = 0;
    for id in model.eval_order()? {
        let Some(link) = Link::at(model, id)? else {
            continue;
        };
        link.apply(model)?;
        links += 1;
    }
    model.compact()?;
    Ok(links)
}

/// One producer whose f32 output is only read, through a pair or by a convolution's own
/// quantizer, as the 8-bit values of `form`.
struct Link {
    producer: usize,
    form: U8Form,
    /// The pair between them, bypassed (its readers are the readers below).
    pair: Option<usize>,
    readers: Vec<InletId>,
}

impl Link {
    fn at(model: &TypedModel, id: usize) -> TractResult<Option<Link>> {
        let node = model.node(id);
        let outputs = model.output_outlets()?;
        let out = OutletId::new(id, 0);
        if produces_f32(node.op.as_ref()).is_none()
            || outputs.contains(&out)
            || node.outputs[0].successors.len() != 1
        {
            return Ok(None);
        }
        let next = node.outputs[0].successors[0];
        let reader = model.node(next.node);
        if let Some(form) = quantizes_f32_input(reader.op.as_ref()) {
            return Ok(Some(Link {
                producer: id,
                form,
                pair: None,
                readers: vec![next],
            }));
        }
        let Some(form) = reader.op_as::<FakeQuant>().and_then(FakeQuant::as_u8) else {
            return Ok(None);
        };
        let readers = &reader.outputs[0].successors;
        let all_ours = readers
            .iter()
            .all(|r| reads_as(model.node(r.node).op.as_ref(), form).is_some());
        if outputs.contains(&OutletId::new(reader.id, 0)) || readers.is_empty() || !all_ours {
            return Ok(None);
        }
        Ok(Some(Link {
            producer: id,
            form,
            pair: Some(reader.id),
            readers: readers.to_vec(),
        }))
    }

    fn apply(self, model: &mut TypedModel) -> TractResult<()> {
        let producer = produces_f32(model.node(self.producer).op.as_ref())
            .context("producer changed")?(self.form);
        let node = model.node_mut(self.producer);
        node.outputs[0].fact.datum_type = u8::datum_type();
        node.op = producer;
        for r in &self.readers {
            let reader =
                reads_as(model.node(r.node).op.as_ref(), self.form).context("reader changed")?;
            model.node_mut(r.node).op = reader;
            if self.pair.is_some() {
                model.add_edge(OutletId::new(self.producer, 0), *r)?;
            }
        }
        Ok(())
    }
}

type Rebuild = Box<dyn FnOnce(U8Form) -> Box<dyn TypedOp>>;

/// For our ops that write f32 and can write 8-bit values instead: the op so changed.
fn produces_f32(op: &dyn TypedOp) -> Option<Rebuild> {
    if let Some(dw) = op.downcast_ref::<DepthwiseConv>() {
        if dw.output_form().is_none() {
            let dw = dw.clone();
            return Some(Box::new(move |f| Box::new(dw.with_output(f))));
        }
    }
    if let Some(qp) = op.downcast_ref::<QPointwise>() {
        if qp.output_form().is_none() {
            let qp = qp.clone();
            return Some(Box::new(move |f| Box::new(qp.with_output(f))));
        }
    }
    if let Some(qc) = op.downcast_ref::<QDenseConv>() {
        if qc.output_form().is_none() {
            let qc = qc.clone();
            return Some(Box::new(move |f| Box::new(qc.with_output(f))));
        }
    }
    None
}

/// For our ops that quantize their f32 input themselves: the form they quantize to.
fn quantizes_f32_input(op: &dyn TypedOp) -> Option<U8Form> {
    if let Some(qp) = op.downcast_ref::<QPointwise>() {
        return qp.quantizes_f32_input();
    }
    op.downcast_ref::<DepthwiseConv>()
        .and_then(DepthwiseConv::quantizes_f32_input)
}

/// For our ops that read the pair's f32 output, or quantize their f32 input to its form, and
/// can read its 8-bit values instead: the op so changed.
fn reads_as(op: &dyn TypedOp, form: U8Form) -> Option<Box<dyn TypedOp>> {
    if let Some(dw) = op.downcast_ref::<DepthwiseConv>() {
        if dw.input_form().is_none() {
            return Some(Box::new(dw.with_input(form)));
        }
        if dw.quantizes_f32_input() == Some(form) {
            return Some(Box::new(dw.with_u8_input()));
        }
    }
    if let Some(qp) = op.downcast_ref::<QPointwise>() {
        if qp.quantizes_f32_input() == Some(form) {
            return Some(Box::new(qp.with_u8_input()));
        }
    }
    None
}

#[cfg(target_arch = "x86_64")]
pub(crate) mod x86 {
    use super::super::pointwise::x86::mask;
    use super::U8Form;
    use std::arch::x86_64::*;

    /// Whether the CPU has what this module's kernels use: AVX-512F, BW and VL.
    pub(crate) fn available() -> bool {
        std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx512bw")
            && std::arch::is_x86_feature_detected!("avx512vl")
    }

    /// 16 bytes widened and dequantized: `(q − zp) · s`.
    #[target_feature(enable = "avx512f")]
    #[inline]
    fn dequantize(q: __m128i, zp: __m512, s: __m512) -> __m512 {
        let f = _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(q));
        _mm512_mul_ps(_mm512_sub_ps(f, zp), s)
    }

    /// [`U8Form::dequantize_row`].
    ///
    /// # Safety
    /// `src.len() == dst.len()`; the CPU has AVX-512F, BW and VL.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl")]
    #[inline]
    pub unsafe fn dequantize_row(form: &U8Form, src: &[u8], dst: &mut [f32]) {
        let (zp, s) = (
            _mm512_set1_ps(form.zero_point()),
            _mm512_set1_ps(form.scale()),
        );
        let mut i = 0;
        while i < src.len() {
            let m = mask(src.len() - i);
            // SAFETY: the masked lanes stay inside both slices.
            unsafe {
                let q = _mm_maskz_loadu_epi8(m, src.as_ptr().add(i) as *const i8);
                _mm512_mask_storeu_ps(dst.as_mut_ptr().add(i), m, dequantize(q, zp, s));
            }
            i += 16;
        }
    }

    /// [`U8Form::dequantize_pairs`]: 16 pairs per step, split by narrowing 16-bit lanes.
    ///
    /// # Safety
    /// `src.len() == 2·even.len() == 2·odd.len()`; the CPU has AVX-512F, BW and VL.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl")]
    #[inline]
    pub unsafe fn dequantize_pairs(form: &U8Form, src: &[u8], even: &mut [f32], odd: &mut [f32]) {
        let (zp, s) = (
            _mm512_set1_ps(form.zero_point()),
            _mm512_set1_ps(form.scale()),
        );
        let n = even.len();
        let mut k = 0;
        while k < n {
            let rest = n - k;
            let m = mask(rest);
            let bytes: __mmask32 = if rest >= 16 {
                !0
            } else {
                (1u32 << (2 * rest)) - 1
            };
            // SAFETY: the masked lanes stay inside the slices.
            unsafe {
                let x = _mm256_maskz_loadu_epi8(bytes, src.as_ptr().add(2 * k) as *const i8);
                let lo = _mm256_cvtepi16_epi8(x);
                let hi = _mm256_cvtepi16_epi8(_mm256_srli_epi16::<8>(x));
                _mm512_mask_storeu_ps(even.as_mut_ptr().add(k), m, dequantize(lo, zp, s));
                _mm512_mask_storeu_ps(odd.as_mut_ptr().add(k), m, dequantize(hi, zp, s));
            }
            k += 16;
        }
    }

    /// [`U8Form::quantize`] of a row of f32 into bytes, 16 lanes at a time with a masked tail.
    ///
    /// # Safety
    /// `src.len() == dst.len()`; the CPU has AVX-512F, BW and VL.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl")]
    #[inline]
    pub(crate) unsafe fn quantize_row(form: &U8Form, src: &[f32], dst: &mut [u8]) {
        let (inv, zp) = (
            _mm512_set1_ps(form.inv_scale()),
            _mm512_set1_ps(form.zero_point()),
        );
        for i in (0..src.len()).step_by(16) {
            let m = mask(src.len() - i);
            // SAFETY: the masked lanes stay inside both slices.
            unsafe {
                let v = _mm512_maskz_loadu_ps(m, src.as_ptr().add(i));
                store_bytes(dst.as_mut_ptr().add(i), m, quantize(v, inv, zp));
            }
        }
    }

    /// The 8-bit values of 16 lanes, as 32-bit integers (NaN → zero point, ties to even,
    /// saturated): [`U8Form::quantize`]'s arithmetic.
    #[target_feature(enable = "avx512f")]
    #[inline]
    pub(crate) fn quantize(v: __m512, inv: __m512, zp: __m512) -> __m512i {
        let t = _mm512_mul_ps(v, inv);
        let numbers = _mm512_cmp_ps_mask::<_CMP_ORD_Q>(t, t);
        let r = _mm512_maskz_roundscale_ps::<0x08>(numbers, t);
        let q = _mm512_min_ps(
            _mm512_max_ps(_mm512_add_ps(r, zp), _mm512_setzero_ps()),
            _mm512_set1_ps(255.0),
        );
        _mm512_cvtps_epi32(q)
    }

    /// [`super::Requantizer::apply`] on 16 lanes: the bytes as 32-bit integers.
    #[target_feature(enable = "avx512f")]
    #[inline]
    pub(crate) fn requantize(
        y: __m512,
        inv: __m512,
        lo: __m512,
        hi: __m512,
        zp: __m512i,
    ) -> __m512i {
        let t = _mm512_min_ps(_mm512_max_ps(_mm512_mul_ps(y, inv), lo), hi);
        // the default rounding mode: to nearest, ties to even
        _mm512_add_epi32(_mm512_cvtps_epi32(t), zp)
    }

    /// Stores the low bytes of the lanes of `mask` at `o` (narrowed in a register: the
    /// narrowing store `vpmovdb m128` is microcoded and many times slower on AMD Zen 4).
    ///
    /// # Safety
    /// `o` writable for the masked lanes.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl")]
    #[inline]
    pub(crate) unsafe fn store_bytes(o: *mut u8, mask: __mmask16, q: __m512i) {
        let bytes = _mm512_cvtepi32_epi8(q);
        // SAFETY: this fn's caller upholds its contract (the CPU has the target features; pointers cover the lengths it names).
        unsafe {
            if mask == 0xffff {
                _mm_storeu_si128(o as *mut __m128i, bytes)
            } else {
                _mm_mask_storeu_epi8(o as *mut i8, mask, bytes)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `xs` through the vector quantize step and byte store (the depthwise and im2col
    /// convolutions' quantizing copy); the scalar rule where the CPU lacks them.
    fn quantize_lanes(form: &U8Form, xs: &[f32], out: &mut [u8]) {
        #[cfg(target_arch = "x86_64")]
        if x86::available() {
            // SAFETY: the CPU has the features; the lengths match.
            return unsafe { x86::quantize_row(form, xs, out) };
        }
        for (o, &x) in out.iter_mut().zip(xs) {
            *o = form.quantize(x);
        }
    }

    /// The vector kernel gives the scalar rule's bytes on every tail length, for ties, −0, ±∞,
    /// NaN and values far past the range.
    #[test]
    fn quantize_row_matches_the_scalar_rule() {
        let mut xs: Vec<f32> = (0..70).map(|i| (i as f32 - 35.0) * 0.025).collect();
        xs.extend([-0.0, f32::INFINITY, f32::NEG_INFINITY, f32::NAN, 1e9, -1e9]);
        for form in [
            U8Form::new(1.0 / 0.05, 128.0, 0.05),
            U8Form::new(1.0 / 0.01, 0.0, 0.01),
            U8Form::new(1.0 / 0.02, 255.0, 0.02),
        ] {
            for len in 0..xs.len() {
                let mut got = vec![7u8; len];
                quantize_lanes(&form, &xs[..len], &mut got);
                for (x, g) in xs.iter().zip(&got) {
                    assert_eq!(*g, form.quantize(*x), "{form:?} x = {x}");
                }
            }
        }
    }

    /// The 8-bit form is the pair: dequantizing what it quantized gives the pair's f32 bits,
    /// for an unsigned pair and a signed one (shifted by 128).
    #[test]
    fn dequantizing_rows_and_pairs_matches_the_scalar_rule() {
        let bytes: Vec<u8> = (0..100).map(|i| (i * 37 % 256) as u8).collect();
        let form = U8Form::new(1.0 / 0.03, 121.0, 0.03);
        for len in 0..bytes.len() {
            let mut row = vec![f32::NAN; len];
            form.dequantize_row(&bytes[..len], &mut row);
            for (q, v) in bytes.iter().zip(&row) {
                assert_eq!(v.to_bits(), form.dequantize(*q).to_bits());
            }
            let n = len / 2;
            let (mut even, mut odd) = (vec![f32::NAN; n + 3], vec![f32::NAN; n + 3]);
            form.dequantize_pairs(&bytes[..2 * n], &mut even, &mut odd);
            for k in 0..n {
                assert_eq!(even[k].to_bits(), form.dequantize(bytes[2 * k]).to_bits());
                assert_eq!(
                    odd[k].to_bits(),
                    form.dequantize(bytes[2 * k + 1]).to_bits()
                );
            }
            assert!(even[n].is_nan() && odd[n].is_nan(), "wrote past the pairs");
        }
    }

    #[test]
    fn requantizer_is_clamp_then_quantize() {
        let mut ys: Vec<f32> = (0..800).map(|i| (i as f32 - 300.0) * 0.0125).collect();
        ys.extend([
            -0.0,
            1e9,
            -1e9,
            f32::INFINITY,
            f32::NEG_INFINITY,
            0.025,
            0.075,
        ]);
        for form in [
            U8Form::new(1.0 / 0.05, 128.0, 0.05),
            U8Form::new(1.0 / 0.025, 0.0, 0.025),
        ] {
            for clamp in [None, Some((0.0f32, 6.0f32)), Some((-0.3, 0.8))] {
                let r = form.requantizer(clamp);
                for &y in &ys {
                    let c = clamp.map_or(y, |(lo, hi)| y.max(lo).min(hi));
                    assert_eq!(r.apply(y), form.quantize(c), "{form:?} {clamp:?} y = {y}");
                }
            }
        }
    }

    #[test]
    fn round_trip_is_the_pairs_output() {
        let xs: Vec<f32> = (0..400).map(|i| (i as f32 - 200.0) * 0.0173).collect();
        for (lo, hi, zp) in [(0.0f32, 255.0f32, 100.0f32), (-128.0, 127.0, -7.0)] {
            let s = 0.03f32;
            let shift = if lo < 0.0 { 128.0 } else { 0.0 };
            let form = U8Form::new(1.0 / s, zp + shift, s);
            for &x in &xs {
                let q = super::super::fake_quant::quantize(x, 1.0 / s, zp, lo, hi);
                let pair = (q - zp) * s;
                let ours = form.dequantize(form.quantize(x));
                assert_eq!(pair.to_bits(), ours.to_bits(), "x = {x}");
            }
        }
    }
}
