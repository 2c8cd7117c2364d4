//! Fast 1×1 convolution for the `cpu` engine on AVX-512: a tract op that replaces the f32
//! `EinSum` tract declutters a channel-first 1×1 `Conv` into (`IHW,OI->OHW`: output channel
//! `o` is `Σ_i W[o, i] · X[i, ·]`), with the per-channel bias `Add` and the ReLU/ReLU6 clamp
//! that follow it fused in.
//!
//! tract 0.23.9 runs this einsum as a matrix product whose every call first packs the
//! activations into panels (6–7% of MobileNetV2's time) and then applies the bias and the
//! clamp as separate passes. Channel-first activations need no packing: each input channel is
//! one contiguous row, so this op's micro-kernel reads 48 output points of a row straight from
//! the input (three 16-lane vectors, masked at the tail), broadcasts the weights of 8 output
//! channels from a copy packed at load (`[tile][i][8]`), and keeps the 8×48 block of sums in
//! 24 registers for the whole reduction; the bias starts the sums and the clamp is applied
//! before the one store. Columns are blocked so that a block of the input stays in L2 while
//! every tile of weights passes over it. Tiles are split over the plan's thread pool.
//!
//! Substituted only where AVX-512F is present (the tile needs its 32 registers and masked tails;
//! elsewhere tract's packed kernels run these, an AVX2/NEON tile is not written yet); a scalar
//! version of the same loop is the reference the tests hold it to.

use tract_linalg::multithread::par_chunks_mut;
use tract_onnx::tract_hir::internal::*;
use tract_onnx::tract_hir::tract_core::ops::einsum::EinSum;

use super::channel_affine::Step;
use super::u8_activations::{f32_only, Dst, Src};
use super::Floats;

/// Output channels per micro-kernel tile.
pub(crate) const ROWS: usize = 8;
/// Output points per micro-kernel call (three 16-lane vectors).
pub(crate) const COLS: usize = 48;
/// Bytes of input a column block may span (kept in L2 across all weight tiles).
pub(crate) const BLOCK_BYTES: usize = 256 * 1024;

/// Replaces every 1×1 channel-first convolution einsum this op handles (with a per-channel
/// bias `Add` and a clamp that follow it fused in) by this op, or by the integer one
/// ([`super::qpointwise`]) where its input is quantized, its weights are int8 values times a
/// per-channel scale and the CPU has AVX-512 VNNI; returns how many it replaced. Does nothing
/// on CPUs without AVX-512F.
pub fn substitute(model: &mut TypedModel) -> TractResult<usize> {
    if !Kernel::best().is_vector() {
        return Ok(0);
    }
    let mut replaced = 0;
    for id in model.eval_order()? {
        let Some(conv) = Conv1x1::at(model, id)? else {
            // not a 1×1 convolution: perhaps a matrix–vector product, taken only in integers
            if let Some((conv, shapes)) = Conv1x1::matrix_vector_at(model, id)? {
                let input = model.node(id).inputs[0];
                if let Some((input, op)) = super::qpointwise::integer_variant(model, input, &conv)?
                {
                    replace_matrix_vector(model, input, id, op, shapes)?;
                    replaced += 1;
                }
            }
            continue;
        };
        let input = model.node(id).inputs[0];
        if let Some((input, op)) = super::qpointwise::integer_variant(model, input, &conv)? {
            super::replace_run(model, input, id, conv.last, op)?;
        } else {
            let last = conv.last;
            let op = Pointwise::from_conv(conv)?;
            super::replace_run(model, input, id, last, op)?;
        }
        replaced += 1;
    }
    Ok(replaced)
}

/// A 1×1 convolution found in the graph: the einsum with its weights, and the bias and clamp
/// that follow it.
#[derive(Debug, Clone)]
pub(crate) struct Conv1x1 {
    pub shape: Channels,
    /// `[O, I]`, row-major.
    pub weights: Vec<f32>,
    /// `[O]`: the bias `Add` after the einsum, zeros when there is none.
    pub bias: Vec<f32>,
    /// The ReLU/ReLU6 after the bias.
    pub clamp: Option<(f32, f32)>,
    /// The last node the op replaces (the einsum, its bias `Add` or the clamp).
    pub last: usize,
}

