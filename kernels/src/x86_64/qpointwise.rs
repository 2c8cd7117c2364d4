//! The integer 1×1 kernels on AVX-512 VNNI: the quantize-and-interleave pass into VNNI order
//! (16 points per step), the 8 × 48 tile of `vpdpbusd` sums (u8 × i8 into i32), and the
//! one-point product across output channels (a classifier's matrix–vector product).

use std::arch::x86_64::*;

use super::bytes_avx2::Bytes;
use super::lanes::{mask, quantize, store_row, store_row_u8};
use crate::tile::{TileOut, ROWS};

/// `packed[g·points + p]` = the bytes `lane(i, mask)` gives for input channels `4g..4g+4`
/// at point `p` (`i` the value's index in `[cin][points]`, the lanes of `mask` in use), 16
/// points per step: the loop both packs share.
///
/// # Safety
/// `packed` holds `⌈cin/4⌉·points` words; `lane` reads only inside its input for the masked
/// lanes; the CPU has AVX-512F.
#[inline(always)]
unsafe fn interleave(
    cin: usize,
    points: usize,
    packed: &mut [u32],
    lane: impl Fn(usize, __mmask16) -> __m512i,
) {
    // SAFETY: this fn's caller upholds its contract (the CPU has the target features; pointers cover the lengths it names).
    unsafe {
        for g in 0..cin.div_ceil(4) {
            let channels = (cin - 4 * g).min(4);
            let dst = packed.as_mut_ptr().add(g * points);
            let mut p = 0;
            while p < points {
                let m = mask(points - p);
                let mut word = _mm512_setzero_si512();
                for j in 0..channels {
                    let q = lane((4 * g + j) * points + p, m);
                    word = _mm512_or_si512(
                        word,
                        _mm512_sllv_epi32(q, _mm512_set1_epi32(8 * j as i32)),
                    );
                }
                _mm512_mask_storeu_epi32(dst.add(p) as *mut i32, m, word);
                p += 16;
            }
        }
    }
}

/// [`crate::scalar::qpointwise::pack_bytes`].
///
/// # Safety
/// `input.len() == cin·points`, `packed.len() == ⌈cin/4⌉·points`; the CPU has AVX-512F, BW
/// and VL.
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
pub unsafe fn pack_bytes(input: &[u8], cin: usize, points: usize, packed: &mut [u32]) {
    let x = input.as_ptr();
    // SAFETY: `interleave` passes indices of `input` with the lanes past its end masked.
    unsafe {
        interleave(cin, points, packed, |i, m| {
            _mm512_cvtepu8_epi32(_mm_maskz_loadu_epi8(m, x.add(i) as *const i8))
        })
    }
}

/// [`crate::scalar::qpointwise::pack`]: the pair's rounding (NaN → zero point, ties to even,
/// saturation) on the way.
///
/// # Safety
/// `input.len() == cin·points`, `packed.len() == ⌈cin/4⌉·points`; the CPU has AVX-512F.
#[target_feature(enable = "avx512f")]
pub unsafe fn pack(
    input: &[f32],
    cin: usize,
    points: usize,
    inv: f32,
    zp: f32,
    packed: &mut [u32],
) {
    let (inv, zp) = (_mm512_set1_ps(inv), _mm512_set1_ps(zp));
    let x = input.as_ptr();
    // SAFETY: `interleave` passes indices of `input` with the lanes past its end masked.
    unsafe {
        interleave(cin, points, packed, |i, m| {
            quantize(_mm512_maskz_loadu_ps(m, x.add(i)), inv, zp)
        })
    }
}

pub use crate::tile::TileArgs;

