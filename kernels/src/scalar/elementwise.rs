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

/// `e^x` to within 2 ulp over the range a softmax feeds it (x ≤ 0; anything from −∞ to 88.7),
/// in arithmetic a compiler vectorizes: `x = n·ln 2 + r` with `|r| ≤ ln 2 / 2`, `e^r` by its
/// degree-7 Taylor polynomial, `2^n` built in the exponent bits. Below −87.3 the result is 0
/// (as a denormal-free exp gives); NaN stays NaN.
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    // ln 2 in two parts, so n·LN2_HI is exact for |n| < 2^9
    const LN2_HI: f32 = 0.693_145_75;
    const LN2_LO: f32 = 1.428_606_8e-6;
    // 1.5·2^23: adding and subtracting it rounds to the nearest integer (ties to even)
    const ROUND: f32 = 12_582_912.0;
    let clamped = x.clamp(-87.336_55, 88.376_26);
    let n = (clamped * LOG2E + ROUND) - ROUND;
    let r = clamped - n * LN2_HI - n * LN2_LO;
    let p = 1.0
        + r * (1.0
            + r * (0.5
                + r * (1.0 / 6.0
                    + r * (1.0 / 24.0
                        + r * (1.0 / 120.0 + r * (1.0 / 720.0 + r * (1.0 / 5040.0)))))));
    let scale = f32::from_bits(((n as i32 + 127) as u32) << 23);
    let y = p * scale;
    if x < -87.336_55 {
        0.0
    } else if x.is_nan() {
        x
    } else {
        y
    }
}

/// Softmax over the first axis of `[axis, inner]` values (`data.len() = axis · inner`), in
/// place, computed a plane of `inner` values at a time: the running max over the planes, then
/// `e^(x − max)` and its running sum, then one multiplication by the sum's inverse. Every step
/// runs over contiguous values (a softmax over axis 1 of `[1, 16, 4, 8400]`, as YOLOv8's DFL
/// head has, walks 16 planes of 33,600 values instead of 33,600 strided rows of 16).
#[inline(always)]
pub fn softmax_planes(data: &mut [f32], inner: usize, max: &mut [f32], sum: &mut [f32]) {
    let max = &mut max[..inner];
    let sum = &mut sum[..inner];
    let mut planes = data.chunks_exact_mut(inner);
    let Some(first) = planes.next() else {
        return;
    };
    max.copy_from_slice(first);
    for plane in planes {
        max.iter_mut()
            .zip(plane.iter())
            .for_each(|(m, &v)| *m = m.max(v));
    }
    sum.fill(0.0);
    for plane in data.chunks_exact_mut(inner) {
        for ((v, &m), s) in plane.iter_mut().zip(max.iter()).zip(sum.iter_mut()) {
            *v = exp(*v - m);
            *s += *v;
        }
    }
    sum.iter_mut().for_each(|s| *s = 1.0 / *s);
    for plane in data.chunks_exact_mut(inner) {
        plane.iter_mut().zip(sum.iter()).for_each(|(v, &k)| *v *= k);
    }
}
