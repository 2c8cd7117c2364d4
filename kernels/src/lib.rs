//! # edge-kernels
//!
//! The CPU kernels of edgefleet's `cpu` engine, over slices and pointers: no graph types, no
//! tract. The runtime's ops (`edge_runtime::engine`) match nodes in tract's graph, decide what
//! to substitute, hold the weights and split work over threads; the arithmetic is here.
//!
//! The instruction set is detected once per process ([`Isa::host`], capped by `EDGE_ISA` to
//! measure a lower level on the same machine). Each family of kernels has a `Kernel` token
//! that only its `available(isa)`/`best(isa)` constructors make, so a kernel value proves the
//! CPU has its features:
//!
//! | module | what | x86-64 | aarch64 | every target |
//! |---|---|---|---|---|
//! | [`depthwise`] | depthwise conv plane over stride phases, f32 or 8-bit out | AVX2+FMA rows, AVX-512 flat plane | NEON rows | scalar |
//! | [`pointwise`] | f32 8×48 tile (1×1 conv, im2col product) | AVX-512 | – | scalar |
//! | [`qpointwise`] | int8 pack + 8×48 tile + one-point product | AVX-512 VNNI | – | scalar |
//! | [`qdepthwise`] | int8 depthwise plane and im2col gather over a [`BytePlane`] | AVX-512 VNNI+VBMI | – | – |
//! | [`elementwise`] | quantize→dequantize pair, dynamic quantization, channel affine | AVX-512, AVX2 | (compiled loops) | scalar |
//! | [`convert`] | rows of bytes ↔ f32 in a pair's form | AVX-512 | – | scalar |
//!
//! The code per instruction set lives in [`scalar`], [`x86_64`] and [`aarch64`]; the family
//! modules above choose among them. Shared data: [`Geometry`] and the phase layout
//! ([`geometry`]), the byte layout of the integer kernels ([`byte_plane`]), the quantized
//! arithmetic every vector kernel is held to bit for bit ([`quant`]). Every kernel is tested
//! against its scalar version on every instruction-set level this machine has
//! ([`Isa::levels`]); CI runs the same tests for aarch64 and armv7 under qemu.
//!
//! [`parallel`] holds the threads a multi-threaded run splits its parts over (helpers that spin
//! while a run is on): scheduling, not arithmetic, but the kernels' callers are its only users.

#![deny(missing_docs)]

/// A per-channel loop over output rows around a row kernel, compiled with its features so
/// the row kernel inlines.
#[allow(unused_macros)] // no SIMD kernel on some targets (armv7)
macro_rules! plane_fn {
    ($name:ident, $row:ident, $features:literal) => {
        /// One channel plane, row by row (output row `y` reads the taps `y · in_row` further on).
        ///
        /// # Safety
        /// Each `taps[t]` is readable for `(rows − 1)·in_row + wo` floats plus a vector,
        /// `out.len() = rows · wo`, and the CPU has this function's features.
        #[target_feature(enable = $features)]
        #[allow(clippy::too_many_arguments)]
        pub unsafe fn $name(
            out: &mut [f32],
            wo: usize,
            in_row: usize,
            taps: &[*const f32],
            weights: &[f32],
            bias: f32,
            clamp: Option<(f32, f32)>,
        ) {
            for (y, row) in out.chunks_exact_mut(wo).enumerate() {
                // SAFETY: this fn's caller upholds its contract (the CPU has the target features; pointers cover the lengths it names).
                unsafe { $row(row, taps, y * in_row, weights, bias, clamp) }
            }
        }
    };
}
#[allow(unused_imports)]
pub(crate) use plane_fn;

pub mod byte_plane;
pub mod geometry;
pub mod isa;
pub mod marker;
pub mod parallel;
pub mod quant;
pub mod tile;
pub mod trees;

#[cfg(target_arch = "aarch64")]
pub mod aarch64;
pub mod scalar;
#[cfg(target_arch = "x86_64")]
pub mod x86_64;

pub mod convert;
pub mod depthwise;
pub mod elementwise;
pub mod pointwise;
pub mod pool;
pub mod qdepthwise;
pub mod qpointwise;

#[doc(hidden)]
pub mod testing;

pub use byte_plane::BytePlane;
pub use geometry::Geometry;
pub use isa::{Feature, Isa};
pub use quant::{Pair, Requantizer, U8Form};
