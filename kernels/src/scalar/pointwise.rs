//! The float 1×1 micro-kernel in plain Rust: up to 8 output channels × up to 48 points.

use crate::tile::ROWS;

/// `out[r·strides.1 + c] = clamp(bias[r] + Σ_i weights[i·8 + r] · x[i·strides.0 + c])` for
/// `r < rows`, `c < cols`.
///
/// # Safety
/// `x` readable at `i·strides.0 + c` and `out` writable at `r·strides.1 + c` for those indices.
#[allow(clippy::too_many_arguments)]
pub unsafe fn tile(
    cin: usize,
    x: *const f32,
    strides: (usize, usize),
    weights: &[f32],
    bias: &[f32],
    out: *mut f32,
    rows: usize,
    cols: usize,
    clamp: Option<(f32, f32)>,
) {
    for r in 0..rows {
        for c in 0..cols {
            let mut acc = bias[r];
            for i in 0..cin {
                // SAFETY: the caller guarantees the reads.
                acc += weights[i * ROWS + r] * unsafe { *x.add(i * strides.0 + c) };
            }
            if let Some((lo, hi)) = clamp {
                acc = acc.max(lo).min(hi);
            }
            // SAFETY: the caller guarantees the writes.
            unsafe { *out.add(r * strides.1 + c) = acc };
        }
    }
}

/// [`crate::pointwise::Kernel::tile_gathered`] in plain Rust: row `i` of the input starts at
/// `x + offsets[i]`; vector `v`'s lanes set in `lanes[v].0` go, packed in lane order, to
/// `out[r·out_stride + lanes[v].1 ..]`.
///
/// # Safety
/// As [`crate::pointwise::Kernel::tile_gathered`].
#[allow(clippy::too_many_arguments)]
pub unsafe fn tile_gathered(
    offsets: &[usize],
    x: *const f32,
    weights: &[f32],
    bias: &[f32],
    out: *mut f32,
    out_stride: usize,
    lanes: &[(u16, u32)],
    rows: usize,
    clamp: Option<(f32, f32)>,
) {
    for r in 0..rows {
        for (v, &(mask, start)) in lanes.iter().enumerate() {
            let kept = (0..16).filter(|l| mask >> l & 1 == 1);
            for (at, l) in (start as usize..).zip(kept) {
                let mut acc = bias[r];
                for (i, &offset) in offsets.iter().enumerate() {
                    // SAFETY: the caller guarantees the reads.
                    acc += weights[i * ROWS + r] * unsafe { *x.add(offset + 16 * v + l) };
                }
                if let Some((lo, hi)) = clamp {
                    acc = acc.max(lo).min(hi);
                }
                // SAFETY: the caller guarantees the writes.
                unsafe { *out.add(r * out_stride + at) = acc };
            }
        }
    }
}
