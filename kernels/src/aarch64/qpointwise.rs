//! The integer 1×1 kernels on aarch64, three levels of one tile (8 output channels × up to 48
//! points of i32 sums over words of four input channels, the epilogue of the other
//! instruction sets):
//!
//! - **i8mm** (`usdot`: u8 × i8, four products per lane): the x86 VNNI kernel's arithmetic;
//!   the input packed as plain bytes.
//! - **dotprod** (`sdot`: i8 × i8): the input packed with its bytes' top bit flipped
//!   (`q − 128` as i8, [`SIGNED`]), each row's sum started at `128 · Σ w` so that the total is
//!   the u8 product exactly (`Σ q·w = Σ (q − 128)·w + 128 · Σ w`).
//! - **neon** (Armv8.0, Cortex-A72): the same signed bytes, `smull`/`smlal` of two words into
//!   i16 lanes (two products of at most 128 · 127 each: no overflow with weights in ±127) and
//!   `sadalp` into i32, the weights in the vector and each point's word broadcast; the sums
//!   come out with rows in lanes and are transposed once per 4 points.
//!
//! The dot kernels keep 8 rows × 12 points (24 accumulators of the 32 registers) per step; a
//! tile's last partial vector of points is copied into a local buffer so that no read leaves
//! the caller's bounds. `sdot`/`usdot` are written as inline assembly: their `core::arch`
//! intrinsics are not stable.

use std::arch::aarch64::*;
use std::arch::asm;

use crate::quant::Requantizer;
use crate::tile::{TileArgs, TileOut, COLS, ROWS};

/// What the signed levels XOR into every packed word (`q − 128` as i8 in each byte).
pub const SIGNED: u32 = 0x8080_8080;

/// Which product a tile runs.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Level {
    /// `smull`/`smlal`/`sadalp` on signed bytes (every NEON core).
    Neon,
    /// `sdot` on signed bytes (Armv8.2 dotprod).
    Dot,
    /// `usdot` on plain bytes (Armv8.6 i8mm).
    UsDot,
}

impl Level {
    /// The XOR the pack applies for this level.
    pub fn flip(self) -> u32 {
        match self {
            Level::Neon | Level::Dot => SIGNED,
            Level::UsDot => 0,
        }
    }
}

/// Words of 16 points of four channels from the bytes `row(j)` gives for channel `4g + j`
/// (16 bytes each, zeros past `cin`), XORed with `flip`, stored at `dst`.
///
/// # Safety
/// `dst` writable for 16 words; the CPU has NEON.
#[inline(always)]
unsafe fn interleave16(rows: [uint8x16_t; 4], flip: u32, dst: *mut u32) {
    // SAFETY: this fn's caller upholds its contract (the CPU has NEON; `dst` covers 16 words).
    unsafe {
        let f = vreinterpretq_u8_u32(vdupq_n_u32(flip));
        let lo01 = vzip1q_u8(rows[0], rows[1]);
        let hi01 = vzip2q_u8(rows[0], rows[1]);
        let lo23 = vzip1q_u8(rows[2], rows[3]);
        let hi23 = vzip2q_u8(rows[2], rows[3]);
        let w = |a: uint8x16_t, b: uint8x16_t, hi: bool| {
            let (a, b) = (vreinterpretq_u16_u8(a), vreinterpretq_u16_u8(b));
            let z = if hi {
                vzip2q_u16(a, b)
            } else {
                vzip1q_u16(a, b)
            };
            veorq_u8(vreinterpretq_u8_u16(z), f)
        };
        vst1q_u8(dst as *mut u8, w(lo01, lo23, false));
        vst1q_u8(dst.add(4) as *mut u8, w(lo01, lo23, true));
        vst1q_u8(dst.add(8) as *mut u8, w(hi01, hi23, false));
        vst1q_u8(dst.add(12) as *mut u8, w(hi01, hi23, true));
    }
}

