//! Two-dimensional max and average pooling over channel-first f32 planes: each plane copied
//! into the stride phases of [`crate::geometry`] (padding set to −∞ for a max, to zero for a
//! sum), so that every tap of an output row is one contiguous run, and the output row folded
//! over its taps' runs one vector at a time. Plain Rust the compiler vectorizes, compiled a
//! second time for AVX-512 and for AVX2 on x86-64 (the crate's baseline there is SSE2).

use crate::geometry::{fill_phases, Geometry, Plain};

/// What a pooling window computes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reduce {
    /// The largest value (padding never wins).
    Max,
    /// The sum (padding adds zero); an average divides it afterwards.
    Sum,
}

impl Reduce {
    /// The value padding positions hold.
    fn padding(self) -> f32 {
        match self {
            Reduce::Max => f32::NEG_INFINITY,
            Reduce::Sum => 0.0,
        }
    }
}

/// Pools every `h·w` plane of `input` into the `ho·wo` plane at the same place in `output`;
/// `scratch` holds at least [`Geometry::scratch_len`] floats (any content). With `scale`, each output
/// position `p` is multiplied by `scale[p]` (an average: one over its divisor).
///
/// # Panics
/// If the lengths do not match the geometry (the caller checks shapes first).
pub fn pool_planes(
    g: &Geometry,
    reduce: Reduce,
    input: &[f32],
    output: &mut [f32],
    scratch: &mut [f32],
    scale: Option<&[f32]>,
) {
    let (ho, wo) = g.output();
    let (plane_in, plane_out) = (g.h * g.w, ho * wo);
    assert_eq!(
        input.len() / plane_in.max(1),
        output.len() / plane_out.max(1)
    );
    assert!(scale.is_none_or(|s| s.len() == plane_out));
    let scratch = &mut scratch[..g.scratch_len()];
    #[cfg(target_arch = "x86_64")]
    {
        use crate::isa::{Feature, Isa};
        let isa = Isa::host();
        if isa.has(Feature::Avx512) {
            // SAFETY: the CPU has AVX-512F (checked just above).
            return unsafe { x86::pool_avx512(g, reduce, input, output, scratch, scale) };
        }
        if isa.has(Feature::Avx2Fma) {
            // SAFETY: the CPU has AVX2 (checked just above).
            return unsafe { x86::pool_avx2(g, reduce, input, output, scratch, scale) };
        }
    }
    pool_any(g, reduce, input, output, scratch, scale)
}

