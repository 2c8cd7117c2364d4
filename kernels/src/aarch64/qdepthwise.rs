//! The integer depthwise and im2col kernels on aarch64 over a [`BytePlane`]: `tbl` with four
//! table registers is x86's 64-byte byte permute, so each group (up to four taps of a kernel
//! row) of 16 outputs is one 64-byte load, four table lookups that gather each output's taps
//! into its 32-bit lane, and four dot products against the group's weights broadcast (`sdot`
//! on bytes stored with their top bit flipped, the sums started at `128 · Σ w`; or `usdot` on
//! plain bytes with i8mm). Outputs run row by row (NEON has no compressing store), 16 at a
//! time, the row's last partial vector stored through a small buffer.

use std::arch::aarch64::*;
use std::arch::asm;

use super::qpointwise::{quantize4, Bytes};
use crate::byte_plane::BytePlane;
use crate::quant::{Requantizer, U8Form};

/// A group as the kernels read it: its load start and its 64-byte index.
pub type Group = (usize, [u8; 64]);

/// The plane's groups for the kernels.
pub fn groups(plane: &BytePlane) -> Vec<Group> {
    plane
        .groups
        .iter()
        .map(|g| {
            let mut index = [0u8; 64];
            index.copy_from_slice(&g.index);
            (g.base, index)
        })
        .collect()
}

/// Copies one input plane (`h·w` bytes) into the interior of `scratch`, each byte XORed with
/// `flip`.
///
/// # Safety
/// `scratch` is `to`'s and `plane` holds `h·w` bytes; the CPU has NEON.
#[target_feature(enable = "neon")]
pub unsafe fn fill_bytes(to: &BytePlane, plane: &[u8], scratch: &mut [u8], flip: u8) {
    let w = to.geometry.w;
    let f = vdupq_n_u8(flip);
    for (iy, src) in plane.chunks_exact(w).enumerate() {
        let dst = &mut scratch[to.row_start(iy)..][..w];
        // SAFETY: `src` and `dst` are `w` bytes each; the CPU has NEON.
        unsafe { copy_flipped(src, dst, f) }
    }
}

/// `dst = src ^ f` over one row: whole vectors (two a step), the row's end as one more vector that
/// overlaps the last (each byte written is its own value), short rows as two halves that
/// overlap.
///
/// # Safety
/// `src.len() == dst.len()`; the CPU has NEON.
#[inline(always)]
unsafe fn copy_flipped(src: &[u8], dst: &mut [u8], f: uint8x16_t) {
    let w = src.len();
    debug_assert!(dst.len() == w);
    let (s, d) = (src.as_ptr(), dst.as_mut_ptr());
    // SAFETY: every access below is inside `0..w` of both rows.
    unsafe {
        if w >= 16 {
            let mut i = 0;
            while i + 32 < w {
                let v = vld1q_u8_x2(s.add(i));
                vst1q_u8_x2(d.add(i), uint8x16x2_t(veorq_u8(v.0, f), veorq_u8(v.1, f)));
                i += 32;
            }
            if i + 16 < w {
                vst1q_u8(d.add(i), veorq_u8(vld1q_u8(s.add(i)), f));
            }
            vst1q_u8(d.add(w - 16), veorq_u8(vld1q_u8(s.add(w - 16)), f));
        } else if w >= 8 {
            let f = vget_low_u8(f);
            let (a, b) = (vld1_u8(s), vld1_u8(s.add(w - 8)));
            vst1_u8(d, veor_u8(a, f));
            vst1_u8(d.add(w - 8), veor_u8(b, f));
        } else if w >= 4 {
            let f = u32::from_ne_bytes([vgetq_lane_u8::<0>(f); 4]);
            let (a, b) = (
                (s as *const u32).read_unaligned(),
                (s.add(w - 4) as *const u32).read_unaligned(),
            );
            (d as *mut u32).write_unaligned(a ^ f);
            (d.add(w - 4) as *mut u32).write_unaligned(b ^ f);
        } else {
            let f = vgetq_lane_u8::<0>(f);
            for i in 0..w {
                *d.add(i) = *s.add(i) ^ f;
            }
        }
    }
}

