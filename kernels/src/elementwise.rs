//! The element-wise maps our ops run, each on the best code `isa` allows: a
//! quantize→dequantize pair in one pass ([`apply_pair`]), dynamic quantization's range and
//! rounding ([`dynamic_range`], [`quantize_dynamic`]), a per-channel affine map with a
//! clamp ([`channel_affine`]), and a softmax over an axis that is not the innermost
//! ([`softmax_planes`]).

// the vector kernels of some maps exist on some targets only: elsewhere their arguments go unused
#![cfg_attr(not(target_arch = "x86_64"), allow(unused_variables, unused_imports))]

use crate::isa::{Feature, Isa};
use crate::quant::Pair;
use crate::scalar::elementwise as plain;

/// `pair` applied to `data` in place (ties to even, saturation, NaN → the zero point).
pub fn apply_pair(isa: Isa, pair: &Pair, data: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    {
        if isa.has(Feature::Avx512) {
            // SAFETY: `isa` has AVX-512 only where the CPU does.
            return unsafe { crate::x86_64::elementwise::apply_pair_avx512(pair, data) };
        }
        if isa.has(Feature::Avx2Fma) {
            // SAFETY: `isa` has AVX2 only where the CPU does.
            return unsafe { crate::x86_64::elementwise::apply_pair_avx2(pair, data) };
        }
    }
    #[cfg(target_arch = "aarch64")]
    if isa.has(Feature::Neon) {
        // SAFETY: `isa` has NEON only where the CPU does.
        return unsafe { crate::aarch64::elementwise::apply_pair(pair, data) };
    }
    plain::apply_pair(pair, data)
}

/// Min and max of `x` with 0 included, NaNs skipped (ONNX `DynamicQuantizeLinear`'s range).
pub fn dynamic_range(isa: Isa, x: &[f32]) -> (f32, f32) {
    #[cfg(target_arch = "x86_64")]
    {
        if isa.has(Feature::Avx512) {
            // SAFETY: `isa` has AVX-512 only where the CPU does.
            return unsafe { crate::x86_64::elementwise::range_avx512(x) };
        }
        if isa.has(Feature::Avx2Fma) {
            // SAFETY: `isa` has AVX2 only where the CPU does.
            return unsafe { crate::x86_64::elementwise::range_avx2(x) };
        }
    }
    plain::range(x)
}

/// `(scale, zero point)` of `x`'s range extended to hold 0, as ONNX defines them (NaNs ignored).
pub fn dynamic_scale_and_zero_point(isa: Isa, x: &[f32]) -> (f32, u8) {
    let (min, max) = dynamic_range(isa, x);
    let scale = (max - min) / 255.0;
    let zero_point = (-min / scale).round_ties_even().clamp(0.0, 255.0);
    (scale, zero_point as u8)
}

/// `clamp(round_even(x / scale) + zero_point, 0, 255)` per element (NaN → the zero point): a
/// division, as ONNX and tract do, not a multiplication by the reciprocal.
pub fn quantize_dynamic(isa: Isa, x: &[f32], scale: f32, zero_point: u8, out: &mut [u8]) {
    assert_eq!(x.len(), out.len());
    #[cfg(target_arch = "x86_64")]
    {
        if isa.has(Feature::Avx512) {
            // SAFETY: `isa` has AVX-512 only where the CPU does; the lengths match.
            return unsafe {
                crate::x86_64::elementwise::quantize_dynamic_avx512(x, scale, zero_point, out)
            };
        }
        if isa.has(Feature::Avx2Fma) {
            // SAFETY: `isa` has AVX2 only where the CPU does.
            return unsafe {
                crate::x86_64::elementwise::quantize_dynamic_avx2(x, scale, zero_point, out)
            };
        }
    }
    plain::quantize_dynamic(x, scale, zero_point, out)
}

