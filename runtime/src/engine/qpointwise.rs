//! Integer 1×1 convolution for QDQ models on AVX-512 VNNI: where a channel-first 1×1
//! convolution reads a quantize→dequantize pair ([`super::fake_quant`]) and its weights are
//! int8 values times a per-channel scale (what `DequantizeLinear` of int8 weights leaves after
//! tract folds it), the products are computed on the 8-bit values instead of their float
//! images, four multiply-adds per lane per instruction (`vpdpbusd`: u8 × i8 summed into i32).
//!
//! Exact rewrite, not an approximation: with `x̂ = s_x (q_x − z_x)` and `W = s_w[o] q_w`,
//! `bias + Σ_i W x̂ = bias − s_x s_w[o] z_x Σ_i q_w + s_x s_w[o] Σ_i q_w q_x`; the integer sum
//! is exact, so outputs differ from the float path only by float rounding. The weights' integer
//! values are recovered from the folded float constant at load (each row is checked to be an
//! exact multiple of one scale, with |q| ≤ 127; a row that is not keeps the whole layer on the
//! float op).
//!
//! Per call the input is quantized (the pair's rounding: ties to even, saturation, NaN → zero
//! point) straight into VNNI order, `[⌈I/4⌉][points]` words of four input channels, in a scratch
//! kept per thread; when the pair has no other reader it is dropped from the graph, so that
//! pass replaces it. The micro-kernel is the float one's shape: 8 output channels × 48 points
//! of i32 sums in 24 registers, weights broadcast four bytes at a time from a copy packed at
//! load, then `sum · s_x s_w[o] + offset[o]`, the clamp and one store per vector.

use std::cell::RefCell;

use tract_onnx::tract_hir::internal::*;

use super::pointwise::{Channels, Conv1x1, SharedOut, COLS, ROWS};
use super::u8_activations::{Dst, Requantizer, Src, U8Form};
use super::Floats;

/// The whole output: f32, or the 8-bit values of a form.
enum Out {
    F32(SharedOut<f32>),
    U8(SharedOut<u8>, Requantizer),
}

impl Out {
    fn at(&self, n: usize) -> TileOut {
        match self {
            Out::F32(o) => TileOut::F32(o.at(n)),
            Out::U8(o, r) => TileOut::U8(o.at(n), *r),
        }
    }
}

/// Where one tile's outputs go (row `r`, column `c` at `r·stride + c`): f32 values (then
/// clamped), or bytes (clamped and quantized by the requantizer).
#[derive(Debug, Clone, Copy)]
pub(crate) enum TileOut {
    F32(*mut f32),
    U8(*mut u8, Requantizer),
}

/// The integer op for `conv` reading `input`, with the outlet it should read (the pair's input
/// when the pair has no other reader), or `None` when the input is not quantized, the weights
/// are not int8 multiples or the CPU lacks AVX-512 VNNI.
pub(crate) fn integer_variant(
    model: &TypedModel,
    input: OutletId,
    conv: &Conv1x1,
) -> TractResult<Option<(OutletId, QPointwise)>> {
    if !Kernel::best().is_vector() {
        return Ok(None);
    }
    let Some((read_from, form)) = super::fake_quant::quantizing_read(model, input)? else {
        return Ok(None);
    };
    let Some((qw, sw)) = integer_rows(&conv.weights, conv.shape.cout, conv.shape.cin) else {
        return Ok(None);
    };
    let op = QPointwise::new(conv, &qw, &sw, form)?;
    Ok(Some((read_from, op)))
}

