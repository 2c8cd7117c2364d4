//! The integer 1×1 kernels in plain Rust: the quantize-and-interleave pass into VNNI order and
//! the 8 × 48 tile of u8 × i8 sums.

use crate::quant::quantize;
use crate::tile::{TileOut, ROWS};

/// `packed[g·points + p]` = the four quantized values of input channels `4g..4g+4` at point
/// `p`, one byte each, low byte first (zero past `cin`); the pair's rounding.
pub fn pack(input: &[f32], cin: usize, points: usize, inv: f32, zp: f32, packed: &mut [u32]) {
    for (g, row) in packed.chunks_exact_mut(points).enumerate() {
        for (p, word) in row.iter_mut().enumerate() {
            *word = (0..4)
                .filter(|j| 4 * g + j < cin)
                .map(|j| {
                    (quantize(input[(4 * g + j) * points + p], inv, zp, 0.0, 255.0) as u32)
                        << (8 * j)
                })
                .fold(0, |a, b| a | b);
        }
    }
}

/// [`pack`] for values already quantized: `input` holds the 8-bit values.
pub fn pack_bytes(input: &[u8], cin: usize, points: usize, packed: &mut [u32]) {
    for (g, row) in packed.chunks_exact_mut(points).enumerate() {
        for (p, word) in row.iter_mut().enumerate() {
            *word = (0..4)
                .filter(|j| 4 * g + j < cin)
                .map(|j| (input[(4 * g + j) * points + p] as u32) << (8 * j))
                .fold(0, |a, b| a | b);
        }
    }
}

/// `out[r·stride + c] = clamp(Σ_g dot4(x[g·stride + c], w[g·8 + r]) · scale[r] + offset[r])`
/// for `r < rows`, `c < cols` (as f32 or in the output's 8-bit form).
///
/// # Safety
/// `x` readable at `g·stride + c`, `out` writable at `r·stride + c` for those indices.
#[allow(clippy::too_many_arguments)]
pub unsafe fn tile(
    k4: usize,
    x: *const u32,
    stride: usize,
    weights: &[i32],
    (scale, offset): (&[f32], &[f32]),
    out: TileOut,
    rows: usize,
    cols: usize,
    clamp: Option<(f32, f32)>,
) {
    for r in 0..rows {
        for c in 0..cols {
            let mut acc = 0i32;
            for g in 0..k4 {
                // SAFETY: the caller guarantees the reads.
                let xs = unsafe { *x.add(g * stride + c) }.to_le_bytes();
                let ws = weights[g * ROWS + r].to_le_bytes();
                for (a, b) in xs.iter().zip(ws) {
                    acc += *a as i32 * b as i8 as i32;
                }
            }
            let mut v = acc as f32 * scale[r] + offset[r];
            if let Some((lo, hi)) = clamp {
                v = v.max(lo).min(hi);
            }
            // SAFETY: the caller guarantees the writes.
            unsafe {
                match out {
                    TileOut::F32(o) => *o.add(r * stride + c) = v,
                    TileOut::U8(o, q) => *o.add(r * stride + c) = q.apply(v),
                }
            }
        }
    }
}

/// The whole product for one point (`x`: `k4` words) across output channels: each tile of 8
/// channels as a one-column [`tile`].
///
/// # Safety
/// `weights` holds `⌈cout/8⌉·k4·8` words, `scale` and `offset` `⌈cout/8⌉·8` values, `out` is
/// writable for `cout` values.
pub unsafe fn gemv(
    x: &[u32],
    weights: &[i32],
    (scale, offset): (&[f32], &[f32]),
    out: TileOut,
    cout: usize,
    clamp: Option<(f32, f32)>,
) {
    let k4 = x.len();
    for t in 0..cout.div_ceil(ROWS) {
        let rows = ROWS.min(cout - t * ROWS);
        // SAFETY: one point (stride 1): tile `t` reads `k4` words of `x` and writes its
        // `rows` outputs, inside the caller's bounds.
        unsafe {
            tile(
                k4,
                x.as_ptr(),
                1,
                &weights[t * k4 * ROWS..][..k4 * ROWS],
                (&scale[t * ROWS..][..ROWS], &offset[t * ROWS..][..ROWS]),
                out.at(t * ROWS),
                rows,
                1,
                clamp,
            )
        }
    }
}
