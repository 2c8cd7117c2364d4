//! The quantized operators of ONNX Runtime's QOperator format that tract does not parse
//! (`com.microsoft` QLinearAdd, QLinearMul, QLinearGlobalAveragePool, QGemm, QLinearConcat,
//! QLinearSigmoid, QLinearLeakyRelu; not yet QLinearAveragePool), and QLinearConv in place of
//! tract's own, registered into the ONNX parser as tract expansions: each input is dequantized
//! (`DequantizeLinearF32`, or folded into a float constant when the tensor itself is constant),
//! the float operator runs, and the result is quantized back (`QuantizeLinearU8/I8`). Between
//! two such ops the quantize → dequantize pair is what the CPU engine's own kernels look for
//! (`fake_quant`, `qpointwise`), so a QOperator graph runs as fast as the same model in QDQ.
//! tract's QLinearMatMul keeps its integer kernel. Scales and zero points must be
//! constants, as every quantizer emits them.

use tract_onnx::model::{OnnxOpRegister, ParsingContext};
use tract_onnx::pb::NodeProto;
use tract_onnx::tract_hir::internal::*;

use super::const_weights::{dequantized_constant, QuantizedWeights};
use super::dynamic_quant::IntegralToI32;
use super::f32_values;
use tract_onnx::tract_hir::ops::cnn::Conv as HirConv;
use tract_onnx::tract_hir::tract_core::ops::array::TypedConcat;
use tract_onnx::tract_hir::tract_core::ops::binary::TypedBinOp;
use tract_onnx::tract_hir::tract_core::ops::cast::cast;
use tract_onnx::tract_hir::tract_core::ops::change_axes::wire_with_rank_broadcast;
use tract_onnx::tract_hir::tract_core::ops::cnn::PaddingSpec;
use tract_onnx::tract_hir::tract_core::ops::einsum::EinSum;
use tract_onnx::tract_hir::tract_core::ops::math;
use tract_onnx::tract_hir::tract_core::ops::nn::{leaky_relu, sigmoid, Reduce, Reducer};
use tract_onnx::tract_hir::tract_core::ops::quant::{
    quantize_linear_i8, quantize_linear_u8, DequantizeLinearF32,
};

/// Adds the operators to an ONNX parser's registry.
pub fn register(reg: &mut OnnxOpRegister) {
    reg.insert("QLinearAdd", |_, n| binary(n, QKind::Add));
    reg.insert("QLinearMul", |_, n| binary(n, QKind::Mul));
    reg.insert("QLinearGlobalAveragePool", global_average_pool);
    reg.insert("QLinearSigmoid", |_, n| unary(n, QKind::Sigmoid));
    reg.insert("QLinearLeakyRelu", |_, n| {
        let alpha = n.get_attr_opt::<f32>("alpha")?.unwrap_or(0.01);
        unary(n, QKind::LeakyRelu(alpha.to_bits()))
    });
    reg.insert("QLinearConcat", concat);
    reg.insert("QGemm", qgemm);
    reg.insert("QLinearConv", qlinear_conv);
    reg.insert("ConvInteger", conv_integer);
    reg.insert("DequantizeLinear", dequantize_linear);
}

/// [`register`] for the packer's translation: constant `DequantizeLinear` inputs stay quantized
/// ([`QuantizedWeights`]), so the optimized payload keeps a QDQ model's weights in 8 bits.
pub fn register_for_translation(reg: &mut OnnxOpRegister) {
    register(reg);
    reg.insert("DequantizeLinear", dequantize_linear_kept);
}

/// `DequantizeLinear`, parsed as tract parses it; its constant inputs (a QDQ model's weights)
/// folded here in one pass ([`dequantized_constant`]) instead of through tract's broadcasting
/// `Cast → Sub → Mul` constant evaluation (most of an int8 MobileNetV2's load: ~140 of ~300 ms).
fn dequantize_linear(
    _ctx: &ParsingContext,
    node: &NodeProto,
) -> TractResult<(Box<dyn InferenceOp>, Vec<String>)> {
    Ok((expand(Dequantize::of(node, false)?), vec![]))
}

/// [`dequantize_linear`] keeping constant inputs quantized (see [`register_for_translation`]).
fn dequantize_linear_kept(
    _ctx: &ParsingContext,
    node: &NodeProto,
) -> TractResult<(Box<dyn InferenceOp>, Vec<String>)> {
    Ok((expand(Dequantize::of(node, true)?), vec![]))
}