impl Conv1x1 {
    /// The convolution whose einsum is node `id`, or `None` when it is not one this op handles.
    fn at(model: &TypedModel, id: usize) -> TractResult<Option<Conv1x1>> {
        let node = model.node(id);
        let Some((weights, [input, weight_axes], output)) = f32_einsum_with_constant(model, id)?
        else {
            return Ok(None);
        };
        let Some((batched, batched_out)) = channel_first_1x1(&input, &weight_axes, &output) else {
            return Ok(None);
        };
        let fact = model.outlet_fact(node.inputs[0])?;
        if fact.datum_type != f32::datum_type()
            || weights.datum_type() != f32::datum_type()
            || weights.rank() != 2
            || fact.rank() != input.len()
            || (batched && fact.shape[0] != 1.into())
        {
            return Ok(None);
        }
        let (cout, cin) = (weights.shape()[0], weights.shape()[1]);
        if fact.shape[batched as usize] != cin.into() {
            return Ok(None);
        }
        let weights = super::f32_values(&weights)?;
        let (mut last, mut bias) = (id, vec![0f32; cout]);
        if let Some((add, extra)) = following_bias(model, id, cout)? {
            bias = extra;
            last = add;
        }
        let (last, clamp) = super::following_clamp(model, last)?;
        Ok(Some(Conv1x1 {
            shape: Channels {
                cin,
                cout,
                batched,
                batched_out,
            },
            weights,
            bias,
            clamp,
            last,
        }))
    }

    /// The matrix–vector product at node `id` as a 1×1 convolution over one point: an einsum
    /// of a vector (`K` values, any other axes of size 1) and constant `[N, K]` weights whose
    /// output is `N` values (other axes of size 1): a `Gemm` or `MatMul` on one row, such as a
    /// classifier. With the input's and output's shapes, for the reshapes around the op. Only
    /// worth running as the integer op (the f32 tile is shaped for many points).
    fn matrix_vector_at(
        model: &TypedModel,
        id: usize,
    ) -> TractResult<Option<(Conv1x1, InOutShapes)>> {
        let node = model.node(id);
        let Some((weights, [x_axes, w_axes], y_axes)) = f32_einsum_with_constant(model, id)? else {
            return Ok(None);
        };
        let (x_axes, y_axes) = (x_axes.as_str(), y_axes.as_str());
        let w: Vec<char> = w_axes.chars().collect();
        let (o, i) = match w[..] {
            [o, i] if o != i => (o, i),
            _ => return Ok(None),
        };
        let (x_fact, y_fact) = (
            model.outlet_fact(node.inputs[0])?,
            model.outlet_fact(OutletId::new(id, 0))?,
        );
        if x_fact.datum_type != f32::datum_type()
            || weights.datum_type() != f32::datum_type()
            || weights.rank() != 2
            || x_fact.rank() != x_axes.len()
            || y_fact.rank() != y_axes.len()
        {
            return Ok(None);
        }
        let (cout, cin) = (weights.shape()[0], weights.shape()[1]);
        // every axis but the named one has size 1 (and is not the weights' other axis)
        let only = |axes: &str, fact: &TypedFact, named: char, size: usize, other: char| {
            axes.chars().filter(|&c| c == named).count() == 1
                && !axes.contains(other)
                && axes
                    .chars()
                    .zip(fact.shape.iter())
                    .all(|(c, d)| d.to_usize().ok() == Some(if c == named { size } else { 1 }))
        };
        if !only(x_axes, x_fact, i, cin, o) || !only(y_axes, y_fact, o, cout, i) {
            return Ok(None);
        }
        let conv = Conv1x1 {
            shape: Channels::unbatched(cin, cout),
            weights: super::f32_values(&weights)?,
            bias: vec![0f32; cout],
            clamp: None,
            last: id,
        };
        Ok(Some((
            conv,
            (x_fact.shape.to_tvec(), y_fact.shape.to_tvec()),
        )))
    }
}

/// An einsum's constant input, its inputs' axis letters (`[input, constant]`) and its output's.
type EinsumWithConstant = (Arc<Tensor>, [String; 2], String);

