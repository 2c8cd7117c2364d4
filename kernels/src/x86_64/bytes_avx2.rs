//! The 8-bit path on AVX2 (x86 gateways without AVX-512): the 1×1 kernels' packs into VNNI
//! order (32 points per step, four channels' bytes interleaved into words with byte and word
//! unpacks), the pair's rounding of f32 into bytes, and the requantizing store of a row of
//! sums. Same values as the plain Rust rules ([`crate::quant`]) bit for bit.

use std::arch::x86_64::*;

use crate::quant::Requantizer;

/// Stores 32 points' words from the bytes of four channels (`rows[j]`: channel `4g + j`, 32
/// points) at `dst`.
///
/// # Safety
/// `dst` writable for 32 words; the CPU has AVX2.
#[inline(always)]
unsafe fn interleave32(rows: [__m256i; 4], dst: *mut u32) {
    // SAFETY: the caller's bounds; AVX2 arithmetic.
    unsafe {
        // per 128-bit lane: points 0–7 / 16–23 (lo) and 8–15 / 24–31 (hi)
        let lo01 = _mm256_unpacklo_epi8(rows[0], rows[1]);
        let hi01 = _mm256_unpackhi_epi8(rows[0], rows[1]);
        let lo23 = _mm256_unpacklo_epi8(rows[2], rows[3]);
        let hi23 = _mm256_unpackhi_epi8(rows[2], rows[3]);
        // words of points 0–3 | 16–19, 4–7 | 20–23, 8–11 | 24–27, 12–15 | 28–31
        let w0 = _mm256_unpacklo_epi16(lo01, lo23);
        let w1 = _mm256_unpackhi_epi16(lo01, lo23);
        let w2 = _mm256_unpacklo_epi16(hi01, hi23);
        let w3 = _mm256_unpackhi_epi16(hi01, hi23);
        let d = dst as *mut __m256i;
        _mm256_storeu_si256(d, _mm256_permute2x128_si256::<0x20>(w0, w1));
        _mm256_storeu_si256(d.add(1), _mm256_permute2x128_si256::<0x20>(w2, w3));
        _mm256_storeu_si256(d.add(2), _mm256_permute2x128_si256::<0x31>(w0, w1));
        _mm256_storeu_si256(d.add(3), _mm256_permute2x128_si256::<0x31>(w2, w3));
    }
}

/// The loop both packs share: 32 points at a time through `load(i)` (32 bytes of the input's
/// values from value index `i`), the rest one word at a time through `byte(i)`.
///
/// # Safety
/// `packed.len() == ⌈cin/4⌉·points`; `load` reads only inside the input for full steps; the
/// CPU has AVX2.
#[inline(always)]
unsafe fn interleave(
    cin: usize,
    points: usize,
    packed: &mut [u32],
    load: impl Fn(usize) -> __m256i,
    byte: impl Fn(usize) -> u8,
) {
    assert!(packed.len() == cin.div_ceil(4) * points);
    // SAFETY: the caller's contract; full steps stay inside the group's `points` words.
    unsafe {
        for g in 0..cin.div_ceil(4) {
            let channels = (cin - 4 * g).min(4);
            let dst = packed.as_mut_ptr().add(g * points);
            let mut p = 0;
            while p + 32 <= points {
                let mut rows = [_mm256_setzero_si256(); 4];
                for (j, row) in rows.iter_mut().enumerate().take(channels) {
                    *row = load((4 * g + j) * points + p);
                }
                interleave32(rows, dst.add(p));
                p += 32;
            }
            for p in p..points {
                *dst.add(p) = (0..channels)
                    .map(|j| (byte((4 * g + j) * points + p) as u32) << (8 * j))
                    .fold(0, |a, b| a | b);
            }
        }
    }
}

/// [`crate::scalar::qpointwise::pack_bytes`].
///
/// # Safety
/// `input.len() == cin·points`, `packed.len() == ⌈cin/4⌉·points`; the CPU has AVX2.
#[target_feature(enable = "avx2")]
pub unsafe fn pack_bytes(input: &[u8], cin: usize, points: usize, packed: &mut [u32]) {
    assert!(input.len() == cin * points);
    let x = input.as_ptr();
    // SAFETY: full steps read 32 bytes inside the input; the CPU has AVX2.
    unsafe {
        interleave(
            cin,
            points,
            packed,
            |i| _mm256_loadu_si256(x.add(i) as *const __m256i),
            |i| input[i],
        )
    }
}