/// See [`dequantize_linear`]; a non-constant input becomes tract's `DequantizeLinearF32`
/// (per-tensor) or `Cast → Sub → Mul` (per-axis), as tract wires it.
#[derive(Debug, Clone, Hash, PartialEq, Eq)]
struct Dequantize {
    axis: i64,
    zero_point: bool,
    /// A constant input becomes [`QuantizedWeights`] (folded on the device) instead of an f32
    /// constant.
    keep: bool,
}

impl Dequantize {
    /// The op for an ONNX `DequantizeLinear` node (blocked quantization refused).
    fn of(node: &NodeProto, keep: bool) -> TractResult<Dequantize> {
        let block_size = node.get_attr_opt::<i64>("block_size")?.unwrap_or(0);
        ensure!(
            block_size == 0,
            "{}: blocked quantization is not supported",
            node.op_type
        );
        Ok(Dequantize {
            axis: node.get_attr_opt("axis")?.unwrap_or(1),
            zero_point: node.input.len() == 3,
            keep,
        })
    }
}

impl Expansion for Dequantize {
    fn name(&self) -> StaticName {
        "DequantizeLinear".into()
    }

    /// Kept constants must reach the typed graph as [`QuantizedWeights`]: tract's inference
    /// analysis would otherwise evaluate the node on its constant input into an f32 constant.
    fn runs_out_of_plan(&self) -> bool {
        !self.keep
    }

    fn rules<'r, 'p: 'r, 's: 'r>(
        &'s self,
        s: &mut Solver<'r>,
        inputs: &'p [TensorProxy],
        outputs: &'p [TensorProxy],
    ) -> InferenceResult {
        check_input_arity(inputs, 2 + self.zero_point as usize)?;
        check_output_arity(outputs, 1)?;
        s.equals(&inputs[1].datum_type, f32::datum_type())?;
        s.equals(&outputs[0].datum_type, f32::datum_type())?;
        if self.zero_point {
            s.equals(&inputs[0].datum_type, &inputs[2].datum_type)?;
        }
        s.equals(&inputs[0].shape, &outputs[0].shape)?;
        Ok(())
    }

    fn wire(
        &self,
        prefix: &str,
        target: &mut TypedModel,
        inputs: &[OutletId],
    ) -> TractResult<TVec<OutletId>> {
        let q = QInput {
            x: 0,
            scale: 1,
            zero_point: self.zero_point.then_some(2),
        };
        let (scale, zp) = params(target, inputs, &q)?;
        let rank = target.outlet_fact(inputs[0])?.rank();
        let axis = if self.axis < 0 {
            self.axis + rank as i64
        } else {
            self.axis
        };
        ensure!(
            (0..rank.max(1) as i64).contains(&axis),
            "{prefix}: axis {} out of range for a rank {rank} input",
            self.axis
        );
        let axis = axis as usize;
        if let Some(k) = target.outlet_fact(inputs[0])?.konst.clone() {
            if self.keep {
                let op = QuantizedWeights::new(k, scale, zp, axis, false)?;
                return target.wire_node(prefix, op, &[]);
            }
            let k = dequantized_constant(&k, &scale, &zp, axis)?;
            return Ok(tvec!(target.add_const(prefix, k)?));
        }
        if scale.len() == 1 && zp.len() == 1 {
            let op = DequantizeLinearF32::new(scale[0], zp[0] as i32);
            return target.wire_node(prefix, op, &[inputs[0]]);
        }
        // per axis on a non-constant tensor: (x − zp) · scale, the parameters shaped to broadcast
        let along = |v: &[f32]| -> TractResult<Arc<Tensor>> {
            let mut shape = tvec![1usize; rank];
            shape[axis] = v.len();
            Ok(tract_ndarray::ArrayD::from_shape_vec(&*shape, v.to_vec())?
                .into_tensor()
                .into_arc_tensor())
        };
        let (scale, zp) = (along(&scale)?, along(&zp)?);
        let scale = target.add_const(format!("{prefix}.scale"), scale)?;
        let zp = target.add_const(format!("{prefix}.zero_point"), zp)?;
        let x = target.wire_node(
            format!("{prefix}.cast"),
            cast(f32::datum_type()),
            &[inputs[0]],
        )?;
        let x = target.wire_node(format!("{prefix}.sub"), math::sub(), &[x[0], zp])?;
        target.wire_node(prefix, math::mul(), &[x[0], scale])
    }
}

