//! The depthwise row kernel on NEON: 16 points per step in four accumulators (`fmla` by a
//! broadcast weight), then 4 at a time.

use std::arch::aarch64::*;

crate::plane_fn!(plane_neon, row_neon, "neon");

/// One output row on NEON.
///
/// # Safety
/// Each `taps[t]` is readable for `in_off + out.len()` floats plus 3 (the last vector's reads
/// past the row: the scratch's slack); the CPU has NEON.
#[target_feature(enable = "neon")]
#[inline]
unsafe fn row_neon(
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
        let (lo, hi) = (vdupq_n_f32(lo), vdupq_n_f32(hi));
        let c = |a| {
            if on {
                vminq_f32(vmaxq_f32(a, lo), hi)
            } else {
                a
            }
        };
        let b = vdupq_n_f32(bias);
        let mut i = 0;
        while i + 16 <= len {
            let (mut a0, mut a1, mut a2, mut a3) = (b, b, b, b);
            for (&p, &w) in taps.iter().zip(weights) {
                let p = p.add(in_off + i);
                a0 = vfmaq_n_f32(a0, vld1q_f32(p), w);
                a1 = vfmaq_n_f32(a1, vld1q_f32(p.add(4)), w);
                a2 = vfmaq_n_f32(a2, vld1q_f32(p.add(8)), w);
                a3 = vfmaq_n_f32(a3, vld1q_f32(p.add(12)), w);
            }
            vst1q_f32(o.add(i), c(a0));
            vst1q_f32(o.add(i + 4), c(a1));
            vst1q_f32(o.add(i + 8), c(a2));
            vst1q_f32(o.add(i + 12), c(a3));
            i += 16;
        }
        while i < len {
            // the reads may run up to 3 floats past the row: the scratch's slack
            let mut a = b;
            for (&p, &w) in taps.iter().zip(weights) {
                a = vfmaq_n_f32(a, vld1q_f32(p.add(in_off + i)), w);
            }
            if i + 4 <= len {
                vst1q_f32(o.add(i), c(a));
                i += 4;
            } else {
                let mut tail = [0f32; 4];
                vst1q_f32(tail.as_mut_ptr(), c(a));
                std::ptr::copy_nonoverlapping(tail.as_ptr(), o.add(i), len - i);
                i = len;
            }
        }
    }
}
