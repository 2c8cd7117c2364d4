//! Integer depthwise convolution for QDQ models on AVX-512 VNNI + VBMI: where a depthwise
//! convolution ([`super::depthwise`]) reads the 8-bit values of a quantize→dequantize pair
//! ([`super::u8_activations`]) and its weights are int8 values times a per-channel scale, the
//! products are computed on the bytes, four taps per lane per instruction (`vpdpbusd`: u8 × i8
//! summed into i32), instead of widening every input byte to a float first.
//!
//! Exact rewrite, as in [`super::qpointwise`]: with `x̂ = s_x (q_x − z_x)` and `W = s_w[c]
//! q_w`, `bias + Σ_t W x̂ = bias − s_x s_w[c] z_x Σ_t q_w + s_x s_w[c] Σ_t q_w q_x`, and the
//! padding holds `z_x` (the byte of 0.0), so the integer sum is exact and outputs differ from
//! the float path only by float rounding.
//!
//! Each channel plane is copied as bytes into a scratch padded with `z_x`, its rows split
//! into the vertical stride's phases (padded row `r` is row `r / sy` of phase `r % sy`) and
//! each row `Ws` bytes, a multiple of the horizontal stride. Output `(y, x)` laid flat at
//! `f = y · Ws/sx + x` then reads, for kernel row `ky`, the bytes `base(ky) + sx · f + kx · dx`:
//! for 16 outputs one 64-byte load per kernel row, one byte permute (`vpermb`) that gathers
//! each output's (up to) four taps of that row into its 32-bit lane, and one `vpdpbusd` with
//! the row's four weights. The flat layout and its lane masks are the float kernel's
//! ([`super::depthwise::Geometry::flat_masks`]), so the store (requantize or clamp, pack the
//! output lanes, store) is shared too. A 3×3 layer costs three permutes and three
//! multiply-adds per 16 outputs where the float kernel did nine FMAs, and its input is read
//! as bytes where the float kernel widened it into a float scratch.

// only x86-64 has the kernel: elsewhere no plan is ever made
#![cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]

use super::depthwise::Geometry;
use super::Floats;

/// Bytes one vector load covers: a group's taps for 16 outputs must lie within it.
const WINDOW: usize = 64;

/// Whether the CPU runs the integer kernel: AVX-512F, BW, VL, VNNI and VBMI.
pub(crate) fn available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        super::u8_activations::x86::available()
            && std::arch::is_x86_feature_detected!("avx512vnni")
            && std::arch::is_x86_feature_detected!("avx512vbmi")
    }
    #[cfg(not(target_arch = "x86_64"))]
    false
}

/// Up to four taps of one kernel row, read by one load and one permute.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct Group {
    /// Where its load starts in the scratch, for output 0 (flat or row-wise).
    pub base: usize,
    /// Output lane `l`'s byte `j` is the load's byte `index[4l + j]` (`sx · l + j · dx`);
    /// bytes past the group's taps read byte 0, against a zero weight.
    pub index: Vec<u8>,
    /// Its taps: the first (row-major over the kernel) and how many (1 to 4).
    pub taps: (usize, usize),
}

/// The byte scratch one input plane is copied into (padded with the input's zero point, rows
/// split by vertical stride phase) and the groups that read it: shared by the depthwise
/// kernel (outputs laid flat) and [`super::qdense_conv`] (output rows one by one).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct BytePlane {
    pub geometry: Geometry,
    /// Bytes per padded row (a multiple of `sx`).
    pub row: usize,
    /// Rows per vertical phase.
    pub phase_rows: usize,
    /// Bytes of scratch: every phase plus the reads past it of the last outputs' lanes.
    pub len: usize,
    /// Each kernel row's taps in groups of up to four, row-major.
    pub groups: Vec<Group>,
    /// The geometry's [`Geometry::flat_masks`] (the depthwise kernel's output lanes), kept
    /// so that runs do not recompute them.
    pub flat: Vec<u16>,
    /// The padding byte: the input's zero point.
    pub zero: u8,
}

