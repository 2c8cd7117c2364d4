//! AVX-512 lane helpers every x86-64 kernel shares: tail masks, the clamped f32 store, the
//! pair's rounding on 16 lanes, the requantizing byte store, and the [`Sink`]s a flat plane's
//! sums go through.

use std::arch::x86_64::*;

use crate::quant::Requantizer;

/// The first `n` (at most 16) lanes.
#[inline(always)]
pub fn mask(n: usize) -> __mmask16 {
    if n >= 16 {
        0xffff
    } else {
        (1u16 << n) - 1
    }
}

/// Stores `V` vectors of 16 outputs at `o`, the last one masked by `last`, clamped.
///
/// # Safety
/// `o` writable for the stored lanes; the CPU has AVX-512F.
#[target_feature(enable = "avx512f")]
#[inline]
pub unsafe fn store_row<const V: usize>(
    o: *mut f32,
    row: &[__m512; V],
    last: __mmask16,
    clamp: Option<(f32, f32)>,
) {
    // SAFETY: this fn's caller upholds its contract (the CPU has the target features; pointers cover the lengths it names).
    unsafe {
        for (v, &a) in row.iter().enumerate() {
            let a = match clamp {
                Some((lo, hi)) => {
                    _mm512_min_ps(_mm512_max_ps(a, _mm512_set1_ps(lo)), _mm512_set1_ps(hi))
                }
                None => a,
            };
            if v + 1 == V {
                _mm512_mask_storeu_ps(o.add(16 * v), last, a);
            } else {
                _mm512_storeu_ps(o.add(16 * v), a);
            }
        }
    }
}

/// The 8-bit values of 16 lanes, as 32-bit integers (NaN → zero point, ties to even,
/// saturated): [`crate::quant::U8Form::quantize`]'s arithmetic.
///
/// # Safety
/// The CPU has AVX-512F.
#[target_feature(enable = "avx512f")]
#[inline]
pub fn quantize(v: __m512, inv: __m512, zp: __m512) -> __m512i {
    let t = _mm512_mul_ps(v, inv);
    let numbers = _mm512_cmp_ps_mask::<_CMP_ORD_Q>(t, t);
    let r = _mm512_maskz_roundscale_ps::<0x08>(numbers, t);
    let q = _mm512_min_ps(
        _mm512_max_ps(_mm512_add_ps(r, zp), _mm512_setzero_ps()),
        _mm512_set1_ps(255.0),
    );
    _mm512_cvtps_epi32(q)
}

/// [`Requantizer::apply`] on 16 lanes: the bytes as 32-bit integers.
///
/// # Safety
/// The CPU has AVX-512F.
#[target_feature(enable = "avx512f")]
#[inline]
pub fn requantize(y: __m512, inv: __m512, lo: __m512, hi: __m512, zp: __m512i) -> __m512i {
    let t = _mm512_min_ps(_mm512_max_ps(_mm512_mul_ps(y, inv), lo), hi);
    // the default rounding mode: to nearest, ties to even
    _mm512_add_epi32(_mm512_cvtps_epi32(t), zp)
}

/// Stores the low bytes of the lanes of `mask` at `o` (narrowed in a register: the
/// narrowing store `vpmovdb m128` is microcoded and many times slower on AMD Zen 4).
///
/// # Safety
/// `o` writable for the masked lanes; the CPU has AVX-512F, BW and VL.
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
#[inline]
pub unsafe fn store_bytes(o: *mut u8, mask: __mmask16, q: __m512i) {
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

/// Stores `V` vectors of 16 outputs at `o` as bytes (clamped and quantized by `q`), the
/// last one masked by `last`.
///
/// # Safety
/// `o` writable for the stored lanes; the CPU has AVX-512F, BW and VL.
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
#[inline]
pub unsafe fn store_row_u8<const V: usize>(
    o: *mut u8,
    row: &[__m512; V],
    last: __mmask16,
    q: Requantizer,
) {
    let (inv, lo, hi) = (
        _mm512_set1_ps(q.inv_scale),
        _mm512_set1_ps(q.lo),
        _mm512_set1_ps(q.hi),
    );
    let zp = _mm512_set1_epi32(q.zero_point);
    for (v, &a) in row.iter().enumerate() {
        let m = if v + 1 == V { last } else { 0xffff };
        // SAFETY: the caller's bounds.
        unsafe { store_bytes(o.add(16 * v), m, requantize(a, inv, lo, hi, zp)) };
    }
}

/// Where a flat plane kernel puts 16 finished sums: f32 values (clamped), or bytes.
pub trait Sink: Copy + Send + Sync {
    /// The output element.
    type Out: Send;
    /// Stores the lanes of `mask`, packed together in lane order, at `o`.
    ///
    /// # Safety
    /// `o` writable for `mask.count_ones()` values; the CPU has AVX-512F, BW and VL.
    unsafe fn store(self, o: *mut Self::Out, mask: __mmask16, v: __m512);
}

/// The first `n` lanes (`n ≤ 16`), for a compressed store.
#[inline(always)]
fn first(n: u32) -> __mmask16 {
    ((1u32 << n) - 1) as __mmask16
}

/// f32 outputs, clamped when there is a clamp.
#[derive(Clone, Copy)]
pub struct FloatSink {
    on: bool,
    lo: __m512,
    hi: __m512,
}

impl FloatSink {
    /// Clamped to `clamp` when there is one.
    ///
    /// # Safety
    /// The CPU has AVX-512F.
    #[target_feature(enable = "avx512f")]
    pub fn new(clamp: Option<(f32, f32)>) -> FloatSink {
        let (lo, hi) = clamp.unwrap_or((0.0, 0.0));
        FloatSink {
            on: clamp.is_some(),
            lo: _mm512_set1_ps(lo),
            hi: _mm512_set1_ps(hi),
        }
    }
}

impl Sink for FloatSink {
    type Out = f32;
    #[inline(always)]
    unsafe fn store(self, o: *mut f32, mask: __mmask16, v: __m512) {
        // SAFETY: this fn's caller upholds its contract (the CPU has the target features; pointers cover the lengths it names).
        unsafe {
            let v = if self.on {
                _mm512_min_ps(_mm512_max_ps(v, self.lo), self.hi)
            } else {
                v
            };
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
pub struct ByteSink {
    inv: __m512,
    lo: __m512,
    hi: __m512,
    zp: __m512i,
}

impl ByteSink {
    /// Requantized by `q`.
    ///
    /// # Safety
    /// The CPU has AVX-512F.
    #[target_feature(enable = "avx512f")]
    pub fn new(q: Requantizer) -> ByteSink {
        ByteSink {
            inv: _mm512_set1_ps(q.inv_scale),
            lo: _mm512_set1_ps(q.lo),
            hi: _mm512_set1_ps(q.hi),
            zp: _mm512_set1_epi32(q.zero_point),
        }
    }
}

impl Sink for ByteSink {
    type Out = u8;
    #[inline(always)]
    unsafe fn store(self, o: *mut u8, mask: __mmask16, v: __m512) {
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