/// The pack both entry points share: 16 points at a time through `load(i)` (16 bytes of input
/// from value index `i`), the rest one word at a time through `byte(i)`.
///
/// # Safety
/// `packed.len() == ⌈cin/4⌉·points`; `load` reads only inside the input for full steps; the
/// CPU has NEON.
#[inline(always)]
unsafe fn interleave(
    cin: usize,
    points: usize,
    flip: u32,
    packed: &mut [u32],
    load: impl Fn(usize) -> uint8x16_t,
    byte: impl Fn(usize) -> u8,
) {
    // SAFETY: this fn's caller upholds its contract.
    unsafe {
        for g in 0..cin.div_ceil(4) {
            let channels = (cin - 4 * g).min(4);
            let dst = packed.as_mut_ptr().add(g * points);
            let mut p = 0;
            while p + 16 <= points {
                let mut rows = [vdupq_n_u8(0); 4];
                for (j, row) in rows.iter_mut().enumerate().take(channels) {
                    *row = load((4 * g + j) * points + p);
                }
                interleave16(rows, flip, dst.add(p));
                p += 16;
            }
            for p in p..points {
                let word = (0..channels)
                    .map(|j| (byte((4 * g + j) * points + p) as u32) << (8 * j))
                    .fold(0, |a, b| a | b);
                *dst.add(p) = word ^ flip;
            }
        }
    }
}

/// [`crate::scalar::qpointwise::pack_bytes`], each word XORed with `flip`.
///
/// # Safety
/// `input.len() == cin·points`, `packed.len() == ⌈cin/4⌉·points`; the CPU has NEON.
#[target_feature(enable = "neon")]
pub unsafe fn pack_bytes(input: &[u8], cin: usize, points: usize, flip: u32, packed: &mut [u32]) {
    let x = input.as_ptr();
    // SAFETY: full steps read 16 bytes from inside the input; the CPU has NEON.
    unsafe {
        interleave(
            cin,
            points,
            flip,
            packed,
            |i| vld1q_u8(x.add(i)),
            |i| input[i],
        )
    }
}

/// The pair's rounding of four values (NaN → zero point, ties to even, saturation to
/// `0..=255`), as [`crate::quant::quantize`].
#[inline(always)]
pub(crate) unsafe fn quantize4(v: float32x4_t, inv: float32x4_t, zp: float32x4_t) -> uint32x4_t {
    // SAFETY: NEON arithmetic only; the caller has NEON.
    unsafe {
        let r = vrndnq_f32(vmulq_f32(v, inv));
        let r = vreinterpretq_f32_u32(vandq_u32(
            vreinterpretq_u32_f32(r),
            vceqq_f32(r, r), // NaN → +0.0
        ));
        let t = vminnmq_f32(
            vmaxnmq_f32(vaddq_f32(r, zp), vdupq_n_f32(0.0)),
            vdupq_n_f32(255.0),
        );
        vcvtq_u32_f32(t)
    }
}

/// [`crate::scalar::qpointwise::pack`] (the pair's rounding on the way), each word XORed with
/// `flip`.
///
/// # Safety
/// `input.len() == cin·points`, `packed.len() == ⌈cin/4⌉·points`; the CPU has NEON.
#[target_feature(enable = "neon")]
pub unsafe fn pack(
    input: &[f32],
    cin: usize,
    points: usize,
    inv: f32,
    zp: f32,
    flip: u32,
    packed: &mut [u32],
) {
    let x = input.as_ptr();
    let (vinv, vzp) = (vdupq_n_f32(inv), vdupq_n_f32(zp));
    let load = |i: usize| {
        // SAFETY: full steps read 16 floats from inside the input; the CPU has NEON.
        unsafe {
            let q: [uint32x4_t; 4] =
                std::array::from_fn(|k| quantize4(vld1q_f32(x.add(i + 4 * k)), vinv, vzp));
            let h0 = vcombine_u16(vmovn_u32(q[0]), vmovn_u32(q[1]));
            let h1 = vcombine_u16(vmovn_u32(q[2]), vmovn_u32(q[3]));
            vcombine_u8(vmovn_u16(h0), vmovn_u16(h1))
        }
    };
    let byte = |i: usize| crate::quant::quantize(input[i], inv, zp, 0.0, 255.0) as u8;
    // SAFETY: as above.
    unsafe { interleave(cin, points, flip, packed, load, byte) }
}

