//! The integer depthwise and im2col kernels on AVX-512 VNNI + VBMI over a [`BytePlane`]: the
//! byte fills (copied, or quantized from f32 on the way), the permutes that gather each
//! output's taps of a kernel row into its 32-bit lane, and the flat plane of `vpdpbusd` sums.

use std::arch::x86_64::*;

use super::convert::quantize_row;
use super::lanes::{mask, Sink};
use crate::byte_plane::BytePlane;
use crate::quant::U8Form;

/// Copies one input plane (`h·w` bytes) into the interior of `scratch` (the padding keeps
/// the zero point it was created with), 64 bytes per masked move.
///
/// # Safety
/// `scratch` is `to`'s ([`BytePlane::scratch`]) and `plane` holds `h·w` bytes; the CPU has
/// AVX-512F and BW.
#[target_feature(enable = "avx512f,avx512bw")]
pub unsafe fn fill_bytes(to: &BytePlane, plane: &[u8], scratch: &mut [u8]) {
    let w = to.geometry.w;
    for (iy, src) in plane.chunks_exact(w).enumerate() {
        let dst = &mut scratch[to.row_start(iy)..][..w];
        let mut i = 0;
        while i < w {
            let m = if w - i >= 64 {
                !0
            } else {
                (1u64 << (w - i)) - 1
            };
            // SAFETY: the masked lanes stay inside both rows.
            unsafe {
                let v = _mm512_maskz_loadu_epi8(m, src.as_ptr().add(i) as *const i8);
                _mm512_mask_storeu_epi8(dst.as_mut_ptr().add(i) as *mut i8, m, v);
            }
            i += 64;
        }
    }
}

/// [`fill_bytes`] from f32 values, rounded to `form`'s bytes as they are copied (the
/// pair's quantize step).
///
/// # Safety
/// As [`fill_bytes`]; the CPU has AVX-512F, BW and VL.
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
pub unsafe fn fill_quantized(to: &BytePlane, plane: &[f32], scratch: &mut [u8], form: U8Form) {
    let w = to.geometry.w;
    for (iy, src) in plane.chunks_exact(w).enumerate() {
        // SAFETY: the caller's features; a row of `w` on both sides.
        unsafe { quantize_row(&form, src, &mut scratch[to.row_start(iy)..][..w]) }
    }
}

/// Every output's taps of each group, output row by output row, as words of four bytes:
/// `packed[k · points + y · wo + x]` for group `k` (an im2col matrix in VNNI order).
///
/// # Safety
/// `scratch` is `plane`'s, `groups` its [`permutes`], `packed` holds `groups.len() ·
/// points` words; the CPU has AVX-512F, BW, VL and VBMI.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vbmi")]
pub unsafe fn gather_rows(
    plane: &BytePlane,
    scratch: &[u8],
    groups: &[(usize, __m512i)],
    packed: &mut [u32],
) {
    let g = &plane.geometry;
    let (ho, wo) = g.output();
    let points = ho * wo;
    assert!(packed.len() == groups.len() * points && scratch.len() == plane.len);
    for (&(base, index), words) in groups.iter().zip(packed.chunks_exact_mut(points)) {
        let dst = words.as_mut_ptr() as *mut i32;
        for y in 0..ho {
            // SAFETY: the plane's length covers every row's reads (see `BytePlane::new`);
            // the masked stores stay inside the row's `wo` words.
            unsafe {
                let src = scratch.as_ptr().add(base + y * plane.row);
                let mut x = 0;
                while x < wo {
                    let taps = _mm512_permutexvar_epi8(
                        index,
                        _mm512_loadu_si512(src.add(g.sx * x) as *const _),
                    );
                    let m = mask(wo - x);
                    _mm512_mask_storeu_epi32(dst.add(y * wo + x), m, taps);
                    x += 16;
                }
            }
        }
    }
}

/// The plan's groups as (load start, permute) pairs in registers, for [`plane`].
///
/// # Safety
/// The CPU has AVX-512F.
#[target_feature(enable = "avx512f")]
pub unsafe fn permutes(plane: &BytePlane) -> Vec<(usize, __m512i)> {
    plane
        .groups
        .iter()
        .map(|g| {
            // SAFETY: AVX-512F is present (the caller's contract) and every index is 64 bytes.
            (g.base, unsafe {
                _mm512_loadu_si512(g.index.as_ptr() as *const _)
            })
        })
        .collect()
}

/// One channel plane from the filled `scratch` into `out`: for each block of 64 flat
/// outputs, four independent i32 accumulators, one permute and `vpdpbusd` per group and
/// vector, then `sum · scale + offset` stored through `sink` (clamped f32 or requantized
/// bytes, the output lanes packed together: the float kernel's stores).
///
/// # Safety
/// `scratch` is the plan's byte plane, `groups` its [`permutes`] and `words` the channel's
/// words; `masks` the geometry's flat masks and `out` holds the plane's outputs; the CPU
/// has AVX-512F, BW, VL, VNNI and VBMI.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx512vbmi")]
#[allow(clippy::too_many_arguments)]
pub unsafe fn plane<S: Sink>(
    out: &mut [S::Out],
    scratch: &[u8],
    sx: usize,
    masks: &[u16],
    groups: &[(usize, __m512i)],
    words: &[i32],
    scale: f32,
    offset: f32,
    sink: S,
) {
    let mut o = out.as_mut_ptr();
    let step = 16 * sx;
    // SAFETY: this fn's caller upholds its contract (the CPU has the target features; pointers cover the lengths it names).
    unsafe {
        let (s, b) = (_mm512_set1_ps(scale), _mm512_set1_ps(offset));
        for (block, m) in masks.chunks_exact(4).enumerate() {
            let at = block * 4 * step;
            let zero = _mm512_setzero_si512();
            let (mut a0, mut a1, mut a2, mut a3) = (zero, zero, zero, zero);
            for (&(base, index), &w) in groups.iter().zip(words) {
                let w = _mm512_set1_epi32(w);
                let p = scratch.as_ptr().add(base + at);
                macro_rules! taps {
                    ($k:expr) => {
                        _mm512_permutexvar_epi8(
                            index,
                            _mm512_loadu_si512(p.add($k * step) as *const _),
                        )
                    };
                }
                a0 = _mm512_dpbusd_epi32(a0, taps!(0), w);
                a1 = _mm512_dpbusd_epi32(a1, taps!(1), w);
                a2 = _mm512_dpbusd_epi32(a2, taps!(2), w);
                a3 = _mm512_dpbusd_epi32(a3, taps!(3), w);
            }
            for (a, &m) in [a0, a1, a2, a3].into_iter().zip(m) {
                sink.store(o, m, _mm512_fmadd_ps(_mm512_cvtepi32_ps(a), s, b));
                o = o.add(m.count_ones() as usize);
            }
        }
    }
}