/// The weights `[O, I]` as int8 values times one scale per row, when every row is exactly
/// that (to float rounding): `(q [O, I], scale [O])`.
pub fn integer_rows(weights: &[f32], cout: usize, cin: usize) -> Option<(Vec<i8>, Vec<f32>)> {
    let mut q = vec![0i8; cout * cin];
    let mut scales = vec![1f32; cout];
    for o in 0..cout {
        let row = &weights[o * cin..][..cin];
        let top = row.iter().fold(0f32, |m, v| m.max(v.abs()));
        if !top.is_finite() {
            return None;
        }
        if top == 0.0 {
            continue;
        }
        // the row's largest |q| is unknown (127 for a symmetric quantizer's largest weight,
        // less when the scale came from elsewhere): the first that makes every value whole
        let whole = |v: f32, s: f32| {
            let r = v / s;
            (r - r.round()).abs() <= 1e-4 * r.round().abs().max(1.0)
        };
        let s = (1..=127u8)
            .rev()
            .map(|m| top / m as f32)
            .find(|&s| row.iter().all(|&v| whole(v, s)))?;
        for (q, &v) in q[o * cin..][..cin].iter_mut().zip(row) {
            *q = (v / s).round() as i8;
        }
        scales[o] = s;
    }
    Some((q, scales))
}

/// The integer 1×1 convolution op: input `[I, S…]` or `[1, I, S…]`, f32 (quantized inside) or
/// already the 8-bit values of its quantizer; output `[O, S…]`, f32 or 8-bit
/// ([`super::u8_activations`] links it to its neighbours).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct QPointwise {
    shape: Channels,
    /// `[⌈O/8⌉][⌈I/4⌉][8]` words of four int8 weights (input channels `4k..4k+4`), zeros past
    /// `O` and `I`.
    packed: Vec<i32>,
    /// `[⌈O/8⌉·8]`: `s_x · s_w[o]`.
    scale: Floats,
    /// `[⌈O/8⌉·8]`: `bias[o] − s_x s_w[o] z_x Σ_i q_w[o, i]`.
    offset: Floats,
    /// The input quantizer (the pair in front of the op).
    input: U8Form,
    /// The input arrives as its 8-bit values rather than f32.
    input_u8: bool,
    /// The outputs are written as this form's 8-bit values rather than f32.
    output: Option<U8Form>,
    /// Outputs clamped to `[lo, hi]` (f32 bits): a fused ReLU or ReLU6.
    clamp: Option<(u32, u32)>,
    kind: Kernel,
}

impl QPointwise {
    /// The op for `conv` with its weights as `qw · sw` and its input quantized by `quant`.
    pub(crate) fn new(conv: &Conv1x1, qw: &[i8], sw: &[f32], quant: U8Form) -> TractResult<Self> {
        QPointwise::from_parts(conv.shape, qw, sw, &conv.bias, conv.clamp, quant)
    }

    /// The op for `shape` with weights `qw · sw` (`[O, I]`, `[O]`), `bias` and `clamp`, its
    /// input quantized by `quant`.
    pub(crate) fn from_parts(
        shape: Channels,
        qw: &[i8],
        sw: &[f32],
        bias: &[f32],
        clamp: Option<(f32, f32)>,
        quant: U8Form,
    ) -> TractResult<Self> {
        let Channels { cin, cout, .. } = shape;
        ensure!(cin > 0 && cout > 0 && qw.len() == cin * cout && sw.len() == cout);
        let (tiles, k4) = (cout.div_ceil(ROWS), cin.div_ceil(4));
        let mut bytes = vec![0i8; tiles * k4 * ROWS * 4];
        for o in 0..cout {
            let (t, r) = (o / ROWS, o % ROWS);
            for i in 0..cin {
                bytes[((t * k4 + i / 4) * ROWS + r) * 4 + i % 4] = qw[o * cin + i];
            }
        }
        let packed = bytes
            .chunks_exact(4)
            .map(|b| i32::from_le_bytes([b[0] as u8, b[1] as u8, b[2] as u8, b[3] as u8]))
            .collect();
        let mut scale = vec![0f32; tiles * ROWS];
        let mut offset = vec![0f32; tiles * ROWS];
        for o in 0..cout {
            let sum: i32 = qw[o * cin..][..cin].iter().map(|&v| v as i32).sum();
            scale[o] = quant.scale() * sw[o];
            offset[o] = bias[o] - scale[o] * quant.zero_point() * sum as f32;
        }
        ensure!(bias.len() == cout);
        Ok(QPointwise {
            shape,
            packed,
            scale: Floats(scale),
            offset: Floats(offset),
            input: quant,
            input_u8: false,
            output: None,
            clamp: clamp.map(|(lo, hi)| (lo.to_bits(), hi.to_bits())),
            kind: Kernel::best(),
        })
    }