/// One tile's weights as the dot kernels read them, and each row's start (`128 · Σ w` for
/// signed input, else 0) as two vectors of four rows.
///
/// # Safety
/// `weights` holds `k4 · 8` words; the CPU has NEON.
#[inline(always)]
unsafe fn row_starts(level: Level, k4: usize, weights: &[i32]) -> [int32x4_t; 2] {
    // SAFETY: `k4 · 8` words, read 4 at a time; NEON arithmetic (the caller has NEON).
    unsafe {
        let mut sums = [vdupq_n_s32(0); 2];
        if level.flip() == 0 {
            return sums;
        }
        let w = weights.as_ptr();
        for g in 0..k4 {
            for (h, s) in sums.iter_mut().enumerate() {
                let v = vreinterpretq_s8_s32(vld1q_s32(w.add(g * ROWS + 4 * h)));
                *s = vpadalq_s16(*s, vpaddlq_s8(v));
            }
        }
        sums.map(|s| vshlq_n_s32::<7>(s))
    }
}

/// `acc += x · w.4b[L]` (four products per lane), `sdot` or `usdot`; each names its extension
/// so that it assembles in any function (only a level's own tile reaches it at run time).
macro_rules! dot_lane {
    ($usdot:expr, $acc:expr, $x:expr, $w:expr, $lane:literal) => {
        if $usdot {
            asm!(
                ".arch_extension i8mm",
                concat!("usdot {a:v}.4s, {x:v}.16b, {w:v}.4b[", $lane, "]"),
                a = inout(vreg) $acc, x = in(vreg) $x, w = in(vreg) $w,
                options(pure, nomem, nostack, preserves_flags)
            )
        } else {
            asm!(
                ".arch_extension dotprod",
                concat!("sdot {a:v}.4s, {x:v}.16b, {w:v}.4b[", $lane, "]"),
                a = inout(vreg) $acc, x = in(vreg) $x, w = in(vreg) $w,
                options(pure, nomem, nostack, preserves_flags)
            )
        }
    };
}

/// `acc[r][v] += Σ_g dot4(x[g·stride + 4v..][..4], w[g·8 + r])` for `g` in `0..k4`: 8 rows ×
/// `V` vectors of 4 points.
///
/// # Safety
/// `x` readable for `4V` words at each `g·stride`, `w` for `k4 · 8` words; the CPU has
/// dotprod (and i8mm when `USDOT`).
#[inline(always)]
unsafe fn dot_steps<const V: usize, const USDOT: bool>(
    mut acc: [[int32x4_t; V]; ROWS],
    k4: usize,
    x: *const u32,
    stride: usize,
    w: *const i32,
) -> [[int32x4_t; V]; ROWS] {
    // SAFETY: this fn's caller upholds its contract.
    unsafe {
        for g in 0..k4 {
            let xg = x.add(g * stride);
            let xv: [int8x16_t; V] = std::array::from_fn(|v| vld1q_s8(xg.add(4 * v) as *const i8));
            let wl = vld1q_s8(w.add(g * ROWS) as *const i8);
            let wh = vld1q_s8(w.add(g * ROWS + 4) as *const i8);
            for v in 0..V {
                dot_lane!(USDOT, acc[0][v], xv[v], wl, "0");
                dot_lane!(USDOT, acc[1][v], xv[v], wl, "1");
                dot_lane!(USDOT, acc[2][v], xv[v], wl, "2");
                dot_lane!(USDOT, acc[3][v], xv[v], wl, "3");
                dot_lane!(USDOT, acc[4][v], xv[v], wh, "0");
                dot_lane!(USDOT, acc[5][v], xv[v], wh, "1");
                dot_lane!(USDOT, acc[6][v], xv[v], wh, "2");
                dot_lane!(USDOT, acc[7][v], xv[v], wh, "3");
            }
        }
        acc
    }
}

