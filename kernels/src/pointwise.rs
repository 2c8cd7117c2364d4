//! The float 1×1 convolution's micro-kernel (a matrix product over channel-first activations,
//! which need no packing: each input channel is one contiguous row): 8 output channels × 48
//! points of sums kept in registers for the whole reduction, the weights broadcast from a copy
//! packed at load ([`pack_weights`]: `[tile][i][8]`), the bias starting the sums and the clamp
//! applied before the one store. AVX-512 only (the tile needs its 32 registers and masked
//! tails); the plain Rust tile is the reference. Also the im2col convolution's product.

// the vector kernels of some families exist on x86-64 only: elsewhere their arguments go unused
#![cfg_attr(not(target_arch = "x86_64"), allow(unused_variables, unused_imports))]

use crate::isa::{Feature, Isa};
use crate::scalar;
pub use crate::tile::{COLS, ROWS};

/// A micro-kernel this CPU runs: only [`Kernel::available`] makes one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Kernel(Kind);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Kind {
    /// Plain Rust, any target (the reference).
    Scalar,
    /// 16 lanes with FMA and masked tails (x86-64 with AVX-512F).
    #[cfg(target_arch = "x86_64")]
    Avx512,
}

impl Kernel {
    /// The plain Rust kernel (every target).
    pub const SCALAR: Kernel = Kernel(Kind::Scalar);

    /// The fastest kernel `isa` runs.
    pub fn best(isa: Isa) -> Kernel {
        *Kernel::available(isa).last().unwrap_or(&Kernel::SCALAR)
    }

    /// Every kernel `isa` runs, slowest first.
    #[allow(unused_mut)]
    pub fn available(isa: Isa) -> Vec<Kernel> {
        let mut all = vec![Kernel::SCALAR];
        #[cfg(target_arch = "x86_64")]
        if isa.has(Feature::Avx512) {
            all.push(Kernel(Kind::Avx512));
        }
        all
    }

    /// Whether it is a vector kernel (the op is worth substituting only then).
    pub fn is_vector(self) -> bool {
        self.0 != Kind::Scalar
    }