/// Which float operator sits between the dequantized inputs and the quantized output.
#[derive(Debug, Clone, Hash, PartialEq, Eq)]
enum QKind {
    Add,
    Mul,
    /// `channels_last`
    GlobalAveragePool(bool),
    Sigmoid,
    /// alpha, as bits
    LeakyRelu(u32),
    /// axis
    Concat(i64),
    /// alpha (bits), transA, transB
    Gemm(u32, bool, bool),
    /// the float convolution, inputs `[x, kernel, bias]`
    Conv(Box<HirConv>),
}

/// One quantized tensor among the node's inputs: positions (after empty names are dropped) of
/// the tensor, its scale and its zero point.
#[derive(Debug, Clone, Hash, PartialEq, Eq)]
struct QInput {
    x: usize,
    scale: usize,
    zero_point: Option<usize>,
}

/// A QOperator node as an expansion.
#[derive(Debug, Clone, Hash, PartialEq, Eq)]
struct QLinear {
    kind: QKind,
    inputs: Vec<QInput>,
    /// Gemm's bias (int32, scale = a_scale × b_scale, zero point 0).
    bias: Option<usize>,
    /// Output scale and zero point; `None` (QGemm only) = float output.
    output: Option<(usize, Option<usize>)>,
    arity: usize,
}

/// Positions of the node's non-empty inputs: `present[i]` is where ONNX input `i` lands.
fn positions(node: &NodeProto) -> Vec<Option<usize>> {
    let mut next = 0;
    node.input
        .iter()
        .map(|s| {
            (!s.is_empty()).then(|| {
                next += 1;
                next - 1
            })
        })
        .collect()
}

fn need(pos: &[Option<usize>], i: usize, node: &NodeProto, what: &str) -> TractResult<usize> {
    pos.get(i).copied().flatten().with_context(|| {
        format!(
            "{} {}: input {i} ({what}) is missing",
            node.op_type, node.name
        )
    })
}

fn opt(pos: &[Option<usize>], i: usize) -> Option<usize> {
    pos.get(i).copied().flatten()
}

fn arity(pos: &[Option<usize>]) -> usize {
    pos.iter().flatten().count()
}

fn qin(pos: &[Option<usize>], first: usize, node: &NodeProto) -> TractResult<QInput> {
    Ok(QInput {
        x: need(pos, first, node, "tensor")?,
        scale: need(pos, first + 1, node, "scale")?,
        zero_point: opt(pos, first + 2),
    })
}

type Built = TractResult<(Box<dyn InferenceOp>, Vec<String>)>;

fn binary(node: &NodeProto, kind: QKind) -> Built {
    let pos = positions(node);
    let op = QLinear {
        kind,
        inputs: vec![qin(&pos, 0, node)?, qin(&pos, 3, node)?],
        bias: None,
        output: Some((need(&pos, 6, node, "C_scale")?, opt(&pos, 7))),
        arity: arity(&pos),
    };
    Ok((expand(op), vec![]))
}

fn unary(node: &NodeProto, kind: QKind) -> Built {
    let pos = positions(node);
    let op = QLinear {
        kind,
        inputs: vec![qin(&pos, 0, node)?],
        bias: None,
        output: Some((need(&pos, 3, node, "Y_scale")?, opt(&pos, 4))),
        arity: arity(&pos),
    };
    Ok((expand(op), vec![]))
}

fn global_average_pool(_: &ParsingContext, node: &NodeProto) -> Built {
    let channels_last = node.get_attr_opt::<i64>("channels_last")?.unwrap_or(0) != 0;
    unary(node, QKind::GlobalAveragePool(channels_last))
}

fn concat(_: &ParsingContext, node: &NodeProto) -> Built {
    let pos = positions(node);
    let axis = node.get_attr::<i64>("axis")?;
    let output = Some((need(&pos, 0, node, "Y_scale")?, opt(&pos, 1)));
    let mut inputs = Vec::new();
    let mut i = 2;
    while i < node.input.len() {
        inputs.push(QInput {
            x: need(&pos, i, node, "tensor")?,
            scale: need(&pos, i + 1, node, "scale")?,
            zero_point: Some(need(&pos, i + 2, node, "zero point")?),
        });
        i += 3;
    }
    ensure!(!inputs.is_empty(), "QLinearConcat {}: no inputs", node.name);
    let op = QLinear {
        kind: QKind::Concat(axis),
        inputs,
        bias: None,
        output,
        arity: arity(&pos),
    };
    Ok((expand(op), vec![]))
}

