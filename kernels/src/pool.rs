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

/// Floats of scratch [`pool_planes`] needs for `g`.
pub fn scratch_len(g: &Geometry) -> usize {
    g.scratch_len()
}

/// Pools every `h·w` plane of `input` into the `ho·wo` plane at the same place in `output`;
/// `scratch` holds at least [`scratch_len`] floats (any content). With `scale`, each output
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

    /// [`super::pool_planes`] with 16-lane vectors.
    ///
    /// # Safety
    /// The CPU has AVX-512F.
    #[target_feature(enable = "avx512f")]
    pub unsafe fn pool_avx512(
        g: &Geometry,
        reduce: Reduce,
        input: &[f32],
        output: &mut [f32],
        scratch: &mut [f32],
        scale: Option<&[f32]>,
    ) {
        pool_any(g, reduce, input, output, scratch, scale)
    }

    /// [`super::pool_planes`] with 8-lane vectors.
    ///
    /// # Safety
    /// The CPU has AVX2.
    #[target_feature(enable = "avx2")]
    pub unsafe fn pool_avx2(
        g: &Geometry,
        reduce: Reduce,
        input: &[f32],
        output: &mut [f32],
        scratch: &mut [f32],
        scale: Option<&[f32]>,
    ) {
        pool_any(g, reduce, input, output, scratch, scale)
    }
}

/// How many taps of each output position fall on the input rather than on padding (the
/// divisor of an average that does not count padding).
pub fn valid_taps(g: &Geometry) -> Vec<f32> {
    let (ho, wo) = g.output();
    let ones = vec![1f32; g.h * g.w];
    let mut counts = vec![0f32; ho * wo];
    let mut scratch = vec![0f32; scratch_len(g)];
    pool_planes(g, Reduce::Sum, &ones, &mut counts, &mut scratch, None);
    counts
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::values;

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
        // (h, w, kh, kw, stride, dilation, pads (top, left, bottom, right))
        let cases = [
            (9, 11, 3, 3, 2, 1, (1, 1, 1, 1)),
            (8, 8, 2, 2, 2, 1, (0, 0, 0, 0)),
            (13, 10, 3, 3, 1, 1, (1, 1, 1, 1)),
            (7, 7, 7, 7, 1, 1, (0, 0, 0, 0)),
            (12, 15, 3, 2, 3, 2, (2, 0, 1, 1)),
            (10, 10, 5, 5, 1, 1, (2, 2, 2, 2)),
        ];
        for (ix, &(h, w, kh, kw, s, d, (pt, pl, pb, pr))) in cases.iter().enumerate() {
            let g = Geometry {
                h,
                w,
                kh,
                kw,
                sy: s,
                sx: s,
                dy: d,
                dx: d,
                pad_top: pt,
                pad_left: pl,
                pad_bottom: pb,
                pad_right: pr,
            };
            let (ho, wo) = g.output();
            let planes = 3;
            let input = values(planes * h * w, ix as u32);
            let mut scratch = vec![f32::NAN; scratch_len(&g)];
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
