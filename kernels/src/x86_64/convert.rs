//! Rows of 8-bit values to and from f32 on AVX-512: the pair's dequantize step widening bytes
//! (a row, or a row's even and odd columns for a stride-2 convolution's phases) and its
//! quantize step narrowing floats.

use std::arch::x86_64::*;

use super::lanes::{mask, quantize, store_bytes};
use crate::quant::U8Form;

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
pub unsafe fn quantize_row(form: &U8Form, src: &[f32], dst: &mut [u8]) {
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