/// A requantizer's constants in registers: `1/s`, the zero point (i16 lanes) and the clamp's
/// bytes.
#[derive(Clone, Copy)]
pub(crate) struct Bytes {
    inv: float32x4_t,
    zp: int16x8_t,
    lo: uint8x16_t,
    hi: uint8x16_t,
}

impl Bytes {
    #[inline(always)]
    pub(crate) unsafe fn new(q: Requantizer) -> Bytes {
        // SAFETY: NEON moves; the caller has NEON.
        unsafe {
            Bytes {
                inv: vdupq_n_f32(q.inv_scale),
                zp: vdupq_n_s16(q.zero_point as i16),
                lo: vdupq_n_u8((q.lo as i32 + q.zero_point) as u8),
                hi: vdupq_n_u8((q.hi as i32 + q.zero_point) as u8),
            }
        }
    }

    /// [`Requantizer::apply`] on `V ≤ 4` vectors: their `4V` bytes first (the rest
    /// unspecified). The clamp is applied to the bytes: its bounds are whole numbers, so
    /// rounding and clamping commute. The zero point is added to the i16 lanes (saturating):
    /// a value past `i16` ends at 0 or 255 either way, where the plain rule puts it too. Same
    /// bytes as the plain rule.
    #[inline(always)]
    pub(crate) unsafe fn of<const V: usize>(self, f: [float32x4_t; V]) -> uint8x16_t {
        // SAFETY: NEON arithmetic only; the caller has NEON.
        unsafe {
            let i: [int32x4_t; V] = f.map(|v| vcvtnq_s32_f32(vmulq_f32(v, self.inv)));
            let h0 = vqmovn_s32(i[0]);
            let h0 = if V > 1 {
                vqmovn_high_s32(h0, i[1 % V])
            } else {
                vcombine_s16(h0, h0)
            };
            let b = vqmovun_s16(vqaddq_s16(h0, self.zp));
            let b = if V > 2 {
                let h1 = vqmovn_s32(i[2 % V]);
                let h1 = if V > 3 {
                    vqmovn_high_s32(h1, i[3 % V])
                } else {
                    vcombine_s16(h1, h1)
                };
                vqmovun_high_s16(b, vqaddq_s16(h1, self.zp))
            } else {
                vcombine_u8(b, b)
            };
            vminq_u8(vmaxq_u8(b, self.lo), self.hi)
        }
    }
}

/// Words per k-segment of a tile's last partial vector (copied to the stack).
const SEGMENT: usize = 256;

/// A tile's last partial vector of `rem < 4` points at `x` (words `g·stride`), copied to the
/// stack `SEGMENT` words of k at a time so that no read leaves the caller's columns; `steps(acc,
/// n, local, g0)` runs `n` steps over the copy (4 words a step) from step `g0`.
///
/// # Safety
/// `x` readable for `rem` words at each `g·stride`, `g < k4`.
#[inline(always)]
unsafe fn partial_vector<A>(
    mut acc: A,
    k4: usize,
    x: *const u32,
    stride: usize,
    rem: usize,
    steps: impl Fn(A, usize, *const u32, usize) -> A,
) -> A {
    let mut local = [0u32; 4 * SEGMENT];
    for g0 in (0..k4).step_by(SEGMENT) {
        let n = (k4 - g0).min(SEGMENT);
        for g in 0..n {
            // SAFETY: the caller's bounds; `local` holds 4 words per step.
            unsafe {
                std::ptr::copy_nonoverlapping(
                    x.add((g0 + g) * stride),
                    local.as_mut_ptr().add(4 * g),
                    rem,
                )
            };
        }
        acc = steps(acc, n, local.as_ptr(), g0);
    }
    acc
}

/// A tile's `scale` and `offset` per row, as two vectors of four rows each (rows past `rows`
/// zero).
#[derive(Clone, Copy)]
struct Affine {
    scale: [float32x4_t; 2],
    offset: [float32x4_t; 2],
}

impl Affine {
    #[inline(always)]
    unsafe fn new(scale: &[f32], offset: &[f32], rows: usize) -> Affine {
        let load = |v: &[f32]| {
            let mut padded = [0f32; ROWS];
            padded[..rows].copy_from_slice(&v[..rows]);
            // SAFETY: 8 values; the caller has NEON.
            unsafe {
                [
                    vld1q_f32(padded.as_ptr()),
                    vld1q_f32(padded.as_ptr().add(4)),
                ]
            }
        };
        Affine {
            scale: load(scale),
            offset: load(offset),
        }
    }
}

