//! The integer depthwise and im2col kernels over a [`BytePlane`] (AVX-512 VNNI + VBMI; aarch64
//! dotprod or i8mm, `tbl` as the permute, see [`crate::aarch64::qdepthwise`]): where a
//! depthwise or ordinary convolution reads the 8-bit values of a quantize→dequantize pair and
//! its weights are int8 values times a per-channel scale, the products run on the bytes, four
//! taps per lane per instruction (`vpdpbusd`), instead of widening every input byte to a float.
//!
//! Exact rewrite: with `x̂ = s_x (q_x − z_x)` and `W = s_w[c] q_w`, `bias + Σ_t W x̂ = bias −
//! s_x s_w[c] z_x Σ_t q_w + s_x s_w[c] Σ_t q_w q_x`, and the padding holds `z_x`, so the integer
//! sum is exact and outputs differ from the float path only by float rounding (the caller
//! folds the first two terms into the `offset` it passes).
//!
//! Output `(y, x)` laid flat at `f = y · Ws/sx + x` reads, for kernel row `ky`, the bytes
//! `base(ky) + sx · f + kx · dx`: for 16 outputs one 64-byte load per kernel row, one byte
//! permute (`vpermb`) that gathers each output's (up to) four taps of that row into its 32-bit
//! lane, and one `vpdpbusd` with the row's four weights. The flat layout and its lane masks are
//! the float kernel's, so the store (requantize or clamp, pack the output lanes, store) is
//! shared too. A 3×3 layer costs three permutes and three multiply-adds per 16 outputs where
//! the float kernel did nine FMAs.

// the vector kernels exist on x86-64 and aarch64 only: elsewhere their arguments go unused
#![cfg_attr(
    not(any(target_arch = "x86_64", target_arch = "aarch64")),
    allow(unused_variables, unused_imports, dead_code)
)]

use crate::byte_plane::BytePlane;
use crate::isa::{Feature, Isa};
use crate::quant::{Requantizer, U8Form};

/// The integer kernels, where the CPU runs them: only [`Kernel::best`] makes one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Kernel(Kind);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Kind {
    /// AVX-512 F, BW, VL, VNNI and VBMI.
    #[cfg(target_arch = "x86_64")]
    Vnni,
    /// aarch64 dotprod: `sdot` on bytes stored with their top bit flipped.
    #[cfg(target_arch = "aarch64")]
    Dot,
    /// aarch64 i8mm: `usdot` on plain bytes.
    #[cfg(target_arch = "aarch64")]
    UsDot,
}

