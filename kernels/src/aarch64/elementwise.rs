//! Element-wise maps on NEON: the quantize→dequantize pair, 16 values per step.

use std::arch::aarch64::*;

use crate::quant::Pair;
use crate::scalar::elementwise as plain;

/// The pair, 16 values per step, the tail (under 4 values) by the plain loop. As on x86:
/// with the dequantize zero point equal to the quantize one, `(clamp(r + zp, lo, hi) − zp) · s
/// = clamp(r, lo − zp, hi − zp) · s` exactly (small integers), and NaN lanes are zeroed after
/// the rounding, as the pair maps them to the zero point. Same bits as the plain loop.
///
/// # Safety
/// The CPU has NEON.
#[target_feature(enable = "neon")]
pub unsafe fn apply_pair(pair: &Pair, data: &mut [f32]) {
    let zp = pair.zero_point;
    if zp != pair.dq_zero_point {
        return plain::apply_pair(pair, data);
    }
    let inv = vdupq_n_f32(pair.inv_scale);
    let lo = vdupq_n_f32(pair.lo - zp);
    let hi = vdupq_n_f32(pair.hi - zp);
    let scale = vdupq_n_f32(pair.dq_scale);
    let step = |v: float32x4_t| {
        let r = vrndnq_f32(vmulq_f32(v, inv));
        // NaN → +0 (the zero point), by mask
        let r = vreinterpretq_f32_u32(vandq_u32(vreinterpretq_u32_f32(r), vceqq_f32(r, r)));
        // `+ 0` turns a −0 into the +0 the two-add form gives
        let q = vaddq_f32(vminnmq_f32(vmaxnmq_f32(r, lo), hi), vdupq_n_f32(0.0));
        vmulq_f32(q, scale)
    };
    let mut chunks = data.chunks_exact_mut(16);
    for chunk in &mut chunks {
        // SAFETY: 16 floats in bounds
        unsafe {
            let p = chunk.as_mut_ptr();
            let v = [
                vld1q_f32(p),
                vld1q_f32(p.add(4)),
                vld1q_f32(p.add(8)),
                vld1q_f32(p.add(12)),
            ];
            for (k, v) in v.into_iter().enumerate() {
                vst1q_f32(p.add(4 * k), step(v));
            }
        }
    }
    let mut quads = chunks.into_remainder().chunks_exact_mut(4);
    for quad in &mut quads {
        // SAFETY: 4 floats in bounds
        unsafe { vst1q_f32(quad.as_mut_ptr(), step(vld1q_f32(quad.as_ptr()))) };
    }
    plain::apply_pair(pair, quads.into_remainder());
}