/// The pair's rounding of 8 values as 32-bit integers (NaN → zero point, ties to even,
/// saturated to `0..=255`): [`crate::quant::quantize`]'s arithmetic.
///
/// # Safety
/// The CPU has AVX2.
#[target_feature(enable = "avx2")]
#[inline]
fn quantize8(v: __m256, inv: __m256, zp: __m256) -> __m256i {
    let t = _mm256_mul_ps(v, inv);
    let r = _mm256_round_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(t);
    let r = _mm256_and_ps(r, _mm256_cmp_ps::<_CMP_ORD_Q>(t, t)); // NaN → +0.0
    let q = _mm256_min_ps(
        _mm256_max_ps(_mm256_add_ps(r, zp), _mm256_setzero_ps()),
        _mm256_set1_ps(255.0),
    );
    _mm256_cvtps_epi32(q)
}

/// 32 values in `0..=255` (four vectors of 8 i32) as 32 bytes in order.
///
/// # Safety
/// The CPU has AVX2.
#[target_feature(enable = "avx2")]
#[inline]
fn narrow32(q: [__m256i; 4]) -> __m256i {
    // per lane: a0–3 b0–3 | a4–7 b4–7 (u16), then a0–3 b0–3 c0–3 d0–3 | a4–7 b4–7 c4–7 d4–7
    let ab = _mm256_packus_epi32(q[0], q[1]);
    let cd = _mm256_packus_epi32(q[2], q[3]);
    let bytes = _mm256_packus_epi16(ab, cd);
    _mm256_permutevar8x32_epi32(bytes, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7))
}

/// [`crate::scalar::qpointwise::pack`]: the pair's rounding on the way.
///
/// # Safety
/// `input.len() == cin·points`, `packed.len() == ⌈cin/4⌉·points`; the CPU has AVX2.
#[target_feature(enable = "avx2")]
pub unsafe fn pack(
    input: &[f32],
    cin: usize,
    points: usize,
    inv: f32,
    zp: f32,
    packed: &mut [u32],
) {
    assert!(input.len() == cin * points);
    let x = input.as_ptr();
    let (vinv, vzp) = (_mm256_set1_ps(inv), _mm256_set1_ps(zp));
    let load = |i: usize| {
        // SAFETY: full steps read 32 floats inside the input; the CPU has AVX2.
        unsafe {
            narrow32(std::array::from_fn(|k| {
                quantize8(_mm256_loadu_ps(x.add(i + 8 * k)), vinv, vzp)
            }))
        }
    };
    let byte = |i: usize| crate::quant::quantize(input[i], inv, zp, 0.0, 255.0) as u8;
    // SAFETY: as above.
    unsafe { interleave(cin, points, packed, load, byte) }
}

/// A requantizer's constants in registers.
#[derive(Clone, Copy)]
pub struct Bytes {
    inv: __m256,
    lo: __m256,
    hi: __m256,
    zp: __m256i,
}

impl Bytes {
    /// # Safety
    /// The CPU has AVX2.
    #[target_feature(enable = "avx2")]
    #[inline]
    pub fn new(q: Requantizer) -> Bytes {
        Bytes {
            inv: _mm256_set1_ps(q.inv_scale),
            lo: _mm256_set1_ps(q.lo),
            hi: _mm256_set1_ps(q.hi),
            zp: _mm256_set1_epi32(q.zero_point),
        }
    }

    /// [`Requantizer::apply`] on 8 values: the bytes as 32-bit integers (`max` first, as
    /// the plain rule: a NaN takes the low end).
    ///
    /// # Safety
    /// The CPU has AVX2.
    #[target_feature(enable = "avx2")]
    #[inline]
    pub fn of(self, y: __m256) -> __m256i {
        let t = _mm256_min_ps(_mm256_max_ps(_mm256_mul_ps(y, self.inv), self.lo), self.hi);
        // the default rounding mode: to nearest, ties to even
        _mm256_add_epi32(_mm256_cvtps_epi32(t), self.zp)
    }