    /// The kernel's name, for op descriptions.
    pub fn name(self) -> &'static str {
        match self.0 {
            Kind::Scalar => "scalar",
            #[cfg(target_arch = "x86_64")]
            Kind::Avx512 => "avx512",
        }
    }

    /// `out[r·strides.1 + c] = clamp(bias[r] + Σ_i weights[i·8 + r] · x[i·strides.0 + c])`
    /// for `r < rows`, `c < cols`; `weights` is one tile of [`pack_weights`]' output.
    ///
    /// # Safety
    /// `x` must be readable at `i·strides.0 + c` and `out` writable at `r·strides.1 + c` for
    /// those indices; `weights` holds `cin · 8` values and `bias` 8; `rows ≤ 8`, `1 ≤ cols ≤ 48`
    /// (checked only in debug builds: this is the innermost call).
    #[allow(clippy::too_many_arguments)]
    #[inline]
    pub unsafe fn tile(
        self,
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
        debug_assert!(weights.len() == cin * ROWS && bias.len() == ROWS);
        debug_assert!(rows <= ROWS && (1..=COLS).contains(&cols));
        // SAFETY: the kernel exists only where the CPU has its features (see `available`);
        // the caller's bounds are each kernel's.
        unsafe {
            match self.0 {
                Kind::Scalar => {
                    scalar::pointwise::tile(cin, x, strides, weights, bias, out, rows, cols, clamp)
                }
                #[cfg(target_arch = "x86_64")]
                Kind::Avx512 => {
                    use crate::x86_64::pointwise::tile;
                    match cols.div_ceil(16) {
                        3 => tile::<3>(cin, x, strides, weights, bias, out, rows, cols, clamp),
                        2 => tile::<2>(cin, x, strides, weights, bias, out, rows, cols, clamp),
                        _ => tile::<1>(cin, x, strides, weights, bias, out, rows, cols, clamp),
                    }
                }
            }
        }
    }
    /// The same product over gathered input rows, for convolutions read straight from their
    /// padded planes (no im2col copy): row `i` of the input is the 16·`lanes.len()` floats
    /// at `x + offsets[i]`, and vector `v`'s sums for output row `r`, of the lanes set in
    /// `lanes[v].0` only, go packed in lane order to `out[r·out_stride + lanes[v].1 ..]`
    /// (the other lanes are padding columns and are dropped).
    ///
    /// # Safety
    /// `x` must be readable at `offsets[i] + 16·lanes.len()` floats for every `i` (all lanes,
    /// dropped ones included) and `out` writable where the kept lanes go; `weights` holds
    /// `offsets.len() · 8` values and `bias` 8; `rows ≤ 8`, `1 ≤ lanes.len() ≤ 3` (checked
    /// only in debug builds: this is the innermost call).
    #[allow(clippy::too_many_arguments)]
    #[inline]
    pub unsafe fn tile_gathered(
        self,
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
        debug_assert!(weights.len() == offsets.len() * ROWS && bias.len() == ROWS);
        debug_assert!(rows <= ROWS && (1..=COLS / 16).contains(&lanes.len()));
        // SAFETY: the kernel exists only where the CPU has its features (see `available`);
        // the caller's bounds are each kernel's.
        unsafe {
            match self.0 {
                Kind::Scalar => scalar::pointwise::tile_gathered(
                    offsets, x, weights, bias, out, out_stride, lanes, rows, clamp,
                ),
                #[cfg(target_arch = "x86_64")]
                Kind::Avx512 => {
                    use crate::x86_64::pointwise::tile_gathered as tile;
                    let (w, b, s, c) = (weights, bias, out_stride, clamp);
                    match lanes.len() {
                        3 => tile::<3>(offsets, x, w, b, out, s, lanes, rows, c),
                        2 => tile::<2>(offsets, x, w, b, out, s, lanes, rows, c),
                        _ => tile::<1>(offsets, x, w, b, out, s, lanes, rows, c),
                    }
                }
            }
        }
    }
}