/// Node `id` when it is an f32 einsum (no quantization parameters) of an input and a constant:
/// the constant, the inputs' axis letters (`[input, constant]`) and the output's.
fn f32_einsum_with_constant(
    model: &TypedModel,
    id: usize,
) -> TractResult<Option<EinsumWithConstant>> {
    let node = model.node(id);
    let Some(einsum) = node.op_as::<EinSum>() else {
        return Ok(None);
    };
    if einsum.q_params.is_some()
        || einsum.operating_dt != f32::datum_type()
        || node.inputs.len() != 2
    {
        return Ok(None);
    }
    let Some(weights) = model.outlet_fact(node.inputs[1])?.konst.clone() else {
        return Ok(None);
    };
    let (inputs, outputs) = einsum.axes.to_strs();
    Ok(match (&inputs[..], &outputs[..]) {
        ([x, w], [y]) => Some((weights, [x.to_string(), w.to_string()], y.to_string())),
        _ => None,
    })
}

/// A node's input and output shapes.
type InOutShapes = (TVec<TDim>, TVec<TDim>);

/// Replaces the matrix–vector einsum `id` by `op` over one point, reading `input`: the
/// vector reshaped to `[K, 1]`, the op's `[N, 1]` reshaped to the einsum's output shape.
fn replace_matrix_vector(
    model: &mut TypedModel,
    input: OutletId,
    id: usize,
    op: super::qpointwise::QPointwise,
    (from, to): InOutShapes,
) -> TractResult<()> {
    let name = model.node(id).name.clone();
    let (k, n) = (op.channels().cin, op.channels().cout);
    let mut patch = TypedModelPatch::default();
    let tap = patch.tap_model(model, input)?;
    let column = AxisOp::Reshape(0, from, tvec![k.into(), 1.into()]);
    let x = patch.wire_node(format!("{name}.column"), column, &[tap])?;
    let y = patch.wire_node(&name, op, &x)?;
    let back = AxisOp::Reshape(0, tvec![n.into(), 1.into()], to);
    let y = patch.wire_node(format!("{name}.reshape"), back, &y)?[0];
    patch.shunt_outside(model, OutletId::new(id, 0), y)?;
    patch.apply(model)
}

/// The `Add` of a per-channel (or single) f32 constant that alone reads node `id`'s `[O, …]`
/// output (a step [`super::channel_affine`] recognizes): the node and the `cout` values it adds.
fn following_bias(
    model: &TypedModel,
    id: usize,
    cout: usize,
) -> TractResult<Option<(usize, Vec<f32>)>> {
    let from = OutletId::new(id, 0);
    let node = model.node(id);
    if model.output_outlets()?.contains(&from) || node.outputs[0].successors.len() != 1 {
        return Ok(None);
    }
    let next = node.outputs[0].successors[0].node;
    Ok(match super::channel_affine::step(model, next, from)? {
        Some((Step::Add(values), 0)) => Some((next, values)),
        Some((Step::Add(values), usize::MAX)) => Some((next, vec![values[0]; cout])),
        _ => None,
    })
}

/// The 1×1 convolution op: input `[I, S…]` or `[1, I, S…]` f32, output `[O, S…]`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Pointwise {
    shape: Channels,
    /// `[ceil(O/8)][I][8]`, zero rows past `O`.
    packed: Floats,
    /// `[ceil(O/8)·8]`, zeros past `O`.
    bias: Floats,
    /// Outputs clamped to `[lo, hi]` (f32 bits): a fused ReLU or ReLU6.
    clamp: Option<(u32, u32)>,
    /// The micro-kernel, picked for this CPU when the op is built.
    kind: Kernel,
}

impl Pointwise {
    /// The op for a convolution found in the graph.
    fn from_conv(conv: Conv1x1) -> TractResult<Self> {
        let mut op = Pointwise::new(conv.shape.cin, conv.shape.cout, &conv.weights, &conv.bias)?
            .with_clamp(conv.clamp);
        op.shape = conv.shape;
        Ok(op)
    }

    /// The op for explicit weights: `weights` is `[O, I]` row-major, `bias` is `[O]`.
    pub fn new(cin: usize, cout: usize, weights: &[f32], bias: &[f32]) -> TractResult<Self> {
        ensure!(cin > 0 && cout > 0);
        ensure!(weights.len() == cout * cin && bias.len() == cout);
        let tiles = cout.div_ceil(ROWS);
        let mut packed = vec![0f32; tiles * cin * ROWS];
        for o in 0..cout {
            let (t, r) = (o / ROWS, o % ROWS);
            for i in 0..cin {
                packed[(t * cin + i) * ROWS + r] = weights[o * cin + i];
            }
        }
        let mut padded_bias = bias.to_vec();
        padded_bias.resize(tiles * ROWS, 0.0);
        Ok(Pointwise {
            shape: Channels::unbatched(cin, cout),
            packed: Floats(packed),
            bias: Floats(padded_bias),
            clamp: None,
            kind: Kernel::best(),
        })
    }