fn qgemm(_: &ParsingContext, node: &NodeProto) -> Built {
    let pos = positions(node);
    let alpha = node.get_attr_opt::<f32>("alpha")?.unwrap_or(1.0);
    let trans_a = node.get_attr_opt::<i64>("transA")?.unwrap_or(0) != 0;
    let trans_b = node.get_attr_opt::<i64>("transB")?.unwrap_or(0) != 0;
    let output = opt(&pos, 7).map(|s| (s, opt(&pos, 8)));
    let op = QLinear {
        kind: QKind::Gemm(alpha.to_bits(), trans_a, trans_b),
        inputs: vec![
            QInput {
                x: need(&pos, 0, node, "A")?,
                scale: need(&pos, 1, node, "a_scale")?,
                zero_point: Some(need(&pos, 2, node, "a_zero_point")?),
            },
            QInput {
                x: need(&pos, 3, node, "B")?,
                scale: need(&pos, 4, node, "b_scale")?,
                zero_point: Some(need(&pos, 5, node, "b_zero_point")?),
            },
        ],
        bias: opt(&pos, 6),
        output,
        arity: arity(&pos),
    };
    Ok((expand(op), vec![]))
}

/// QLinearConv (`x, x_scale, x_zp, w, w_scale, w_zp, y_scale, y_zp[, B]`) as dequantize →
/// float `Conv` → quantize, taking the place of tract's own integer QLinearConv: a QOperator
/// graph then reads like a QDQ one (each quantize→dequantize between two convolutions becomes
/// one pair) and runs on the CPU engine's convolution ops, integer 1×1 ones included, instead
/// of tract's integer convolution (46× slower than ONNX Runtime on MobileNetV2). The float
/// sum is the integer sum times `x_scale · w_scale`, so outputs match ONNX Runtime's to the
/// output's rounding.
fn qlinear_conv(_: &ParsingContext, node: &NodeProto) -> Built {
    let pos = positions(node);
    let op = QLinear {
        kind: QKind::Conv(Box::new(hir_conv(node)?)),
        inputs: vec![qin(&pos, 0, node)?, qin(&pos, 3, node)?],
        bias: opt(&pos, 8),
        output: Some((need(&pos, 6, node, "y_scale")?, opt(&pos, 7))),
        arity: arity(&pos),
    };
    Ok((expand(op), vec![]))
}

/// ConvInteger (`x, w[, x_zero_point[, w_zero_point]]`, int32 output; what ONNX Runtime's
/// dynamic quantization emits) as `Conv(float(x) − x_zp, float(w) − w_zp)` cast to int32, in
/// place of tract's integer convolution (10× slower than ONNX Runtime on MobileNetV2): the
/// float convolution runs on the CPU engine's own kernels. The sum is exact while it stays
/// under 2^24 in magnitude (a float's integer range) and within float rounding past that; the
/// graph scales it by `x_scale · w_scale` right after, so the difference is float rounding
/// either way. `x`'s zero point may be computed at run time (DynamicQuantizeLinear).
fn conv_integer(_: &ParsingContext, node: &NodeProto) -> Built {
    let pos = positions(node);
    let op = ConvInteger {
        conv: hir_conv(node)?,
        x: need(&pos, 0, node, "x")?,
        w: need(&pos, 1, node, "w")?,
        x_zero_point: opt(&pos, 2),
        w_zero_point: opt(&pos, 3),
        arity: arity(&pos),
    };
    Ok((expand(op), vec![]))
}

/// A float convolution with the node's attributes, inputs `[x, kernel, bias]`.
fn hir_conv(node: &NodeProto) -> TractResult<HirConv> {
    let mut conv = HirConv::default()
        .padding(conv_padding(node)?)
        .bias_input(2);
    if let Some(shape) = node.get_attr_opt_tvec("kernel_shape")? {
        conv = conv.kernel_shape(shape);
    }
    if let Some(group) = node.get_attr_opt("group")? {
        conv = conv.group(group);
    }
    if let Some(dilations) = node.get_attr_opt_tvec("dilations")? {
        conv = conv.dilations(dilations);
    }
    if let Some(strides) = node.get_attr_opt_tvec("strides")? {
        conv = conv.strides(strides);
    }
    Ok(conv)
}

/// See [`conv_integer`]; positions of the node's inputs.
#[derive(Debug, Clone, Hash, PartialEq, Eq)]
struct ConvInteger {
    conv: HirConv,
    x: usize,
    w: usize,
    x_zero_point: Option<usize>,
    w_zero_point: Option<usize>,
    arity: usize,
}

impl Expansion for ConvInteger {
    fn name(&self) -> StaticName {
        "ConvInteger".into()
    }

