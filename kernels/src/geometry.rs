//! Where a two-dimensional convolution reads ([`Geometry`]), and the layout our float kernels
//! read it in: each input plane copied once into a zero-padded scratch split into stride phases
//! (`plane[py][px][i][j] = padded[i·sy + py][j·sx + px]`, [`fill_phases`]), so that every tap
//! of every output row is one contiguous run of the scratch.

use crate::quant::U8Form;

/// Where the convolution reads: kernel size, strides, dilations and explicit padding, for one
/// concrete input plane size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Geometry {
    /// Input rows.
    pub h: usize,
    /// Input columns.
    pub w: usize,
    /// Kernel rows.
    pub kh: usize,
    /// Kernel columns.
    pub kw: usize,
    /// Vertical stride.
    pub sy: usize,
    /// Horizontal stride.
    pub sx: usize,
    /// Vertical dilation.
    pub dy: usize,
    /// Horizontal dilation.
    pub dx: usize,
    /// Zero rows above.
    pub pad_top: usize,
    /// Zero columns to the left.
    pub pad_left: usize,
    /// Zero rows below.
    pub pad_bottom: usize,
    /// Zero columns to the right.
    pub pad_right: usize,
}

impl Geometry {
    /// Rows and columns of the padded plane.
    pub fn padded(&self) -> (usize, usize) {
        (
            self.pad_top + self.h + self.pad_bottom,
            self.pad_left + self.w + self.pad_right,
        )
    }

    /// Output rows and columns.
    pub fn output(&self) -> (usize, usize) {
        let (hp, wp) = self.padded();
        let span_y = self.dy * (self.kh - 1) + 1;
        let span_x = self.dx * (self.kw - 1) + 1;
        (
            (hp.saturating_sub(span_y)) / self.sy + 1,
            (wp.saturating_sub(span_x)) / self.sx + 1,
        )
    }

    /// Rows and columns of one stride phase of the padded plane.
    pub fn phase(&self) -> (usize, usize) {
        let (hp, wp) = self.padded();
        (hp.div_ceil(self.sy), wp.div_ceil(self.sx))
    }

    /// Floats of scratch: every phase, plus slack so that a tap's run over all output rows
    /// (which ends up to one phase row past its phase) and full-vector reads past the run's
    /// end stay inside the buffer.
    pub fn scratch_len(&self) -> usize {
        let (hq, wq) = self.phase();
        self.sy * self.sx * hq * wq + wq + 64
    }

    /// Each tap's start in the scratch for output row 0 (tap order: row-major over the kernel).
    pub fn tap_offsets(&self) -> Vec<usize> {
        let (hq, wq) = self.phase();
        let mut offsets = Vec::with_capacity(self.kh * self.kw);
        for ky in 0..self.kh {
            for kx in 0..self.kw {
                let (ry, rx) = (ky * self.dy, kx * self.dx);
                let plane = (ry % self.sy) * self.sx + rx % self.sx;
                offsets.push(plane * hq * wq + (ry / self.sy) * wq + rx / self.sx);
            }
        }
        offsets
    }

    /// Which lanes of each 16-float vector over the output rows laid flat at the phase row
    /// stride are outputs: vector `v`, lane `l` is flat position `16v + l`, row `(16v + l) /
    /// wq`, column `(16v + l) % wq`, an output when the column is below the output width.
    /// One mask per vector, padded with empty masks to a multiple of four vectors (the flat
    /// kernel's block). Outputs of consecutive set lanes are consecutive in the output plane.
    pub fn flat_masks(&self) -> Vec<u16> {
        let ((ho, wo), (_, wq)) = (self.output(), self.phase());
        let len = (ho.max(1) - 1) * wq + wo;
        let mut masks = vec![0u16; len.div_ceil(64) * 4];
        for y in 0..ho {
            let (mut f, end) = (y * wq, y * wq + wo);
            while f < end {
                let (word, lo) = (f / 16, f % 16);
                let hi = (end - word * 16).min(16);
                masks[word] |= ((1u32 << hi) - (1u32 << lo)) as u16;
                f = word * 16 + hi;
            }
        }
        masks
    }

    /// Where tap `(ky, kx)` of output `(y, x)` reads the input: `(row, column)`, or `None` on
    /// padding (the textbook loop the kernels are tested against).
    pub fn input_at(
        &self,
        (y, x): (usize, usize),
        (ky, kx): (usize, usize),
    ) -> Option<(usize, usize)> {
        let iy = (y * self.sy + ky * self.dy).checked_sub(self.pad_top)?;
        let ix = (x * self.sx + kx * self.dx).checked_sub(self.pad_left)?;
        (iy < self.h && ix < self.w).then_some((iy, ix))
    }

    /// Whether the kernel fits the padded plane and every size and step is positive.
    pub fn valid(&self) -> bool {
        let (hp, wp) = self.padded();
        self.kh > 0
            && self.kw > 0
            && self.sy > 0
            && self.sx > 0
            && self.dy > 0
            && self.dx > 0
            && hp > self.dy * (self.kh - 1)
            && wp > self.dx * (self.kw - 1)
    }
}