/// [`crate::qpointwise::Kernel::tile`] with `V` vectors of 16 points, the last one masked to
/// `cols`.
///
/// # Safety
/// As [`crate::qpointwise::Kernel::tile`]; the CPU has AVX-512F, BW, VL and VNNI.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni")]
pub unsafe fn tile<const V: usize>(
    (k4, x, stride, weights, scale, offset, out, rows, cols, clamp): TileArgs,
) {
    let last = mask(cols - 16 * (V - 1));
    let w = weights.as_ptr();
    // SAFETY: this fn's caller upholds its contract (the CPU has the target features; pointers cover the lengths it names).
    unsafe {
        let mut acc = [[_mm512_setzero_si512(); V]; ROWS];
        for g in 0..k4 {
            let xg = x.add(g * stride) as *const i32;
            let mut xv = [_mm512_setzero_si512(); V];
            for (v, lane) in xv.iter_mut().enumerate() {
                *lane = if v + 1 == V {
                    _mm512_maskz_loadu_epi32(last, xg.add(16 * v))
                } else {
                    _mm512_loadu_si512(xg.add(16 * v) as *const _)
                };
            }
            let wg = w.add(g * ROWS);
            for (r, row) in acc.iter_mut().enumerate() {
                let k = _mm512_set1_epi32(*wg.add(r));
                for (a, &xv) in row.iter_mut().zip(&xv) {
                    *a = _mm512_dpbusd_epi32(*a, xv, k);
                }
            }
        }
        // written out for each of the 8 rows so that every index into `acc` is a
        // constant: as a loop to `rows`, LLVM kept the accumulators on the stack and stored
        // all 24 on every step above (half the speed)
        macro_rules! row {
            ($r:literal) => {
                if $r < rows {
                    let (s, b) = (_mm512_set1_ps(scale[$r]), _mm512_set1_ps(offset[$r]));
                    let mut floats = [_mm512_setzero_ps(); V];
                    for (f, &a) in floats.iter_mut().zip(&acc[$r]) {
                        *f = _mm512_fmadd_ps(_mm512_cvtepi32_ps(a), s, b);
                    }
                    match out {
                        TileOut::F32(o) => store_row(o.add($r * stride), &floats, last, clamp),
                        TileOut::U8(o, q) => store_row_u8(o.add($r * stride), &floats, last, q),
                    }
                }
            };
        }
        const _: () = assert!(ROWS == 8);
        row!(0);
        row!(1);
        row!(2);
        row!(3);
        row!(4);
        row!(5);
        row!(6);
        row!(7);
    }
}

/// The whole product for one point (`x`: `k4` words), across output channels: each
/// 8-channel tile's packed weights (`[k4][8]` words) are one 256-bit row per word of `x`,
/// so `vpdpbusd` of the word broadcast against that row adds to all 8 channels' sums; eight
/// tiles at a time (eight independent sums and weight streams per broadcast; four were
/// 0.088 ms for MobileNetV2's classifier, eight 0.064, sixteen no better). Same sums and
/// epilogue as [`tile`], so outputs are bit-equal to it.
///
/// # Safety
/// `weights` holds `⌈cout/8⌉·k4·8` words, `scale` and `offset` `⌈cout/8⌉·8` values, `out`
/// is writable for `cout` values; the CPU has AVX-512F, BW, VL and VNNI.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni")]
pub unsafe fn gemv(
    x: &[u32],
    weights: &[i32],
    (scale, offset): (&[f32], &[f32]),
    out: TileOut,
    cout: usize,
    clamp: Option<(f32, f32)>,
) {
    let (k4, tiles) = (x.len(), cout.div_ceil(ROWS));
    debug_assert!(weights.len() == tiles * k4 * ROWS && scale.len() >= tiles * ROWS);
    let (x, w) = (x.as_ptr() as *const i32, weights.as_ptr());
    let row = |t: usize, g: usize| w.wrapping_add((t * k4 + g) * ROWS) as *const __m256i;
    let finish = |t: usize, acc: __m256i| {
        let m = mask(ROWS.min(cout - t * ROWS)) & 0xff;
        // SAFETY: the caller's bounds (tile `t`'s 8 scale/offset values; its outputs
        // masked to the channels that exist)
        unsafe {
            let s = _mm512_maskz_loadu_ps(0xff, scale.as_ptr().add(t * ROWS));
            let b = _mm512_maskz_loadu_ps(0xff, offset.as_ptr().add(t * ROWS));
            let sums = _mm512_cvtepi32_ps(_mm512_zextsi256_si512(acc));
            let f = [_mm512_fmadd_ps(sums, s, b)];
            match out {
                TileOut::F32(o) => store_row(o.add(t * ROWS), &f, m, clamp),
                TileOut::U8(o, q) => store_row_u8(o.add(t * ROWS), &f, m, q),
            }
        }
    };
    let mut t = 0;
    // SAFETY: word `g < k4` of tile `t < tiles` is inside `weights`, `x` has `k4` words; the caller upholds this fn's target features.
    unsafe {
        while t + 8 <= tiles {
            let mut acc = [_mm256_setzero_si256(); 8];
            for g in 0..k4 {
                let xb = _mm256_set1_epi32(*x.add(g));
                for (j, a) in acc.iter_mut().enumerate() {
                    *a = _mm256_dpbusd_epi32(*a, xb, _mm256_loadu_si256(row(t + j, g)));
                }
            }
            for (j, &a) in acc.iter().enumerate() {
                finish(t + j, a);
            }
            t += 8;
        }
        for t in t..tiles {
            let mut acc = _mm256_setzero_si256();
            for g in 0..k4 {
                let xb = _mm256_set1_epi32(*x.add(g));
                acc = _mm256_dpbusd_epi32(acc, xb, _mm256_loadu_si256(row(t, g)));
            }
            finish(t, acc);
        }
    }
}