    fn rules<'r, 'p: 'r, 's: 'r>(
        &'s self,
        s: &mut Solver<'r>,
        inputs: &'p [TensorProxy],
        outputs: &'p [TensorProxy],
    ) -> TractResult<()> {
        check_input_arity(inputs, self.arity)?;
        check_output_arity(outputs, 1)?;
        s.equals(&outputs[0].datum_type, i32::datum_type())?;
        s.equals(&inputs[self.x].rank, &outputs[0].rank)
    }

    fn wire(
        &self,
        prefix: &str,
        target: &mut TypedModel,
        inputs: &[OutletId],
    ) -> TractResult<TVec<OutletId>> {
        let float = f32::datum_type();
        let mut x = target.wire_node(format!("{prefix}.x"), cast(float), &[inputs[self.x]])?[0];
        if let Some(z) = self.x_zero_point {
            let zp = target.wire_node(format!("{prefix}.x_zp"), cast(float), &[inputs[z]])?[0];
            ensure!(
                target.outlet_fact(zp)?.shape.volume().is_one(),
                "ConvInteger: x's zero point must be one value"
            );
            let centered = format!("{prefix}.x_centered");
            x = wire_with_rank_broadcast(centered, target, math::sub(), &[x, zp])?[0];
        }
        let w = konst(target, inputs[self.w], "ConvInteger's weights")?;
        let zp = match self.w_zero_point {
            Some(z) => {
                let zp = konst(target, inputs[z], "ConvInteger's weight zero point")?;
                f32_values(&zp)?
            }
            None => vec![0.0],
        };
        // the zero point: one value, or one per output channel (axis 0 of OIHW)
        let w = dequantized_constant(&w, &[1.0], &zp, 0)?;
        let w = target.add_const(format!("{prefix}.w"), w)?;
        let bias = target.add_const(format!("{prefix}.bias"), tensor1(&[0f32]))?;
        let y = self
            .conv
            .wire(&format!("{prefix}.conv"), target, &[x, w, bias])?[0];
        // integers by construction: a cast back to f32 right after is dropped at load
        target.wire_node(format!("{prefix}.int"), IntegralToI32, &[y])
    }
}

/// A convolution's padding from `auto_pad` and `pads`, as ONNX defines them.
fn conv_padding(node: &NodeProto) -> TractResult<PaddingSpec> {
    let rank = node
        .get_attr_opt_vec::<isize>("kernel_shape")?
        .map(|k| k.len());
    let explicit = match node.get_attr_opt_tvec::<usize>("pads")? {
        Some(pads) => {
            let half = pads.len() / 2;
            PaddingSpec::Explicit(pads[..half].into(), pads[half..].into())
        }
        None => match rank {
            Some(r) => PaddingSpec::Explicit(tvec!(0; r), tvec!(0; r)),
            None => PaddingSpec::Valid,
        },
    };
    Ok(match node.get_attr_opt::<&str>("auto_pad")? {
        None | Some("NOTSET") => explicit,
        Some("VALID") => PaddingSpec::Valid,
        Some("SAME_UPPER") => PaddingSpec::SameUpper,
        Some("SAME_LOWER") => PaddingSpec::SameLower,
        Some(other) => bail!("QLinearConv {}: unknown auto_pad {other}", node.name),
    })
}

fn konst(target: &TypedModel, o: OutletId, what: &str) -> TractResult<Arc<Tensor>> {
    target
        .outlet_fact(o)?
        .konst
        .clone()
        .with_context(|| format!("{what} must be a constant"))
}

/// Scale and zero point as f32 vectors (one value, or one per channel).
fn params(
    target: &TypedModel,
    inputs: &[OutletId],
    q: &QInput,
) -> TractResult<(Vec<f32>, Vec<f32>)> {
    let scale = konst(target, inputs[q.scale], "a scale")?;
    let scale: Vec<f32> = f32_values(&scale)?;
    let zp: Vec<f32> = match q.zero_point {
        Some(z) => {
            let z = konst(target, inputs[z], "a zero point")?;
            f32_values(&z)?
        }
        None => vec![0.0],
    };
    ensure!(
        !scale.is_empty() && !zp.is_empty(),
        "empty scale or zero point"
    );
    Ok((scale, zp))
}

/// The zero point's element type (u8 when absent, as ONNX says).
fn zero_point_dt(
    target: &TypedModel,
    inputs: &[OutletId],
    zp: Option<usize>,
) -> TractResult<DatumType> {
    Ok(match zp {
        Some(z) => target.outlet_fact(inputs[z])?.datum_type.unquantized(),
        None => u8::datum_type(),
    })
}