    /// Stores the first `n ≤ 8` of 8 values' bytes at `o`.
    ///
    /// # Safety
    /// `o` writable for `n` bytes; the CPU has AVX2.
    #[target_feature(enable = "avx2")]
    #[inline]
    pub unsafe fn store8(self, o: *mut u8, y: __m256, n: usize) {
        let q = self.of(y);
        let words = _mm_packs_epi32(_mm256_castsi256_si128(q), _mm256_extracti128_si256::<1>(q));
        let bytes = _mm_packus_epi16(words, words);
        // SAFETY: the caller's bounds.
        unsafe {
            if n == 8 {
                _mm_storel_epi64(o as *mut __m128i, bytes);
            } else {
                let mut tmp = [0u8; 16];
                _mm_storeu_si128(tmp.as_mut_ptr() as *mut __m128i, bytes);
                std::ptr::copy_nonoverlapping(tmp.as_ptr(), o, n);
            }
        }
    }
}

/// `out[i] = q.apply(src[i])` over a row, 32 values a step.
///
/// # Safety
/// `src.len() == out.len()`; the CPU has AVX2.
#[target_feature(enable = "avx2")]
pub unsafe fn requantize_row(src: &[f32], out: &mut [u8], q: Requantizer) {
    assert!(src.len() == out.len());
    let b = Bytes::new(q);
    let (s, o) = (src.as_ptr(), out.as_mut_ptr());
    let mut i = 0;
    // SAFETY: every access is inside both rows.
    unsafe {
        while i + 32 <= src.len() {
            let v = narrow32(std::array::from_fn(|k| {
                b.of(_mm256_loadu_ps(s.add(i + 8 * k)))
            }));
            _mm256_storeu_si256(o.add(i) as *mut __m256i, v);
            i += 32;
        }
        while i + 8 <= src.len() {
            b.store8(o.add(i), _mm256_loadu_ps(s.add(i)), 8);
            i += 8;
        }
    }
    for (o, &v) in out[i..].iter_mut().zip(&src[i..]) {
        *o = q.apply(v);
    }
}

/// [`crate::quant::U8Form::dequantize`] over a row: `(q − zp) · s`, 8 values a step.
///
/// # Safety
/// `src.len() == dst.len()`; the CPU has AVX2.
#[target_feature(enable = "avx2")]
pub unsafe fn dequantize_row(zp: f32, scale: f32, src: &[u8], dst: &mut [f32]) {
    assert!(src.len() == dst.len());
    let (vzp, vs) = (_mm256_set1_ps(zp), _mm256_set1_ps(scale));
    let mut i = 0;
    // SAFETY: every access is inside both rows.
    unsafe {
        while i + 8 <= src.len() {
            let q = _mm_loadl_epi64(src.as_ptr().add(i) as *const __m128i);
            let f = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(q));
            _mm256_storeu_ps(
                dst.as_mut_ptr().add(i),
                _mm256_mul_ps(_mm256_sub_ps(f, vzp), vs),
            );
            i += 8;
        }
    }
    for (d, &q) in dst[i..].iter_mut().zip(&src[i..]) {
        *d = (q as f32 - zp) * scale;
    }
}

/// A row's even and odd bytes dequantized apart (a stride-2 convolution's column phases), 8
/// pairs a step.
///
/// # Safety
/// `src.len() == 2·even.len() == 2·odd.len()`; the CPU has AVX2.
#[target_feature(enable = "avx2")]
pub unsafe fn dequantize_pairs(zp: f32, scale: f32, src: &[u8], even: &mut [f32], odd: &mut [f32]) {
    let n = even.len();
    assert!(src.len() == 2 * n && odd.len() == n);
    let (vzp, vs) = (_mm256_set1_ps(zp), _mm256_set1_ps(scale));
    let split = _mm_setr_epi8(0, 2, 4, 6, 8, 10, 12, 14, 1, 3, 5, 7, 9, 11, 13, 15);
    let mut k = 0;
    // SAFETY: every access is inside the slices.
    unsafe {
        while k + 8 <= n {
            let x = _mm_shuffle_epi8(
                _mm_loadu_si128(src.as_ptr().add(2 * k) as *const __m128i),
                split,
            );
            let e = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(x));
            let o = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_srli_si128::<8>(x)));
            _mm256_storeu_ps(
                even.as_mut_ptr().add(k),
                _mm256_mul_ps(_mm256_sub_ps(e, vzp), vs),
            );
            _mm256_storeu_ps(
                odd.as_mut_ptr().add(k),
                _mm256_mul_ps(_mm256_sub_ps(o, vzp), vs),
            );
            k += 8;
        }
    }
    for k in k..n {
        even[k] = (src[2 * k] as f32 - zp) * scale;
        odd[k] = (src[2 * k + 1] as f32 - zp) * scale;
    }
}