impl BytePlane {
    /// The layout for `geometry` with padding byte `zero`, or `None` when a kernel row's taps
    /// for 16 outputs do not fit one load.
    pub fn new(geometry: Geometry, zero: u8) -> Option<BytePlane> {
        let g = geometry;
        if g.sx * 15 + 3.min(g.kw - 1) * g.dx >= WINDOW {
            return None;
        }
        let (hp, wp) = (
            g.pad_top + g.h + g.pad_bottom,
            g.pad_left + g.w + g.pad_right,
        );
        let row = wp.next_multiple_of(g.sx);
        let phase_rows = hp.div_ceil(g.sy);
        let mut groups = Vec::new();
        for ky in 0..g.kh {
            let ry = ky * g.dy;
            let row_base = (ry % g.sy) * phase_rows * row + (ry / g.sy) * row;
            for kx0 in (0..g.kw).step_by(4) {
                let n = (g.kw - kx0).min(4);
                let mut index = vec![0u8; WINDOW];
                for l in 0..16 {
                    for j in 0..n {
                        index[4 * l + j] = (g.sx * l + j * g.dx) as u8;
                    }
                }
                groups.push(Group {
                    base: row_base + kx0 * g.dx,
                    index,
                    taps: (ky * g.kw + kx0, n),
                });
            }
        }
        let (ho, wo) = g.output();
        let last_base = groups.iter().map(|gr| gr.base).max().unwrap_or(0);
        let flat = g.flat_masks();
        let flat_reads = g.sx * 16 * flat.len().saturating_sub(1);
        let row_reads = ho.saturating_sub(1) * row + g.sx * 16 * wo.div_ceil(16).saturating_sub(1);
        let len = (last_base + flat_reads.max(row_reads) + WINDOW).max(g.sy * phase_rows * row);
        Some(BytePlane {
            geometry,
            row,
            phase_rows,
            len,
            groups,
            flat,
            zero,
        })
    }

    /// A scratch for the fills: every byte the padding's.
    pub fn scratch(&self) -> Vec<u8> {
        vec![self.zero; self.len]
    }

    /// Where input row `iy` starts in the scratch.
    fn row_start(&self, iy: usize) -> usize {
        let g = &self.geometry;
        let r = iy + g.pad_top;
        (r % g.sy) * self.phase_rows * self.row + (r / g.sy) * self.row + g.pad_left
    }

    /// `[outputs][groups]` words of four int8 weights (little-endian bytes, zero past each
    /// group's taps) from `q`, `[outputs][kh·kw]` per input plane.
    pub fn words(&self, q: &[i8]) -> Vec<i32> {
        let taps = self.geometry.kh * self.geometry.kw;
        q.chunks_exact(taps)
            .flat_map(|qc| {
                self.groups.iter().map(move |gr| {
                    let (first, n) = gr.taps;
                    (0..n).fold(0u32, |w, j| w | ((qc[first + j] as u8 as u32) << (8 * j))) as i32
                })
            })
            .collect()
    }
}

/// An integer depthwise layer: its byte plane, the weights as words of four int8 taps, the
/// per-channel scale and offset that turn integer sums into the float path's values.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct IntegerPlan {
    pub plane: BytePlane,
    /// `[C][groups]`: see [`BytePlane::words`].
    pub words: Vec<i32>,
    /// `[C]`: `s_x · s_w[c]`.
    pub scale: Floats,
    /// `[C]`: `bias[c] − s_x s_w[c] z_x Σ_t q_w[c, t]`.
    pub offset: Floats,
}