/// Where a plane's outputs go: f32 values (clamped to the range, if any), or the 8-bit values a
/// requantizer gives (the clamp folded into it).
pub enum PlaneOut<'a> {
    /// f32 outputs and their clamp.
    F32(&'a mut [f32], Option<(f32, f32)>),
    /// 8-bit outputs.
    U8(&'a mut [u8], Requantizer),
}

/// A plane's groups prepared for the kernel (on x86-64: each group's load start and its byte
/// permute in a register).
pub struct Permutes {
    #[cfg(target_arch = "x86_64")]
    groups: Vec<(usize, std::arch::x86_64::__m512i)>,
    #[cfg(target_arch = "aarch64")]
    groups: Vec<crate::aarch64::qdepthwise::Group>,
}

impl Kernel {
    /// The integer kernels `isa` runs, if any.
    pub fn best(isa: Isa) -> Option<Kernel> {
        #[cfg(target_arch = "x86_64")]
        if isa.has_all(&[Feature::Avx512, Feature::Avx512Vnni, Feature::Avx512Vbmi]) {
            return Some(Kernel(Kind::Vnni));
        }
        #[cfg(target_arch = "aarch64")]
        {
            if isa.has_all(&[Feature::Neon, Feature::Dotprod, Feature::I8mm]) {
                return Some(Kernel(Kind::UsDot));
            }
            if isa.has_all(&[Feature::Neon, Feature::Dotprod]) {
                return Some(Kernel(Kind::Dot));
            }
        }
        None
    }

    /// What the fills XOR into every byte (and the words [`Kernel::gather_rows`] makes hold):
    /// the same form as [`crate::qpointwise::Kernel::flip`] of the pointwise kernel of the
    /// same level (`0x80` per byte for `sdot`, else 0).
    pub fn flip(self) -> u32 {
        match self.0 {
            #[cfg(target_arch = "aarch64")]
            Kind::Dot => 0x8080_8080,
            #[allow(unreachable_patterns)]
            _ => 0,
        }
    }

    /// A scratch for `plane` ([`BytePlane::scratch`]) with the padding in this kernel's form.
    pub fn scratch(self, plane: &BytePlane) -> Vec<u8> {
        vec![plane.zero ^ self.flip() as u8; plane.len]
    }

    /// `plane`'s groups for [`Kernel::gather_rows`] and the plane kernels.
    pub fn permutes(self, plane: &BytePlane) -> Permutes {
        match self.0 {
            #[cfg(target_arch = "x86_64")]
            Kind::Vnni => Permutes {
                // SAFETY: a Vnni kernel exists only where the CPU has AVX-512F.
                groups: unsafe { crate::x86_64::qdepthwise::permutes(plane) },
            },
            #[cfg(target_arch = "aarch64")]
            _ => Permutes {
                groups: crate::aarch64::qdepthwise::groups(plane),
            },
        }
    }

    /// Copies one input plane (`h·w` bytes) into the interior of `scratch` (made by
    /// [`BytePlane::scratch`]: its padding keeps the zero point).
    pub fn fill_bytes(self, plane: &BytePlane, input: &[u8], scratch: &mut [u8]) {
        let g = &plane.geometry;
        assert!(input.len() == g.h * g.w && scratch.len() == plane.len);
        match self.0 {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: a Vnni kernel exists only where the CPU has AVX-512F and BW; the rows
            // are sliced with bounds checks.
            Kind::Vnni => unsafe { crate::x86_64::qdepthwise::fill_bytes(plane, input, scratch) },
            #[cfg(target_arch = "aarch64")]
            // SAFETY: an aarch64 kernel exists only where the CPU has NEON; sizes checked.
            _ => unsafe {
                crate::aarch64::qdepthwise::fill_bytes(plane, input, scratch, self.flip() as u8)
            },
        }
    }

    /// [`Kernel::fill_bytes`] from f32 values, rounded to `form`'s bytes as they are copied
    /// (the pair's quantize step).
    pub fn fill_quantized(
        self,
        plane: &BytePlane,
        input: &[f32],
        scratch: &mut [u8],
        form: U8Form,
    ) {
        let g = &plane.geometry;
        assert!(input.len() == g.h * g.w && scratch.len() == plane.len);
        match self.0 {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: a Vnni kernel exists only where the CPU has AVX-512F, BW and VL; the rows
            // are sliced with bounds checks.
            Kind::Vnni => unsafe {
                crate::x86_64::qdepthwise::fill_quantized(plane, input, scratch, form)
            },
            #[cfg(target_arch = "aarch64")]
            // SAFETY: an aarch64 kernel exists only where the CPU has NEON; sizes checked.
            _ => unsafe {
                crate::aarch64::qdepthwise::fill_quantized(
                    plane,
                    input,
                    scratch,
                    form,
                    self.flip() as u8,
                )
            },
        }
    }

    /// Every output's taps of each group of the filled `scratch`, output row by output row,
    /// as words of four bytes: `packed[k · points + y · wo + x]` for group `k` (an im2col
    /// matrix in VNNI order, for [`crate::qpointwise::Kernel::tile`]), XORed with
    /// [`Kernel::flip`] as the fill stored them.
    pub fn gather_rows(
        self,
        plane: &BytePlane,
        scratch: &[u8],
        permutes: &Permutes,
        packed: &mut [u32],
    ) {
        let (ho, wo) = plane.geometry.output();
        assert!(scratch.len() == plane.len && packed.len() == plane.groups.len() * ho * wo);
        match self.0 {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: a Vnni kernel exists only where the CPU has AVX-512 with VBMI; `permutes`
            // came from a plane of the same groups (checked by length), and `BytePlane::new`
            // sized the scratch for every row's reads.
            Kind::Vnni => unsafe {
                assert_eq!(permutes.groups.len(), plane.groups.len());
                crate::x86_64::qdepthwise::gather_rows(plane, scratch, &permutes.groups, packed)
            },
            #[cfg(target_arch = "aarch64")]
            // SAFETY: an aarch64 kernel exists only where the CPU has NEON; `BytePlane::new`
            // sized the scratch for every row's reads (checked by length above).
            _ => unsafe {
                assert_eq!(permutes.groups.len(), plane.groups.len());
                crate::aarch64::qdepthwise::gather_rows(plane, scratch, &permutes.groups, packed)
            },
        }
    }

    /// One channel plane of the filled `scratch` into `out`: `sum · scale + offset`, clamped
    /// (f32) or requantized (bytes); `words` is the channel's [`BytePlane::words`].
    #[inline]
    pub fn plane(
        self,
        plane: &BytePlane,
        out: PlaneOut,
        scratch: &[u8],
        permutes: &Permutes,
        words: &[i32],
        (scale, offset): (f32, f32),
    ) {
        let outputs = match &out {
            PlaneOut::F32(o, _) => o.len(),
            PlaneOut::U8(o, _) => o.len(),
        };
        self.check(plane, outputs, scratch, permutes, words);
        match self.0 {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: a Vnni kernel exists only where the CPU has its features; the sizes are
            // checked above and the plane's length covers the flat reads.
            Kind::Vnni => unsafe {
                use crate::x86_64::lanes::{ByteSink, FloatSink};
                use crate::x86_64::qdepthwise::plane as run;
                let (sx, flat, groups) = (plane.geometry.sx, &plane.flat, &permutes.groups);
                match out {
                    PlaneOut::F32(o, clamp) => {
                        let sink = FloatSink::new(clamp);
                        run(o, scratch, sx, flat, groups, words, scale, offset, sink)
                    }
                    PlaneOut::U8(o, q) => {
                        let sink = ByteSink::new(q);
                        run(o, scratch, sx, flat, groups, words, scale, offset, sink)
                    }
                }
            },
            #[cfg(target_arch = "aarch64")]
            // SAFETY: an aarch64 kernel exists only where the CPU has its features; the sizes
            // are checked above and the plane's length covers the row reads.
            _ => unsafe {
                use crate::aarch64::qdepthwise::{plane_sdot, plane_usdot, Out};
                let out = match out {
                    PlaneOut::F32(o, clamp) => Out::F32(o, clamp),
                    PlaneOut::U8(o, q) => Out::U8(o, q),
                };
                let groups = &permutes.groups;
                if self.0 == Kind::Dot {
                    plane_sdot(plane, out, scratch, groups, words, (scale, offset))
                } else {
                    plane_usdot(plane, out, scratch, groups, words, (scale, offset))
                }
            },
        }
    }

    /// The plane kernels' sizes: one plane of outputs, the plane's scratch, a word per group.
    #[cfg_attr(
        not(any(target_arch = "x86_64", target_arch = "aarch64")),
        allow(unused_variables)
    )]
    fn check(
        self,
        plane: &BytePlane,
        outputs: usize,
        scratch: &[u8],
        permutes: &Permutes,
        words: &[i32],
    ) {
        let (ho, wo) = plane.geometry.output();
        assert!(outputs == ho * wo && scratch.len() == plane.len);
        assert!(words.len() == plane.groups.len());
        #[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
        assert_eq!(permutes.groups.len(), plane.groups.len());
    }
}