    /// `output[o][p] = clamp(bias[o] + Σ_i W[o][i] · input[i][p])` for `points` points per
    /// channel, with `kind`'s micro-kernel.
    pub fn run(
        &self,
        kind: Kernel,
        input: &[f32],
        points: usize,
        output: &mut [f32],
    ) -> TractResult<()> {
        self.run_strided(kind, (input, points), points, (output, points))
    }

    /// [`Pointwise::run`] over the first `points` points of rows laid out `stride` apart:
    /// input channel `i` at `input.0[i·input.1..]`, output channel `o` at
    /// `output.0[o·output.1..]`.
    pub(crate) fn run_strided(
        &self,
        kind: Kernel,
        input: (&[f32], usize),
        points: usize,
        output: (&mut [f32], usize),
    ) -> TractResult<()> {
        let Channels { cin, cout, .. } = self.shape;
        let ((input, x_stride), (output, out_stride)) = (input, output);
        ensure!(points <= x_stride && points <= out_stride);
        ensure!(input.len() >= (cin - 1) * x_stride + points);
        ensure!(output.len() >= (cout - 1) * out_stride + points);
        let clamp = self
            .clamp
            .map(|(lo, hi)| (f32::from_bits(lo), f32::from_bits(hi)));
        let out = SharedOut(output.as_mut_ptr());
        self.shape.for_each_tile(points, 4 * cin, |t, c0, cols| {
            let rows = ROWS.min(cout - t * ROWS);
            let weights = &self.packed.0[t * cin * ROWS..][..cin * ROWS];
            let bias = &self.bias.0[t * ROWS..][..ROWS];
            // SAFETY: rows `t·8..t·8 + rows` of the output belong to this tile alone (tiles are
            // split between threads, never shared); the reads stay inside `input` (`cols` points
            // from `c0` in each of `cin` rows, checked above); the CPU has `kind`'s features
            // (checked when it was chosen).
            unsafe {
                kind.tile(
                    cin,
                    input.as_ptr().add(c0),
                    (x_stride, out_stride),
                    weights,
                    bias,
                    out.at(t * ROWS * out_stride + c0),
                    rows,
                    cols,
                    clamp,
                )
            }
        })
    }

    /// Sets the fused clamp (a ReLU or ReLU6 after the convolution).
    pub(crate) fn with_clamp(mut self, clamp: Option<(f32, f32)>) -> Self {
        self.clamp = clamp.map(|(lo, hi)| (lo.to_bits(), hi.to_bits()));
        self
    }

    /// The micro-kernel picked for this CPU when the op was built.
    pub(crate) fn kernel(&self) -> Kernel {
        self.kind
    }
}

/// The shapes of a 1×1 convolution op (input `[I, S…]` or `[1, I, S…]` f32, output `[O, S…]`
/// f32) and what both of ours do with them: check and allocate in `eval`, facts, cost, and the
/// blocked walk over output tiles.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct Channels {
    pub cin: usize,
    pub cout: usize,
    /// The input has a leading axis of size 1 (`NIHW`).
    pub batched: bool,
    /// The output keeps it (`NOHW` rather than `OHW`).
    pub batched_out: bool,
}

impl Channels {
    /// Input `[I, S…]`, output `[O, S…]`: no batch axis.
    pub(crate) fn unbatched(cin: usize, cout: usize) -> Channels {
        Channels {
            cin,
            cout,
            batched: false,
            batched_out: false,
        }
    }