/// [`fill_bytes`] from f32 values, rounded to `form`'s bytes as they are copied.
///
/// # Safety
/// As [`fill_bytes`].
#[target_feature(enable = "neon")]
pub unsafe fn fill_quantized(
    to: &BytePlane,
    plane: &[f32],
    scratch: &mut [u8],
    form: U8Form,
    flip: u8,
) {
    let w = to.geometry.w;
    let (inv, zp) = (
        vdupq_n_f32(form.inv_scale()),
        vdupq_n_f32(form.zero_point()),
    );
    let f = vdupq_n_u8(flip);
    for (iy, src) in plane.chunks_exact(w).enumerate() {
        let dst = &mut scratch[to.row_start(iy)..][..w];
        let mut i = 0;
        while i + 16 <= w {
            // SAFETY: 16 values inside both rows; NEON arithmetic.
            unsafe {
                let p = src.as_ptr().add(i);
                let q: [uint32x4_t; 4] =
                    std::array::from_fn(|k| quantize4(vld1q_f32(p.add(4 * k)), inv, zp));
                let h0 = vcombine_u16(vmovn_u32(q[0]), vmovn_u32(q[1]));
                let h1 = vcombine_u16(vmovn_u32(q[2]), vmovn_u32(q[3]));
                let b = vcombine_u8(vmovn_u16(h0), vmovn_u16(h1));
                vst1q_u8(dst.as_mut_ptr().add(i), veorq_u8(b, f));
            }
            i += 16;
        }
        for (d, &s) in dst[i..].iter_mut().zip(&src[i..]) {
            *d = form.quantize(s) ^ flip;
        }
    }
}

/// The four 16-byte index vectors of a group's 64-byte index.
#[inline(always)]
unsafe fn index4(index: &[u8; 64]) -> [uint8x16_t; 4] {
    // SAFETY: 64 bytes; the caller has NEON.
    unsafe { std::array::from_fn(|k| vld1q_u8(index.as_ptr().add(16 * k))) }
}

/// Every output's taps of each group, row by row, as words of four bytes (an im2col matrix
/// in the pointwise kernels' order, bytes as the fill stored them).
///
/// # Safety
/// `scratch` is `plane`'s, `groups` its [`groups`], `packed` holds `groups.len() · points`
/// words; the CPU has NEON.
#[target_feature(enable = "neon")]
pub unsafe fn gather_rows(plane: &BytePlane, scratch: &[u8], groups: &[Group], packed: &mut [u32]) {
    let g = &plane.geometry;
    let (ho, wo) = g.output();
    let points = ho * wo;
    assert!(packed.len() == groups.len() * points && scratch.len() == plane.len);
    for ((base, index), words) in groups.iter().zip(packed.chunks_exact_mut(points)) {
        // SAFETY: the plane's length covers every row's 64-byte reads (see `BytePlane::new`);
        // stores stay inside the row's `wo` words (the last vector through `tail`).
        unsafe {
            let idx = index4(index);
            let dst = words.as_mut_ptr();
            for y in 0..ho {
                let src = scratch.as_ptr().add(base + y * plane.row);
                let mut x = 0;
                while x < wo {
                    let t = vld1q_u8_x4(src.add(g.sx * x));
                    let v: [uint8x16_t; 4] = std::array::from_fn(|k| vqtbl4q_u8(t, idx[k]));
                    // past a row's end where the plane goes on (later rows rewrite it)
                    let n = if y * wo + x + 16 <= points {
                        16
                    } else {
                        (wo - x).min(16)
                    };
                    let o = dst.add(y * wo + x) as *mut u8;
                    if n == 16 {
                        for (k, v) in v.into_iter().enumerate() {
                            vst1q_u8(o.add(16 * k), v);
                        }
                    } else {
                        let mut tail = [0u8; 64];
                        for (k, v) in v.into_iter().enumerate() {
                            vst1q_u8(tail.as_mut_ptr().add(16 * k), v);
                        }
                        std::ptr::copy_nonoverlapping(tail.as_ptr(), o, 4 * n);
                    }
                    x += 16;
                }
            }
        }
    }
}

/// [`plane_dot`]'s arguments: the plane, where its outputs go, the filled scratch, the groups,
/// the channel's words, `(scale, offset)` and every sum's start.
type PlaneArgs<'a, 'o> = (
    &'a BytePlane,
    Out<'o>,
    &'a [u8],
    &'a [Group],
    &'a [i32],
    (f32, f32),
    i32,
);