    /// Its input and output channels.
    pub(crate) fn channels(&self) -> Channels {
        self.shape
    }

    /// The quantizer this op applies to an f32 input (`None` once it reads 8-bit values).
    pub(crate) fn quantizes_f32_input(&self) -> Option<U8Form> {
        (!self.input_u8).then_some(self.input)
    }

    /// The op reading its quantizer's 8-bit values instead of f32.
    pub(crate) fn with_u8_input(&self) -> QPointwise {
        QPointwise {
            input_u8: true,
            ..self.clone()
        }
    }

    /// The form of its 8-bit output, `None` when it writes f32.
    pub(crate) fn output_form(&self) -> Option<U8Form> {
        self.output
    }

    /// The op writing `form`'s 8-bit values of its outputs instead of f32.
    pub(crate) fn with_output(&self, form: U8Form) -> QPointwise {
        QPointwise {
            output: Some(form),
            ..self.clone()
        }
    }

    /// The convolution over `points` points per channel with `kind`'s kernels. An 8-bit
    /// input must be the quantizer's values; an 8-bit output is the op's output form's.
    pub(crate) fn run(
        &self,
        kind: Kernel,
        input: Src,
        points: usize,
        output: Dst,
    ) -> TractResult<()> {
        let Channels { cin, cout, .. } = self.shape;
        ensure!(input.len() == cin * points && output.len() == cout * points);
        ensure!(
            matches!(input, Src::U8(_)) == self.input_u8,
            "input type is not the op's"
        );
        ensure!(
            matches!(output, Dst::U8(_)) == self.output.is_some(),
            "output type is not the op's"
        );
        let k4 = cin.div_ceil(4);
        thread_local! {
            /// The quantized input in VNNI order, kept between calls (sized by the largest).
            static PACKED: RefCell<Vec<u32>> = const { RefCell::new(Vec::new()) };
        }
        PACKED.with(|cell| {
            let mut packed = cell.borrow_mut();
            packed.resize(k4 * points, 0);
            let (inv, zp) = (self.input.inv_scale(), self.input.zero_point());
            // SAFETY: the CPU has `kind`'s features (checked when it was chosen); the sizes
            // are the ones `pack` expects.
            match input {
                // SAFETY: the CPU has `kind`'s features (checked when it was chosen); the sizes are the ones `pack` expects.
                Src::F32(x) => unsafe { kind.pack(x, cin, points, inv, zp, &mut packed) },
                // SAFETY: the CPU has `kind`'s features (checked when it was chosen); the sizes are the ones `pack_bytes` expects.
                Src::U8(x) => unsafe { kind.pack_bytes(x, cin, points, &mut packed) },
            }
            self.multiply_with(kind, &packed, points, output)
        })
    }

    /// The product of input already in VNNI order (`packed`: `[⌈I/4⌉][points]` words) into
    /// `output` (`[O, points]`), on the op's kernel.
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    pub(crate) fn multiply(&self, packed: &[u32], points: usize, output: Dst) -> TractResult<()> {
        let k4 = self.shape.cin.div_ceil(4);
        ensure!(packed.len() == k4 * points && output.len() == self.shape.cout * points);
        ensure!(
            matches!(output, Dst::U8(_)) == self.output.is_some(),
            "output type is not the op's"
        );
        self.multiply_with(self.kind, packed, points, output)
    }