/// The mask of the first `n ≤ 8` 32-bit lanes (for `vpmaskmovd`/`vmaskmovps`).
///
/// # Safety
/// The CPU has AVX.
#[inline(always)]
unsafe fn lanes_below(n: usize) -> __m256i {
    const TABLE: [i32; 16] = [-1, -1, -1, -1, -1, -1, -1, -1, 0, 0, 0, 0, 0, 0, 0, 0];
    debug_assert!(n <= 8);
    // SAFETY: `8 − n ≤ 8`, so the 8 lanes read lie inside the table; the caller has AVX.
    unsafe { _mm256_loadu_si256(TABLE.as_ptr().add(8 - n) as *const __m256i) }
}

/// The 256-bit tile both AVX2 kernels share, expanded inside each one's `#[target_feature]`
/// function (a closure inherits its function's features; a shared helper's closures would
/// not, and their intrinsics became calls: 3× slower): 8 rows × 8 points of i32 sums per step
/// (the 16 registers hold 8 accumulators, the points and the broadcast weights), `step(x, w,
/// acc)` adding one group's products (`x`: 8 points' words, `w`: the group's `8 · words` weight
/// words), the tile's last partial vector of points by masked loads and stores, so that no
/// access leaves the caller's bounds. Same sums and epilogue order as the AVX-512 kernel (`fmadd`, then the
/// clamp or the pair's rounding). The caller's contract: as
/// [`crate::qpointwise::Kernel::tile`], with `weights` holding `k4 · 8 · words` words.
macro_rules! tile_256 {
    ($args:expr, $words:expr, $step:expr) => {{
        let (k4, x, stride, weights, scale, offset, out, rows, cols, clamp): TileArgs = $args;
        let words: usize = $words;
        let step = $step;
        // SAFETY: the caller upholds the tile's contract; `step` reads one group's weights;
        // the partial vector is masked, so reads stay inside `x`'s `cols` columns, and
        // stores inside `rows × cols`.
        unsafe {
            let w = weights.as_ptr();
            // one group's products for 8 points from column `c` (`mask`: the points there are)
            let group = |acc: &mut [__m256i; 8], g: usize, c: usize, mask: Option<__m256i>| {
                let at = x.add(g * stride + c);
                let xv = match mask {
                    None => _mm256_loadu_si256(at as *const __m256i),
                    Some(m) => _mm256_maskload_epi32(at as *const i32, m),
                };
                step(xv, w.add(g * ROWS * words), acc);
            };
            let (lo, hi) = clamp.unwrap_or((f32::NEG_INFINITY, f32::INFINITY));
            let (lo, hi) = (_mm256_set1_ps(lo), _mm256_set1_ps(hi));
            let bytes = match out {
                TileOut::U8(_, q) => Some(Bytes::new(q)),
                TileOut::F32(_) => None,
            };
            let store = |acc: &[__m256i; 8], c: usize, n: usize| {
                for (r, &a) in acc.iter().enumerate().take(rows) {
                    let f = _mm256_fmadd_ps(
                        _mm256_cvtepi32_ps(a),
                        _mm256_set1_ps(scale[r]),
                        _mm256_set1_ps(offset[r]),
                    );
                    let at = r * stride + c;
                    match out {
                        TileOut::F32(o) => {
                            let f = _mm256_min_ps(_mm256_max_ps(f, lo), hi);
                            if n == 8 {
                                _mm256_storeu_ps(o.add(at), f);
                            } else {
                                _mm256_maskstore_ps(o.add(at), lanes_below(n), f);
                            }
                        }
                        // `bytes` is set for a byte output (above)
                        TileOut::U8(o, _) => bytes.unwrap_unchecked().store8(o.add(at), f, n),
                    }
                }
            };
            let full = cols / 8;
            for v in 0..full {
                let mut acc = [_mm256_setzero_si256(); 8];
                for g in 0..k4 {
                    group(&mut acc, g, 8 * v, None);
                }
                store(&acc, 8 * v, 8);
            }
            let rem = cols - 8 * full;
            if rem > 0 {
                // the last points by masked loads (`vpmaskmovd` reads nothing past `rem`)
                let c = 8 * full;
                let m = lanes_below(rem);
                let mut acc = [_mm256_setzero_si256(); 8];
                for g in 0..k4 {
                    group(&mut acc, g, c, Some(m));
                }
                store(&acc, c, rem);
            }
        }
    }};
}

