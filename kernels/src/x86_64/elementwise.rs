//! The element-wise maps on x86-64: the quantize→dequantize pair written out in AVX-512
//! intrinsics (masked tail, the NaN test folded into the rounding's mask: ~2× the compiled
//! loop, which a double-pumped 512-bit unit left compute-bound), dynamic quantization's range
//! and rounding on AVX-512, and the plain loops of [`crate::scalar::elementwise`] compiled for
//! AVX-512 or AVX2.

use std::arch::x86_64::*;

use super::lanes::mask;
use crate::quant::Pair;
use crate::scalar::elementwise as plain;

/// The pair, 16 lanes at a time, the tail masked (rows as short as 7 values stay vectorized).
/// When the dequantize step's zero point is the quantize step's, `(clamp(r + zp, lo, hi) − zp)
/// · s = clamp(r, lo − zp, hi − zp) · s` exactly (small integers), which saves two adds; NaN
/// lanes are zeroed by the rounding's mask, as the pair maps them to the zero point. Same bits
/// as the plain loop.
///
/// # Safety
/// The CPU has AVX-512F.
#[target_feature(enable = "avx512f")]
pub unsafe fn apply_pair_avx512(pair: &Pair, data: &mut [f32]) {
    let zp = pair.zero_point;
    if zp != pair.dq_zero_point {
        return plain::apply_pair(pair, data);
    }
    let inv = _mm512_set1_ps(pair.inv_scale);
    let lo = _mm512_set1_ps(pair.lo - zp);
    let hi = _mm512_set1_ps(pair.hi - zp);
    let scale = _mm512_set1_ps(pair.dq_scale);
    let step = |v: __m512| {
        let t = _mm512_mul_ps(v, inv);
        let numbers = _mm512_cmp_ps_mask::<_CMP_ORD_Q>(t, t);
        // round to nearest, ties to even, precision exception suppressed
        let r = _mm512_maskz_roundscale_ps::<0x08>(numbers, t);
        // `+ 0` turns a −0 into the +0 the two-add form gives
        let q = _mm512_add_ps(_mm512_min_ps(_mm512_max_ps(r, lo), hi), _mm512_setzero_ps());
        _mm512_mul_ps(q, scale)
    };
    let mut chunks = data.chunks_exact_mut(16);
    for chunk in &mut chunks {
        // SAFETY: 16 floats in bounds
        unsafe {
            let p = chunk.as_mut_ptr();
            _mm512_storeu_ps(p, step(_mm512_loadu_ps(p)));
        }
    }
    let tail = chunks.into_remainder();
    if !tail.is_empty() {
        let mask = mask(tail.len());
        // SAFETY: masked lanes stay inside `tail`
        unsafe {
            let p = tail.as_mut_ptr();
            _mm512_mask_storeu_ps(p, mask, step(_mm512_maskz_loadu_ps(mask, p)));
        }
    }
}

/// The plain pair loop compiled for AVX2.
///
/// # Safety
/// The CPU has AVX2.
#[target_feature(enable = "avx2")]
pub unsafe fn apply_pair_avx2(pair: &Pair, data: &mut [f32]) {
    plain::apply_pair(pair, data)
}

/// `min(v, lo)` keeps `lo` when `v` is NaN (x86's rule: the second operand), as the plain
/// fold skips NaN; masked-off tail lanes load as 0, which the range holds anyway.
///
/// # Safety
/// The CPU has AVX-512F.
#[target_feature(enable = "avx512f")]
pub unsafe fn range_avx512(x: &[f32]) -> (f32, f32) {
    let (mut lo, mut hi) = (_mm512_setzero_ps(), _mm512_setzero_ps());
    for chunk in x.chunks(16) {
        // SAFETY: the masked lanes stay inside `chunk`
        let v = unsafe { _mm512_maskz_loadu_ps(mask(chunk.len()), chunk.as_ptr()) };
        lo = _mm512_min_ps(v, lo);
        hi = _mm512_max_ps(v, hi);
    }
    (_mm512_reduce_min_ps(lo), _mm512_reduce_max_ps(hi))
}