    fn multiply_with(
        &self,
        kind: Kernel,
        packed: &[u32],
        points: usize,
        output: Dst,
    ) -> TractResult<()> {
        let (cout, k4) = (self.shape.cout, self.shape.cin.div_ceil(4));
        let clamp = self
            .clamp
            .map(|(lo, hi)| (f32::from_bits(lo), f32::from_bits(hi)));
        let out = match (output, self.output) {
            (Dst::F32(o), _) => Out::F32(SharedOut(o.as_mut_ptr())),
            (Dst::U8(o), Some(form)) => Out::U8(SharedOut(o.as_mut_ptr()), form.requantizer(clamp)),
            (Dst::U8(_), None) => bail!("8-bit output without a form"),
        };
        #[cfg(target_arch = "x86_64")]
        if points == 1 && kind == Kernel::Vnni {
            // one point (a classifier's matrix–vector product, a squeeze-excite 1×1): the
            // tile would use one lane in 48; this kernel runs across output channels instead
            // SAFETY: `packed` holds `k4` words, `out` every output (checked in `run`); the
            // CPU has the kernel's features.
            unsafe {
                x86::gemv(
                    &packed[..k4],
                    &self.packed,
                    (&self.scale.0, &self.offset.0),
                    out.at(0),
                    cout,
                    clamp,
                )
            };
            return Ok(());
        }
        self.shape.for_each_tile(points, 4 * k4, |t, c0, cols| {
            let rows = ROWS.min(cout - t * ROWS);
            let weights = &self.packed[t * k4 * ROWS..][..k4 * ROWS];
            let scale = &self.scale.0[t * ROWS..][..ROWS];
            let offset = &self.offset.0[t * ROWS..][..ROWS];
            // SAFETY: rows `t·8..t·8 + rows` of the output belong to this tile alone; the reads
            // stay inside `packed` (`cols` words from `c0` in each of `k4` rows); the CPU has
            // `kind`'s features.
            unsafe {
                kind.tile(
                    k4,
                    packed.as_ptr().add(c0),
                    points,
                    weights,
                    (scale, offset),
                    out.at(t * ROWS * points + c0),
                    rows,
                    cols,
                    clamp,
                )
            }
        })
    }
}

/// The quantize-and-pack pass and the micro-kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kernel {
    /// Plain Rust, any target (the reference).
    Scalar,
    /// AVX-512F with VNNI (`vpdpbusd`).
    #[cfg(target_arch = "x86_64")]
    Vnni,
}

impl Kernel {
    /// The fastest kernel this CPU runs.
    pub fn best() -> Kernel {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx512bw")
            && std::arch::is_x86_feature_detected!("avx512vl")
            && std::arch::is_x86_feature_detected!("avx512vnni")
        {
            return Kernel::Vnni;
        }
        Kernel::Scalar
    }

    fn is_vector(self) -> bool {
        self != Kernel::Scalar
    }

    /// `packed[g·points + p]` = the four quantized values of input channels `4g..4g+4` at
    /// point `p`, one byte each, low byte first (zero past `cin`).
    ///
    /// # Safety
    /// `input.len() == cin·points`, `packed.len() == ⌈cin/4⌉·points`; the CPU must have this
    /// kernel's features.
    unsafe fn pack(
        self,
        input: &[f32],
        cin: usize,
        points: usize,
        inv: f32,
        zp: f32,
        packed: &mut [u32],
    ) {
        debug_assert!(input.len() == cin * points && packed.len() == cin.div_ceil(4) * points);
        match self {
            Kernel::Scalar => pack_scalar(input, cin, points, inv, zp, packed),
            #[cfg(target_arch = "x86_64")]
            // SAFETY: Kernel::Vnni is chosen only where the CPU has AVX-512 VNNI; the lengths are asserted above.
            Kernel::Vnni => unsafe { x86::pack(input, cin, points, inv, zp, packed) },
        }
    }

