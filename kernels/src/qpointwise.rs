//! The integer 1×1 convolution's kernels: the input quantized (the pair's rounding) or taken as
//! 8-bit values and interleaved into VNNI order (`[⌈I/4⌉][points]` words of four input
//! channels, [`Kernel::pack`]), then the float micro-kernel's shape in integers: 8 output
//! channels × 48 points of i32 sums (`vpdpbusd`: u8 × i8, four products per lane per
//! instruction), weights broadcast four bytes at a time from a copy packed at load
//! ([`pack_weights`]), then `sum · scale[o] + offset[o]`, the clamp and one store per vector, as
//! f32 or as the bytes of the next pair. One point (a classifier's matrix–vector product) runs
//! across output channels instead ([`Kernel::gemv`]). AVX-512 VNNI, AVX-VNNI (8 points per
//! vector), plain AVX2 (`vpmaddwd` on 16-bit pairs, its weights laid out as such:
//! [`Kernel::lay_out_weights`]); on aarch64 `usdot` (i8mm),
//! `sdot` (dotprod) and `smull`/`sadalp` (NEON), the last two on input packed with each
//! byte's top bit flipped ([`Kernel::flip`]); the plain Rust kernels are the reference.

// the vector kernels of some families exist on some targets only: elsewhere their arguments go
// unused
#![cfg_attr(
    not(any(target_arch = "x86_64", target_arch = "aarch64")),
    allow(unused_variables, unused_imports)
)]

use crate::isa::{Feature, Isa};
use crate::scalar;
pub use crate::tile::{TileOut, COLS, ROWS};

/// A kernel set this CPU runs: only [`Kernel::available`] makes one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Kernel(Kind);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Kind {
    /// Plain Rust, any target (the reference).
    Scalar,
    /// AVX2 without VNNI: `vpmaddwd` on 16-bit lanes (weights laid out as 16-bit pairs).
    #[cfg(target_arch = "x86_64")]
    Avx2,
    /// AVX2 with AVX-VNNI (`vpdpbusd` on 256 bits).
    #[cfg(target_arch = "x86_64")]
    AvxVnni,
    /// AVX-512F with VNNI (`vpdpbusd`).
    #[cfg(target_arch = "x86_64")]
    Vnni,
    /// aarch64 NEON: `smull`/`smlal`/`sadalp` on signed bytes.
    #[cfg(target_arch = "aarch64")]
    Neon,
    /// aarch64 dotprod: `sdot` on signed bytes.
    #[cfg(target_arch = "aarch64")]
    Dot,
    /// aarch64 i8mm: `usdot` (u8 × i8).
    #[cfg(target_arch = "aarch64")]
    UsDot,
}

impl Kernel {
    /// The plain Rust kernels (every target).
    pub const SCALAR: Kernel = Kernel(Kind::Scalar);

    /// The fastest kernels `isa` runs.
    pub fn best(isa: Isa) -> Kernel {
        *Kernel::available(isa).last().unwrap_or(&Kernel::SCALAR)
    }

    /// Every kernel set `isa` runs, slowest first.
    #[allow(unused_mut)]
    pub fn available(isa: Isa) -> Vec<Kernel> {
        let mut all = vec![Kernel::SCALAR];
        #[cfg(target_arch = "x86_64")]
        {
            if isa.has(Feature::Avx2Fma) {
                all.push(Kernel(Kind::Avx2));
            }
            if isa.has_all(&[Feature::Avx2Fma, Feature::AvxVnni]) {
                all.push(Kernel(Kind::AvxVnni));
            }
            if isa.has_all(&[Feature::Avx512, Feature::Avx512Vnni]) {
                all.push(Kernel(Kind::Vnni));
            }
        }
        #[cfg(target_arch = "aarch64")]
        {
            if isa.has(Feature::Neon) {
                all.push(Kernel(Kind::Neon));
            }
            if isa.has_all(&[Feature::Neon, Feature::Dotprod]) {
                all.push(Kernel(Kind::Dot));
            }
            if isa.has_all(&[Feature::Neon, Feature::Dotprod, Feature::I8mm]) {
                all.push(Kernel(Kind::UsDot));
            }
        }
        all
    }