/// A float view of a quantized input.
fn dequantize(
    prefix: &str,
    target: &mut TypedModel,
    inputs: &[OutletId],
    q: &QInput,
    axis: usize,
) -> TractResult<OutletId> {
    let (scale, zp) = params(target, inputs, q)?;
    let x = inputs[q.x];
    let fact = target.outlet_fact(x)?.clone();
    if let Some(k) = &fact.konst {
        // a constant (weights): dequantize it here, once
        let k = dequantized_constant(k, &scale, &zp, axis)?;
        return target.add_const(format!("{prefix}.dequantized"), k);
    }
    ensure!(
        scale.len() == 1 && zp.len() == 1,
        "per-channel quantization of a non-constant tensor is not supported"
    );
    let op = DequantizeLinearF32::new(scale[0], zp[0] as i32);
    Ok(target.wire_node(format!("{prefix}.dequantize"), op, &[x])?[0])
}

fn quantize(
    prefix: &str,
    target: &mut TypedModel,
    inputs: &[OutletId],
    scale: usize,
    zp: Option<usize>,
    x: OutletId,
) -> TractResult<TVec<OutletId>> {
    let (s, z) = params(
        target,
        inputs,
        &QInput {
            x: 0,
            scale,
            zero_point: zp,
        },
    )?;
    ensure!(
        s.len() == 1 && z.len() == 1,
        "the output must be quantized per tensor"
    );
    let op: Box<dyn TypedOp> = if zero_point_dt(target, inputs, zp)? == i8::datum_type() {
        Box::new(quantize_linear_i8(s[0].recip(), z[0] as i8))
    } else {
        Box::new(quantize_linear_u8(s[0].recip(), z[0] as u8))
    };
    target.wire_node(prefix, op, &[x])
}

impl QLinear {
    fn float_op(
        &self,
        prefix: &str,
        target: &mut TypedModel,
        inputs: &[OutletId],
    ) -> TractResult<OutletId> {
        let deq = |target: &mut TypedModel, ix: usize, axis: usize| {
            dequantize(
                &format!("{prefix}.in{ix}"),
                target,
                inputs,
                &self.inputs[ix],
                axis,
            )
        };
        Ok(match &self.kind {
            QKind::Add | QKind::Mul => {
                let a = deq(target, 0, 0)?;
                let b = deq(target, 1, 0)?;
                let op: TypedBinOp = if self.kind == QKind::Add {
                    math::add()
                } else {
                    math::mul()
                };
                wire_with_rank_broadcast(format!("{prefix}.float"), target, op, &[a, b])?[0]
            }
            QKind::Sigmoid => {
                let a = deq(target, 0, 0)?;
                target.wire_node(format!("{prefix}.float"), sigmoid(), &[a])?[0]
            }
            QKind::LeakyRelu(alpha) => {
                let a = deq(target, 0, 0)?;
                let op = leaky_relu(f32::from_bits(*alpha));
                target.wire_node(format!("{prefix}.float"), op, &[a])?[0]
            }
            QKind::GlobalAveragePool(channels_last) => {
                let a = deq(target, 0, 0)?;
                let shape = target.outlet_fact(a)?.shape.clone();
                let rank = shape.rank();
                ensure!(rank >= 3, "QLinearGlobalAveragePool needs rank 3 or more");
                let axes: TVec<usize> = if *channels_last {
                    (1..rank - 1).collect()
                } else {
                    (2..rank).collect()
                };
                let mut count = TDim::Val(1);
                for &ax in &axes {
                    count *= shape[ax].clone();
                }
                let count = count
                    .to_i64()
                    .context("QLinearGlobalAveragePool needs known spatial dims")?;
                let sum = target.wire_node(
                    format!("{prefix}.sum"),
                    Reduce::new(axes, Reducer::Sum),
                    &[a],
                )?[0];
                let recip = target.add_const(
                    format!("{prefix}.recip"),
                    tensor0(1.0f32 / count as f32).broadcast_into_rank(rank)?,
                )?;
                target.wire_node(format!("{prefix}.float"), math::mul(), &[sum, recip])?[0]
            }
            QKind::Concat(axis) => {
                let parts = (0..self.inputs.len())
                    .map(|ix| deq(target, ix, 0))
                    .collect::<TractResult<TVec<_>>>()?;
                let rank = target.outlet_fact(parts[0])?.rank() as i64;
                let axis = if *axis < 0 { axis + rank } else { *axis } as usize;
                target.wire_node(format!("{prefix}.float"), TypedConcat::new(axis), &parts)?[0]
            }
            QKind::Gemm(alpha, trans_a, trans_b) => {
                let a = deq(target, 0, 0)?;
                // per-channel weights: the scale runs along N, axis 0 of B when transposed
                let b = deq(target, 1, if *trans_b { 0 } else { 1 })?;
                let expr = match (trans_a, trans_b) {
                    (false, false) => "mk,kn->mn",
                    (true, false) => "km,kn->mn",
                    (false, true) => "mk,nk->mn",
                    (true, true) => "km,nk->mn",
                };
                let einsum = EinSum::new(expr.parse()?, f32::datum_type());
                let mut y = target.wire_node(format!("{prefix}.matmul"), einsum, &[a, b])?[0];
                let alpha = f32::from_bits(*alpha);
                if alpha != 1.0 {
                    let k = target.add_const(
                        format!("{prefix}.alpha"),
                        tensor0(alpha).broadcast_into_rank(2)?,
                    )?;
                    y = target.wire_node(format!("{prefix}.scaled"), math::mul(), &[y, k])?[0];
                }
                if let Some(bias) = self.float_bias(target, inputs)? {
                    let n = bias.len();
                    let bias = target.add_const(
                        format!("{prefix}.bias"),
                        tract_ndarray::ArrayD::from_shape_vec(vec![1, n], bias)?.into_tensor(),
                    )?;
                    y = target.wire_node(format!("{prefix}.biased"), math::add(), &[y, bias])?[0];
                }
                y
            }
            QKind::Conv(conv) => {
                let x = deq(target, 0, 0)?;
                // weights OIHW: per-channel parameters run along the output channels
                let w = deq(target, 1, 0)?;
                let bias = self
                    .float_bias(target, inputs)?
                    .unwrap_or_else(|| vec![0.0]);
                let bias = target.add_const(format!("{prefix}.bias"), tensor1(&bias))?;
                conv.wire(&format!("{prefix}.conv"), target, &[x, w, bias])?[0]
            }
        })
    }