    /// Checks `input`'s shape (f32 or 8-bit values), allocates the output (8-bit when
    /// `u8_out`, else f32) and calls `run(input, points, output)` (points per channel), which
    /// must write every output element. Ops that take f32 only pass their run through
    /// [`super::u8_activations::f32_only`].
    pub(crate) fn eval(
        &self,
        input: TValue,
        u8_out: bool,
        run: impl FnOnce(Src, usize, Dst) -> TractResult<()>,
    ) -> TractResult<TVec<TValue>> {
        let shape = input.shape();
        let lead = self.batched as usize;
        ensure!(
            shape.len() >= 2 + lead && shape[lead] == self.cin && (!self.batched || shape[0] == 1),
            "1×1 convolution expects [{}{}, …], got {shape:?}",
            if self.batched { "1, " } else { "" },
            self.cin
        );
        let spatial = &shape[lead + 1..];
        let points: usize = spatial.iter().product();
        let mut out_shape: TVec<usize> = tvec![self.cout];
        out_shape.extend(spatial.iter().copied());
        if self.batched_out {
            out_shape.insert(0, 1);
        }
        super::u8_activations::eval_into(&input, u8_out, &out_shape, |x, out| run(x, points, out))
    }

    /// The output fact, of `dt`.
    pub(crate) fn output_facts(
        &self,
        inputs: &[&TypedFact],
        dt: DatumType,
    ) -> TractResult<TVec<TypedFact>> {
        let lead = self.batched as usize;
        ensure!(inputs[0].rank() >= 2 + lead);
        let mut shape: TVec<TDim> = tvec![self.cout.into()];
        shape.extend(inputs[0].shape.iter().skip(lead + 1).cloned());
        if self.batched_out {
            shape.insert(0, 1.into());
        }
        Ok(tvec!(dt.fact(shape)))
    }

    /// Multiply-adds of `dt`.
    pub(crate) fn cost(
        &self,
        inputs: &[&TypedFact],
        dt: DatumType,
    ) -> TractResult<TVec<(Cost, TDim)>> {
        let lead = self.batched as usize;
        let points: TDim = inputs[0].shape.iter().skip(lead + 1).product();
        Ok(tvec!((Cost::FMA(dt), points * (self.cin * self.cout))))
    }

    /// Calls `tile(t, c0, cols)` for every tile `t` of 8 output channels and every run of up to
    /// 48 points from `c0`, in column blocks whose input (`point_bytes` per point) fits in L2,
    /// with the tiles split over the plan's thread pool (each tile on one thread).
    pub(crate) fn for_each_tile(
        &self,
        points: usize,
        point_bytes: usize,
        tile: impl Fn(usize, usize, usize) + Sync + Send,
    ) -> TractResult<()> {
        let block = (BLOCK_BYTES / point_bytes.max(1) / COLS).max(1) * COLS;
        let mut tiles: Vec<usize> = (0..self.cout.div_ceil(ROWS)).collect();
        par_chunks_mut(&mut tiles, 1, self.cout * self.cin * points, |_, chunk| {
            for p0 in (0..points).step_by(block) {
                let width = block.min(points - p0);
                for &t in chunk.iter() {
                    for c0 in (p0..p0 + width).step_by(COLS) {
                        tile(t, c0, COLS.min(p0 + width - c0));
                    }
                }
            }
            Ok(())
        })
    }
}

/// Whether `input,weights->output` is a channel-first 1×1 convolution: weights `OI`, input
/// `[N]IS…`, output `[N]OS…` (same spatial letters, in order; `N` kept only if the input has
/// it). `Some((batched input, batched output))` when it is.
fn channel_first_1x1(input: &str, weights: &str, output: &str) -> Option<(bool, bool)> {
    let w: Vec<char> = weights.chars().collect();
    let (o, i) = match w[..] {
        [o, i] if o != i => (o, i),
        _ => return None,
    };
    let x: Vec<char> = input.chars().collect();
    let y: Vec<char> = output.chars().collect();
    let batched = x.first() != Some(&i);
    let batched_out = batched && y.first() == Some(&x[0]);
    let rest = &x[batched as usize..];
    let y = &y[batched_out as usize..];
    if rest.first() != Some(&i) || y.first() != Some(&o) || rest[1..] != y[1..] || y.len() < 2 {
        return None;
    }
    if batched && (y.contains(&x[0]) || x[0] == o) {
        return None;
    }
    let mut all = x.clone();
    all.push(o);
    all.sort_unstable();
    all.dedup();
    (all.len() == x.len() + 1).then_some((batched, batched_out))
}

/// The output pointer, shared by the threads that each write their own tiles' rows.
pub(crate) struct SharedOut<T>(pub(crate) *mut T);