/// Where a plane's outputs go.
pub enum Out<'a> {
    /// f32, clamped to the range if any.
    F32(&'a mut [f32], Option<(f32, f32)>),
    /// Bytes of a requantizer.
    U8(&'a mut [u8], Requantizer),
}

/// `acc += taps · w` lane by lane (four products each), `sdot` or `usdot`.
macro_rules! dot {
    ($usdot:expr, $acc:expr, $taps:expr, $w:expr) => {
        if $usdot {
            asm!(
                ".arch_extension i8mm",
                "usdot {a:v}.4s, {x:v}.16b, {w:v}.16b",
                a = inout(vreg) $acc, x = in(vreg) $taps, w = in(vreg) $w,
                options(pure, nomem, nostack, preserves_flags)
            )
        } else {
            asm!(
                ".arch_extension dotprod",
                "sdot {a:v}.4s, {x:v}.16b, {w:v}.16b",
                a = inout(vreg) $acc, x = in(vreg) $taps, w = in(vreg) $w,
                options(pure, nomem, nostack, preserves_flags)
            )
        }
    };
}

/// One channel plane from the filled `scratch`: for every 16 outputs of a row, per group one
/// load, four table lookups and four dot products, then `sum · scale + offset` stored as f32
/// (clamped) or requantized bytes (whole vectors where the plane goes on: a row's extra
/// lanes are overwritten by the rows after it). `start` is every sum's start (`128 · Σ w` on flipped
/// bytes, else 0).
///
/// # Safety
/// `scratch` is `plane`'s, `groups` its [`groups`], `words` the channel's words (one per
/// group), `out` holds the plane's outputs; the CPU has dotprod (and i8mm when `USDOT`).
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn plane_dot<const USDOT: bool, const G: usize, const SHARED: bool>(
    (plane, out, scratch, groups, words, (scale, offset), start): PlaneArgs,
) {
    let g = &plane.geometry;
    let (ho, wo) = g.output();
    // SAFETY: the plane's length covers every row's 64-byte reads; stores stay inside each
    // row's `wo` outputs (the last vector through a buffer).
    unsafe {
        // G > 0: exactly G groups, their indices, weights and bases held in registers (a
        // 3×3 kernel's three; SHARED: one index for all, as a kernel's rows mostly have);
        // G = 0: any number, each group's read where it is used
        debug_assert!(G == 0 || groups.len() == G);
        debug_assert!(!SHARED || groups.iter().all(|g| g.1 == groups[0].1));
        let fixed: [([uint8x16_t; 4], int8x16_t, usize); G] = std::array::from_fn(|k| {
            (
                index4(&groups[if SHARED { 0 } else { k }].1),
                vreinterpretq_s8_s32(vdupq_n_s32(words[k])),
                groups[k].0,
            )
        });
        let (s, b) = (vdupq_n_f32(scale), vdupq_n_f32(offset));
        let bytes_of = match &out {
            Out::U8(_, q) => Some(Bytes::new(*q)),
            Out::F32(..) => None,
        };
        for y in 0..ho {
            let row = scratch.as_ptr().add(y * plane.row);
            let mut x = 0;
            while x < wo {
                let mut acc = [vdupq_n_s32(start); 4];
                let at_x = row.add(g.sx * x);
                if G > 0 {
                    for (ix4, wv, base) in &fixed {
                        let t = vld1q_u8_x4(at_x.add(*base));
                        let ix4 = if SHARED { &fixed[0].0 } else { ix4 };
                        for (a, &ix) in acc.iter_mut().zip(ix4) {
                            let taps = vqtbl4q_u8(t, ix);
                            dot!(USDOT, *a, taps, *wv);
                        }
                    }
                } else {
                    for ((base, index), &w) in groups.iter().zip(words) {
                        let t = vld1q_u8_x4(at_x.add(*base));
                        let wv = vreinterpretq_s8_s32(vdupq_n_s32(w));
                        for (a, &ix) in acc.iter_mut().zip(&index4(index)) {
                            let taps = vqtbl4q_u8(t, ix);
                            dot!(USDOT, *a, taps, wv);
                        }
                    }
                }
                let f = acc.map(|a| vfmaq_f32(b, vcvtq_f32_s32(a), s));
                // a row's last vector may run past the row where the plane goes on: its extra
                // lanes land on later rows' outputs, which those rows then write; near the
                // plane's end it stores through a buffer
                let at = y * wo + x;
                // whole vectors but near the plane's end (the last row's last vector)
                let whole = at + 16 <= ho * wo;
                match &out {
                    Out::F32(o, clamp) => {
                        let f = match clamp {
                            Some((lo, hi)) => {
                                let (lo, hi) = (vdupq_n_f32(*lo), vdupq_n_f32(*hi));
                                f.map(|v| vminq_f32(vmaxq_f32(v, lo), hi))
                            }
                            None => f,
                        };
                        let dst = o.as_ptr().add(at) as *mut f32;
                        if whole {
                            for (k, v) in f.into_iter().enumerate() {
                                vst1q_f32(dst.add(4 * k), v);
                            }
                        } else {
                            let mut tail = [0f32; 16];
                            for (k, v) in f.into_iter().enumerate() {
                                vst1q_f32(tail.as_mut_ptr().add(4 * k), v);
                            }
                            for (i, &t) in tail.iter().enumerate().take(wo - x) {
                                *dst.add(i) = t;
                            }
                        }
                    }
                    Out::U8(o, _) => {
                        // `bytes_of` is set for a byte output (above)
                        let bytes = bytes_of.unwrap_unchecked().of(f);
                        let dst = o.as_ptr().add(at) as *mut u8;
                        if whole {
                            vst1q_u8(dst, bytes);
                        } else {
                            let mut tail = [0u8; 16];
                            vst1q_u8(tail.as_mut_ptr(), bytes);
                            for (i, &t) in tail.iter().enumerate().take(wo - x) {
                                *dst.add(i) = t;
                            }
                        }
                    }
                }
                x += 16;
            }
        }
    }
}

/// `128 · Σ w` over a channel's words (the start of its sums on flipped bytes).
pub fn signed_start(words: &[i32]) -> i32 {
    128 * words
        .iter()
        .flat_map(|w| w.to_le_bytes())
        .map(|b| b as i8 as i32)
        .sum::<i32>()
}

/// [`plane_dot`] with its group count fixed where it is 1 to 3 (held in registers).
///
/// # Safety
/// As [`plane_dot`].
#[inline(always)]
unsafe fn plane_by_groups<const USDOT: bool>(
    plane: &BytePlane,
    out: Out,
    scratch: &[u8],
    groups: &[Group],
    words: &[i32],
    affine: (f32, f32),
) {
    let start = if USDOT { 0 } else { signed_start(words) };
    let args = (plane, out, scratch, groups, words, affine, start);
    // SAFETY: the caller's contract.
    unsafe {
        let shared = groups.iter().all(|g| g.1 == groups[0].1);
        match (groups.len(), shared) {
            (3, true) => plane_dot::<USDOT, 3, true>(args),
            (3, false) => plane_dot::<USDOT, 3, false>(args),
            (2, _) => plane_dot::<USDOT, 2, false>(args),
            (1, _) => plane_dot::<USDOT, 1, false>(args),
            _ => plane_dot::<USDOT, 0, false>(args),
        }
    }
}

/// [`plane_dot`] with `sdot` (bytes flipped).
///
/// # Safety
/// As [`plane_dot`]; the CPU has NEON and dotprod.
#[target_feature(enable = "neon,dotprod")]
pub unsafe fn plane_sdot(
    plane: &BytePlane,
    out: Out,
    scratch: &[u8],
    groups: &[Group],
    words: &[i32],
    affine: (f32, f32),
) {
    // SAFETY: the caller's contract.
    unsafe { plane_by_groups::<false>(plane, out, scratch, groups, words, affine) }
}

/// [`plane_dot`] with `usdot` (plain bytes).
///
/// # Safety
/// As [`plane_dot`]; the CPU has NEON, dotprod and i8mm.
#[target_feature(enable = "neon,dotprod,i8mm")]
pub unsafe fn plane_usdot(
    plane: &BytePlane,
    out: Out,
    scratch: &[u8],
    groups: &[Group],
    words: &[i32],
    affine: (f32, f32),
) {
    // SAFETY: the caller's contract.
    unsafe { plane_by_groups::<true>(plane, out, scratch, groups, words, affine) }
}