/// Where a tile's rows go, its constants in registers for the whole tile.
trait Rows: Copy {
    /// `V` vectors of one row's values at `at`; the last vector holds `n ≤ 4` outputs.
    ///
    /// # Safety
    /// The destination is writable for `4(V − 1) + n` values at `at`; the CPU has NEON.
    unsafe fn store<const V: usize>(self, f: [float32x4_t; V], at: usize, n: usize);
}

/// f32 values, clamped (to ±∞ without a clamp).
#[derive(Clone, Copy)]
struct FloatRows(*mut f32, float32x4_t, float32x4_t);

impl Rows for FloatRows {
    #[inline(always)]
    unsafe fn store<const V: usize>(self, f: [float32x4_t; V], at: usize, n: usize) {
        // SAFETY: the caller's bounds; NEON arithmetic.
        unsafe {
            let FloatRows(o, lo, hi) = self;
            let o = o.add(at);
            for (v, &x) in f.iter().enumerate() {
                let x = vminq_f32(vmaxq_f32(x, lo), hi);
                if v + 1 < V || n == 4 {
                    vst1q_f32(o.add(4 * v), x);
                } else {
                    let mut tmp = [0f32; 4];
                    vst1q_f32(tmp.as_mut_ptr(), x);
                    for (i, &t) in tmp.iter().enumerate().take(n) {
                        *o.add(4 * v + i) = t;
                    }
                }
            }
        }
    }
}

/// The bytes of a requantizer.
#[derive(Clone, Copy)]
struct ByteRows(*mut u8, Bytes);

impl Rows for ByteRows {
    #[inline(always)]
    unsafe fn store<const V: usize>(self, f: [float32x4_t; V], at: usize, n: usize) {
        // SAFETY: the caller's bounds; NEON arithmetic.
        unsafe {
            let ByteRows(o, q) = self;
            let o = o.add(at);
            let bytes = q.of(f);
            match (V, n) {
                (3, 4) => {
                    vst1_u8(o, vget_low_u8(bytes));
                    vst1q_lane_u32::<2>(o.add(8) as *mut u32, vreinterpretq_u32_u8(bytes));
                }
                (2, 4) => vst1_u8(o, vget_low_u8(bytes)),
                (1, 4) => vst1q_lane_u32::<0>(o as *mut u32, vreinterpretq_u32_u8(bytes)),
                _ => {
                    let mut tmp = [0u8; 16];
                    vst1q_u8(tmp.as_mut_ptr(), bytes);
                    for (i, &t) in tmp.iter().enumerate().take(4 * (V - 1) + n) {
                        *o.add(i) = t;
                    }
                }
            }
        }
    }
}

/// Row `R` of a tile (`R < 8`, a literal) from its `V` vectors of i32 sums: `sum · scale +
/// offset`, then the sink's store.
macro_rules! store_row {
    ($sink:expr, $affine:expr, $sums:expr, $r:literal, $at:expr, $n:expr) => {{
        let (s, b) = ($affine.scale[$r / 4], $affine.offset[$r / 4]);
        let b = vdupq_laneq_f32::<{ $r % 4 }>(b);
        let f = $sums.map(|a| vfmaq_laneq_f32::<{ $r % 4 }>(b, vcvtq_f32_s32(a), s));
        $sink.store(f, $at, $n);
    }};
}