impl<T> SharedOut<T> {
    /// The pointer `n` values in (a method, so closures capture the whole `Sync` wrapper).
    pub(crate) fn at(&self, n: usize) -> *mut T {
        self.0.wrapping_add(n)
    }
}
// SAFETY: every thread writes a disjoint set of rows through it (see `Pointwise::run`).
unsafe impl<T> Sync for SharedOut<T> {}
// SAFETY: as for Sync: threads write disjoint rows, so the pointer may move between them.
unsafe impl<T> Send for SharedOut<T> {}

/// The micro-kernel: up to 8 output channels × up to 48 points.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kernel {
    /// Plain Rust, any target (the reference).
    Scalar,
    /// 16 lanes with FMA and masked tails (x86-64 with AVX-512F).
    #[cfg(target_arch = "x86_64")]
    Avx512,
}

impl Kernel {
    /// The fastest kernel this CPU runs.
    pub fn best() -> Kernel {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx512f") {
            return Kernel::Avx512;
        }
        Kernel::Scalar
    }

    pub(crate) fn is_vector(self) -> bool {
        self != Kernel::Scalar
    }

    /// `out[r·out_stride + c] = clamp(bias[r] + Σ_i weights[i·8 + r] · x[i·x_stride + c])`
    /// for `r < rows`, `c < cols`, with `strides = (x_stride, out_stride)`.
    ///
    /// # Safety
    /// `x` must be readable at `i·x_stride + c` and `out` writable at `r·out_stride + c` for those
    /// indices; `rows ≤ 8`, `cols ≤ 48`; the CPU must have this kernel's features.
    #[allow(clippy::too_many_arguments)]
    unsafe fn tile(
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
        debug_assert!(rows <= ROWS && cols <= COLS);
        // SAFETY: the kernel variant exists only where the CPU has its features (chosen once at load); the slices are the plan's sizes.
        unsafe {
            match self {
                Kernel::Scalar => {
                    tile_scalar(cin, x, strides, weights, bias, out, rows, cols, clamp)
                }
                #[cfg(target_arch = "x86_64")]
                Kernel::Avx512 => match cols.div_ceil(16) {
                    3 => x86::tile::<3>(cin, x, strides, weights, bias, out, rows, cols, clamp),
                    2 => x86::tile::<2>(cin, x, strides, weights, bias, out, rows, cols, clamp),
                    _ => x86::tile::<1>(cin, x, strides, weights, bias, out, rows, cols, clamp),
                },
            }
        }
    }
}

#[allow(clippy::too_many_arguments)]
unsafe fn tile_scalar(
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
    for r in 0..rows {
        for c in 0..cols {
            let mut acc = bias[r];
            for i in 0..cin {
                // SAFETY: the caller guarantees the reads.
                acc += weights[i * ROWS + r] * unsafe { *x.add(i * strides.0 + c) };
            }
            if let Some((lo, hi)) = clamp {
                acc = acc.max(lo).min(hi);
            }
            // SAFETY: the caller guarantees the writes.
            unsafe { *out.add(r * strides.1 + c) = acc };
        }
    }
}

#[cfg(target_arch = "x86_64")]
pub(crate) mod x86 {
    use super::ROWS;
    use std::arch::x86_64::*;

    /// [`super::Kernel::tile`] with `V` vectors of 16 points, the last one masked to `cols`.
    #[target_feature(enable = "avx512f")]
    #[allow(clippy::too_many_arguments)]
    pub unsafe fn tile<const V: usize>(
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
        let last = mask(cols - 16 * (V - 1));
        let w = weights.as_ptr();
        // SAFETY: this fn's caller upholds its contract (the CPU has the target features; pointers cover the lengths it names).
        unsafe {
            let mut acc = [[_mm512_setzero_ps(); V]; ROWS];
            for (r, row) in acc.iter_mut().enumerate() {
                *row = [_mm512_set1_ps(bias[r]); V];
            }
            for i in 0..cin {
                let xi = x.add(i * strides.0);
                let mut xv = [_mm512_setzero_ps(); V];
                for (v, lane) in xv.iter_mut().enumerate() {
                    *lane = if v + 1 == V {
                        _mm512_maskz_loadu_ps(last, xi.add(16 * v))
                    } else {
                        _mm512_loadu_ps(xi.add(16 * v))
                    };
                }
                let wi = w.add(i * ROWS);
                for (r, row) in acc.iter_mut().enumerate() {
                    let k = _mm512_set1_ps(*wi.add(r));
                    for (a, &xv) in row.iter_mut().zip(&xv) {
                        *a = _mm512_fmadd_ps(k, xv, *a);
                    }
                }
            }
            for (r, row) in acc.iter().enumerate().take(rows) {
                store_row(out.add(r * strides.1), row, last, clamp);
            }
        }
    }