    /// What this kernel's packs XOR into every word: `0x80808080` where the products are
    /// signed (each byte then holds `q − 128` as i8; the tile adds `128 · Σ w` back), else 0.
    /// Words handed to [`Kernel::tile`] from elsewhere must be in this form.
    pub fn flip(self) -> u32 {
        match self.0 {
            #[cfg(target_arch = "aarch64")]
            Kind::Neon | Kind::Dot => crate::aarch64::qpointwise::SIGNED,
            _ => 0,
        }
    }

    /// Whether it is a vector kernel.
    pub fn is_vector(self) -> bool {
        self.0 != Kind::Scalar
    }

    /// Whether a graph's int8 layers are worth running on it: a vector kernel whose level also
    /// has the rest of the 8-bit path vectorized (pack, byte stores, the depthwise layers' byte
    /// fills). The AVX2 levels do since their byte path (`x86_64::bytes_avx2`): a whole int8
    /// MobileNetV2 ran 20.5 ms on AVX-VNNI with that path in plain Rust, 7.6 ms with it
    /// vectorized, against 14.1 ms for fp32 at the same level (docs/benchmarks.md).
    pub fn serves_graphs(self) -> bool {
        // every vector level has it now
        self.is_vector()
    }

    /// The kernel's name, for op descriptions.
    pub fn name(self) -> &'static str {
        match self.0 {
            Kind::Scalar => "scalar",
            #[cfg(target_arch = "x86_64")]
            Kind::Avx2 => "avx2",
            #[cfg(target_arch = "x86_64")]
            Kind::AvxVnni => "avx-vnni",
            #[cfg(target_arch = "x86_64")]
            Kind::Vnni => "avx512-vnni",
            #[cfg(target_arch = "aarch64")]
            Kind::Neon => "neon",
            #[cfg(target_arch = "aarch64")]
            Kind::Dot => "dotprod",
            #[cfg(target_arch = "aarch64")]
            Kind::UsDot => "i8mm",
        }
    }

    /// Words per group of four input channels and output row in the weights this kernel's
    /// tiles read: 2 on plain AVX2 (16-bit pairs), 1 elsewhere (four bytes).
    pub fn weight_words(self) -> usize {
        match self.0 {
            #[cfg(target_arch = "x86_64")]
            Kind::Avx2 => 2,
            _ => 1,
        }
    }

    /// [`pack_weights`]' words as this kernel's tiles read them: the same words, or on plain
    /// AVX2 each word `b0 b1 b2 b3` as two, `(b0, b2)` and `(b1, b3)` sign-extended to 16 bits
    /// (the input's channels 0, 2 and 1, 3 as `vpmaddwd` pairs them).
    pub fn lay_out_weights(self, packed: Vec<i32>) -> Vec<i32> {
        if self.weight_words() == 1 {
            return packed;
        }
        let pair = |a: i32, b: i32| a as i8 as i16 as u16 as u32 | (b as i8 as i16 as u32) << 16;
        packed
            .iter()
            .flat_map(|&w| {
                let b = w.to_le_bytes().map(|v| v as i32);
                [pair(b[0], b[2]) as i32, pair(b[1], b[3]) as i32]
            })
            .collect()
    }

    /// [`pack_weights`]' words back from [`Kernel::lay_out_weights`]' (for running one op's
    /// weights on another kernel).
    pub fn packed_weights(self, laid_out: &[i32]) -> Vec<i32> {
        if self.weight_words() == 1 {
            return laid_out.to_vec();
        }
        laid_out
            .chunks_exact(2)
            .map(|w| {
                let (e, o) = (w[0].to_le_bytes(), w[1].to_le_bytes());
                i32::from_le_bytes([e[0], o[0], e[2], o[2]])
            })
            .collect()
    }

    /// `packed[g·points + p]` = the four quantized values (`clamp(round_even(x · inv) + zp,
    /// 0, 255)`, NaN → `zp`) of input channels `4g..4g+4` at point `p`, one byte each, low byte
    /// first (zero past `cin`), XORed with [`Kernel::flip`].
    pub fn pack(
        self,
        input: &[f32],
        cin: usize,
        points: usize,
        inv: f32,
        zp: f32,
        packed: &mut [u32],
    ) {
        assert!(input.len() == cin * points && packed.len() == cin.div_ceil(4) * points);
        match self.0 {
            Kind::Scalar => scalar::qpointwise::pack(input, cin, points, inv, zp, packed),
            #[cfg(target_arch = "x86_64")]
            // SAFETY: an Avx2 or AvxVnni kernel exists only where the CPU has AVX2; the
            // lengths are checked above.
            Kind::Avx2 | Kind::AvxVnni => unsafe {
                crate::x86_64::bytes_avx2::pack(input, cin, points, inv, zp, packed)
            },
            #[cfg(target_arch = "x86_64")]
            // SAFETY: a Vnni kernel exists only where the CPU has AVX-512 with VNNI; the
            // lengths are checked above.
            Kind::Vnni => unsafe {
                crate::x86_64::qpointwise::pack(input, cin, points, inv, zp, packed)
            },
            #[cfg(target_arch = "aarch64")]
            // SAFETY: an aarch64 kernel exists only where the CPU has NEON; the lengths are
            // checked above.
            _ => unsafe {
                crate::aarch64::qpointwise::pack(input, cin, points, inv, zp, self.flip(), packed)
            },
        }
    }

    /// [`Kernel::pack`] for values already quantized: `input` holds the 8-bit values.
    pub fn pack_bytes(self, input: &[u8], cin: usize, points: usize, packed: &mut [u32]) {
        assert!(input.len() == cin * points && packed.len() == cin.div_ceil(4) * points);
        match self.0 {
            Kind::Scalar => scalar::qpointwise::pack_bytes(input, cin, points, packed),
            #[cfg(target_arch = "x86_64")]
            // SAFETY: an Avx2 or AvxVnni kernel exists only where the CPU has AVX2; the
            // lengths are checked above.
            Kind::Avx2 | Kind::AvxVnni => unsafe {
                crate::x86_64::bytes_avx2::pack_bytes(input, cin, points, packed)
            },
            #[cfg(target_arch = "x86_64")]
            // SAFETY: a Vnni kernel exists only where the CPU has AVX-512 with VNNI; the
            // lengths are checked above.
            Kind::Vnni => unsafe {
                crate::x86_64::qpointwise::pack_bytes(input, cin, points, packed)
            },
            #[cfg(target_arch = "aarch64")]
            // SAFETY: an aarch64 kernel exists only where the CPU has NEON; the lengths are
            // checked above.
            _ => unsafe {
                crate::aarch64::qpointwise::pack_bytes(input, cin, points, self.flip(), packed)
            },
        }
    }

    /// `out[r·stride + c] = clamp(Σ_g dot4(x[g·stride + c], w[g·8 + r]) · scale[r] +
    /// offset[r])` for `r < rows`, `c < cols` (as f32 or in the output's 8-bit form);
    /// `weights` is one tile of [`pack_weights`]' output laid out for this kernel
    /// ([`Kernel::lay_out_weights`]).
    ///
    /// # Safety
    /// `x` readable at `g·stride + c`, `out` writable at `r·stride + c` for those indices;
    /// `weights` holds `k4 · 8 · weight_words()` words, `scale` and `offset` 8 values; `rows ≤ 8`, `1 ≤ cols ≤ 48`
    /// (checked only in debug builds: this is the innermost call).
    #[allow(clippy::too_many_arguments)]
    #[inline]
    pub unsafe fn tile(
        self,
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
        debug_assert!(weights.len() == k4 * ROWS * self.weight_words());
        debug_assert!(scale.len() == ROWS && offset.len() == ROWS);
        debug_assert!(rows <= ROWS && (1..=COLS).contains(&cols));
        // SAFETY: the kernel exists only where the CPU has its features (see `available`);
        // the caller's bounds are each kernel's.
        unsafe {
            match self.0 {
                Kind::Scalar => scalar::qpointwise::tile(
                    k4,
                    x,
                    stride,
                    weights,
                    (scale, offset),
                    out,
                    rows,
                    cols,
                    clamp,
                ),
                #[cfg(target_arch = "x86_64")]
                Kind::Avx2 => crate::x86_64::qpointwise::tile_avx2((
                    k4, x, stride, weights, scale, offset, out, rows, cols, clamp,
                )),
                #[cfg(target_arch = "x86_64")]
                Kind::AvxVnni => crate::x86_64::qpointwise::tile_avx_vnni((
                    k4, x, stride, weights, scale, offset, out, rows, cols, clamp,
                )),
                #[cfg(target_arch = "x86_64")]
                Kind::Vnni => {
                    use crate::x86_64::qpointwise::tile;
                    let args = (
                        k4, x, stride, weights, scale, offset, out, rows, cols, clamp,
                    );
                    match cols.div_ceil(16) {
                        3 => tile::<3>(args),
                        2 => tile::<2>(args),
                        _ => tile::<1>(args),
                    }
                }
                #[cfg(target_arch = "aarch64")]
                Kind::Neon => crate::aarch64::qpointwise::tile_neon((
                    k4, x, stride, weights, scale, offset, out, rows, cols, clamp,
                )),
                #[cfg(target_arch = "aarch64")]
                Kind::Dot => crate::aarch64::qpointwise::tile_dot((
                    k4, x, stride, weights, scale, offset, out, rows, cols, clamp,
                )),
                #[cfg(target_arch = "aarch64")]
                Kind::UsDot => crate::aarch64::qpointwise::tile_usdot((
                    k4, x, stride, weights, scale, offset, out, rows, cols, clamp,
                )),
            }
        }
    }

    /// The whole product for one point (`x`: `⌈cin/4⌉` words) across output channels, the
    /// same sums and epilogue as [`Kernel::tile`] (outputs bit-equal to it).
    ///
    /// # Safety
    /// `out` writable for `cout` values.
    pub unsafe fn gemv(
        self,
        x: &[u32],
        weights: &[i32],
        (scale, offset): (&[f32], &[f32]),
        out: TileOut,
        cout: usize,
        clamp: Option<(f32, f32)>,
    ) {
        let (tiles, words) = (cout.div_ceil(ROWS), self.weight_words());
        assert!(weights.len() == tiles * x.len() * ROWS * words);
        assert!(scale.len() >= tiles * ROWS && offset.len() >= tiles * ROWS);
        // SAFETY: the kernel exists only where the CPU has its features; the lengths are
        // checked above and `out` is the caller's.
        unsafe {
            match self.0 {
                Kind::Scalar => {
                    scalar::qpointwise::gemv(x, weights, (scale, offset), out, cout, clamp)
                }
                #[cfg(target_arch = "x86_64")]
                Kind::Vnni => {
                    crate::x86_64::qpointwise::gemv(x, weights, (scale, offset), out, cout, clamp)
                }
                // elsewhere: the tile on one column, tile by tile (the classifier's product is
                // under 1 % of a CNN's; the dot kernels still run 32 products per step)
                #[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
                _ => {
                    let k4 = x.len();
                    for t in 0..tiles {
                        self.tile(
                            k4,
                            x.as_ptr(),
                            1,
                            &weights[t * k4 * ROWS * words..][..k4 * ROWS * words],
                            (&scale[t * ROWS..][..ROWS], &offset[t * ROWS..][..ROWS]),
                            out.at(t * ROWS),
                            ROWS.min(cout - t * ROWS),
                            1,
                            clamp,
                        )
                    }
                }
            }
        }
    }
}

