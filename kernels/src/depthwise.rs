//! The depthwise convolution's kernels (one channel plane at a time, over the stride phases
//! [`crate::geometry::fill_phases`] lays out): an output row is `bias + Σ_t w_t · run_t`,
//! computed with FMA on AVX2 or NEON, and on AVX-512 over the whole plane as one run (output
//! rows laid flat at the phase row stride, the columns past the output width dropped before
//! the store), so small planes (7×7, 14×14) pay no masked tail per row; a plain Rust kernel
//! runs everywhere else (armv7) and is the reference. The outputs go out as f32 or as the
//! 8-bit values of a form ([`Kernel::plane_u8`]); 8-bit inputs are widened as the plane is
//! copied ([`Kernel::fill_u8`]).

// the vector kernels of some families exist on x86-64 only: elsewhere their arguments go unused
#![cfg_attr(not(target_arch = "x86_64"), allow(unused_variables, unused_imports))]

use crate::geometry::{fill_phases, Geometry};
use crate::isa::{Feature, Isa};
use crate::qdepthwise;
use crate::quant::{Requantizer, U8Form};
use crate::scalar;

/// A row kernel this CPU runs: only [`Kernel::available`] makes one, so holding it means the
/// CPU has its features.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Kernel(Kind);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Kind {
    /// Plain Rust, any target.
    Scalar,
    /// 8 lanes with FMA (x86-64 with AVX2 and FMA).
    #[cfg(target_arch = "x86_64")]
    Avx2Fma,
    /// 16 lanes with FMA and masked tails, the plane laid flat (x86-64 with AVX-512).
    #[cfg(target_arch = "x86_64")]
    Avx512,
    /// 4 lanes with FMA (aarch64).
    #[cfg(target_arch = "aarch64")]
    Neon,
}

impl Kernel {
    /// The plain Rust kernel (every target).
    pub const SCALAR: Kernel = Kernel(Kind::Scalar);

    /// The fastest kernel `isa` runs.
    pub fn best(isa: Isa) -> Kernel {
        *Kernel::available(isa).last().unwrap_or(&Kernel::SCALAR)
    }

    /// Every kernel `isa` runs, slowest first (for tests and benchmarks).
    #[allow(unused_mut)] // only Scalar on some targets
    pub fn available(isa: Isa) -> Vec<Kernel> {
        let mut all = vec![Kernel::SCALAR];
        #[cfg(target_arch = "x86_64")]
        {
            if isa.has(Feature::Avx2Fma) {
                all.push(Kernel(Kind::Avx2Fma));
            }
            if isa.has(Feature::Avx512) {
                all.push(Kernel(Kind::Avx512));
            }
        }
        #[cfg(target_arch = "aarch64")]
        if isa.has(Feature::Neon) {
            all.push(Kernel(Kind::Neon));
        }
        all
    }

