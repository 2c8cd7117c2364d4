//! The depthwise kernels on x86-64: AVX2 + FMA runs output rows (8 lanes, four accumulators),
//! AVX-512 runs the whole plane as one run over the output rows laid flat at the phase row
//! stride (64 points per block, the columns past the output width dropped by a compress
//! before the store), into f32 or straight into requantized bytes.

use std::arch::x86_64::*;

use super::lanes::{ByteSink, FloatSink, Sink};
use crate::geometry::{fill_phases, Geometry, PhaseValues};
use crate::quant::{Requantizer, U8Form};

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

crate::plane_fn!(plane_avx2, row_avx2, "avx2,fma");

/// [`fill_phases`] from bytes on AVX2 (the row conversions of [`super::bytes_avx2`]).
///
/// # Safety
/// The CPU has AVX2.
#[target_feature(enable = "avx2")]
pub unsafe fn fill_phases_u8_avx2(g: &Geometry, input: &[u8], scratch: &mut [f32], form: U8Form) {
    fill_phases(g, input, scratch, &Avx2Bytes(form))
}

/// [`PhaseValues`] for bytes with the AVX2 conversions, for `fill_phases_u8_avx2`.
struct Avx2Bytes(U8Form);

impl PhaseValues<u8> for Avx2Bytes {
    #[inline(always)]
    fn copy_row(&self, src: &[u8], dst: &mut [f32]) {
        // SAFETY: only built inside `fill_phases_u8_avx2`, whose caller checked the features.
        unsafe { super::bytes_avx2::dequantize_row(self.0.zero_point(), self.0.scale(), src, dst) }
    }

    #[inline(always)]
    fn copy_pairs(&self, src: &[u8], even: &mut [f32], odd: &mut [f32]) {
        let (zp, s) = (self.0.zero_point(), self.0.scale());
        // SAFETY: as above; `fill_phases` passes `2·n` bytes and `n` floats each.
        unsafe { super::bytes_avx2::dequantize_pairs(zp, s, src, even, odd) }
    }

    #[inline(always)]
    fn value(&self, v: u8) -> f32 {
        self.0.dequantize(v)
    }
}

/// [`fill_phases`] from bytes, compiled for AVX-512 (the row conversions inline).
///
/// # Safety
/// The CPU has AVX-512F, BW and VL.
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
pub unsafe fn fill_phases_u8(g: &Geometry, input: &[u8], scratch: &mut [f32], form: U8Form) {
    fill_phases(g, input, scratch, &Avx512Bytes(form))
}

/// [`PhaseValues`] for bytes with the AVX-512 conversions, for `fill_phases_u8`.
struct Avx512Bytes(U8Form);

impl PhaseValues<u8> for Avx512Bytes {
    #[inline(always)]
    fn copy_row(&self, src: &[u8], dst: &mut [f32]) {
        // SAFETY: only built inside `fill_phases_u8`, whose caller checked the features;
        // `fill_phases` passes equal lengths.
        unsafe { super::convert::dequantize_row(&self.0, src, dst) }
    }

    #[inline(always)]
    fn copy_pairs(&self, src: &[u8], even: &mut [f32], odd: &mut [f32]) {
        // SAFETY: as above; `fill_phases` passes `2·n` bytes and `n` floats each.
        unsafe { super::convert::dequantize_pairs(&self.0, src, even, odd) }
    }

    #[inline(always)]
    fn value(&self, v: u8) -> f32 {
        self.0.dequantize(v)
    }
}

/// One channel plane on AVX-512 into f32, over the output rows laid flat (see
/// [`Geometry::flat_masks`]).
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
    unsafe { plane_flat(out, masks, taps, weights, bias, FloatSink::new(clamp)) }
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
    q: Requantizer,
) {
    // SAFETY: the caller chose this kernel only where the CPU has AVX-512F/BW; `out`, `taps` and `masks` describe one plane.
    unsafe { plane_flat(out, masks, taps, weights, bias, ByteSink::new(q)) }
}

/// The plane as one run: flat position `f` (output row `f / wq`, column `f % wq`) is
/// `bias + Σ_t weights[t] · taps[t][f]`, 64 positions per block in four independent
/// accumulators; each vector's output lanes (`masks`) are packed and stored in order, the
/// columns past the output width dropped. No per-row tail: a 7-wide row costs no more
/// than its share of a vector.
///
/// # Safety
/// `masks` is the geometry's [`Geometry::flat_masks`] and `out` holds every output of the
/// plane; each `taps[t]` is readable for `16 · masks.len()` floats (the scratch's slack covers
/// the block past the last row); the CPU has AVX-512F, BW and VL.
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

/// One output row on AVX2 + FMA: 32 points per step in four accumulators, then 8 at a time.
///
/// # Safety
/// Each `taps[t]` is readable for `in_off + out.len()` floats plus 7 (the last vector's reads
/// past the row: the scratch's slack); the CPU has AVX2 and FMA.
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