/// `weights` (`[O, I]` row-major) as the tiles read them: `[⌈O/8⌉][I][8]`, zero rows past `O`.
pub fn pack_weights(cin: usize, cout: usize, weights: &[f32]) -> Vec<f32> {
    assert_eq!(weights.len(), cout * cin);
    let tiles = cout.div_ceil(ROWS);
    let mut packed = vec![0f32; tiles * cin * ROWS];
    for o in 0..cout {
        let (t, r) = (o / ROWS, o % ROWS);
        for i in 0..cin {
            packed[(t * cin + i) * ROWS + r] = weights[o * cin + i];
        }
    }
    packed
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::values;

    /// `[O, points]` through every tile of 8 channels and 48 points.
    fn run(
        kernel: Kernel,
        (cin, cout): (usize, usize),
        w: &[f32],
        b: &[f32],
        x: &[f32],
        points: usize,
        clamp: Option<(f32, f32)>,
    ) -> Vec<f32> {
        let packed = pack_weights(cin, cout, w);
        let mut bias = b.to_vec();
        bias.resize(cout.div_ceil(ROWS) * ROWS, 0.0);
        let mut out = vec![f32::NAN; cout * points];
        for t in 0..cout.div_ceil(ROWS) {
            for c0 in (0..points).step_by(COLS) {
                // SAFETY: tile `t`'s rows and columns `c0..` of `x` and `out`, inside both.
                unsafe {
                    kernel.tile(
                        cin,
                        x.as_ptr().add(c0),
                        (points, points),
                        &packed[t * cin * ROWS..][..cin * ROWS],
                        &bias[t * ROWS..][..ROWS],
                        out.as_mut_ptr().add(t * ROWS * points + c0),
                        ROWS.min(cout - t * ROWS),
                        COLS.min(points - c0),
                        clamp,
                    )
                }
            }
        }
        out
    }

    /// The gathered tile reads each row where its offset says and keeps only the masked lanes,
    /// packed from each vector's start, on every kernel.
    #[test]
    fn every_gathered_tile_keeps_the_masked_lanes_of_the_textbook_sum() {
        let (cin, len) = (37, 400);
        let x = values(len, 4);
        let w = values(cin * ROWS, 5);
        let b = values(ROWS, 6);
        let offsets: Vec<usize> = (0..cin).map(|i| (i * 7919) % (len - 48)).collect();
        let lanes = [(0xffffu16, 0u32), (0x0000, 16), (0x8421, 16)];
        for count in 1..=3 {
            for rows in [1, 5, 8] {
                for clamp in [None, Some((-0.5, 0.5))] {
                    let lanes = &lanes[..count];
                    let kept: usize = lanes.iter().map(|l| l.0.count_ones() as usize).sum();
                    let mut want = vec![f32::NAN; ROWS * 20];
                    for r in 0..rows {
                        let mut at = 0;
                        for (v, &(mask, _)) in lanes.iter().enumerate() {
                            for l in (0..16).filter(|l| mask >> l & 1 == 1) {
                                let mut acc = b[r] as f64;
                                for (i, &o) in offsets.iter().enumerate() {
                                    acc += w[i * ROWS + r] as f64 * x[o + 16 * v + l] as f64;
                                }
                                let v = acc as f32;
                                want[r * 20 + at] = clamp.map_or(v, |(lo, hi)| v.max(lo).min(hi));
                                at += 1;
                            }
                        }
                    }
                    for isa in Isa::host().levels() {
                        for kernel in Kernel::available(isa) {
                            let mut got = vec![f32::NAN; ROWS * 20];
                            // SAFETY: every offset + 48 is inside `x`; 20 columns per row hold
                            // the kept lanes (at most 20).
                            unsafe {
                                kernel.tile_gathered(
                                    &offsets,
                                    x.as_ptr(),
                                    &w,
                                    &b,
                                    got.as_mut_ptr(),
                                    20,
                                    lanes,
                                    rows,
                                    clamp,
                                )
                            };
                            for r in 0..ROWS {
                                for c in 0..20 {
                                    let (g, e) = (got[r * 20 + c], want[r * 20 + c]);
                                    if r < rows && c < kept {
                                        assert!(
                                            (g - e).abs() < 1e-4,
                                            "{kernel:?} {r},{c}: {g} vs {e}"
                                        );
                                    } else {
                                        assert!(g.is_nan(), "{kernel:?} wrote {r},{c}");
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    }

    /// Every kernel on every level gives the textbook sum, on every tail of rows and columns.
    #[test]
    fn every_kernel_on_every_level_matches_the_textbook_sum() {
        for &(cin, cout, points) in &[
            (3, 1, 1),
            (16, 96, 49),
            (24, 13, 48),
            (32, 16, 97),
            (7, 8, 16),
            (960, 20, 17),
            (5, 9, 250),
        ] {
            let (w, b, x) = (
                values(cin * cout, 1),
                values(cout, 2),
                values(cin * points, 3),
            );
            for clamp in [None, Some((0.0, 6.0))] {
                let mut want = vec![0f32; cout * points];
                for o in 0..cout {
                    for p in 0..points {
                        let mut acc = b[o] as f64;
                        for i in 0..cin {
                            acc += w[o * cin + i] as f64 * x[i * points + p] as f64;
                        }
                        let v = acc as f32;
                        want[o * points + p] = clamp.map_or(v, |(lo, hi)| v.max(lo).min(hi));
                    }
                }
                for isa in Isa::host().levels() {
                    for kernel in Kernel::available(isa) {
                        let got = run(kernel, (cin, cout), &w, &b, &x, points, clamp);
                        let worst = want
                            .iter()
                            .zip(&got)
                            .map(|(a, b)| (a - b).abs())
                            .fold(0f32, f32::max);
                        assert!(
                            worst < 1e-3,
                            "{kernel:?} {cin}->{cout} over {points}: off by {worst}"
                        );
                    }
                }
            }
        }
    }
}