/// The dot levels' tile, its sink chosen.
///
/// # Safety
/// As [`crate::qpointwise::Kernel::tile`]; the CPU has dotprod (and i8mm when `USDOT`).
#[allow(clippy::too_many_arguments)]
#[inline(always)]
unsafe fn dot_tile_to<const USDOT: bool, S: Rows>(
    level: Level,
    (k4, x, stride, weights, scale, offset, _, rows, cols, _): TileArgs,
    sink: S,
) {
    debug_assert!(weights.len() == k4 * ROWS && (1..=COLS).contains(&cols));
    // SAFETY: this fn's caller upholds its contract; every read below stays inside `x`'s
    // `cols` columns (the partial vector is copied) and every store inside the `rows × cols`.
    unsafe {
        let starts = row_starts(level, k4, weights);
        let init: [int32x4_t; ROWS] = [
            vdupq_laneq_s32::<0>(starts[0]),
            vdupq_laneq_s32::<1>(starts[0]),
            vdupq_laneq_s32::<2>(starts[0]),
            vdupq_laneq_s32::<3>(starts[0]),
            vdupq_laneq_s32::<0>(starts[1]),
            vdupq_laneq_s32::<1>(starts[1]),
            vdupq_laneq_s32::<2>(starts[1]),
            vdupq_laneq_s32::<3>(starts[1]),
        ];
        let w = weights.as_ptr();
        let affine = Affine::new(scale, offset, rows);
        // every row written out so that each index into `acc` is a constant (a loop to `rows`
        // would keep the accumulators in memory)
        macro_rules! finish {
            ($acc:expr, $c:expr, $n:expr) => {{
                let acc = &$acc;
                macro_rules! row {
                    ($r:literal) => {
                        if $r < rows {
                            store_row!(sink, affine, acc[$r], $r, $r * stride + $c, $n);
                        }
                    };
                }
                row!(0);
                row!(1);
                row!(2);
                row!(3);
                row!(4);
                row!(5);
                row!(6);
                row!(7);
            }};
        }
        macro_rules! run {
            ($v:literal, $c:expr) => {{
                let acc = dot_steps::<$v, USDOT>(init.map(|s| [s; $v]), k4, x.add($c), stride, w);
                finish!(acc, $c, 4);
            }};
        }
        let full = cols / 4;
        let mut c = 0;
        while c + 12 <= 4 * full {
            run!(3, c);
            c += 12;
        }
        match (4 * full - c) / 4 {
            2 => run!(2, c),
            1 => run!(1, c),
            _ => {}
        }
        let rem = cols - 4 * full;
        if rem > 0 {
            let c = 4 * full;
            let acc = partial_vector(
                init.map(|s| [s; 1]),
                k4,
                x.add(c),
                stride,
                rem,
                |a, n, l, g0| dot_steps::<1, USDOT>(a, n, l, 4, w.add(g0 * ROWS)),
            );
            finish!(acc, c, rem);
        }
    }
}

/// A tile's body, run with the sink of its output (so that the sink is chosen once a tile,
/// its constants in registers).
trait TileBody {
    /// # Safety
    /// As [`crate::qpointwise::Kernel::tile`], for the body's level.
    unsafe fn run<S: Rows>(self, args: TileArgs, sink: S);
}

/// Runs `body` with the sink of `args`' output.
///
/// # Safety
/// As [`TileBody::run`].
#[inline(always)]
unsafe fn with_sink<B: TileBody>(body: B, args: TileArgs) {
    // SAFETY: the caller's contract; NEON moves.
    unsafe {
        match args.6 {
            TileOut::F32(o) => {
                let (lo, hi) = args.9.unwrap_or((f32::NEG_INFINITY, f32::INFINITY));
                body.run(args, FloatRows(o, vdupq_n_f32(lo), vdupq_n_f32(hi)))
            }
            TileOut::U8(o, q) => body.run(args, ByteRows(o, Bytes::new(q))),
        }
    }
}

/// The dot levels' body (`sdot`, or `usdot` when `USDOT`).
struct DotBody<const USDOT: bool>(Level);

impl<const USDOT: bool> TileBody for DotBody<USDOT> {
    #[inline(always)]
    unsafe fn run<S: Rows>(self, args: TileArgs, sink: S) {
        // SAFETY: the caller's contract.
        unsafe { dot_tile_to::<USDOT, S>(self.0, args, sink) }
    }
}

