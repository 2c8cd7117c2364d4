//! The plan of an integer depthwise layer for QDQ models: where a depthwise convolution
//! ([`super::depthwise`]) reads the 8-bit values of a quantize→dequantize pair
//! ([`super::u8_activations`]) and its weights are int8 values times a per-channel scale, the
//! products run on the bytes with [`edge_kernels::qdepthwise`]'s kernel (AVX-512 VNNI + VBMI)
//! instead of widening every input byte to a float first.
//!
//! Exact rewrite, as in [`super::qpointwise`]: with `x̂ = s_x (q_x − z_x)` and `W = s_w[c]
//! q_w`, `bias + Σ_t W x̂ = bias − s_x s_w[c] z_x Σ_t q_w + s_x s_w[c] Σ_t q_w q_x`, and the
//! padding holds `z_x` (the byte of 0.0), so the integer sum is exact and outputs differ from
//! the float path only by float rounding. The plan holds the byte layout, the weights as words
//! of four int8 taps, and the per-channel scale and offset of that identity.

use edge_kernels::qdepthwise::Kernel;
use edge_kernels::quant::integer_rows;
use edge_kernels::{BytePlane, Geometry};

use super::Floats;

/// Whether the CPU runs the integer kernel (AVX-512 F, BW, VL, VNNI and VBMI).
#[cfg(test)]
pub(crate) fn available() -> bool {
    Kernel::best(edge_kernels::Isa::host()).is_some()
}

/// An integer depthwise layer: its kernel, its byte plane, the weights as words of four int8
/// taps, the per-channel scale and offset that turn integer sums into the float path's values.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct IntegerPlan {
    pub kernel: Kernel,
    pub plane: BytePlane,
    /// `[C][groups]`: see [`BytePlane::words`].
    pub words: Vec<i32>,
    /// `[C]`: `s_x · s_w[c]`.
    pub scale: Floats,
    /// `[C]`: `bias[c] − s_x s_w[c] z_x Σ_t q_w[c, t]`.
    pub offset: Floats,
}

impl IntegerPlan {
    /// The plan for a depthwise layer with `weights` `[C, kh·kw]` and `bias` `[C]` reading
    /// bytes of zero point `zero` and scale `scale`, or `None` when the weights are not int8
    /// multiples of a per-channel scale or a kernel row's taps for 16 outputs do not fit one
    /// load.
    pub fn new(
        kernel: Kernel,
        geometry: Geometry,
        weights: &[f32],
        bias: &[f32],
        zero: u8,
        scale: f32,
    ) -> Option<IntegerPlan> {
        let (channels, taps) = (bias.len(), geometry.kh * geometry.kw);
        let plane = BytePlane::new(geometry, zero)?;
        let (q, sw) = integer_rows(weights, channels, taps)?;
        let (mut scales, mut offsets) = (Vec::new(), Vec::new());
        for c in 0..channels {
            let s = scale * sw[c];
            let sum: i32 = q[c * taps..][..taps].iter().map(|&v| v as i32).sum();
            scales.push(s);
            offsets.push(bias[c] - s * zero as f32 * sum as f32);
        }
        Some(IntegerPlan {
            kernel,
            words: plane.words(&q),
            plane,
            scale: Floats(scales),
            offset: Floats(offsets),
        })
    }
}