/// `y = clamp(x · scale[c] + shift[c])` in place over runs of `inner` values, run `k` of
/// channel `k % scale.len()`.
pub fn channel_affine(
    isa: Isa,
    data: &mut [f32],
    inner: usize,
    (scale, shift): (&[f32], &[f32]),
    clamp: Option<(f32, f32)>,
) {
    assert!(inner > 0 && !scale.is_empty() && scale.len() == shift.len());
    #[cfg(target_arch = "x86_64")]
    {
        if isa.has(Feature::Avx512) {
            // SAFETY: `isa` has AVX-512 only where the CPU does.
            return unsafe {
                crate::x86_64::elementwise::channel_affine_avx512(
                    data,
                    inner,
                    (scale, shift),
                    clamp,
                )
            };
        }
        if isa.has(Feature::Avx2Fma) {
            // SAFETY: `isa` has AVX2 and FMA only where the CPU does.
            return unsafe {
                crate::x86_64::elementwise::channel_affine_avx2(data, inner, (scale, shift), clamp)
            };
        }
    }
    plain::channel_affine(data, inner, (scale, shift), clamp)
}

/// Softmax over axis 1 of `[outer, axis, inner]` values in place (each `axis · inner` block on
/// its own): plane by plane over contiguous runs of `inner` (see
/// [`crate::scalar::elementwise::softmax_planes`]). `scratch` holds `2 · inner` floats.
pub fn softmax_planes(isa: Isa, data: &mut [f32], axis: usize, inner: usize, scratch: &mut [f32]) {
    assert!(axis > 0 && inner > 0 && data.len().is_multiple_of(axis * inner));
    assert!(scratch.len() >= 2 * inner);
    let (max, sum) = scratch.split_at_mut(inner);
    for block in data.chunks_exact_mut(axis * inner) {
        #[cfg(target_arch = "x86_64")]
        {
            if isa.has(Feature::Avx512) {
                // SAFETY: `isa` has AVX-512 only where the CPU does.
                unsafe {
                    crate::x86_64::elementwise::softmax_planes_avx512(block, inner, max, sum)
                };
                continue;
            }
            if isa.has(Feature::Avx2Fma) {
                // SAFETY: `isa` has AVX2 and FMA only where the CPU does.
                unsafe { crate::x86_64::elementwise::softmax_planes_avx2(block, inner, max, sum) };
                continue;
            }
        }
        plain::softmax_planes(block, inner, max, sum)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nasty() -> Vec<f32> {
        let mut xs: Vec<f32> = (0..61).map(|i| (i as f32 - 30.0) * 0.025).collect();
        xs.extend([
            -0.0,
            0.0,
            f32::INFINITY,
            f32::NEG_INFINITY,
            f32::NAN,
            1e9,
            -1e9,
            -0.01,
        ]);
        xs
    }

    /// The vector loops give the plain loop's bits on every tail length, for ties, −0, ±∞,
    /// NaN and values far past the range, with the dequantize zero point equal to the
    /// quantize one (the fast form) and not (the fallback), on every level.
    #[test]
    fn the_pair_gives_the_plain_loops_bits_on_every_level() {
        let xs = nasty();
        let pairs = [
            (1.0 / 0.05, 128.0, 0.0, 255.0, 0.05, 128.0),
            (1.0 / 0.05, 3.0, 0.0, 255.0, 0.05, 3.0),
            (1.0 / 0.02, -3.0, -128.0, 127.0, 0.02, -3.0),
            (1.0 / 0.02, 0.0, -128.0, 127.0, 0.02, 5.0),
        ];
        for (inv_scale, zero_point, lo, hi, dq_scale, dq_zero_point) in pairs {
            let pair = Pair {
                inv_scale,
                zero_point,
                lo,
                hi,
                dq_scale,
                dq_zero_point,
            };
            for len in 0..xs.len() {
                let mut want = xs[..len].to_vec();
                plain::apply_pair(&pair, &mut want);
                for isa in Isa::host().levels() {
                    let mut got = xs[..len].to_vec();
                    apply_pair(isa, &pair, &mut got);
                    for ((a, b), x) in got.iter().zip(&want).zip(&xs) {
                        assert_eq!(a.to_bits(), b.to_bits(), "{isa} {pair:?} len {len} x = {x}");
                    }
                }
            }
        }
    }

    /// Dynamic quantization: the same range (NaN skipped), scale, zero point and bytes on
    /// every level and tail length.
    #[test]
    fn dynamic_quantization_is_the_same_on_every_level() {
        let mut xs: Vec<f32> = (0..77)
            .map(|i| (i as f32 * 0.37).sin() * 5.0 - 1.0)
            .collect();
        xs[20] = f32::NAN;
        for len in [0, 1, 15, 16, 17, 33, 77] {
            let x = &xs[..len];
            let (scale, zp) = dynamic_scale_and_zero_point(Isa::scalar(), x);
            let mut want = vec![0u8; len];
            plain::quantize_dynamic(x, scale, zp, &mut want);
            for isa in Isa::host().levels() {
                assert_eq!(
                    dynamic_scale_and_zero_point(isa, x),
                    (scale, zp),
                    "{isa} len {len}"
                );
                let mut got = vec![7u8; len];
                quantize_dynamic(isa, x, scale, zp, &mut got);
                assert_eq!(got, want, "{isa} len {len}");
            }
        }
    }

    #[test]
    fn the_channel_affine_map_is_the_same_on_every_level() {
        let (channels, inner) = (3, 37);
        let data: Vec<f32> = (0..2 * channels * inner)
            .map(|i| (i as f32 * 0.3).cos() * 4.0)
            .collect();
        let (scale, shift) = ([0.5, -2.0, 1.25], [0.1, 0.2, -0.3]);
        for clamp in [None, Some((0.0, 6.0))] {
            let mut want = data.clone();
            plain::channel_affine(&mut want, inner, (&scale, &shift), clamp);
            for isa in Isa::host().levels() {
                let mut got = data.clone();
                channel_affine(isa, &mut got, inner, (&scale, &shift), clamp);
                for (a, b) in got.iter().zip(&want) {
                    assert!((a - b).abs() <= 1e-6 * (1.0 + b.abs()), "{isa}: {a} vs {b}");
                }
            }
        }
    }

    /// `exp` within 2 ulp of the correctly rounded value (f64) over the range softmax uses, 0
    /// below −87.3, NaN kept.
    #[test]
    fn exp_is_within_two_ulp() {
        let mut worst = 0i64;
        for i in 0..200_001 {
            let x = -87.0 + i as f32 * (87.0 + 88.0) / 200_000.0;
            let want = (x as f64).exp() as f32;
            let got = plain::exp(x);
            worst = worst.max((got.to_bits() as i64 - want.to_bits() as i64).abs());
        }
        assert!(worst <= 2, "{worst} ulp");
        assert_eq!(plain::exp(f32::NEG_INFINITY), 0.0);
        assert_eq!(plain::exp(-100.0), 0.0);
        assert!(plain::exp(f32::NAN).is_nan());
        assert_eq!(plain::exp(0.0), 1.0);
    }

    /// The plane softmax against the textbook one (f64, row by row over the strided axis), on
    /// every level, with large, equal and −∞ values.
    #[test]
    fn the_plane_softmax_matches_the_textbook_on_every_level() {
        for (outer, axis, inner) in [(1, 16, 4 * 33), (2, 3, 17), (3, 1, 5), (1, 7, 1)] {
            let n = outer * axis * inner;
            let mut data: Vec<f32> = (0..n).map(|i| (i as f32 * 0.71).sin() * 30.0).collect();
            data[0] = 80.0;
            data[1 % n] = f32::NEG_INFINITY;
            let mut want = vec![0f32; n];
            for o in 0..outer {
                for i in 0..inner {
                    let at = |k: usize| o * axis * inner + k * inner + i;
                    let max = (0..axis)
                        .map(|k| data[at(k)] as f64)
                        .fold(f64::MIN, f64::max);
                    let sum: f64 = (0..axis).map(|k| (data[at(k)] as f64 - max).exp()).sum();
                    for k in 0..axis {
                        want[at(k)] = ((data[at(k)] as f64 - max).exp() / sum) as f32;
                    }
                }
            }
            for isa in Isa::host().levels() {
                let mut got = data.clone();
                let mut scratch = vec![0f32; 2 * inner];
                softmax_planes(isa, &mut got, axis, inner, &mut scratch);
                for (k, (a, b)) in got.iter().zip(&want).enumerate() {
                    let same = (a - b).abs() <= 1e-6 || (a.is_nan() && b.is_nan());
                    assert!(same, "{isa} {outer}×{axis}×{inner} at {k}: {a} vs {b}");
                }
            }
        }
    }
}
