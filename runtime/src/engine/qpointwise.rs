//! Integer 1×1 convolution for QDQ models: where a channel-first 1×1 convolution reads a
//! quantize→dequantize pair ([`super::fake_quant`]) and its weights are int8 values times a
//! per-channel scale (what `DequantizeLinear` of int8 weights leaves after tract folds it), the
//! products are computed on the 8-bit values instead of their float images (`vpdpbusd` on
//! AVX-512 VNNI and AVX-VNNI, `vpmaddwd` on AVX2, `sdot`/`usdot`/`smull` on aarch64).
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
//! pass replaces it. The kernels ([`edge_kernels::qpointwise`]) are the float micro-kernel's
//! shape in integers: 8 output channels × 48 points of i32 sums, then `sum · s_x s_w[o] +
//! offset[o]`, the clamp and one store per vector.

use std::cell::Cell;

use edge_kernels::qpointwise::{pack_weights, Kernel, TileOut, ROWS};
use edge_kernels::quant::integer_rows;
use edge_kernels::{Isa, Requantizer, U8Form};
use tract_nnef::tract_core::internal::*;

use super::activations::{Dst, Src};
use super::conv1x1::{Channels, Conv1x1, SharedOut};
use super::threads::par_rows;
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

/// The integer op for `conv` reading `input`, with the outlet it should read (the pair's input
/// when the pair has no other reader), or `None` when the input is not quantized, the weights
/// are not int8 multiples or no integer kernel of this CPU serves graphs
/// ([`Kernel::serves_graphs`]).
pub(crate) fn integer_variant(
    model: &TypedModel,
    input: OutletId,
    conv: &Conv1x1,
) -> TractResult<Option<(OutletId, QPointwise)>> {
    if !Kernel::best(Isa::host()).serves_graphs() {
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

/// The integer 1×1 convolution op: input `[I, S…]` or `[1, I, S…]`, f32 (quantized inside) or
/// already the 8-bit values of its quantizer; output `[O, S…]`, f32 or 8-bit
/// ([`super::u8_activations`] links it to its neighbours).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct QPointwise {
    shape: Channels,
    /// `[⌈O/8⌉][⌈I/4⌉][8]` words of four int8 weights (input channels `4k..4k+4`), zeros past
    /// `O` and `I`, laid out for `kind` ([`Kernel::lay_out_weights`]).
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
        let tiles = cout.div_ceil(ROWS);
        let kind = Kernel::best(Isa::host());
        let packed = kind.lay_out_weights(pack_weights(qw, cin, cout));
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
            kind,
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
            static PACKED: Cell<Vec<u32>> = const { Cell::new(Vec::new()) };
        }
        super::scratch::with(&PACKED, |packed| {
            packed.resize(k4 * points, 0);
            let (inv, zp) = (self.input.inv_scale(), self.input.zero_point());
            // packed rows (4 channels each) in one share per thread: the channels a thread
            // packs are, for the most part, the ones it wrote in the layer before
            par_rows(packed, points, cin * points, |first, rows| {
                let channels = (4 * first)..(4 * (first + rows.len() / points)).min(cin);
                let x = channels.start * points..channels.end * points;
                match input {
                    Src::F32(input) => kind.pack(&input[x], channels.len(), points, inv, zp, rows),
                    Src::U8(input) => kind.pack_bytes(&input[x], channels.len(), points, rows),
                }
                Ok(())
            })?;
            self.multiply_with(kind, packed, points, output)
        })
    }

    /// The product of input already in VNNI order (`packed`: `[⌈I/4⌉][points]` words, each
    /// XORed with `flip`) into `output` (`[O, points]`), on the op's kernel.
    pub(crate) fn multiply(
        &self,
        packed: &[u32],
        flip: u32,
        points: usize,
        output: Dst,
    ) -> TractResult<()> {
        let k4 = self.shape.cin.div_ceil(4);
        ensure!(packed.len() == k4 * points && output.len() == self.shape.cout * points);
        ensure!(
            self.kind.flip() == flip,
            "the {} kernel reads words XORed with {:#x}, not {flip:#x}",
            self.kind.name(),
            self.kind.flip()
        );
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
        // the weights as `kind` reads them (another layout only where a test runs the op on
        // a kernel other than its own)
        let relaid;
        let packed_weights = if kind.weight_words() == self.kind.weight_words() {
            &self.packed
        } else {
            relaid = kind.lay_out_weights(self.kind.packed_weights(&self.packed));
            &relaid
        };
        let words = k4 * ROWS * kind.weight_words();
        if points == 1 {
            // one point (a classifier's matrix–vector product, a squeeze-excite 1×1): the
            // tile would use one lane in 48; this kernel runs across output channels instead
            // SAFETY: `packed` holds `k4` words, `out` every output (checked by the callers).
            unsafe {
                kind.gemv(
                    &packed[..k4],
                    packed_weights,
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
            let weights = &packed_weights[t * words..][..words];
            let scale = &self.scale.0[t * ROWS..][..ROWS];
            let offset = &self.offset.0[t * ROWS..][..ROWS];
            // SAFETY: rows `t·8..t·8 + rows` of the output belong to this tile alone; the reads
            // stay inside `packed` (`cols` words from `c0` in each of `k4` rows).
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

impl Op for QPointwise {
    fn name(&self) -> StaticName {
        "EdgeQuantizedPointwiseConv".into()
    }

    fn info(&self) -> TractResult<Vec<String>> {
        Ok(vec![format!(
            "{} -> {} channels, int8 {}, clamp {:?}",
            self.shape.cin,
            self.shape.cout,
            self.kind.name(),
            self.clamp
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
            .output_facts(inputs, super::activations::datum(self.output))
    }

    fn cost(&self, inputs: &[&TypedFact]) -> TractResult<TVec<(Cost, TDim)>> {
        self.shape.cost(inputs, i32::datum_type())
    }

    as_op!();
}

#[cfg(test)]
mod tests {
    use super::*;
    use edge_kernels::testing::{int8_weights, values};
    #[allow(unused_imports)]
    use tract_onnx::prelude::{InferenceFact, InferenceModelExt};

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
    fn every_kernel_matches_the_float_path_on_every_tail() {
        let kernels = Kernel::available(Isa::host());
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
                for &kind in &kernels {
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
        if !Kernel::best(Isa::host()).serves_graphs() {
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
        // decluttered as the engine does it (where the integer depthwise kernel runs, a QDQ
        // graph stays channel-first)
        let mut plain = super::super::optimize::declutter(model.into_typed().unwrap()).unwrap();
        super::super::const_weights::substitute(&mut plain).unwrap();
        super::super::fake_quant::substitute(&mut plain).unwrap();
        let mut ours = plain.clone();
        // its 34 1×1 layers and the classifier (a matrix–vector product over one point, whose
        // flatten the pair's substitution moved in front of it), but on aarch64 (see
        // `pointwise::substitute`)
        let expected = if cfg!(target_arch = "aarch64") {
            34
        } else {
            35
        };
        assert_eq!(
            super::super::pointwise::substitute(&mut ours).unwrap(),
            expected
        );
        let integer = ours
            .nodes()
            .iter()
            .filter(|n| n.op_is::<QPointwise>())
            .count();
        assert_eq!(integer, expected);
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
        // every 8-bit output of our ops is a link (tract's own QuantizeLinear nodes, which a
        // channel-first graph on aarch64 keeps in front of the first layer, are not ours)
        let ours_op = |n: &TypedNode| {
            n.op_is::<QPointwise>()
                || n.op_is::<super::super::depthwise::DepthwiseConv>()
                || n.op_is::<super::super::qdense_conv::QDenseConv>()
        };
        let eight_bit = linked
            .nodes()
            .iter()
            .filter(|n| ours_op(n) && n.outputs[0].fact.datum_type == u8::datum_type())
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

    /// The test above again at each x86 level below this machine's, in a child process with
    /// `EDGE_ISA` (the level is fixed once per process): the 256-bit tiles of AVX-VNNI and
    /// plain AVX2 (`vpmaddwd`, its own weight layout) run a whole quantized MobileNetV2.
    #[test]
    #[cfg(target_arch = "x86_64")]
    fn the_quantized_mobilenetv2_runs_in_integers_at_every_lower_x86_level() {
        if std::env::var_os("EDGE_ISA").is_some() {
            return; // a child of this test, or a run capped by hand
        }
        let host = Isa::host();
        let mut seen = vec![host];
        for level in ["avx2", "avx-vnni"] {
            let isa = host.capped(level).unwrap();
            if seen.contains(&isa) || !Kernel::best(isa).serves_graphs() {
                continue;
            }
            seen.push(isa);
            let test = "engine::qpointwise::tests::a_quantized_mobilenetv2_runs_its_1x1_layers_in_integers";
            let out = std::process::Command::new(std::env::current_exe().unwrap())
                .args(["--exact", test, "--test-threads", "1"])
                .env("EDGE_ISA", level)
                .output()
                .unwrap();
            let stdout = String::from_utf8_lossy(&out.stdout);
            assert!(
                out.status.success() && stdout.contains("1 passed"),
                "at EDGE_ISA={level}: {stdout}{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}