/// How [`fill_phases`] turns input values into the scratch's floats.
pub trait PhaseValues<T: Copy> {
    /// `dst[i] = value(src[i])`.
    fn copy_row(&self, src: &[T], dst: &mut [f32]);
    /// `even[k] = value(src[2k])`, `odd[k] = value(src[2k + 1])` for every whole pair.
    fn copy_pairs(&self, src: &[T], even: &mut [f32], odd: &mut [f32]);
    /// One value.
    fn value(&self, v: T) -> f32;
}

/// f32 input, copied as is.
pub struct Plain;

impl PhaseValues<f32> for Plain {
    #[inline(always)]
    fn copy_row(&self, src: &[f32], dst: &mut [f32]) {
        dst.copy_from_slice(src)
    }

    #[inline(always)]
    fn copy_pairs(&self, src: &[f32], even: &mut [f32], odd: &mut [f32]) {
        // (vectorized shuffles)
        for ((e, o), pair) in even.iter_mut().zip(odd.iter_mut()).zip(src.chunks_exact(2)) {
            *e = pair[0];
            *o = pair[1];
        }
    }

    #[inline(always)]
    fn value(&self, v: f32) -> f32 {
        v
    }
}

/// f32 input through a quantize→dequantize pair's rounding (the kernels without an integer
/// variant).
pub struct Rounded(pub U8Form);

impl PhaseValues<f32> for Rounded {
    fn copy_row(&self, src: &[f32], dst: &mut [f32]) {
        for (d, &v) in dst.iter_mut().zip(src) {
            *d = self.value(v);
        }
    }

    fn copy_pairs(&self, src: &[f32], even: &mut [f32], odd: &mut [f32]) {
        for ((e, o), pair) in even.iter_mut().zip(odd.iter_mut()).zip(src.chunks_exact(2)) {
            *e = self.value(pair[0]);
            *o = self.value(pair[1]);
        }
    }

    fn value(&self, v: f32) -> f32 {
        self.0.dequantize(self.0.quantize(v))
    }
}

/// 8-bit input, dequantized (the values the pair it replaces would have written), in plain
/// Rust; the vector kernels have their own.
impl PhaseValues<u8> for U8Form {
    #[inline(always)]
    fn copy_row(&self, src: &[u8], dst: &mut [f32]) {
        self.dequantize_row(src, dst)
    }

    #[inline(always)]
    fn copy_pairs(&self, src: &[u8], even: &mut [f32], odd: &mut [f32]) {
        self.dequantize_pairs(&src[..src.len() / 2 * 2], even, odd)
    }

    #[inline(always)]
    fn value(&self, v: u8) -> f32 {
        self.dequantize(v)
    }
}

/// Copies one input plane into the zero-padded stride phases of `scratch` (through `values`).
/// Only interior positions are written; padding positions keep the zeros the scratch was
/// created with.
pub fn fill_phases<T: Copy>(
    g: &Geometry,
    input: &[T],
    scratch: &mut [f32],
    values: &impl PhaseValues<T>,
) {
    let (hq, wq) = g.phase();
    if g.sy == 1 && g.sx == 1 {
        let mut at = g.pad_top * wq + g.pad_left;
        for row in input.chunks_exact(g.w) {
            values.copy_row(row, &mut scratch[at..at + g.w]);
            at += wq;
        }
        return;
    }
    // padded row r = iy + pad_top is row i = r / sy of phase py = r % sy (kept incrementally:
    // no division per row)
    let (mut py, mut i) = (g.pad_top % g.sy, g.pad_top / g.sy);
    for row in input.chunks_exact(g.w) {
        let (this_py, this_i) = (py, i);
        py += 1;
        if py == g.sy {
            py = 0;
            i += 1;
        }
        let (py, i) = (this_py, this_i);
        if g.sx == 1 {
            let start = py * hq * wq + i * wq + g.pad_left;
            values.copy_row(row, &mut scratch[start..start + g.w]);
            continue;
        }
        if g.sx == 2 {
            // input column 2k lands in phase pl % 2 at k + pl / 2, column 2k + 1 in phase
            // (pl + 1) % 2 at k + (pl + 1) / 2; one pass over pairs
            let pl = g.pad_left;
            let phase_base = |px: usize| (py * 2 + px) * hq * wq + i * wq;
            let (even_at, odd_at) = (
                phase_base(pl % 2) + pl / 2,
                phase_base((pl + 1) % 2) + pl.div_ceil(2),
            );
            let (even, odd) = if even_at < odd_at {
                let (lo, hi) = scratch.split_at_mut(odd_at);
                (&mut lo[even_at..], hi)
            } else {
                let (lo, hi) = scratch.split_at_mut(even_at);
                (hi, &mut lo[odd_at..])
            };
            if g.w % 2 == 1 {
                even[g.w / 2] = values.value(row[g.w - 1]);
            }
            let n = g.w / 2;
            values.copy_pairs(&row[..2 * n], &mut even[..n], &mut odd[..n]);
            continue;
        }
        for px in 0..g.sx {
            // input columns ix with (ix + pad_left) % sx == px land at j = (ix + pad_left) / sx
            let first_ix = (px + g.sx - g.pad_left % g.sx) % g.sx;
            if first_ix >= g.w {
                continue;
            }
            let j0 = (first_ix + g.pad_left) / g.sx;
            let base = (py * g.sx + px) * hq * wq + i * wq + j0;
            for (dst, src) in scratch[base..]
                .iter_mut()
                .zip(row[first_ix..].iter().step_by(g.sx))
            {
                *dst = values.value(*src);
            }
        }
    }
}