    /// The int32 bias (in units of `scale_0 × scale_1[n]`, zero point 0) as floats.
    fn float_bias(
        &self,
        target: &TypedModel,
        inputs: &[OutletId],
    ) -> TractResult<Option<Vec<f32>>> {
        let Some(c) = self.bias else {
            return Ok(None);
        };
        let (sa, _) = params(target, inputs, &self.inputs[0])?;
        let (sb, _) = params(target, inputs, &self.inputs[1])?;
        let raw = konst(target, inputs[c], "the bias")?;
        let raw = f32_values(&raw)?;
        Ok(Some(
            raw.iter()
                .enumerate()
                .map(|(n, v)| v * sa[0] * sb[n.min(sb.len() - 1)])
                .collect(),
        ))
    }
}

impl Expansion for QLinear {
    fn name(&self) -> StaticName {
        "QLinear".into()
    }

    fn rules<'r, 'p: 'r, 's: 'r>(
        &'s self,
        s: &mut Solver<'r>,
        inputs: &'p [TensorProxy],
        outputs: &'p [TensorProxy],
    ) -> TractResult<()> {
        check_input_arity(inputs, self.arity)?;
        check_output_arity(outputs, 1)?;
        match self.output {
            Some((_, Some(zp))) => s.equals(&outputs[0].datum_type, &inputs[zp].datum_type)?,
            Some((_, None)) => s.equals(&outputs[0].datum_type, u8::datum_type())?,
            None => s.equals(&outputs[0].datum_type, f32::datum_type())?,
        }
        match self.kind {
            QKind::Sigmoid | QKind::LeakyRelu(_) => {
                s.equals(&inputs[self.inputs[0].x].shape, &outputs[0].shape)?
            }
            QKind::GlobalAveragePool(_) => {
                s.equals(&inputs[self.inputs[0].x].rank, &outputs[0].rank)?
            }
            QKind::Gemm(..) => s.equals(&outputs[0].rank, 2)?,
            QKind::Conv(_) => s.equals(&inputs[self.inputs[0].x].rank, &outputs[0].rank)?,
            _ => {}
        }
        Ok(())
    }

    fn wire(
        &self,
        prefix: &str,
        target: &mut TypedModel,
        inputs: &[OutletId],
    ) -> TractResult<TVec<OutletId>> {
        let y = self.float_op(prefix, target, inputs)?;
        match self.output {
            Some((scale, zp)) => quantize(prefix, target, inputs, scale, zp, y),
            None => Ok(tvec!(y)),
        }
    }
}

