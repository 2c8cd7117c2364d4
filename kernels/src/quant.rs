//! The arithmetic of quantized values, in plain Rust: the quantize→dequantize pair's rounding
//! ([`quantize`]), the unsigned 8-bit form of a pair ([`U8Form`]) that our ops pass between
//! them, the requantizing store of a convolution's sums ([`Requantizer`]), and the recovery of
//! int8 weights from the float constants a QDQ graph folds them into ([`integer_rows`]). Every
//! vector kernel is held to these rules bit for bit.

/// The quantize step for one value, as a float: `clamp(round_even(v · inv) + zp, lo, hi)`, NaN
/// going to the zero point (tract casts NaN to 0 before adding it; ONNX Runtime saturates it the
/// same way). Every kernel that stands in for a pair rounds exactly so.
#[inline(always)]
pub fn quantize(v: f32, inv: f32, zp: f32, lo: f32, hi: f32) -> f32 {
    let r = (v * inv).round_ties_even();
    let r = if r.is_nan() { 0.0 } else { r };
    (r + zp).max(lo).min(hi)
}

/// A quantize→dequantize pair in unsigned terms: `q = clamp(round_even(x · inv_scale) +
/// zero_point, 0, 255)` (NaN → zero point) and `x̂ = (q − zero_point) · scale`; an i8 pair is
/// shifted by 128 (same `x̂`). Kept as f32 bits (the ops holding it are `Eq + Hash`).
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
        quantize(v, self.inv_scale(), self.zero_point(), 0.0, 255.0) as u8
    }

    /// The pair's dequantize step for one value: the f32 the pair would have output.
    #[inline(always)]
    pub fn dequantize(&self, q: u8) -> f32 {
        (q as f32 - self.zero_point()) * self.scale()
    }

    /// The quantize step of values first clamped to `clamp` (a fused ReLU6), folded into
    /// one multiply and one integer range.
    pub fn requantizer(&self, clamp: Option<(f32, f32)>) -> Requantizer {
        let zp = self.zero_point();
        let (lo, hi) = clamp.unwrap_or((f32::NEG_INFINITY, f32::INFINITY));
        Requantizer {
            inv_scale: self.inv_scale(),
            lo: self.quantize(lo) as f32 - zp,
            hi: self.quantize(hi) as f32 - zp,
            zero_point: zp as i32,
        }
    }

    /// `dst[i] = dequantize(src[i])`, in plain Rust (the loop the vector kernels are compiled
    /// from and held to).
    #[inline(always)]
    pub fn dequantize_row(&self, src: &[u8], dst: &mut [f32]) {
        assert_eq!(src.len(), dst.len());
        for (d, &q) in dst.iter_mut().zip(src) {
            *d = self.dequantize(q);
        }
    }

    /// `even[k] = dequantize(src[2k])`, `odd[k] = dequantize(src[2k + 1])` (a stride-2
    /// convolution's column phases), in plain Rust.
    #[inline(always)]
    pub fn dequantize_pairs(&self, src: &[u8], even: &mut [f32], odd: &mut [f32]) {
        let n = src.len() / 2;
        assert!(src.len() == 2 * n && even.len() >= n && odd.len() >= n);
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
pub struct Requantizer {
    /// `1 / s` of the output form.
    pub inv_scale: f32,
    /// The range less the zero point (whole numbers): low end.
    pub lo: f32,
    /// The range less the zero point: high end.
    pub hi: f32,
    /// The output form's zero point.
    pub zero_point: i32,
}

impl Requantizer {
    /// One value.
    #[inline(always)]
    pub fn apply(&self, y: f32) -> u8 {
        let t = (y * self.inv_scale).max(self.lo).min(self.hi);
        (t.round_ties_even() as i32 + self.zero_point) as u8
    }
}

/// A `QuantizeLinear → DequantizeLinear` pair on f32 values, both steps' parameters:
/// `y = (clamp(round_even(x · inv_scale) + zero_point, lo, hi) − dq_zero_point) · dq_scale`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Pair {
    /// `1 / scale` of the quantize step.
    pub inv_scale: f32,
    /// The quantize step's zero point.
    pub zero_point: f32,
    /// The quantized type's range: `0, 255` or `-128, 127`.
    pub lo: f32,
    /// See `lo`.
    pub hi: f32,
    /// The dequantize step's scale.
    pub dq_scale: f32,
    /// The dequantize step's zero point.
    pub dq_zero_point: f32,
}

impl Pair {
    /// The pair on one value.
    #[inline(always)]
    pub fn apply(&self, v: f32) -> f32 {
        (quantize(v, self.inv_scale, self.zero_point, self.lo, self.hi) - self.dq_zero_point)
            * self.dq_scale
    }
}

/// `v` rounded to the nearest whole number, ties to even, for `|v| < 2²²` (adding and taking
/// away 1.5 · 2²³ leaves no fraction bits; Rust does not reassociate float arithmetic).
#[inline(always)]
fn nearest(v: f32) -> f32 {
    const SHIFT: f32 = 12_582_912.0;
    (v + SHIFT) - SHIFT
}

/// Whether every value of `row` is a whole multiple of `s` (as [`integer_rows`] tolerates),
/// writing the multiples to `q` on the way.
fn whole_multiples(row: &[f32], s: f32, q: &mut [i8]) -> bool {
    let inverse = 1.0 / s;
    let mut whole = true;
    for (q, &v) in q.iter_mut().zip(row) {
        let r = v * inverse;
        let n = nearest(r);
        whole &= (r - n).abs() <= 1e-4 * n.abs().max(1.0);
        *q = n as i8;
    }
    whole
}

