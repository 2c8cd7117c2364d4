//! The float 1×1 micro-kernel on AVX-512: 8 output channels × 48 points in 24 registers, the
//! weights broadcast from their packed copy, the input rows read straight (masked tail).

use std::arch::x86_64::*;

use super::lanes::{mask, store_row, FloatSink, Sink};
use crate::tile::ROWS;

/// How far ahead of the tile's reduction its weights are prefetched (floats: 2 KiB).
const PREFETCH_FLOATS: usize = 512;

/// [`crate::pointwise::Kernel::tile`] with `V` vectors of 16 points, the last one masked to
/// `cols`.
///
/// # Safety
/// As [`crate::pointwise::Kernel::tile`]; the CPU has AVX-512F.
#[target_feature(enable = "avx512f")]
#[allow(clippy::too_many_arguments)]
pub unsafe fn tile<const V: usize>(
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
    let last = mask(cols - 16 * (V - 1));
    let w = weights.as_ptr();
    // SAFETY: this fn's caller upholds its contract (the CPU has the target features; pointers cover the lengths it names).
    unsafe {
        let mut acc = [[_mm512_setzero_ps(); V]; ROWS];
        for (r, row) in acc.iter_mut().enumerate() {
            *row = [_mm512_set1_ps(bias[r]); V];
        }
        for i in 0..cin {
            let xi = x.add(i * strides.0);
            let mut xv = [_mm512_setzero_ps(); V];
            for (v, lane) in xv.iter_mut().enumerate() {
                *lane = if v + 1 == V {
                    _mm512_maskz_loadu_ps(last, xi.add(16 * v))
                } else {
                    _mm512_loadu_ps(xi.add(16 * v))
                };
            }
            let wi = w.add(i * ROWS);
            // the weights stream from memory once per tile: ask for them 2 KiB ahead (one
            // line per two steps; past the end the hint is dropped)
            _mm_prefetch::<_MM_HINT_T0>(wi.wrapping_add(PREFETCH_FLOATS) as *const i8);
            for (r, row) in acc.iter_mut().enumerate() {
                let k = _mm512_set1_ps(*wi.add(r));
                for (a, &xv) in row.iter_mut().zip(&xv) {
                    *a = _mm512_fmadd_ps(k, xv, *a);
                }
            }
        }
        for (r, row) in acc.iter().enumerate().take(rows) {
            store_row(out.add(r * strides.1), row, last, clamp);
        }
    }
}

/// [`crate::pointwise::Kernel::tile_gathered`] with `V` vectors of 16 lanes.
///
/// # Safety
/// As [`crate::pointwise::Kernel::tile_gathered`]; the CPU has AVX-512F.
#[target_feature(enable = "avx512f")]
#[allow(clippy::too_many_arguments)]
pub unsafe fn tile_gathered<const V: usize>(
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
    let w = weights.as_ptr();
    // SAFETY: this fn's caller upholds its contract (the CPU has the target features; every
    // row's `16·V` floats readable, the stored lanes writable).
    unsafe {
        let mut acc = [[_mm512_setzero_ps(); V]; ROWS];
        for (r, row) in acc.iter_mut().enumerate() {
            *row = [_mm512_set1_ps(bias[r]); V];
        }
        for (i, &offset) in offsets.iter().enumerate() {
            let xi = x.add(offset);
            let mut xv = [_mm512_setzero_ps(); V];
            for (v, lane) in xv.iter_mut().enumerate() {
                *lane = _mm512_loadu_ps(xi.add(16 * v));
            }
            let wi = w.add(i * ROWS);
            // the weights stream from memory once per tile: ask for them 2 KiB ahead (one
            // line per two steps; past the end the hint is dropped)
            _mm_prefetch::<_MM_HINT_T0>(wi.wrapping_add(PREFETCH_FLOATS) as *const i8);
            for (r, row) in acc.iter_mut().enumerate() {
                let k = _mm512_set1_ps(*wi.add(r));
                for (a, &xv) in row.iter_mut().zip(&xv) {
                    *a = _mm512_fmadd_ps(k, xv, *a);
                }
            }
        }
        let sink = FloatSink::new(clamp);
        for (r, row) in acc.iter().enumerate().take(rows) {
            let o = out.add(r * out_stride);
            for (&a, &(mask, start)) in row.iter().zip(lanes) {
                if mask != 0 {
                    sink.store(o.add(start as usize), mask, a);
                }
            }
        }
    }
}