/// [`crate::qpointwise::Kernel::tile`] on AVX2 with AVX-VNNI (`vpdpbusd` on 256 bits, VEX
/// encoded: Alder Lake and later, Gracemont N-series gateways, Sapphire Rapids, Zen 4): one
/// instruction per row for four input channels of 8 points.
///
/// # Safety
/// As [`crate::qpointwise::Kernel::tile`]; the CPU has AVX2, FMA and AVX-VNNI.
#[target_feature(enable = "avx2,fma,avxvnni")]
pub unsafe fn tile_avx_vnni(args: TileArgs) {
    tile_256!(args, 1, |xv: __m256i,
                        wg: *const i32,
                        acc: &mut [__m256i; 8]| {
        for (r, a) in acc.iter_mut().enumerate() {
            // SAFETY: `wg` is the group's 8 weight words (the tile's contract)
            let w = unsafe { *wg.add(r) };
            *a = _mm256_dpbusd_avx_epi32(*a, xv, _mm256_set1_epi32(w));
        }
    })
}

/// [`crate::qpointwise::Kernel::tile`] on plain AVX2 (Haswell to Comet Lake, the x86
/// gateways without VNNI): `vpmaddwd` on 16-bit lanes, exact. The input's words (four bytes
/// of four channels) split into channels 0, 2 (`and`) and 1, 3 (`psrlw`) as zero-extended
/// 16-bit pairs; each row's weights are two words of sign-extended 16-bit pairs, the same
/// channels' ([`crate::qpointwise::Kernel::lay_out_weights`]); two `vpmaddwd` and two adds a
/// row, 32 products (255 · 127 · 2 fits an i32 lane; `vpmaddubsw`, ONNX Runtime's AVX2
/// instruction, saturates at 16 bits on full-range int8 weights).
///
/// # Safety
/// As [`crate::qpointwise::Kernel::tile`], `weights` laid out for this kernel (`k4 · 16`
/// words); the CPU has AVX2 and FMA.
#[target_feature(enable = "avx2,fma")]
pub unsafe fn tile_avx2(args: TileArgs) {
    let low_bytes = _mm256_set1_epi16(0x00ff);
    tile_256!(args, 2, |xv: __m256i,
                        wg: *const i32,
                        acc: &mut [__m256i; 8]| {
        let even = _mm256_and_si256(xv, low_bytes);
        let odd = _mm256_srli_epi16::<8>(xv);
        for (r, a) in acc.iter_mut().enumerate() {
            // SAFETY: `wg` is the group's 16 weight words (the tile's contract)
            let (we, wo) = unsafe { (*wg.add(2 * r), *wg.add(2 * r + 1)) };
            let lo = _mm256_madd_epi16(even, _mm256_set1_epi32(we));
            let hi = _mm256_madd_epi16(odd, _mm256_set1_epi32(wo));
            *a = _mm256_add_epi32(*a, _mm256_add_epi32(lo, hi));
        }
    })
}