/// The weights `[O, I]` as int8 values times one scale per row, when every row is exactly
/// that (to float rounding): `(q [O, I], scale [O])`. What `DequantizeLinear` of int8 weights
/// leaves after tract folds it; a row that is not such a multiple (float weights) gives `None`.
pub fn integer_rows(weights: &[f32], cout: usize, cin: usize) -> Option<(Vec<i8>, Vec<f32>)> {
    let mut q = vec![0i8; cout * cin];
    let mut scales = vec![1f32; cout];
    for o in 0..cout {
        let row = &weights[o * cin..][..cin];
        let top = row.iter().fold(0f32, |m, v| m.max(v.abs()));
        if !top.is_finite() {
            return None;
        }
        if top == 0.0 {
            continue;
        }
        // the row's largest |q| is unknown (127 for a symmetric quantizer's largest weight,
        // less when the scale came from elsewhere): the first that makes every value whole.
        // `r = v / s` lies within ±127 here, so `nearest` rounds it without a libm call (a
        // model's load spent ~10 % of its time in `roundf` here)
        let whole = |v: f32, s: f32| {
            let r = v / s;
            (r - nearest(r)).abs() <= 1e-4 * nearest(r).abs().max(1.0)
        };
        let q = &mut q[o * cin..][..cin];
        // a symmetric quantizer's row (its largest weight at ±127) in one pass without
        // branches or divisions: a multiple of `top / 127` within the tolerance gives the same
        // whole numbers through the reciprocal (this search was ~10 % of an int8 model's load)
        let s = top / 127.0;
        if whole_multiples(row, s, q) {
            scales[o] = s;
            continue;
        }
        let s = (1..127u8)
            .rev()
            .map(|m| top / m as f32)
            .find(|&s| row.iter().all(|&v| whole(v, s)))?;
        for (q, &v) in q.iter_mut().zip(row) {
            *q = nearest(v / s) as i8;
        }
        scales[o] = s;
    }
    Some((q, scales))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::int8_weights;

    /// The libm-free rounding is `round_ties_even` over the range it is used on.
    #[test]
    fn nearest_rounds_ties_to_even() {
        for k in -2_000_000..=2_000_000 {
            let v = k as f32 * 0.000_13 + (k % 7) as f32 * 0.25;
            assert_eq!(nearest(v), v.round_ties_even(), "{v}");
        }
        for v in [
            -127.5f32,
            -0.5,
            0.5,
            1.5,
            2.5,
            126.5,
            -0.0,
            0.0,
            4_194_303.5,
        ] {
            assert_eq!(nearest(v), v.round_ties_even(), "{v}");
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
                let q = quantize(x, 1.0 / s, zp, lo, hi);
                let pair = (q - zp) * s;
                let ours = form.dequantize(form.quantize(x));
                assert_eq!(pair.to_bits(), ours.to_bits(), "x = {x}");
            }
        }
    }

    #[test]
    fn integer_weights_are_recovered_exactly_or_not_at_all() {
        let (q, s, w) = int8_weights(6, 10);
        let (q2, s2) = integer_rows(&w, 6, 10).unwrap();
        for o in 0..6 {
            for i in 0..10 {
                let (a, b) = (q2[o * 10 + i] as f32 * s2[o], q[o * 10 + i] as f32 * s[o]);
                assert!((a - b).abs() <= 1e-6 * b.abs().max(1e-3), "{a} vs {b}");
            }
        }
        // a row whose largest |q| is under 127 (a per-tensor scale), and an all-zero row
        let w = [0.0, 0.5, -1.5, 2.0, 0.0, 0.0, 0.0, 0.0];
        let (q, s) = integer_rows(&w, 2, 4).unwrap();
        assert_eq!(&q[..4], &[0, 31, -93, 124]);
        assert!((s[0] - 2.0 / 124.0).abs() < 1e-7 && q[4..] == [0; 4]);
        // float weights are left alone
        assert!(integer_rows(&crate::testing::values(64, 9), 4, 16).is_none());
        assert!(integer_rows(&[f32::NAN, 1.0], 1, 2).is_none());
    }

    /// The one-pass search of a row at `top / 127` gives the integers and scale the search by
    /// division gives, bit for bit (the reference below is the search as it was).
    #[test]
    fn the_one_pass_row_is_the_division_search() {
        let reference = |row: &[f32]| -> Option<(Vec<i8>, f32)> {
            let top = row.iter().fold(0f32, |m, v| m.max(v.abs()));
            let whole = |v: f32, s: f32| {
                let r = v / s;
                (r - nearest(r)).abs() <= 1e-4 * nearest(r).abs().max(1.0)
            };
            let s = (1..=127u8)
                .rev()
                .map(|m| top / m as f32)
                .find(|&s| row.iter().all(|&v| whole(v, s)))?;
            Some((row.iter().map(|&v| nearest(v / s) as i8).collect(), s))
        };
        for (cout, cin) in [(64, 96), (17, 3), (8, 1280)] {
            let (_, _, w) = int8_weights(cout, cin);
            let (q, s) = integer_rows(&w, cout, cin).unwrap();
            for o in 0..cout {
                let (want_q, want_s) = reference(&w[o * cin..][..cin]).unwrap();
                assert_eq!(&q[o * cin..][..cin], &want_q[..], "row {o}");
                assert_eq!(s[o].to_bits(), want_s.to_bits(), "row {o}");
            }
        }
    }
}
