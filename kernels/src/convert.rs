//! Rows of 8-bit values to and from f32 on the best code `isa` allows: the pair's quantize
//! step narrowing a row ([`quantize_row`]) and its dequantize step widening one
//! ([`dequantize_row`]), the conversions the integer ops' fills and the 8-bit links use.

// the vector kernels of some families exist on x86-64 only: elsewhere their arguments go unused
#![cfg_attr(not(target_arch = "x86_64"), allow(unused_variables, unused_imports))]

use crate::isa::{Feature, Isa};
use crate::quant::U8Form;

/// `dst[i] = form.quantize(src[i])`.
pub fn quantize_row(isa: Isa, form: &U8Form, src: &[f32], dst: &mut [u8]) {
    assert_eq!(src.len(), dst.len());
    #[cfg(target_arch = "x86_64")]
    if isa.has(Feature::Avx512) {
        // SAFETY: `isa` has AVX-512 only where the CPU does; the lengths match.
        return unsafe { crate::x86_64::convert::quantize_row(form, src, dst) };
    }
    for (o, &x) in dst.iter_mut().zip(src) {
        *o = form.quantize(x);
    }
}

/// `dst[i] = form.dequantize(src[i])`.
pub fn dequantize_row(isa: Isa, form: &U8Form, src: &[u8], dst: &mut [f32]) {
    assert_eq!(src.len(), dst.len());
    #[cfg(target_arch = "x86_64")]
    if isa.has(Feature::Avx512) {
        // SAFETY: `isa` has AVX-512 only where the CPU does; the lengths match.
        return unsafe { crate::x86_64::convert::dequantize_row(form, src, dst) };
    }
    form.dequantize_row(src, dst)
}

/// `even[k] = form.dequantize(src[2k])`, `odd[k] = form.dequantize(src[2k + 1])` (a stride-2
/// convolution's column phases).
pub fn dequantize_pairs(isa: Isa, form: &U8Form, src: &[u8], even: &mut [f32], odd: &mut [f32]) {
    let n = src.len() / 2;
    assert!(src.len() == 2 * n && even.len() >= n && odd.len() >= n);
    #[cfg(target_arch = "x86_64")]
    if isa.has(Feature::Avx512) {
        // SAFETY: `isa` has AVX-512 only where the CPU does; the lengths were checked.
        return unsafe {
            crate::x86_64::convert::dequantize_pairs(form, src, &mut even[..n], &mut odd[..n])
        };
    }
    form.dequantize_pairs(src, even, odd)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The vector kernels give the scalar rule's bytes on every tail length, for ties, −0, ±∞,
    /// NaN and values far past the range.
    #[test]
    fn quantize_row_matches_the_scalar_rule_on_every_level() {
        let mut xs: Vec<f32> = (0..70).map(|i| (i as f32 - 35.0) * 0.025).collect();
        xs.extend([-0.0, f32::INFINITY, f32::NEG_INFINITY, f32::NAN, 1e9, -1e9]);
        for form in [
            U8Form::new(1.0 / 0.05, 128.0, 0.05),
            U8Form::new(1.0 / 0.01, 0.0, 0.01),
            U8Form::new(1.0 / 0.02, 255.0, 0.02),
        ] {
            for isa in Isa::host().levels() {
                for len in 0..xs.len() {
                    let mut got = vec![7u8; len];
                    quantize_row(isa, &form, &xs[..len], &mut got);
                    for (x, g) in xs.iter().zip(&got) {
                        assert_eq!(*g, form.quantize(*x), "{isa} {form:?} x = {x}");
                    }
                }
            }
        }
    }

    /// The 8-bit form is the pair: dequantizing rows and pairs gives the scalar rule's f32
    /// bits on every level, and writes nothing past the pairs.
    #[test]
    fn dequantizing_rows_and_pairs_matches_the_scalar_rule_on_every_level() {
        let bytes: Vec<u8> = (0..100).map(|i| (i * 37 % 256) as u8).collect();
        let form = U8Form::new(1.0 / 0.03, 121.0, 0.03);
        for isa in Isa::host().levels() {
            for len in 0..bytes.len() {
                let mut row = vec![f32::NAN; len];
                dequantize_row(isa, &form, &bytes[..len], &mut row);
                for (q, v) in bytes.iter().zip(&row) {
                    assert_eq!(v.to_bits(), form.dequantize(*q).to_bits());
                }
                let n = len / 2;
                let (mut even, mut odd) = (vec![f32::NAN; n + 3], vec![f32::NAN; n + 3]);
                dequantize_pairs(isa, &form, &bytes[..2 * n], &mut even, &mut odd);
                for k in 0..n {
                    assert_eq!(even[k].to_bits(), form.dequantize(bytes[2 * k]).to_bits());
                    assert_eq!(
                        odd[k].to_bits(),
                        form.dequantize(bytes[2 * k + 1]).to_bits()
                    );
                }
                assert!(
                    even[n].is_nan() && odd[n].is_nan(),
                    "{isa}: wrote past the pairs"
                );
            }
        }
    }
}