    /// The first `n` (at most 16) lanes.
    pub(crate) fn mask(n: usize) -> __mmask16 {
        if n >= 16 {
            0xffff
        } else {
            (1u16 << n) - 1
        }
    }

    /// Stores `V` vectors of 16 outputs at `o`, the last one masked by `last`, clamped.
    #[target_feature(enable = "avx512f")]
    #[inline]
    pub(crate) unsafe fn store_row<const V: usize>(
        o: *mut f32,
        row: &[__m512; V],
        last: __mmask16,
        clamp: Option<(f32, f32)>,
    ) {
        // SAFETY: this fn's caller upholds its contract (the CPU has the target features; pointers cover the lengths it names).
        unsafe {
            for (v, &a) in row.iter().enumerate() {
                let a = match clamp {
                    Some((lo, hi)) => {
                        _mm512_min_ps(_mm512_max_ps(a, _mm512_set1_ps(lo)), _mm512_set1_ps(hi))
                    }
                    None => a,
                };
                if v + 1 == V {
                    _mm512_mask_storeu_ps(o.add(16 * v), last, a);
                } else {
                    _mm512_storeu_ps(o.add(16 * v), a);
                }
            }
        }
    }
}

impl Op for Pointwise {
    fn name(&self) -> StaticName {
        "EdgePointwiseConv".into()
    }

    fn info(&self) -> TractResult<Vec<String>> {
        Ok(vec![format!(
            "{} -> {} channels, {:?}, clamp {:?}",
            self.shape.cin, self.shape.cout, self.kind, self.clamp
        )])
    }

    fn validation(&self) -> Validation {
        Validation::Rounding
    }

    op_as_typed_op!();
}

impl EvalOp for Pointwise {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let input = args_1!(inputs);
        self.shape.eval(
            input,
            false,
            f32_only(|x, points, out| self.run(self.kind, x, points, out)),
        )
    }
}

