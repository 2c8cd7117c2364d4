//! The element-wise maps in plain Rust: a quantize→dequantize pair, dynamic quantization's
//! range and rounding, a per-channel affine map. Written so that the compiler vectorizes them;
//! the x86-64 module compiles the same loops for AVX2 (they are `#[inline(always)]`).

use crate::quant::Pair;

/// `pair` applied to `data` in place.
#[inline(always)]
pub fn apply_pair(pair: &Pair, data: &mut [f32]) {
    for v in data.iter_mut() {
        *v = pair.apply(*v);
    }
}

/// Min and max of `x` with 0 included, NaNs skipped; 16 running lanes so the loop vectorizes.
#[inline(always)]
pub fn range(x: &[f32]) -> (f32, f32) {
    let (mut lo, mut hi) = ([0f32; 16], [0f32; 16]);
    let chunks = x.chunks_exact(16);
    let tail = chunks.remainder();
    for chunk in chunks {
        for i in 0..16 {
            // `if` rather than `min`: a NaN compares false and is skipped, as in tract's fold
            lo[i] = if chunk[i] < lo[i] { chunk[i] } else { lo[i] };
            hi[i] = if chunk[i] > hi[i] { chunk[i] } else { hi[i] };
        }
    }
    for (i, &v) in tail.iter().enumerate() {
        lo[i] = if v < lo[i] { v } else { lo[i] };
        hi[i] = if v > hi[i] { v } else { hi[i] };
    }
    let lo = lo.iter().fold(0f32, |a, &b| if b < a { b } else { a });
    let hi = hi.iter().fold(0f32, |a, &b| if b > a { b } else { a });
    (lo, hi)
}

/// `clamp(round_even(x / scale) + zero_point, 0, 255)` per element (NaN → the zero point).
#[inline(always)]
pub fn quantize_dynamic(x: &[f32], scale: f32, zero_point: u8, out: &mut [u8]) {
    let zp = zero_point as i32;
    for (y, &v) in out.iter_mut().zip(x) {
        *y = (((v / scale).round_ties_even() as i32) + zp).clamp(0, 255) as u8;
    }
}

/// `y = clamp(x · scale[c] + shift[c])` in place, where `data` is runs of `inner` values and
/// run `k` belongs to channel `k % scale.len()`.
#[inline(always)]
pub fn channel_affine(
    data: &mut [f32],
    inner: usize,
    (scale, shift): (&[f32], &[f32]),
    clamp: Option<(f32, f32)>,
) {
    let channels = scale.len();
    for (ix, run) in data.chunks_exact_mut(inner).enumerate() {
        let c = ix % channels;
        let (s, b) = (scale[c], shift[c]);
        match clamp {
            Some((lo, hi)) => run
                .iter_mut()
                .for_each(|v| *v = (*v * s + b).max(lo).min(hi)),
            None => run.iter_mut().for_each(|v| *v = *v * s + b),
        }
    }
}