    /// The kernel's name, for op descriptions.
    pub fn name(self) -> &'static str {
        match self.0 {
            Kind::Scalar => "scalar",
            #[cfg(target_arch = "x86_64")]
            Kind::Avx2Fma => "avx2",
            #[cfg(target_arch = "x86_64")]
            Kind::Avx512 => "avx512",
            #[cfg(target_arch = "aarch64")]
            Kind::Neon => "neon",
        }
    }

    /// The integer kernel that stands in for this one on 8-bit input, where `isa` has it
    /// (AVX-512 with VNNI and VBMI in place of the AVX-512 float kernel; dotprod or i8mm in
    /// place of the NEON one).
    pub fn integer_variant(self, isa: Isa) -> Option<qdepthwise::Kernel> {
        #[cfg(target_arch = "x86_64")]
        if self.0 == Kind::Avx512 {
            return qdepthwise::Kernel::best(isa);
        }
        #[cfg(target_arch = "aarch64")]
        if self.0 == Kind::Neon {
            return qdepthwise::Kernel::best(isa);
        }
        None
    }

    /// Copies one plane of 8-bit input into the stride phases of `scratch` as the f32 values
    /// of `form` (with this kernel's conversions).
    pub fn fill_u8(self, g: &Geometry, input: &[u8], scratch: &mut [f32], form: U8Form) {
        match self.0 {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: an Avx512 kernel exists only where the CPU has AVX-512F, BW and VL.
            Kind::Avx512 => unsafe {
                crate::x86_64::depthwise::fill_phases_u8(g, input, scratch, form)
            },
            #[cfg(target_arch = "x86_64")]
            // SAFETY: an Avx2Fma kernel exists only where the CPU has AVX2.
            Kind::Avx2Fma => unsafe {
                crate::x86_64::depthwise::fill_phases_u8_avx2(g, input, scratch, form)
            },
            _ => fill_phases(g, input, scratch, &form),
        }
    }

    /// One channel: output row `y` (`out[y·wo..][..wo]`) is `bias + Σ_t weights[t] ·
    /// taps[t][y·in_row..][..wo]`, clamped. AVX-512 runs the rows laid flat, with `flat` the
    /// geometry's [`Geometry::flat_masks`]; the row kernels ignore it.
    ///
    /// # Safety
    /// Each `taps[t]` must be readable for `(rows − 1)·in_row + wo` floats plus 64 (the widest
    /// kernel's full-vector reads), and `out.len()` must be `rows · wo`.
    #[allow(clippy::too_many_arguments)]
    #[cfg_attr(not(target_arch = "x86_64"), allow(unused_variables))]
    #[inline]
    pub unsafe fn plane(
        self,
        out: &mut [f32],
        wo: usize,
        in_row: usize,
        flat: &[u16],
        taps: &[*const f32],
        weights: &[f32],
        bias: f32,
        clamp: Option<(f32, f32)>,
    ) {
        // SAFETY: the kernel exists only where the CPU has its features (see `available`);
        // the caller's bounds are each kernel's.
        unsafe {
            match self.0 {
                Kind::Scalar => {
                    scalar::depthwise::plane(out, wo, in_row, taps, weights, bias, clamp)
                }
                #[cfg(target_arch = "x86_64")]
                Kind::Avx2Fma => crate::x86_64::depthwise::plane_avx2(
                    out, wo, in_row, taps, weights, bias, clamp,
                ),
                #[cfg(target_arch = "x86_64")]
                Kind::Avx512 => {
                    crate::x86_64::depthwise::plane_avx512(out, flat, taps, weights, bias, clamp)
                }
                #[cfg(target_arch = "aarch64")]
                Kind::Neon => crate::aarch64::depthwise::plane_neon(
                    out, wo, in_row, taps, weights, bias, clamp,
                ),
            }
        }
    }

    /// [`Kernel::plane`] into the 8-bit values `q` gives (the clamp folded into it): AVX-512
    /// requantizes in registers; the other kernels write f32 into `floats` (resized to the
    /// plane) and requantize those.
    ///
    /// # Safety
    /// As [`Kernel::plane`].
    #[allow(clippy::too_many_arguments)]
    pub unsafe fn plane_u8(
        self,
        out: &mut [u8],
        wo: usize,
        in_row: usize,
        flat: &[u16],
        taps: &[*const f32],
        weights: &[f32],
        bias: f32,
        q: Requantizer,
        floats: &mut Vec<f32>,
    ) {
        #[cfg(target_arch = "x86_64")]
        if self.0 == Kind::Avx512 {
            // SAFETY: an Avx512 kernel exists only where the CPU has AVX-512F/BW/VL; the
            // caller's bounds.
            return unsafe {
                crate::x86_64::depthwise::plane_avx512_u8(out, flat, taps, weights, bias, q)
            };
        }
        floats.resize(out.len(), 0f32);
        // SAFETY: the caller's bounds, with `floats` the plane's size.
        unsafe { self.plane(floats, wo, in_row, flat, taps, weights, bias, None) };
        #[cfg(target_arch = "x86_64")]
        if self.0 == Kind::Avx2Fma {
            // SAFETY: an Avx2Fma kernel exists only where the CPU has AVX2; equal lengths.
            return unsafe { crate::x86_64::bytes_avx2::requantize_row(floats, out, q) };
        }
        for (o, &v) in out.iter_mut().zip(floats.iter()) {
            *o = q.apply(v);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::geometry::Plain;
    use crate::testing::{assert_close, geometries, values};

    /// The textbook loop over one plane, in f64, clamped.
    fn reference(
        g: &Geometry,
        plane: &[f32],
        weights: &[f32],
        bias: f32,
        clamp: Option<(f32, f32)>,
    ) -> Vec<f32> {
        let (ho, wo) = g.output();
        let mut out = vec![0f32; ho * wo];
        for y in 0..ho {
            for x in 0..wo {
                let mut acc = bias as f64;
                for ky in 0..g.kh {
                    for kx in 0..g.kw {
                        let Some((iy, ix)) = g.input_at((y, x), (ky, kx)) else {
                            continue;
                        };
                        acc += plane[iy * g.w + ix] as f64 * weights[ky * g.kw + kx] as f64;
                    }
                }
                let v = acc as f32;
                out[y * wo + x] = clamp.map_or(v, |(lo, hi)| v.clamp(lo, hi));
            }
        }
        out
    }

    /// One plane through `kernel`: the fill, the taps, the plane kernel.
    fn run(
        kernel: Kernel,
        g: &Geometry,
        plane: &[f32],
        weights: &[f32],
        bias: f32,
        clamp: Option<(f32, f32)>,
    ) -> Vec<f32> {
        let (ho, wo) = g.output();
        let (_, wq) = g.phase();
        let mut scratch = vec![0f32; g.scratch_len()];
        fill_phases(g, plane, &mut scratch, &Plain);
        let taps: Vec<*const f32> = g
            .tap_offsets()
            .iter()
            .map(|&o| scratch[o..].as_ptr())
            .collect();
        let mut out = vec![f32::NAN; ho * wo];
        // SAFETY: the taps point into a scratch of `scratch_len` floats (its slack covers the
        // reads past the last row); `out` is the plane.
        unsafe {
            kernel.plane(
                &mut out,
                wo,
                wq,
                &g.flat_masks(),
                &taps,
                weights,
                bias,
                clamp,
            )
        };
        out
    }

    /// Every kernel on every instruction-set level this machine has gives the textbook loop's
    /// values (to float rounding), over kernel sizes, strides, dilations and paddings.
    #[test]
    fn every_kernel_on_every_level_matches_the_textbook_loop() {
        let mut cases = 0;
        for g in geometries(
            &[(1, 1), (5, 7), (7, 7), (14, 14), (17, 70)],
            &[(1, 1), (3, 3), (5, 5), (3, 1)],
            &[(0, 0, 0, 0), (1, 1, 1, 1), (0, 1, 2, 0)],
        ) {
            let plane = values(g.h * g.w, 3);
            let weights = values(g.kh * g.kw, 1);
            let clamp = [None, Some((0.0f32, 6.0f32)), Some((-0.5, 0.75))][cases % 3];
            let want = reference(&g, &plane, &weights, 0.25, clamp);
            for isa in Isa::host().levels() {
                for kernel in Kernel::available(isa) {
                    let got = run(kernel, &g, &plane, &weights, 0.25, clamp);
                    assert_close(&got, &want, (isa, kernel, g));
                }
            }
            cases += 1;
        }
        assert!(cases > 200, "only {cases} geometries checked");
    }

    /// The 8-bit paths of every kernel: the fill widens bytes to the form's values exactly,
    /// and the byte store gives the requantized f32 path.
    #[test]
    fn every_kernels_8_bit_fill_and_store_are_its_float_paths_values() {
        let (form_in, form_out) = (
            U8Form::new(1.0 / 0.04, 121.0, 0.04),
            U8Form::new(1.0 / 0.03, 7.0, 0.03),
        );
        for (h, w, s, pad) in [(14, 14, 1, 1), (17, 70, 2, 1), (7, 9, 2, 0), (9, 31, 3, 1)] {
            let g = Geometry {
                h,
                w,
                kh: 3,
                kw: 3,
                sy: s,
                sx: s,
                dy: 1,
                dx: 1,
                pad_top: pad,
                pad_left: pad,
                pad_bottom: pad,
                pad_right: pad,
            };
            let bytes: Vec<u8> = (0..h * w).map(|i| (i * 53 % 256) as u8).collect();
            let floats: Vec<f32> = bytes.iter().map(|&q| form_in.dequantize(q)).collect();
            let weights = values(9, 4);
            let (ho, wo) = g.output();
            let (_, wq) = g.phase();
            let q = form_out.requantizer(Some((0.0, 1.5)));
            for kernel in Kernel::available(Isa::host()) {
                let mut want = vec![0f32; g.scratch_len()];
                fill_phases(&g, &floats, &mut want, &Plain);
                let mut got = vec![0f32; g.scratch_len()];
                kernel.fill_u8(&g, &bytes, &mut got, form_in);
                assert!(
                    got.iter()
                        .zip(&want)
                        .all(|(a, b)| a.to_bits() == b.to_bits()),
                    "{kernel:?} fill {g:?}"
                );
                let taps: Vec<*const f32> =
                    g.tap_offsets().iter().map(|&o| got[o..].as_ptr()).collect();
                let mut f = vec![0f32; ho * wo];
                let mut b = vec![0u8; ho * wo];
                let mut spare = Vec::new();
                // SAFETY: as in `run`.
                unsafe {
                    kernel.plane(&mut f, wo, wq, &g.flat_masks(), &taps, &weights, 0.1, None);
                    kernel.plane_u8(
                        &mut b,
                        wo,
                        wq,
                        &g.flat_masks(),
                        &taps,
                        &weights,
                        0.1,
                        q,
                        &mut spare,
                    );
                }
                for (i, (&byte, &v)) in b.iter().zip(&f).enumerate() {
                    assert_eq!(byte, q.apply(v), "{kernel:?} {g:?} at {i}");
                }
            }
        }
    }
}