    /// [`Kernel::pack`] for values already quantized: `input` holds the 8-bit values.
    ///
    /// # Safety
    /// As [`Kernel::pack`].
    unsafe fn pack_bytes(self, input: &[u8], cin: usize, points: usize, packed: &mut [u32]) {
        debug_assert!(input.len() == cin * points && packed.len() == cin.div_ceil(4) * points);
        match self {
            Kernel::Scalar => {
                for (g, row) in packed.chunks_exact_mut(points).enumerate() {
                    for (p, word) in row.iter_mut().enumerate() {
                        *word = (0..4)
                            .filter(|j| 4 * g + j < cin)
                            .map(|j| (input[(4 * g + j) * points + p] as u32) << (8 * j))
                            .fold(0, |a, b| a | b);
                    }
                }
            }
            #[cfg(target_arch = "x86_64")]
            // SAFETY: Kernel::Vnni is chosen only where the CPU has AVX-512 VNNI; `packed` holds cin/4 words per point.
            Kernel::Vnni => unsafe { x86::pack_bytes(input, cin, points, packed) },
        }
    }

    /// `out[r·stride + c] = clamp(Σ_g dot4(x[g·stride + c], w[g·8 + r]) · scale[r] +
    /// offset[r])` for `r < rows`, `c < cols` (as f32 or in the output's 8-bit form).
    ///
    /// # Safety
    /// `x` readable at `g·stride + c`, `out` writable at `r·stride + c` for those indices;
    /// `rows ≤ 8`, `cols ≤ 48`; the CPU must have this kernel's features.
    #[allow(clippy::too_many_arguments)]
    unsafe fn tile(
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
        debug_assert!(weights.len() == k4 * ROWS && rows <= ROWS && cols <= COLS);
        // SAFETY: the kernel variant exists only where the CPU has its features (chosen once at load); the slices are the plan's sizes.
        unsafe {
            match self {
                Kernel::Scalar => {
                    for r in 0..rows {
                        for c in 0..cols {
                            let mut acc = 0i32;
                            for g in 0..k4 {
                                let xs = (*x.add(g * stride + c)).to_le_bytes();
                                let ws = weights[g * ROWS + r].to_le_bytes();
                                for (a, b) in xs.iter().zip(ws) {
                                    acc += *a as i32 * b as i8 as i32;
                                }
                            }
                            let mut v = acc as f32 * scale[r] + offset[r];
                            if let Some((lo, hi)) = clamp {
                                v = v.max(lo).min(hi);
                            }
                            match out {
                                TileOut::F32(o) => *o.add(r * stride + c) = v,
                                TileOut::U8(o, q) => *o.add(r * stride + c) = q.apply(v),
                            }
                        }
                    }
                }
                #[cfg(target_arch = "x86_64")]
                Kernel::Vnni => {
                    let args = (
                        k4, x, stride, weights, scale, offset, out, rows, cols, clamp,
                    );
                    match cols.div_ceil(16) {
                        3 => x86::tile::<3>(args),
                        2 => x86::tile::<2>(args),
                        _ => x86::tile::<1>(args),
                    }
                }
            }
        }
    }
}

/// The pair's quantize step for one value, in unsigned terms (ties to even, NaN → zero point).
fn quantize(v: f32, inv: f32, zp: f32) -> u32 {
    super::fake_quant::quantize(v, inv, zp, 0.0, 255.0) as u32
}