#[cfg(all(test, any(target_arch = "x86_64", target_arch = "aarch64")))]
mod tests {
    use super::*;
    use crate::geometry::Geometry;
    use crate::testing::{assert_close, geometries};

    /// The integer plane kernel gives the textbook loop on the bytes' values (f32 to float
    /// rounding, bytes within one step of a tie), and the im2col gather the taps the textbook
    /// reads, over kernel sizes, strides, dilations and paddings; filled from bytes and from
    /// f32 quantized on the way alike.
    #[test]
    fn the_integer_kernels_match_the_textbook_loop() {
        for isa in Isa::host().levels() {
            if let Some(kernel) = Kernel::best(isa) {
                integer_kernel_matches_the_textbook_loop(kernel);
            }
        }
    }

    fn integer_kernel_matches_the_textbook_loop(kernel: Kernel) {
        let form = U8Form::new(1.0 / 0.04, 121.0, 0.04);
        let out_q = U8Form::new(1.0 / 0.03, 87.0, 0.03).requantizer(None);
        let mut checked = 0;
        for g in geometries(
            &[(1, 1), (5, 7), (14, 14), (17, 70), (9, 32)],
            &[(1, 1), (3, 3), (5, 5), (1, 7)],
            &[(0, 0, 0, 0), (1, 1, 1, 1), (0, 1, 2, 0)],
        ) {
            let Some(plane) = BytePlane::new(g, form.zero_point() as u8) else {
                continue;
            };
            let taps = g.kh * g.kw;
            let q: Vec<i8> = (0..taps).map(|i| ((i * 37 + 11) % 255) as i8).collect();
            let words = plane.words(&q);
            let bytes: Vec<u8> = (0..g.h * g.w).map(|i| ((i * 53 + 7) % 256) as u8).collect();
            // the textbook loop on the integers: Σ q_w (q_x − z) · s, padding at 0
            let (ho, wo) = g.output();
            let scale = 0.01f32;
            let mut want = vec![0f32; ho * wo];
            for y in 0..ho {
                for x in 0..wo {
                    let mut acc = 0i64;
                    for ky in 0..g.kh {
                        for kx in 0..g.kw {
                            let iy = (y * g.sy + ky * g.dy) as isize - g.pad_top as isize;
                            let ix = (x * g.sx + kx * g.dx) as isize - g.pad_left as isize;
                            let v = if iy < 0 || ix < 0 || iy >= g.h as isize || ix >= g.w as isize
                            {
                                form.zero_point() as i64
                            } else {
                                bytes[iy as usize * g.w + ix as usize] as i64
                            };
                            acc += q[ky * g.kw + kx] as i64 * v;
                        }
                    }
                    want[y * wo + x] = acc as f32 * scale + 0.5;
                }
            }
            let permutes = kernel.permutes(&plane);
            let mut scratch = kernel.scratch(&plane);
            kernel.fill_bytes(&plane, &bytes, &mut scratch);
            let mut quantized = kernel.scratch(&plane);
            let floats: Vec<f32> = bytes.iter().map(|&b| form.dequantize(b)).collect();
            kernel.fill_quantized(&plane, &floats, &mut quantized, form);
            assert_eq!(scratch, quantized, "{g:?}");
            let mut got = vec![f32::NAN; ho * wo];
            let out = PlaneOut::F32(&mut got, None);
            kernel.plane(&plane, out, &scratch, &permutes, &words, (scale, 0.5));
            assert_close(&got, &want, g);
            let mut got_bytes = vec![0u8; ho * wo];
            let out = PlaneOut::U8(&mut got_bytes, out_q);
            kernel.plane(&plane, out, &scratch, &permutes, &words, (scale, 0.5));
            for (i, (&a, &b)) in got_bytes.iter().zip(&want).enumerate() {
                assert!(a.abs_diff(out_q.apply(b)) <= 1, "{g:?} at {i}");
            }
            // the gather: each output's group words hold the taps the sums read
            let mut packed = vec![0u32; plane.groups.len() * ho * wo];
            kernel.gather_rows(&plane, &scratch, &permutes, &mut packed);
            for (k, group) in plane.groups.iter().enumerate() {
                let w = words[k];
                for p in 0..ho * wo {
                    let taps = (packed[k * ho * wo + p] ^ kernel.flip()).to_le_bytes();
                    let ws = w.to_le_bytes();
                    let dot: i64 = taps
                        .iter()
                        .zip(ws)
                        .map(|(&t, w)| t as i64 * w as i8 as i64)
                        .sum();
                    let (y, x) = (p / wo, p % wo);
                    let (first, n) = group.taps;
                    let mut expect = 0i64;
                    for j in 0..n {
                        let (ky, kx) = ((first + j) / g.kw, (first + j) % g.kw);
                        let iy = (y * g.sy + ky * g.dy) as isize - g.pad_top as isize;
                        let ix = (x * g.sx + kx * g.dx) as isize - g.pad_left as isize;
                        let v = if iy < 0 || ix < 0 || iy >= g.h as isize || ix >= g.w as isize {
                            form.zero_point() as i64
                        } else {
                            bytes[iy as usize * g.w + ix as usize] as i64
                        };
                        expect += q[first + j] as i64 * v;
                    }
                    assert_eq!(dot, expect, "{g:?} group {k} point {p}");
                }
            }
            checked += 1;
        }
        assert!(checked > 100, "only {checked} geometries");
        let g = Geometry {
            h: 9,
            w: 9,
            kh: 3,
            kw: 3,
            sy: 5,
            sx: 5,
            dy: 1,
            dx: 1,
            pad_top: 0,
            pad_left: 0,
            pad_bottom: 0,
            pad_right: 0,
        };
        // a row of taps too wide for one load has no byte plane (the float kernel keeps it)
        assert!(BytePlane::new(g, 0).is_none());
    }
}