impl IntegerPlan {
    /// The plan for a depthwise layer with `kernel` `[C, kh·kw]` and `bias` `[C]` reading bytes
    /// of zero point `zero` and scale `scale`, or `None` when the weights are not int8
    /// multiples of a per-channel scale or a kernel row's taps for 16 outputs do not fit one
    /// load.
    pub fn new(
        geometry: Geometry,
        kernel: &[f32],
        bias: &[f32],
        zero: u8,
        scale: f32,
    ) -> Option<IntegerPlan> {
        let (channels, taps) = (bias.len(), geometry.kh * geometry.kw);
        let plane = BytePlane::new(geometry, zero)?;
        let (q, sw) = super::qpointwise::integer_rows(kernel, channels, taps)?;
        let (mut scales, mut offsets) = (Vec::new(), Vec::new());
        for c in 0..channels {
            let s = scale * sw[c];
            let sum: i32 = q[c * taps..][..taps].iter().map(|&v| v as i32).sum();
            scales.push(s);
            offsets.push(bias[c] - s * zero as f32 * sum as f32);
        }
        Some(IntegerPlan {
            words: plane.words(&q),
            plane,
            scale: Floats(scales),
            offset: Floats(offsets),
        })
    }
}

#[cfg(target_arch = "x86_64")]
pub(crate) mod x86 {
    use super::super::depthwise::x86::Sink;
    use super::super::pointwise::x86::mask;
    use super::super::u8_activations::x86::quantize_row;
    use super::super::u8_activations::U8Form;
    use super::BytePlane;
    use std::arch::x86_64::*;

    /// Copies one input plane (`h·w` bytes) into the interior of `scratch` (the padding keeps
    /// the zero point it was created with), 64 bytes per masked move.
    ///
    /// # Safety
    /// The CPU has AVX-512F and BW.
    #[target_feature(enable = "avx512f,avx512bw")]
    pub unsafe fn fill_bytes(to: &BytePlane, plane: &[u8], scratch: &mut [u8]) {
        let w = to.geometry.w;
        for (iy, src) in plane.chunks_exact(w).enumerate() {
            let dst = &mut scratch[to.row_start(iy)..][..w];
            let mut i = 0;
            while i < w {
                let m = if w - i >= 64 {
                    !0
                } else {
                    (1u64 << (w - i)) - 1
                };
                // SAFETY: the masked lanes stay inside both rows.
                unsafe {
                    let v = _mm512_maskz_loadu_epi8(m, src.as_ptr().add(i) as *const i8);
                    _mm512_mask_storeu_epi8(dst.as_mut_ptr().add(i) as *mut i8, m, v);
                }
                i += 64;
            }
        }
    }

    /// [`fill_bytes`] from f32 values, rounded to `form`'s bytes as they are copied (the
    /// pair's quantize step).
    ///
    /// # Safety
    /// The CPU has AVX-512F, BW and VL.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl")]
    pub unsafe fn fill_quantized(to: &BytePlane, plane: &[f32], scratch: &mut [u8], form: U8Form) {
        let w = to.geometry.w;
        for (iy, src) in plane.chunks_exact(w).enumerate() {
            // SAFETY: the caller's features; a row of `w` on both sides.
            unsafe { quantize_row(&form, src, &mut scratch[to.row_start(iy)..][..w]) }
        }
    }

    /// Every output's taps of each group, output row by output row, as words of four bytes:
    /// `packed[k · points + y · wo + x]` for group `k` (an im2col matrix in VNNI order).
    ///
    /// # Safety
    /// `scratch` is `plane`'s, `groups` its [`permutes`], `packed` holds `groups.len() ·
    /// points` words; the CPU has AVX-512F, BW, VL and VBMI.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vbmi")]
    pub unsafe fn gather_rows(
        plane: &BytePlane,
        scratch: &[u8],
        groups: &[(usize, __m512i)],
        packed: &mut [u32],
    ) {
        let g = &plane.geometry;
        let (ho, wo) = g.output();
        let points = ho * wo;
        assert!(packed.len() == groups.len() * points && scratch.len() == plane.len);
        for (&(base, index), words) in groups.iter().zip(packed.chunks_exact_mut(points)) {
            let dst = words.as_mut_ptr() as *mut i32;
            for y in 0..ho {
                // SAFETY: the plane's length covers every row's reads (see `BytePlane::new`);
                // the masked stores stay inside the row's `wo` words.
                unsafe {
                    let src = scratch.as_ptr().add(base + y * plane.row);
                    let mut x = 0;
                    while x < wo {
                        let taps = _mm512_permutexvar_epi8(
                            index,
                            _mm512_loadu_si512(src.add(g.sx * x) as *const _),
                        );
                        let m = mask(wo - x);
                        _mm512_mask_storeu_epi32(dst.add(y * wo + x), m, taps);
                        x += 16;
                    }
                }
            }
        }
    }