fn pack_scalar(input: &[f32], cin: usize, points: usize, inv: f32, zp: f32, packed: &mut [u32]) {
    for (g, row) in packed.chunks_exact_mut(points).enumerate() {
        for (p, word) in row.iter_mut().enumerate() {
            *word = (0..4)
                .filter(|j| 4 * g + j < cin)
                .map(|j| quantize(input[(4 * g + j) * points + p], inv, zp) << (8 * j))
                .fold(0, |a, b| a | b);
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::super::pointwise::x86::{mask, store_row};
    use super::super::u8_activations::x86::{quantize, requantize, store_bytes};
    use super::{TileOut, ROWS};
    use std::arch::x86_64::*;

    /// `packed[g·points + p]` = the bytes `lane(i, mask)` gives for input channels `4g..4g+4`
    /// at point `p` (`i` the value's index in `[cin][points]`, the lanes of `mask` in use), 16
    /// points per step: the loop both packs share.
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

    /// [`super::Kernel::pack_bytes`].
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

    /// Stores `V` vectors of 16 outputs at `o` as bytes (clamped and quantized by `q`), the
    /// last one masked by `last`.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl")]
    #[inline]
    unsafe fn store_row_u8<const V: usize>(
        o: *mut u8,
        row: &[__m512; V],
        last: __mmask16,
        q: super::Requantizer,
    ) {
        let (inv, lo, hi) = (
            _mm512_set1_ps(q.inv_scale),
            _mm512_set1_ps(q.lo),
            _mm512_set1_ps(q.hi),
        );
        let zp = _mm512_set1_epi32(q.zero_point);
        for (v, &a) in row.iter().enumerate() {
            let m = if v + 1 == V { last } else { 0xffff };
            // SAFETY: the caller's bounds.
            unsafe { store_bytes(o.add(16 * v), m, requantize(a, inv, lo, hi, zp)) };
        }
    }

    /// [`super::Kernel::pack`]: the pair's rounding (NaN → zero point, ties to even,
    /// saturation) on the way.
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

    type TileArgs<'a> = (
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

    /// [`super::Kernel::tile`] with `V` vectors of 16 points, the last one masked to `cols`.
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
    /// epilogue as
    /// [`tile`], so outputs are bit-equal to it.
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
        // SAFETY (the loads): word `g < k4` of tile `t < tiles` is inside `weights`, `x` has
        // `k4` words.
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
}

impl Op for QPointwise {
    fn name(&self) -> StaticName {
        "EdgeQuantizedPointwiseConv".into()
    }

    fn info(&self) -> TractResult<Vec<String>> {
        Ok(vec![format!(
            "{} -> {} channels, int8 {:?}, clamp {:?}",
            self.shape.cin, self.shape.cout, self.kind, self.clamp
        )])
    }

    fn validation(&self) -> Validation {
        Validation::Rounding
    }

    op_as_typed_op!();
}

impl EvalOp for QPointwise {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let input = args_1!(inputs);
        self.shape
            .eval(input, self.output.is_some(), |x, points, out| {
                self.run(self.kind, x, points, out)
            })
    }
}

impl TypedOp for QPointwise {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        self.shape
            .output_facts(inputs, super::u8_activations::datum(self.output))
    }

    fn cost(&self, inputs: &[&TypedFact]) -> TractResult<TVec<(Cost, TDim)>> {
        self.shape.cost(inputs, i32::datum_type())
    }

    as_op!();
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::test_values as values;

    /// Per-channel int8 weights as a quantizer writes them, and their float image.
    fn int8_weights(cout: usize, cin: usize) -> (Vec<i8>, Vec<f32>, Vec<f32>) {
        let raw = values(cout * cin, 5);
        let q: Vec<i8> = raw.iter().map(|v| (v * 127.0).round() as i8).collect();
        let s: Vec<f32> = (0..cout).map(|o| 0.01 + o as f32 * 0.003).collect();
        let w = q
            .iter()
            .enumerate()
            .map(|(k, &v)| v as f32 * s[k / cin])
            .collect();
        (q, s, w)
    }

    /// The float path the op replaces: the pair, then the float convolution.
    #[allow(clippy::too_many_arguments)]
    fn reference(conv: &Conv1x1, quant: U8Form, x: &[f32], points: usize) -> Vec<f32> {
        let Channels { cin, cout, .. } = conv.shape;
        let mut out = vec![0f32; cout * points];
        for o in 0..cout {
            for p in 0..points {
                let mut acc = conv.bias[o] as f64;
                for i in 0..cin {
                    let xh = quant.dequantize(quant.quantize(x[i * points + p]));
                    acc += conv.weights[o * cin + i] as f64 * xh as f64;
                }
                let mut v = acc as f32;
                if let Some((lo, hi)) = conv.clamp {
                    v = v.max(lo).min(hi);
                }
                out[o * points + p] = v;
            }
        }
        out
    }

    #[test]
    fn integer_weights_are_recovered_exactly_or_not_at_all() {
        let (q, s, w) = int8_weights(6, 10);
        let (q2, s2) = integer_rows(&w, 6, 10).unwrap();
        for o in 0..6 {
            for i in 0..10 {
                let (a, b) = (q2[o * 10 + i] as f32 * s2[o], q[o * 10 + i] as f32 * s[o]);
                assert!((a - b).abs() <= 1e-6 * b.abs().max(1e-3), "{a} vs {b}");
            }
        }
        // a row whose largest |q| is under 127 (a per-tensor scale), and an all-zero row
        let w = [0.0, 0.5, -1.5, 2.0, 0.0, 0.0, 0.0, 0.0];
        let (q, s) = integer_rows(&w, 2, 4).unwrap();
        assert_eq!(&q[..4], &[0, 31, -93, 124]);
        assert!((s[0] - 2.0 / 124.0).abs() < 1e-7 && q[4..] == [0; 4]);
        // float weights are left alone
        assert!(integer_rows(&values(64, 9), 4, 16).is_none());
        assert!(integer_rows(&[f32::NAN, 1.0], 1, 2).is_none());
    }

    #[test]
    fn every_kernel_matches_the_float_path_on_every_tail() {
        let kernels = [Kernel::Scalar, Kernel::best()];
        for &(cin, cout, points) in &[
            (3, 1, 1),
            (16, 96, 49),
            (24, 13, 48),
            (32, 16, 97),
            (7, 8, 16),
            (960, 20, 17),
            (5, 9, 250),
            // one point (the matrix–vector kernel): whole blocks of four tiles, a remainder
            // with a partial tile, a classifier's size
            (17, 45, 1),
            (17, 77, 1),
            (64, 32, 1),
            (1280, 1000, 1),
        ] {
            let (qw, sw, weights) = int8_weights(cout, cin);
            let mut x = values(cin * points, 3);
            x[0] = f32::NAN;
            if x.len() > 2 {
                x[1] = 1e9;
                x[2] = -f32::INFINITY;
            }
            for (clamp, zero_point) in [(None, 128.0), (Some((0.0, 6.0)), 0.0), (None, 3.0)] {
                let conv = Conv1x1 {
                    shape: Channels::unbatched(cin, cout),
                    weights: weights.clone(),
                    bias: values(cout, 2),
                    clamp,
                    last: 0,
                };
                let quant = U8Form::new(1.0 / 0.02, zero_point, 0.02);
                let op = QPointwise::new(&conv, &qw, &sw, quant).unwrap();
                let want = reference(&conv, quant, &x, points);
                let scale = want.iter().fold(1f32, |m, v| m.max(v.abs()));
                for kind in kernels {
                    let mut got = vec![f32::NAN; cout * points];
                    op.run(kind, Src::F32(&x), points, Dst::F32(&mut got))
                        .unwrap();
                    let worst = want
                        .iter()
                        .zip(&got)
                        .map(|(a, b)| (a - b).abs())
                        .fold(0f32, f32::max);
                    assert!(
                        worst <= 1e-5 * scale,
                        "{kind:?} {cin}->{cout} over {points}, zp {zero_point}: off by {worst}"
                    );
                    // 8-bit input (the quantizer's bytes) and output (another form's bytes):
                    // the same sums, so exactly the f32 path's values, quantized
                    let bytes: Vec<u8> = x.iter().map(|&v| quant.quantize(v)).collect();
                    let form = U8Form::new(1.0 / 0.07, 90.0, 0.07);
                    let linked = op.with_u8_input().with_output(form);
                    let mut out = vec![0u8; cout * points];
                    linked
                        .run(kind, Src::U8(&bytes), points, Dst::U8(&mut out))
                        .unwrap();
                    for (i, (a, b)) in out.iter().zip(&got).enumerate() {
                        assert_eq!(*a, form.quantize(*b), "{kind:?} {cin}->{cout} at {i}");
                    }
                }
            }
        }
    }

    /// MobileNetV2 through our quantizer: its 1×1 layers and classifier run here in integers,
    /// and the output
    /// stays the float path's (the pairs' rounding of values that differ in the last float bit
    /// may land one step apart; that is the whole difference).
    #[test]
    fn a_quantized_mobilenetv2_runs_its_1x1_layers_in_integers() {
        if !Kernel::best().is_vector() {
            return;
        }
        use crate::tensor::Tensor as EfTensor;
        use edge_pack::quantize::{quantize, QuantizeOptions, RangeMethod};
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../models/mobilenetv2/model.onnx"
        );
        let image = |seed| EfTensor::f32(vec![1, 3, 224, 224], values(3 * 224 * 224, seed));
        let options = QuantizeOptions {
            weights_only: false,
            range: RangeMethod::MinMax,
        };
        let onnx = std::fs::read(path).unwrap();
        let (bytes, _) = quantize(&onnx, &[vec![image(11)], vec![image(12)]], &options).unwrap();
        let model = crate::engine::onnx_parser()
            .model_for_read(&mut &bytes[..])
            .unwrap()
            .with_input_fact(0, f32::fact([1, 3, 224, 224]).into())
            .unwrap();
        let mut plain = model.into_typed().unwrap().into_decluttered().unwrap();
        super::super::const_weights::substitute(&mut plain).unwrap();
        super::super::fake_quant::substitute(&mut plain).unwrap();
        let mut ours = plain.clone();
        // its 34 1×1 layers and the classifier (a matrix–vector product over one point)
        assert_eq!(super::super::pointwise::substitute(&mut ours).unwrap(), 35);
        let integer = ours
            .nodes()
            .iter()
            .filter(|n| n.op_is::<QPointwise>())
            .count();
        assert_eq!(integer, 35);
        let input = Tensor::from_shape(&[1, 3, 224, 224], &values(3 * 224 * 224, 13)).unwrap();
        // with the depthwise and first layers ours too, then linked through 8-bit tensors: every link
        // computes what the pair it replaces did, so the output keeps every bit
        let mut unlinked = ours.clone();
        super::super::depthwise::substitute(&mut unlinked).unwrap();
        super::super::dense_conv::substitute(&mut unlinked).unwrap();
        let mut linked = unlinked.clone();
        let links = super::super::u8_activations::substitute(&mut linked).unwrap();
        // at least: each of the 16 expand convolutions into its depthwise convolution, each of
        // the 17 depthwise convolutions into its project convolution
        assert!(links >= 33, "only {links} 8-bit links");
        if super::super::qdepthwise::available() {
            // and the first convolution, in integers too, into the first depthwise one; all 17
            // depthwise layers in integers
            assert!(links >= 34, "only {links} 8-bit links");
            let first = linked
                .nodes()
                .iter()
                .find_map(|n| n.op_as::<super::super::qdense_conv::QDenseConv>());
            assert!(first.and_then(|c| c.output_form()).is_some());
            let depthwise: Vec<_> = linked
                .nodes()
                .iter()
                .filter_map(|n| n.op_as::<super::super::depthwise::DepthwiseConv>())
                .collect();
            assert_eq!(depthwise.len(), 17);
            assert!(depthwise.iter().all(|d| d.is_integer()));
        }
        let eight_bit = linked
            .nodes()
            .iter()
            .filter(|n| n.outputs[0].fact.datum_type == u8::datum_type())
            .count();
        assert_eq!(eight_bit, links);
        let a = crate::engine::run_f32(unlinked, &input, true);
        let b = crate::engine::run_f32(linked, &input, true);
        assert!(a.iter().zip(&b).all(|(a, b)| a.to_bits() == b.to_bits()));
        let want = crate::engine::run_f32(plain, &input, true);
        let got = crate::engine::run_f32(ours, &input, true);
        let top = want.iter().fold(0f32, |m, v| m.max(v.abs()));
        let worst = want
            .iter()
            .zip(&got)
            .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
        assert!(worst <= 0.01 * top, "off by {worst} (max |out| {top})");
        let argmax = |v: &[f32]| (0..v.len()).max_by(|&a, &b| v[a].total_cmp(&v[b])).unwrap();
        assert_eq!(argmax(&want), argmax(&got));
    }
}