/// The plain range loop compiled for AVX2.
///
/// # Safety
/// The CPU has AVX2.
#[target_feature(enable = "avx2")]
pub unsafe fn range_avx2(x: &[f32]) -> (f32, f32) {
    plain::range(x)
}

/// The plain formula with the integer steps done in float: `|x / scale| ≤ 255` for every
/// value in the range the scale was made for, so `as i32`, the add and the clamp give the
/// same integers; NaN lanes (`0 / 0` when the input is all zeros) take the zero point, as
/// `NaN as i32 = 0` does.
///
/// # Safety
/// `out.len() == x.len()`; the CPU has AVX-512F.
#[target_feature(enable = "avx512f")]
pub unsafe fn quantize_dynamic_avx512(x: &[f32], scale: f32, zero_point: u8, out: &mut [u8]) {
    let s = _mm512_set1_ps(scale);
    let zp = _mm512_set1_ps(zero_point as f32);
    let (lo, hi) = (_mm512_setzero_ps(), _mm512_set1_ps(255.0));
    for (chunk, dst) in x.chunks(16).zip(out.chunks_mut(16)) {
        let m = mask(chunk.len());
        // SAFETY: the masked lanes stay inside `chunk` and `dst` (same length)
        unsafe {
            let t = _mm512_div_ps(_mm512_maskz_loadu_ps(m, chunk.as_ptr()), s);
            let numbers = _mm512_cmp_ps_mask::<_CMP_ORD_Q>(t, t);
            let r = _mm512_maskz_roundscale_ps::<0x08>(numbers, t);
            let q = _mm512_min_ps(_mm512_max_ps(_mm512_add_ps(r, zp), lo), hi);
            _mm512_mask_cvtepi32_storeu_epi8(dst.as_mut_ptr() as *mut i8, m, _mm512_cvtps_epi32(q));
        }
    }
}

/// The plain dynamic quantization loop compiled for AVX2.
///
/// # Safety
/// The CPU has AVX2.
#[target_feature(enable = "avx2")]
pub unsafe fn quantize_dynamic_avx2(x: &[f32], scale: f32, zero_point: u8, out: &mut [u8]) {
    plain::quantize_dynamic(x, scale, zero_point, out)
}

/// The plain channel-affine loop compiled for AVX-512.
///
/// # Safety
/// The CPU has AVX-512F.
#[target_feature(enable = "avx512f")]
pub unsafe fn channel_affine_avx512(
    data: &mut [f32],
    inner: usize,
    params: (&[f32], &[f32]),
    clamp: Option<(f32, f32)>,
) {
    plain::channel_affine(data, inner, params, clamp)
}

/// The plain channel-affine loop compiled for AVX2 and FMA.
///
/// # Safety
/// The CPU has AVX2 and FMA.
#[target_feature(enable = "avx2,fma")]
pub unsafe fn channel_affine_avx2(
    data: &mut [f32],
    inner: usize,
    params: (&[f32], &[f32]),
    clamp: Option<(f32, f32)>,
) {
    plain::channel_affine(data, inner, params, clamp)
}

/// The plain plane softmax compiled for AVX-512.
///
/// # Safety
/// The CPU has AVX-512F.
#[target_feature(enable = "avx512f")]
pub unsafe fn softmax_planes_avx512(
    data: &mut [f32],
    inner: usize,
    max: &mut [f32],
    sum: &mut [f32],
) {
    plain::softmax_planes(data, inner, max, sum)
}

/// The plain plane softmax compiled for AVX2 and FMA.
///
/// # Safety
/// The CPU has AVX2 and FMA.
#[target_feature(enable = "avx2,fma")]
pub unsafe fn softmax_planes_avx2(
    data: &mut [f32],
    inner: usize,
    max: &mut [f32],
    sum: &mut [f32],
) {
    plain::softmax_planes(data, inner, max, sum)
}