/// Int8 weights `qw` (`[O, I]`, each in `-127..=127`, as [`crate::quant::integer_rows`] gives
/// them: the NEON kernel sums two products in 16 bits) as the tiles read them:
/// `[⌈O/8⌉][⌈I/4⌉][8]` words of four weights (input channels `4k..4k+4`, low byte first), zeros
/// past `O` and `I`.
pub fn pack_weights(qw: &[i8], cin: usize, cout: usize) -> Vec<i32> {
    assert_eq!(qw.len(), cin * cout);
    assert!(
        !qw.contains(&i8::MIN),
        "int8 weights must lie in -127..=127 (symmetric quantization)"
    );
    let (tiles, k4) = (cout.div_ceil(ROWS), cin.div_ceil(4));
    // written in order, each word read as four bytes of one row (a scatter of single bytes
    // was ~5 % of an int8 model's load)
    let mut words = vec![0i32; tiles * k4 * ROWS];
    for (tile_k, tile_words) in words.chunks_exact_mut(ROWS).enumerate() {
        let (t, k) = (tile_k / k4, tile_k % k4);
        for (r, word) in tile_words.iter_mut().enumerate() {
            let o = t * ROWS + r;
            if o >= cout {
                break;
            }
            let row = &qw[o * cin..][..cin];
            let byte = |j: usize| row.get(4 * k + j).map_or(0, |&v| v as u8);
            *word = i32::from_le_bytes([byte(0), byte(1), byte(2), byte(3)]);
        }
    }
    words
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quant::U8Form;
    use crate::testing::values;

    /// The sums' extremes: every byte 0 or 255 against weights of ±127 arranged so that pairs
    /// of products reach the NEON kernel's 16-bit bound (`2 · 128 · 127`), over partial tiles
    /// and odd word counts; every kernel gives the scalar sums exactly (f32 outputs of the
    /// integer sums at scale 1, offset 0).
    #[test]
    fn extreme_bytes_and_weights_give_exact_sums() {
        for &(cin, cout, points) in &[
            (64usize, 8usize, 48usize),
            (36, 13, 7),
            (8, 8, 1),
            (1040, 8, 5),
        ] {
            let bytes: Vec<u8> = (0..cin * points)
                .map(|i| {
                    if (i / points + i % 3) % 2 == 0 {
                        0
                    } else {
                        255
                    }
                })
                .collect();
            let qw: Vec<i8> = (0..cin * cout)
                .map(|i| {
                    if (i % cin + i / cin) % 2 == 0 {
                        -127
                    } else {
                        127
                    }
                })
                .collect();
            let k4 = cin.div_ceil(4);
            let packed_w = pack_weights(&qw, cin, cout);
            let (scale, offset) = (vec![1f32; ROWS], vec![0f32; ROWS]);
            let run = |kernel: Kernel| {
                let packed_w = kernel.lay_out_weights(packed_w.clone());
                let words = k4 * ROWS * kernel.weight_words();
                let mut packed = vec![0u32; k4 * points];
                kernel.pack_bytes(&bytes, cin, points, &mut packed);
                let mut out = vec![f32::NAN; cout * points];
                for t in 0..cout.div_ceil(ROWS) {
                    for c0 in (0..points).step_by(COLS) {
                        // SAFETY: tile `t`'s rows, columns `c0..` of `packed` and `out`.
                        unsafe {
                            kernel.tile(
                                k4,
                                packed.as_ptr().add(c0),
                                points,
                                &packed_w[t * words..][..words],
                                (&scale, &offset),
                                TileOut::F32(out.as_mut_ptr().add(t * ROWS * points + c0)),
                                ROWS.min(cout - t * ROWS),
                                COLS.min(points - c0),
                                None,
                            )
                        }
                    }
                }
                out
            };
            let want = run(Kernel::SCALAR);
            for kernel in Kernel::available(Isa::host()) {
                assert_eq!(run(kernel), want, "{kernel:?} {cin}->{cout} over {points}");
            }
        }
    }

    /// A kernel's weight layout gives back the packed words it was made from.
    #[test]
    fn weight_layouts_round_trip() {
        let qw: Vec<i8> = (0..13 * 37)
            .map(|i| ((i * 53) % 255) as i8)
            .map(|v| v.max(-127))
            .collect();
        let packed = pack_weights(&qw, 37, 13);
        for isa in Isa::host().levels() {
            for kernel in Kernel::available(isa) {
                let laid = kernel.lay_out_weights(packed.clone());
                assert_eq!(laid.len(), packed.len() * kernel.weight_words());
                assert_eq!(kernel.packed_weights(&laid), packed, "{kernel:?}");
            }
        }
    }

    /// Every kernel set on every level: the pack gives the scalar pack's words (the pair's
    /// rounding on NaN, ±∞ and values past the range included), and the tiles and the
    /// one-point product give the scalar tile's values, as f32 and as bytes.
    #[test]
    fn every_kernel_on_every_level_matches_the_scalar_kernels() {
        for &(cin, cout, points) in &[
            (3, 1, 1),
            (16, 96, 49),
            (24, 13, 48),
            (7, 8, 16),
            (960, 20, 17),
            (5, 9, 250),
            (17, 77, 1),
            (1280, 1000, 1),
        ] {
            let qw: Vec<i8> = values(cin * cout, 5)
                .iter()
                .map(|v| (v * 127.0).round() as i8)
                .collect();
            let packed_w = pack_weights(&qw, cin, cout);
            let tiles = cout.div_ceil(ROWS);
            let scale: Vec<f32> = (0..tiles * ROWS).map(|o| 0.001 + o as f32 * 1e-5).collect();
            let offset = values(tiles * ROWS, 2);
            let mut x = values(cin * points, 3);
            x[0] = f32::NAN;
            if x.len() > 2 {
                x[1] = 1e9;
                x[2] = -f32::INFINITY;
            }
            let form = U8Form::new(1.0 / 0.02, 128.0, 0.02);
            let k4 = cin.div_ceil(4);
            // the clamp folded into the byte store, as the ops do
            let out_form = U8Form::new(1.0 / 0.07, 90.0, 0.07).requantizer(Some((-1.0, 1.0)));
            let run = |kernel: Kernel, packed: &[u32], f32_out: bool| -> (Vec<f32>, Vec<u8>) {
                let packed_w = kernel.lay_out_weights(packed_w.clone());
                let words = k4 * ROWS * kernel.weight_words();
                let (mut f, mut b) = (vec![f32::NAN; cout * points], vec![0u8; cout * points]);
                let out = if f32_out {
                    TileOut::F32(f.as_mut_ptr())
                } else {
                    TileOut::U8(b.as_mut_ptr(), out_form)
                };
                for t in 0..tiles {
                    for c0 in (0..points).step_by(COLS) {
                        // SAFETY: tile `t`'s rows, columns `c0..` of `packed` and the output.
                        unsafe {
                            kernel.tile(
                                k4,
                                packed.as_ptr().add(c0),
                                points,
                                &packed_w[t * words..][..words],
                                (&scale[t * ROWS..][..ROWS], &offset[t * ROWS..][..ROWS]),
                                out.at(t * ROWS * points + c0),
                                ROWS.min(cout - t * ROWS),
                                COLS.min(points - c0),
                                Some((-1.0, 1.0)),
                            )
                        }
                    }
                }
                (f, b)
            };
            let mut want_packed = vec![0u32; k4 * points];
            Kernel::SCALAR.pack(
                &x,
                cin,
                points,
                form.inv_scale(),
                form.zero_point(),
                &mut want_packed,
            );
            let want = run(Kernel::SCALAR, &want_packed, true).0;
            for isa in Isa::host().levels() {
                for kernel in Kernel::available(isa) {
                    let mut packed = vec![0u32; k4 * points];
                    kernel.pack(
                        &x,
                        cin,
                        points,
                        form.inv_scale(),
                        form.zero_point(),
                        &mut packed,
                    );
                    let flipped: Vec<u32> = want_packed.iter().map(|w| w ^ kernel.flip()).collect();
                    assert_eq!(packed, flipped, "{kernel:?} pack {cin}x{points}");
                    let bytes: Vec<u8> = x.iter().map(|&v| form.quantize(v)).collect();
                    let mut from_bytes = vec![0u32; k4 * points];
                    kernel.pack_bytes(&bytes, cin, points, &mut from_bytes);
                    assert_eq!(from_bytes, flipped, "{kernel:?} pack_bytes {cin}x{points}");
                    let (got, _) = run(kernel, &packed, true);
                    let (_, got_bytes) = run(kernel, &packed, false);
                    for (i, (a, b)) in got.iter().zip(&want).enumerate() {
                        assert!(
                            (a - b).abs() <= 1e-5 * (1.0 + b.abs()),
                            "{kernel:?} {cin}->{cout} over {points} at {i}: {a} vs {b}"
                        );
                    }
                    // the bytes are this kernel's own sums requantized
                    for (i, (&q, &v)) in got_bytes.iter().zip(&got).enumerate() {
                        assert_eq!(
                            q,
                            out_form.apply(v),
                            "{kernel:?} bytes {cin}->{cout} at {i}"
                        );
                    }
                    if points == 1 {
                        let mut one = vec![f32::NAN; cout];
                        // SAFETY: `one` holds `cout` values.
                        unsafe {
                            kernel.gemv(
                                &packed,
                                &kernel.lay_out_weights(packed_w.clone()),
                                (&scale, &offset),
                                TileOut::F32(one.as_mut_ptr()),
                                cout,
                                Some((-1.0, 1.0)),
                            )
                        };
                        assert!(
                            one.iter()
                                .zip(&got)
                                .all(|(a, b)| a.to_bits() == b.to_bits()),
                            "{kernel:?} gemv {cin}->{cout}"
                        );
                    }
                }
            }
        }
    }
}