    /// The plan's groups as (load start, permute) pairs in registers, for [`plane`].
    ///
    /// # Safety
    /// The CPU has AVX-512F.
    #[target_feature(enable = "avx512f")]
    pub unsafe fn permutes(plane: &BytePlane) -> Vec<(usize, __m512i)> {
        plane
            .groups
            .iter()
            // SAFETY: every index is 64 bytes
            .map(|g| {
                // SAFETY: AVX-512F is present (this plan is built only then) and every index is 64 bytes.
                (g.base, unsafe {
                    _mm512_loadu_si512(g.index.as_ptr() as *const _)
                })
            })
            .collect()
    }

    /// One channel plane from the filled `scratch` into `out`: for each block of 64 flat
    /// outputs, four independent i32 accumulators, one permute and `vpdpbusd` per group and
    /// vector, then `sum · scale + offset` stored through `sink` (clamped f32 or requantized
    /// bytes, the output lanes packed together: the float kernel's stores).
    ///
    /// # Safety
    /// `scratch` is the plan's byte plane, `groups` its [`permutes`] and `words` the channel's
    /// words; `masks` the geometry's flat masks and `out` holds the plane's outputs; the CPU
    /// has AVX-512F, BW, VL, VNNI and VBMI.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx512vbmi")]
    #[allow(clippy::too_many_arguments)]
    pub unsafe fn plane<S: Sink>(
        out: &mut [S::Out],
        scratch: &[u8],
        sx: usize,
        masks: &[u16],
        groups: &[(usize, __m512i)],
        words: &[i32],
        scale: f32,
        offset: f32,
        sink: S,
    ) {
        let mut o = out.as_mut_ptr();
        let step = 16 * sx;
        // SAFETY: this fn's caller upholds its contract (the CPU has the target features; pointers cover the lengths it names).
        unsafe {
            let (s, b) = (_mm512_set1_ps(scale), _mm512_set1_ps(offset));
            for (block, m) in masks.chunks_exact(4).enumerate() {
                let at = block * 4 * step;
                let zero = _mm512_setzero_si512();
                let (mut a0, mut a1, mut a2, mut a3) = (zero, zero, zero, zero);
                for (&(base, index), &w) in groups.iter().zip(words) {
                    let w = _mm512_set1_epi32(w);
                    let p = scratch.as_ptr().add(base + at);
                    macro_rules! taps {
                        ($k:expr) => {
                            _mm512_permutexvar_epi8(
                                index,
                                _mm512_loadu_si512(p.add($k * step) as *const _),
                            )
                        };
                    }
                    a0 = _mm512_dpbusd_epi32(a0, taps!(0), w);
                    a1 = _mm512_dpbusd_epi32(a1, taps!(1), w);
                    a2 = _mm512_dpbusd_epi32(a2, taps!(2), w);
                    a3 = _mm512_dpbusd_epi32(a3, taps!(3), w);
                }
                for (a, &m) in [a0, a1, a2, a3].into_iter().zip(m) {
                    sink.store(o, m, _mm512_fmadd_ps(_mm512_cvtepi32_ps(a), s, b));
                    o = o.add(m.count_ones() as usize);
                }
            }
        }
    }
}
