//! The shape of the 1×1 (matrix) micro-kernels' tile and where a tile's outputs go: shared by
//! the float and the integer products and every instruction set's version of them.

use crate::quant::Requantizer;

/// Output channels per micro-kernel tile.
pub const ROWS: usize = 8;
/// Output points per micro-kernel call (three 16-lane vectors).
pub const COLS: usize = 48;

/// Where one tile's outputs go (row `r`, column `c` at `r·stride + c`): f32 values (then
/// clamped), or bytes (clamped and quantized by the requantizer).
#[derive(Debug, Clone, Copy)]
pub enum TileOut {
    /// f32 outputs.
    F32(*mut f32),
    /// 8-bit outputs of a form.
    U8(*mut u8, Requantizer),
}

impl TileOut {
    /// The same destination `n` values further on.
    pub fn at(self, n: usize) -> TileOut {
        match self {
            TileOut::F32(o) => TileOut::F32(o.wrapping_add(n)),
            TileOut::U8(o, q) => TileOut::U8(o.wrapping_add(n), q),
        }
    }
}

/// An integer tile's arguments, as [`crate::qpointwise::Kernel::tile`] takes them: `k4, x,
/// stride, weights, scale, offset, out, rows, cols, clamp`.
pub type TileArgs<'a> = (
    usize,
    *const u32,
    usize,
    &'a [i32],
    &'a [f32],
    &'a [f32],
    TileOut,
    usize,
    usize,
    Option<(f32, f32)>,
);