impl TypedOp for Pointwise {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        self.shape.output_facts(inputs, f32::datum_type())
    }

    fn cost(&self, inputs: &[&TypedFact]) -> TractResult<TVec<(Cost, TDim)>> {
        self.shape.cost(inputs, f32::datum_type())
    }

    as_op!();
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::test_values as values;

    fn reference(
        cin: usize,
        cout: usize,
        w: &[f32],
        b: &[f32],
        x: &[f32],
        points: usize,
        clamp: Option<(f32, f32)>,
    ) -> Vec<f32> {
        let mut out = vec![0f32; cout * points];
        for o in 0..cout {
            for p in 0..points {
                let mut acc = b[o] as f64;
                for i in 0..cin {
                    acc += w[o * cin + i] as f64 * x[i * points + p] as f64;
                }
                let mut v = acc as f32;
                if let Some((lo, hi)) = clamp {
                    v = v.max(lo).min(hi);
                }
                out[o * points + p] = v;
            }
        }
        out
    }

    #[test]
    fn every_kernel_matches_the_textbook_sum_on_every_tail() {
        let kernels = [Kernel::Scalar, Kernel::best()];
        for &(cin, cout, points) in &[
            (3, 1, 1),
            (16, 96, 49),
            (24, 13, 48),
            (32, 16, 97),
            (7, 8, 16),
            (960, 20, 17),
            (5, 9, 250),
        ] {
            let w = values(cin * cout, 1);
            let b = values(cout, 2);
            let x = values(cin * points, 3);
            for clamp in [None, Some((0.0, 6.0))] {
                let mut op = Pointwise::new(cin, cout, &w, &b).unwrap();
                op.clamp = clamp.map(|(lo, hi): (f32, f32)| (lo.to_bits(), hi.to_bits()));
                let want = reference(cin, cout, &w, &b, &x, points, clamp);
                for kind in kernels {
                    let mut got = vec![f32::NAN; cout * points];
                    op.run(kind, &x, points, &mut got).unwrap();
                    let worst = want
                        .iter()
                        .zip(&got)
                        .map(|(a, b)| (a - b).abs())
                        .fold(0f32, f32::max);
                    assert!(
                        worst < 1e-3,
                        "{kind:?} {cin}->{cout} over {points}: off by {worst}"
                    );
                }
            }
        }
    }

    /// On two threads (tiles split over the pool) every output is written once, with the
    /// one-thread values.
    #[test]
    fn two_threads_give_the_one_thread_values() {
        for &(cin, cout, points) in &[(20, 24, 3001), (16, 8, 12544), (7, 40, 97), (64, 96, 300)] {
            let w = values(cin * cout, 1);
            let b = values(cout, 2);
            let x = values(cin * points, 3);
            let op = Pointwise::new(cin, cout, &w, &b).unwrap();
            let kind = Kernel::best();
            let mut one = vec![f32::NAN; cout * points];
            op.run(kind, &x, points, &mut one).unwrap();
            let mut two = vec![f32::NAN; cout * points];
            tract_linalg::multithread::multithread_tract_scope(
                tract_linalg::multithread::Executor::multithread(2),
                || op.run(kind, &x, points, &mut two),
            )
            .unwrap();
            assert!(
                one.iter()
                    .zip(&two)
                    .all(|(a, b)| a.to_bits() == b.to_bits()),
                "{cin}->{cout} over {points}"
            );
        }
    }

    #[test]
    fn the_einsum_pattern_is_recognized_only_when_it_is_a_1x1_convolution() {
        assert_eq!(channel_first_1x1("IHW", "OI", "OHW"), Some((false, false)));
        assert_eq!(channel_first_1x1("NIHW", "OI", "OHW"), Some((true, false)));
        assert_eq!(channel_first_1x1("NIHW", "OI", "NOHW"), Some((true, true)));
        assert_eq!(channel_first_1x1("IP", "OI", "OP"), Some((false, false)));
        assert_eq!(channel_first_1x1("HIW", "OI", "OHW"), None);
        assert_eq!(channel_first_1x1("IHW", "IO", "OHW"), None);
        assert_eq!(channel_first_1x1("IHW", "OI", "OWH"), None);
        assert_eq!(channel_first_1x1("NIHW", "OI", "ONHW"), None);
        assert_eq!(channel_first_1x1("NIHW", "OI", "NHWO"), None);
        assert_eq!(channel_first_1x1("mk", "nk", "mn"), None);
        assert_eq!(channel_first_1x1("I", "OI", "O"), None);
    }

    /// MobileNetV2 on AVX-512: all 34 1×1 convolutions run on this op, biases folded, ReLU6
    /// fused into the 17 that have one, and the model's output unchanged (to rounding).
    #[test]
    fn mobilenetv2_runs_its_1x1_layers_here_with_bias_and_relu6_fused() {
        if !Kernel::best().is_vector() {
            return;
        }
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../models/mobilenetv2/model.onnx"
        );
        let model = crate::engine::onnx_parser()
            .model_for_path(path)
            .unwrap()
            .with_input_fact(0, f32::fact([1, 3, 224, 224]).into())
            .unwrap();
        let plain = model.into_typed().unwrap().into_decluttered().unwrap();
        let mut ours = plain.clone();
        assert_eq!(substitute(&mut ours).unwrap(), 34);
        let ops: Vec<&Pointwise> = ours
            .nodes()
            .iter()
            .filter_map(|n| n.op_as::<Pointwise>())
            .collect();
        assert_eq!(ops.len(), 34);
        assert!(ops.iter().all(|op| op.bias.0.iter().any(|&b| b != 0.0)));
        let relu6 = Some((0f32.to_bits(), 6f32.to_bits()));
        assert_eq!(ops.iter().filter(|op| op.clamp == relu6).count(), 17);
        let input = Tensor::from_shape(
            &[1, 3, 224, 224],
            &values(3 * 224 * 224, 7)
                .iter()
                .map(|v| v * 2.0)
                .collect::<Vec<_>>(),
        )
        .unwrap();
        let want = crate::engine::run_f32(plain, &input, true);
        let got = crate::engine::run_f32(ours, &input, true);
        let scale = want.iter().fold(0f32, |m, v| m.max(v.abs()));
        let worst = want
            .iter()
            .zip(&got)
            .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
        assert!(
            worst <= 1e-4 * scale.max(1.0),
            "off by {worst} (scale {scale})"
        );
    }
}
