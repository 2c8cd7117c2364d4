//! The depthwise row kernel in plain Rust: `out[x] = bias + Σ_t weights[t] · taps[t][x]`.

/// One output row: `out[x] = bias + Σ_t weights[t] · taps[t][in_off + x]`, clamped.
///
/// # Safety
/// Each `taps[t]` is readable for `in_off + out.len()` floats.
pub unsafe fn row(
    out: &mut [f32],
    taps: &[*const f32],
    in_off: usize,
    weights: &[f32],
    bias: f32,
    clamp: Option<(f32, f32)>,
) {
    out.fill(bias);
    for (&p, &w) in taps.iter().zip(weights) {
        // SAFETY: the caller guarantees `out.len()` readable floats at each tap.
        let run = unsafe { std::slice::from_raw_parts(p.add(in_off), out.len()) };
        for (o, x) in out.iter_mut().zip(run) {
            *o += w * x;
        }
    }
    if let Some((lo, hi)) = clamp {
        for o in out {
            *o = o.max(lo).min(hi);
        }
    }
}

/// One channel plane, row by row (output row `y` reads the taps `y · in_row` further on).
///
/// # Safety
/// Each `taps[t]` is readable for `(rows − 1)·in_row + wo` floats, `out.len() = rows · wo`.
pub unsafe fn plane(
    out: &mut [f32],
    wo: usize,
    in_row: usize,
    taps: &[*const f32],
    weights: &[f32],
    bias: f32,
    clamp: Option<(f32, f32)>,
) {
    for (y, out_row) in out.chunks_exact_mut(wo).enumerate() {
        // SAFETY: the caller's bounds cover row `y`.
        unsafe { row(out_row, taps, y * in_row, weights, bias, clamp) }
    }
}