#[cfg(test)]
mod tests {
    use tract_onnx::pb::{AttributeProto, ValueInfoProto};
    use tract_onnx::pb::{GraphProto, ModelProto, NodeProto, OperatorSetIdProto, TensorProto};
    use tract_onnx::prelude::*;

    /// A one-node graph: `y = DequantizeLinear(x, scale, zp, axis = 1)` on a `[2, 3]` u8 `x`,
    /// per-axis parameters; `x` an initializer (`constant`) or the graph's input.
    fn model(constant: bool) -> TypedModel {
        let tensor = |name: &str, data_type: i32, raw: Vec<u8>, dims: Vec<i64>| TensorProto {
            name: name.into(),
            data_type,
            dims,
            raw_data: raw,
            ..Default::default()
        };
        let x = tensor("x", 2, vec![0, 10, 255, 128, 7, 200], vec![2, 3]); // UINT8
        let scale: Vec<u8> = [0.5f32, 0.25, 2.0]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        let mut initializer = vec![
            tensor("s", 1, scale, vec![3]),
            tensor("z", 2, vec![128, 0, 7], vec![3]),
        ];
        let info = |name: &str| ValueInfoProto {
            name: name.into(),
            ..Default::default()
        };
        let mut input = vec![];
        if constant {
            initializer.push(x);
        } else {
            use tract_onnx::pb::tensor_shape_proto::{dimension, Dimension};
            use tract_onnx::pb::{type_proto, TensorShapeProto, TypeProto};
            let dim = |n: i64| Dimension {
                value: Some(dimension::Value::DimValue(n)),
                ..Default::default()
            };
            input.push(ValueInfoProto {
                r#type: Some(TypeProto {
                    value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                        elem_type: 2, // UINT8
                        shape: Some(TensorShapeProto {
                            dim: vec![dim(2), dim(3)],
                        }),
                    })),
                    ..Default::default()
                }),
                ..info("x")
            });
        }
        let proto = ModelProto {
            ir_version: 8,
            opset_import: vec![OperatorSetIdProto {
                domain: String::new(),
                version: 13,
            }],
            graph: Some(GraphProto {
                name: "dq".into(),
                node: vec![NodeProto {
                    op_type: "DequantizeLinear".into(),
                    input: vec!["x".into(), "s".into(), "z".into()],
                    output: vec!["y".into()],
                    attribute: vec![AttributeProto {
                        name: "axis".into(),
                        r#type: 2, // INT
                        i: 1,
                        ..Default::default()
                    }],
                    ..Default::default()
                }],
                initializer,
                input,
                output: vec![info("y")],
                ..Default::default()
            }),
            ..Default::default()
        };
        let mut model = crate::engine::onnx_parser()
            .model_for_proto_model(&proto)
            .unwrap();
        if !constant {
            model = model.with_input_fact(0, u8::fact([2, 3]).into()).unwrap();
        }
        model.into_typed().unwrap()
    }

    /// A constant input is folded into one constant, a graph input runs through the wired ops,
    /// both `(x − zp[c]) · scale[c]` along axis 1.
    #[test]
    fn dequantize_linear_folds_constants_and_runs_inputs_per_axis() {
        let want = [
            (0.0 - 128.0) * 0.5,
            (10.0 - 0.0) * 0.25,
            (255.0 - 7.0) * 2.0,
            (128.0 - 128.0) * 0.5,
            (7.0 - 0.0) * 0.25,
            (200.0 - 7.0) * 2.0,
        ];
        let folded = model(true);
        let y = folded
            .outlet_fact(folded.output_outlets().unwrap()[0])
            .unwrap();
        let k = y
            .konst
            .clone()
            .expect("a constant input folds into a constant");
        assert_eq!(k.shape(), &[2, 3]);
        assert_eq!(
            k.try_as_plain_ram().unwrap().as_slice::<f32>().unwrap(),
            &want
        );
        let wired = model(false);
        let x = tract_ndarray::arr2(&[[0u8, 10, 255], [128, 7, 200]]).into_tensor();
        let out = wired
            .into_runnable()
            .unwrap()
            .run(tvec!(x.into_tvalue()))
            .unwrap();
        let out = out[0].clone().into_tensor();
        assert_eq!(
            out.try_as_plain_ram().unwrap().as_slice::<f32>().unwrap(),
            &want
        );
    }
}
