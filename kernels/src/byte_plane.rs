//! The byte layout the integer convolutions read one input plane in ([`BytePlane`]): copied as
//! bytes into a scratch padded with the input's zero point (the byte of 0.0), its rows split
//! into the vertical stride's phases (padded row `r` is row `r / sy` of phase `r % sy`), each
//! row a multiple of the horizontal stride. Output `(y, x)` then reads, for kernel row `ky`,
//! the bytes `base(ky) + sx · x + kx · dx` of its output row: up to four taps of a kernel row
//! for 16 outputs lie in one 64-byte load, and one byte permute gathers each output's taps
//! into its 32-bit lane (a [`Group`]).

use crate::geometry::Geometry;

/// Bytes one vector load covers: a group's taps for 16 outputs must lie within it.
pub const WINDOW: usize = 64;

/// Up to four taps of one kernel row, read by one load and one permute.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Group {
    /// Where its load starts in the scratch, for output 0 (flat or row-wise).
    pub base: usize,
    /// Output lane `l`'s byte `j` is the load's byte `index[4l + j]` (`sx · l + j · dx`);
    /// bytes past the group's taps read byte 0, against a zero weight.
    pub index: Vec<u8>,
    /// Its taps: the first (row-major over the kernel) and how many (1 to 4).
    pub taps: (usize, usize),
}

/// The byte scratch one input plane is copied into (padded with the input's zero point, rows
/// split by vertical stride phase) and the groups that read it: shared by the integer
/// depthwise kernel (outputs laid flat) and the integer im2col gather (output rows one by one).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct BytePlane {
    /// The convolution's geometry.
    pub geometry: Geometry,
    /// Bytes per padded row (a multiple of `sx`).
    pub row: usize,
    /// Rows per vertical phase.
    pub phase_rows: usize,
    /// Bytes of scratch: every phase plus the reads past it of the last outputs' lanes.
    pub len: usize,
    /// Each kernel row's taps in groups of up to four, row-major.
    pub groups: Vec<Group>,
    /// The geometry's [`Geometry::flat_masks`] (the depthwise kernel's output lanes), kept
    /// so that runs do not recompute them.
    pub flat: Vec<u16>,
    /// The padding byte: the input's zero point.
    pub zero: u8,
    /// Outputs of one plane (`ho · wo`).
    pub outputs: usize,
}

impl BytePlane {
    /// The layout for `geometry` with padding byte `zero`, or `None` when a kernel row's taps
    /// for 16 outputs do not fit one load.
    pub fn new(geometry: Geometry, zero: u8) -> Option<BytePlane> {
        let g = geometry;
        if g.sx * 15 + 3.min(g.kw - 1) * g.dx >= WINDOW {
            return None;
        }
        let (hp, wp) = g.padded();
        let row = wp.next_multiple_of(g.sx);
        let phase_rows = hp.div_ceil(g.sy);
        let mut groups = Vec::new();
        for ky in 0..g.kh {
            let ry = ky * g.dy;
            let row_base = (ry % g.sy) * phase_rows * row + (ry / g.sy) * row;
            for kx0 in (0..g.kw).step_by(4) {
                let n = (g.kw - kx0).min(4);
                let mut index = vec![0u8; WINDOW];
                for l in 0..16 {
                    for j in 0..n {
                        index[4 * l + j] = (g.sx * l + j * g.dx) as u8;
                    }
                }
                groups.push(Group {
                    base: row_base + kx0 * g.dx,
                    index,
                    taps: (ky * g.kw + kx0, n),
                });
            }
        }
        let (ho, wo) = g.output();
        let last_base = groups.iter().map(|gr| gr.base).max().unwrap_or(0);
        let flat = g.flat_masks();
        let flat_reads = g.sx * 16 * flat.len().saturating_sub(1);
        let row_reads = ho.saturating_sub(1) * row + g.sx * 16 * wo.div_ceil(16).saturating_sub(1);
        let len = (last_base + flat_reads.max(row_reads) + WINDOW).max(g.sy * phase_rows * row);
        Some(BytePlane {
            geometry,
            row,
            phase_rows,
            len,
            groups,
            flat,
            zero,
            outputs: ho * wo,
        })
    }

    /// A scratch for the fills: every byte the padding's.
    pub fn scratch(&self) -> Vec<u8> {
        vec![self.zero; self.len]
    }

    /// Where input row `iy` starts in the scratch.
    pub fn row_start(&self, iy: usize) -> usize {
        let g = &self.geometry;
        let r = iy + g.pad_top;
        (r % g.sy) * self.phase_rows * self.row + (r / g.sy) * self.row + g.pad_left
    }

    /// `[outputs][groups]` words of four int8 weights (little-endian bytes, zero past each
    /// group's taps) from `q`, `[outputs][kh·kw]` per input plane.
    pub fn words(&self, q: &[i8]) -> Vec<i32> {
        let taps = self.geometry.kh * self.geometry.kw;
        q.chunks_exact(taps)
            .flat_map(|qc| {
                self.groups.iter().map(move |gr| {
                    let (first, n) = gr.taps;
                    (0..n).fold(0u32, |w, j| w | ((qc[first + j] as u8 as u32) << (8 * j))) as i32
                })
            })
            .collect()
    }
}