/// [`crate::qpointwise::Kernel::tile`] with `sdot` (input packed signed).
///
/// # Safety
/// As [`crate::qpointwise::Kernel::tile`]; the CPU has NEON and dotprod.
#[target_feature(enable = "neon,dotprod")]
pub unsafe fn tile_dot(args: TileArgs) {
    // SAFETY: the caller's contract is the tile's.
    unsafe { with_sink(DotBody::<false>(Level::Dot), args) }
}

/// [`crate::qpointwise::Kernel::tile`] with `usdot` (input packed as plain bytes).
///
/// # Safety
/// As [`crate::qpointwise::Kernel::tile`]; the CPU has NEON, dotprod and i8mm.
#[target_feature(enable = "neon,dotprod,i8mm")]
pub unsafe fn tile_usdot(args: TileArgs) {
    // SAFETY: the caller's contract is the tile's.
    unsafe { with_sink(DotBody::<true>(Level::UsDot), args) }
}

/// The Armv8.0 steps for 4 points (`x`: 4 words at each `g·stride`): for each point, its word
/// broadcast against the weights of rows 0–3 and 4–7; two words' products summed in i16
/// (`smull` + `smlal`), then `sadalp` into `acc[p][h]` (lanes: row pairs × channel pairs).
///
/// # Safety
/// `x` readable for 4 words at each `g·stride`, `w` for `k4 · 8` words; the CPU has NEON.
#[inline(always)]
unsafe fn neon_steps(
    mut acc: [[int32x4_t; 4]; 4],
    k4: usize,
    x: *const u32,
    stride: usize,
    w: *const i32,
) -> [[int32x4_t; 4]; 4] {
    // SAFETY: this fn's caller upholds its contract.
    unsafe {
        let wv = |g: usize, h: usize| vld1q_s8(w.add(g * ROWS + 4 * h) as *const i8);
        let xv = |g: usize| vld1q_s32(x.add(g * stride) as *const i32);
        let mut g = 0;
        while g + 2 <= k4 {
            let (x0, x1) = (xv(g), xv(g + 1));
            let w0 = [wv(g, 0), wv(g, 1)];
            let w1 = [wv(g + 1, 0), wv(g + 1, 1)];
            macro_rules! point {
                ($p:literal) => {{
                    let d0 = vreinterpretq_s8_s32(vdupq_laneq_s32::<$p>(x0));
                    let d1 = vreinterpretq_s8_s32(vdupq_laneq_s32::<$p>(x1));
                    for h in 0..2 {
                        let lo = vmlal_s8(
                            vmull_s8(vget_low_s8(w0[h]), vget_low_s8(d0)),
                            vget_low_s8(w1[h]),
                            vget_low_s8(d1),
                        );
                        let hi = vmlal_high_s8(vmull_high_s8(w0[h], d0), w1[h], d1);
                        acc[$p][2 * h] = vpadalq_s16(acc[$p][2 * h], lo);
                        acc[$p][2 * h + 1] = vpadalq_s16(acc[$p][2 * h + 1], hi);
                    }
                }};
            }
            point!(0);
            point!(1);
            point!(2);
            point!(3);
            g += 2;
        }
        if g < k4 {
            let x0 = xv(g);
            let w0 = [wv(g, 0), wv(g, 1)];
            macro_rules! point {
                ($p:literal) => {{
                    let d0 = vreinterpretq_s8_s32(vdupq_laneq_s32::<$p>(x0));
                    for h in 0..2 {
                        let lo = vmull_s8(vget_low_s8(w0[h]), vget_low_s8(d0));
                        let hi = vmull_high_s8(w0[h], d0);
                        acc[$p][2 * h] = vpadalq_s16(acc[$p][2 * h], lo);
                        acc[$p][2 * h + 1] = vpadalq_s16(acc[$p][2 * h + 1], hi);
                    }
                }};
            }
            point!(0);
            point!(1);
            point!(2);
            point!(3);
        }
        acc
    }
}