/// [`pool_planes`] compiled for the target features of its caller.
#[inline(always)]
fn pool_any(
    g: &Geometry,
    reduce: Reduce,
    input: &[f32],
    output: &mut [f32],
    scratch: &mut [f32],
    scale: Option<&[f32]>,
) {
    let (ho, wo) = g.output();
    let (_, wq) = g.phase();
    let (plane_in, plane_out) = (g.h * g.w, ho * wo);
    // padding positions are never written by the copies: set once for every plane
    scratch.fill(reduce.padding());
    let offsets = g.tap_offsets();
    let (first, rest) = offsets.split_first().expect("a window has taps");
    for (plane, out) in input
        .chunks_exact(plane_in)
        .zip(output.chunks_exact_mut(plane_out))
    {
        fill_phases(g, plane, scratch, &Plain);
        for (y, row) in out.chunks_exact_mut(wo).enumerate() {
            row.copy_from_slice(&scratch[first + y * wq..][..wo]);
            for &offset in rest {
                let run = &scratch[offset + y * wq..][..wo];
                match reduce {
                    // (`f32::max`, not a select: LLVM turns `if v > o { o = v }` into a
                    // masked store per vector, which the next tap's loads stall on)
                    Reduce::Max => row.iter_mut().zip(run).for_each(|(o, &v)| *o = o.max(v)),
                    Reduce::Sum => row.iter_mut().zip(run).for_each(|(o, &v)| *o += v),
                }
            }
        }
        if let Some(scale) = scale {
            out.iter_mut().zip(scale).for_each(|(o, &s)| *o *= s);
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::{pool_any, Geometry, Reduce};

    /// [`super::pool_planes`] compiled for `$features`.
    macro_rules! pool_for {
        ($name:ident, $features:literal, $lanes:literal) => {
            #[doc = concat!("[`super::pool_planes`] with ", $lanes, "-lane vectors.")]
            ///
            /// # Safety
            #[doc = concat!("The CPU has ", $features, ".")]
            #[target_feature(enable = $features)]
            pub unsafe fn $name(
                g: &Geometry,
                reduce: Reduce,
                input: &[f32],
                output: &mut [f32],
                scratch: &mut [f32],
                scale: Option<&[f32]>,
            ) {
                pool_any(g, reduce, input, output, scratch, scale)
            }
        };
    }
    pool_for!(pool_avx512, "avx512f", 16);
    pool_for!(pool_avx2, "avx2", 8);
}

/// How many taps of each output position fall on the input rather than on padding (the
/// divisor of an average that does not count padding).
pub fn valid_taps(g: &Geometry) -> Vec<f32> {
    let (ho, wo) = g.output();
    let ones = vec![1f32; g.h * g.w];
    let mut counts = vec![0f32; ho * wo];
    let mut scratch = vec![0f32; g.scratch_len()];
    pool_planes(g, Reduce::Sum, &ones, &mut counts, &mut scratch, None);
    counts
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{geometries, values};

    /// The textbook loop: every tap inside the input, padding skipped.
    fn reference(g: &Geometry, reduce: Reduce, plane: &[f32]) -> (Vec<f32>, Vec<f32>) {
        let (ho, wo) = g.output();
        let (mut out, mut counts) = (vec![], vec![]);
        for y in 0..ho {
            for x in 0..wo {
                let mut acc = reduce.padding();
                let mut count = 0.0;
                for ky in 0..g.kh {
                    for kx in 0..g.kw {
                        let Some((iy, ix)) = g.input_at((y, x), (ky, kx)) else {
                            continue;
                        };
                        let v = plane[iy * g.w + ix];
                        acc = match reduce {
                            Reduce::Max => acc.max(v),
                            Reduce::Sum => acc + v,
                        };
                        count += 1.0;
                    }
                }
                out.push(acc);
                counts.push(count);
            }
        }
        (out, counts)
    }

    #[test]
    fn pooling_matches_the_textbook_loop() {
        let all = geometries(
            &[(9, 11), (8, 8), (13, 10), (7, 7), (12, 15)],
            &[(3, 3), (2, 2), (7, 7), (3, 2), (5, 5)],
            &[(0, 0, 0, 0), (1, 1, 1, 1), (2, 0, 1, 1), (2, 2, 2, 2)],
        );
        // (a window wholly on padding has no defined value: such geometries are left out)
        let on_input = |g: &Geometry| reference(g, Reduce::Sum, &vec![0.0; g.h * g.w]).1;
        let all = all
            .into_iter()
            .filter(|g| on_input(g).iter().all(|&n| n > 0.0));
        for (ix, g) in all.enumerate() {
            let (h, w) = (g.h, g.w);
            let (ho, wo) = g.output();
            let planes = 3;
            let input = values(planes * h * w, ix as u32);
            let mut scratch = vec![f32::NAN; g.scratch_len()];
            for reduce in [Reduce::Max, Reduce::Sum] {
                let mut got = vec![f32::NAN; planes * ho * wo];
                pool_planes(&g, reduce, &input, &mut got, &mut scratch, None);
                for (p, plane) in input.chunks_exact(h * w).enumerate() {
                    let (want, counts) = reference(&g, reduce, plane);
                    for (a, b) in got[p * ho * wo..][..ho * wo].iter().zip(&want) {
                        assert!((a - b).abs() <= 1e-5, "case {ix} {reduce:?}: {a} vs {b}");
                    }
                    assert_eq!(valid_taps(&g), counts, "case {ix}");
                }
            }
        }
    }
}