/// The NEON steps' sums (`acc[p][q]`: point `p`, lanes (row 2q, channel pair 0), (2q, 1),
/// (2q + 1, 0), (2q + 1, 1)) as 8 rows × 4 points, each row's start added.
#[inline(always)]
unsafe fn rows_of(acc: [[int32x4_t; 4]; 4], starts: [int32x4_t; 2]) -> [int32x4_t; 8] {
    // SAFETY: NEON arithmetic only; the caller has NEON.
    unsafe {
        // per point, rows 0–3 and 4–7 in lanes
        let by_point: [[int32x4_t; 2]; 4] = acc.map(|a| {
            [
                vaddq_s32(vpaddq_s32(a[0], a[1]), starts[0]),
                vaddq_s32(vpaddq_s32(a[2], a[3]), starts[1]),
            ]
        });
        // transpose 4 points × 4 rows into 4 rows × 4 points, twice
        let half = |h: usize| {
            let (a, b, c, d) = (
                by_point[0][h],
                by_point[1][h],
                by_point[2][h],
                by_point[3][h],
            );
            let t0 = vreinterpretq_s64_s32(vtrn1q_s32(a, b));
            let t1 = vreinterpretq_s64_s32(vtrn2q_s32(a, b));
            let t2 = vreinterpretq_s64_s32(vtrn1q_s32(c, d));
            let t3 = vreinterpretq_s64_s32(vtrn2q_s32(c, d));
            [
                vreinterpretq_s32_s64(vtrn1q_s64(t0, t2)),
                vreinterpretq_s32_s64(vtrn1q_s64(t1, t3)),
                vreinterpretq_s32_s64(vtrn2q_s64(t0, t2)),
                vreinterpretq_s32_s64(vtrn2q_s64(t1, t3)),
            ]
        };
        let (lo, hi) = (half(0), half(1));
        [lo[0], lo[1], lo[2], lo[3], hi[0], hi[1], hi[2], hi[3]]
    }
}

/// The Armv8.0 body (`smull`/`smlal`/`sadalp`, input packed signed).
struct NeonBody;

impl TileBody for NeonBody {
    #[inline(always)]
    unsafe fn run<S: Rows>(
        self,
        (k4, x, stride, weights, scale, offset, _, rows, cols, _): TileArgs,
        sink: S,
    ) {
        debug_assert!(weights.len() == k4 * ROWS && (1..=COLS).contains(&cols));
        // SAFETY: this fn's caller upholds its contract; the partial vector is copied, so
        // reads stay inside `x`'s `cols` columns, and stores inside `rows × cols`.
        unsafe {
            let starts = row_starts(Level::Neon, k4, weights);
            let w = weights.as_ptr();
            let affine = Affine::new(scale, offset, rows);
            // acc[p][q]: point p, lanes (row 2q, pair 0), (2q, 1), (2q+1, 0), (2q+1, 1)
            let finish = |acc: [[int32x4_t; 4]; 4], c: usize, n: usize| {
                let sums = rows_of(acc, starts);
                // each row written out so that every index is a constant
                macro_rules! row {
                    ($r:literal) => {
                        if $r < rows {
                            store_row!(sink, affine, [sums[$r]], $r, $r * stride + c, n);
                        }
                    };
                }
                row!(0);
                row!(1);
                row!(2);
                row!(3);
                row!(4);
                row!(5);
                row!(6);
                row!(7);
            };
            let zero = [[vdupq_n_s32(0); 4]; 4];
            let full = cols / 4;
            for v in 0..full {
                let acc = neon_steps(zero, k4, x.add(4 * v), stride, w);
                finish(acc, 4 * v, 4);
            }
            let rem = cols - 4 * full;
            if rem > 0 {
                let c = 4 * full;
                let acc = partial_vector(zero, k4, x.add(c), stride, rem, |a, n, l, g0| {
                    neon_steps(a, n, l, 4, w.add(g0 * ROWS))
                });
                finish(acc, c, rem);
            }
        }
    }
}

/// [`crate::qpointwise::Kernel::tile`] on plain NEON (input packed signed).
///
/// # Safety
/// As [`crate::qpointwise::Kernel::tile`]; the CPU has NEON.
#[target_feature(enable = "neon")]
pub unsafe fn tile_neon(args: TileArgs) {
    // SAFETY: the caller's contract is the tile's.
    unsafe { with_sink(NeonBody, args) }
}
