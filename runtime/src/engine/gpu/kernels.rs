//! The `gpu` engine's WGSL compute kernels. Each kernel is generic over shapes: its sizes and
//! strides come from a small per-dispatch parameter buffer (`p`, u32 words), so one pipeline per
//! kernel kind serves every node of every model. One thread per output element, except the
//! convolution (four adjacent outputs of a row), the matrix product (a 4×4 block, dispatched as
//! 2-D workgroups) and the row ops (one row).
//!
//! Parameter words shared by all kernels:
//! `p[0]` threads (output elements for most), `p[1]` threads per dispatch row, `p[2]` epilogue unary op,
//! `p[3]`/`p[4]` epilogue clamp low/high (f32 bits), `p[5]` epilogue parameter (f32 bits);
//! kernel-specific words start at [`KERNEL_PARAMS`].

/// First kernel-specific parameter word.
pub(crate) const KERNEL_PARAMS: usize = 8;
/// Threads per workgroup.
pub(crate) const WORKGROUP: u32 = 64;
/// Highest tensor rank the generic kernels index.
pub(crate) const MAX_RANK: usize = 6;

/// The kernel kinds; each is one WGSL entry point with its own binding count.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Kernel {
    /// `y = epilogue(x)`.
    Unary,
    /// `y = a op b` with broadcasting strides.
    Binary,
    /// NCHW convolution (1-D as H = 1), grouped, strided, dilated, padded, with bias.
    Conv,
    /// Two-operand einsum: sum over the axes the output lacks.
    Einsum,
    /// Max / sum / average pooling.
    Pool,
    /// Sum / max / min / product / mean of squares over axes.
    Reduce,
    /// Strided copy: transposes, slices, concatenation pieces.
    Copy,
    /// Row operations along one axis: softmax, log-softmax, RMS normalization.
    Rows,
    /// Transposed NCHW convolution (1-D as H = 1), grouped, strided, dilated, padded, with bias.
    Deconv,
    /// Resampling of one axis through a table of taps and weights (Resize).
    Resample,
    /// Local response normalization across channels.
    Lrn,
    /// A quantize → dequantize pair on f32 values (QDQ and QOperator graphs' activations).
    FakeQuant,
    /// A 256-entry table on 8-bit values held as f32 (tract's LookupTable).
    Lut,
    /// Rows of a tensor picked by indices held as f32 (Gather: embeddings).
    Gather,
    /// `cond ? a : b` with broadcasting strides (Where; booleans held as 0 / 1).
    Select,
    /// ONNX DynamicQuantizeLinear's scale and zero point from a tensor's range (one workgroup).
    DynamicRange,
    /// `clamp(round_even(x / scale) + zero point, 0, 255)` with [`Kernel::DynamicRange`]'s pair.
    DynamicQuantize,
    /// Batched matrix product in 32×32 output tiles (4×4 register-blocked outputs per thread),
    /// optional broadcast bias, output offset: the einsums that are one.
    Matmul,
}

impl Kernel {
    /// Input buffers the kernel reads (the output is the binding after them).
    pub(crate) fn inputs(self) -> usize {
        match self {
            Kernel::Unary
            | Kernel::Pool
            | Kernel::Reduce
            | Kernel::Copy
            | Kernel::Rows
            | Kernel::Lrn
            | Kernel::FakeQuant
            | Kernel::DynamicRange => 1,
            Kernel::Binary
            | Kernel::Einsum
            | Kernel::Resample
            | Kernel::Lut
            | Kernel::Gather
            | Kernel::DynamicQuantize => 2,
            Kernel::Conv | Kernel::Deconv | Kernel::Matmul | Kernel::Select => 3,
        }
    }

    /// The WGSL module for this kernel.
    pub(crate) fn source(self) -> String {
        let inputs = self.inputs();
        let mut s = String::from(PRELUDE);
        for i in 0..inputs {
            s.push_str(&format!(
                "@group(0) @binding({}) var<storage, read> in{i}: array<f32>;\n",
                i + 1
            ));
        }
        s.push_str(&format!(
            "@group(0) @binding({}) var<storage, read_write> out: array<f32>;\n",
            inputs + 1
        ));
        s.push_str(EPILOGUE);
        if matches!(self, Kernel::Conv | Kernel::Deconv) {
            s.push_str(CONV_GEOMETRY);
        }
        if matches!(self, Kernel::Binary | Kernel::Select) {
            s.push_str(BROADCAST);
        }
        s.push_str(match self {
            Kernel::Unary => UNARY,
            Kernel::Binary => BINARY,
            Kernel::Conv => CONV,
            Kernel::Einsum => EINSUM,
            Kernel::Pool => POOL,
            Kernel::Reduce => REDUCE,
            Kernel::Copy => COPY,
            Kernel::Rows => ROWS,
            Kernel::Deconv => DECONV,
            Kernel::Resample => RESAMPLE,
            Kernel::Lrn => LRN,
            Kernel::Matmul => MATMUL,
            Kernel::FakeQuant => FAKE_QUANT,
            Kernel::Lut => LUT,
            Kernel::Gather => GATHER,
            Kernel::Select => SELECT,
            Kernel::DynamicRange => DYNAMIC_RANGE,
            Kernel::DynamicQuantize => DYNAMIC_QUANTIZE,
        });
        s
    }
}

/// Unary operations an epilogue (or a standalone unary kernel) applies after the clamp.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub(crate) enum UnaryOp {
    None = 0,
    Sigmoid = 1,
    Tanh = 2,
    Exp = 3,
    Abs = 4,
    Neg = 5,
    Sqrt = 6,
    Recip = 7,
    Rsqrt = 8,
    HardSwish = 9,
    Silu = 10,
    LeakyRelu = 11,
    Square = 12,
    Ln = 13,
    Floor = 14,
    Ceil = 15,
    /// `x · Φ(x)` with the exact (erf) normal CDF.
    GeluExact = 16,
    /// 1 where `x` is NaN, else 0 (booleans are held as 0 / 1).
    IsNan = 17,
    /// 1 where `x` is 0, else 0 (logical not).
    Not = 18,
    /// 1 where `x` is not 0, else 0 (a cast to bool).
    NonZero = 19,
    Erf = 20,
}

impl UnaryOp {
    /// The op for a tract element-wise mini-op name, if the kernels have it.
    pub(crate) fn from_tract_name(name: &str) -> Option<UnaryOp> {
        Some(match name {
            "Sigmoid" => UnaryOp::Sigmoid,
            "Tanh" => UnaryOp::Tanh,
            "Exp" => UnaryOp::Exp,
            "Abs" => UnaryOp::Abs,
            "Neg" => UnaryOp::Neg,
            "Sqrt" => UnaryOp::Sqrt,
            "Recip" => UnaryOp::Recip,
            "Rsqrt" => UnaryOp::Rsqrt,
            "HardSwish" => UnaryOp::HardSwish,
            "Silu" => UnaryOp::Silu,
            "LeakyRelu" => UnaryOp::LeakyRelu,
            "Square" => UnaryOp::Square,
            "Ln" => UnaryOp::Ln,
            "Floor" => UnaryOp::Floor,
            "Ceil" => UnaryOp::Ceil,
            "GeluExact" => UnaryOp::GeluExact,
            "IsNan" => UnaryOp::IsNan,
            "Not" => UnaryOp::Not,
            "Erf" => UnaryOp::Erf,
            _ => return None,
        })
    }
}

/// Binary operations.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub(crate) enum BinaryOp {
    Add = 0,
    Sub = 1,
    Mul = 2,
    Div = 3,
    Max = 4,
    Min = 5,
    Pow = 6,
    /// Logical ops and comparisons: 1 or 0 (booleans are held as 0 / 1; any non-zero is true).
    And = 7,
    Or = 8,
    Xor = 9,
    Eq = 10,
    Ne = 11,
    Lt = 12,
    Gt = 13,
    Le = 14,
    Ge = 15,
}

impl BinaryOp {
    /// The op for a tract binary mini-op name, if the kernels have it.
    pub(crate) fn from_tract_name(name: &str) -> Option<BinaryOp> {
        Some(match name {
            "Add" => BinaryOp::Add,
            "Sub" => BinaryOp::Sub,
            "Mul" => BinaryOp::Mul,
            "Div" => BinaryOp::Div,
            "Max" => BinaryOp::Max,
            "Min" => BinaryOp::Min,
            "Pow" => BinaryOp::Pow,
            "And" => BinaryOp::And,
            "Or" => BinaryOp::Or,
            "Xor" => BinaryOp::Xor,
            "Eq" => BinaryOp::Eq,
            "NE" => BinaryOp::Ne,
            "LT" => BinaryOp::Lt,
            "GT" => BinaryOp::Gt,
            "LTE" => BinaryOp::Le,
            "GTE" => BinaryOp::Ge,
            _ => return None,
        })
    }
}

/// Reductions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub(crate) enum ReduceOp {
    Sum = 0,
    Max = 1,
    Min = 2,
    Prod = 3,
    MeanOfSquares = 4,
}

/// Pooling kinds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub(crate) enum PoolOp {
    Max = 0,
    Sum = 1,
    /// Average counting padding cells.
    AvgWithPad = 2,
    /// Average over the cells inside the input.
    AvgNoPad = 3,
}

const PRELUDE: &str = r#"
@group(0) @binding(0) var<storage, read> p: array<u32>;
fn pf(i: u32) -> f32 { return bitcast<f32>(p[i]); }
fn thread_index(gid: vec3<u32>) -> u32 { return gid.x + gid.y * p[1u]; }
"#;

const EPILOGUE: &str = r#"
// Abramowitz & Stegun 7.1.26 (|error| < 1.5e-7)
fn erf(x: f32) -> f32 {
  let t = 1.0 / (1.0 + 0.3275911 * abs(x));
  let poly = t * (0.254829592 + t * (-0.284496736 + t * (1.421413741
    + t * (-1.453152027 + t * 1.061405429))));
  return sign(x) * (1.0 - poly * exp(-x * x));
}
fn unary(op: u32, x: f32, k: f32) -> f32 {
  switch op {
    case 1u: { return 1.0 / (1.0 + exp(-x)); }
    case 2u: { return tanh(x); }
    case 3u: { return exp(x); }
    case 4u: { return abs(x); }
    case 5u: { return -x; }
    case 6u: { return sqrt(x); }
    case 7u: { return 1.0 / x; }
    case 8u: { return inverseSqrt(x); }
    case 9u: { return x * clamp(x / 6.0 + 0.5, 0.0, 1.0); }
    case 10u: { return x / (1.0 + exp(-x)); }
    case 11u: { return select(k * x, x, x >= 0.0); }
    case 12u: { return x * x; }
    case 13u: { return log(x); }
    case 14u: { return floor(x); }
    case 15u: { return ceil(x); }
    case 16u: { return 0.5 * x * (1.0 + erf(x * 0.70710678118654752)); }
    // on the bits: a shader compiler may assume floats are never NaN
    case 17u: { return select(0.0, 1.0, (bitcast<u32>(x) & 0x7fffffffu) > 0x7f800000u); }
    case 18u: { return select(0.0, 1.0, x == 0.0); }
    case 19u: { return select(0.0, 1.0, x != 0.0); }
    case 20u: { return erf(x); }
    default: { return x; }
  }
}
fn epilogue(x: f32) -> f32 {
  // no clamp unless one was folded: min / max may turn a NaN into the bound
  var y = x;
  if (p[3u] != 0xff800000u || p[4u] != 0x7f800000u) { y = min(max(x, pf(3u)), pf(4u)); }
  return unary(p[2u], y, pf(5u));
}
"#;

const UNARY: &str = r#"
@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
  let i = thread_index(gid);
  if (i >= p[0u]) { return; }
  out[i] = epilogue(in0[i]);
}
"#;

// BINARY's and SELECT's parameter words after the header: p[8] rank (the axes the walk visits;
// dims and strides padded on the left to 6), p[9] op, p[10..16] output dims, p[16..22],
// p[22..28], p[28..34] the three operands' strides (BINARY's third set is zeros)
const BROADCAST: &str = r#"
fn broadcast_offsets(i: u32) -> vec3<u32> {
  var rem = i;
  var at = vec3<u32>(0u);
  for (var k = 5i; k >= 6i - i32(p[8u]); k = k - 1i) {
    let d = p[10u + u32(k)];
    let c = rem % d;
    rem = rem / d;
    at = at + c * vec3<u32>(p[16u + u32(k)], p[22u + u32(k)], p[28u + u32(k)]);
  }
  return at;
}
"#;

const BINARY: &str = r#"
@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
  let i = thread_index(gid);
  if (i >= p[0u]) { return; }
  let at = broadcast_offsets(i);
  let a = in0[at.x];
  let b = in1[at.y];
  var y = 0.0;
  switch p[9u] {
    case 0u: { y = a + b; }
    case 1u: { y = a - b; }
    case 2u: { y = a * b; }
    case 3u: { y = a / b; }
    case 4u: { y = max(a, b); }
    case 5u: { y = min(a, b); }
    case 6u: { y = pow(a, b); }
    case 7u: { y = select(0.0, 1.0, a != 0.0 && b != 0.0); }
    case 8u: { y = select(0.0, 1.0, a != 0.0 || b != 0.0); }
    case 9u: { y = select(0.0, 1.0, (a != 0.0) != (b != 0.0)); }
    case 10u: { y = select(0.0, 1.0, a == b); }
    case 11u: { y = select(0.0, 1.0, a != b); }
    case 12u: { y = select(0.0, 1.0, a < b); }
    case 13u: { y = select(0.0, 1.0, a > b); }
    case 14u: { y = select(0.0, 1.0, a <= b); }
    default: { y = select(0.0, 1.0, a >= b); }
  }
  out[i] = epilogue(y);
}
"#;

// BROADCAST's words: the condition, the true and the false value
const SELECT: &str = r#"
@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
  let i = thread_index(gid);
  if (i >= p[0u]) { return; }
  let at = broadcast_offsets(i);
  out[i] = epilogue(select(in2[at.z], in1[at.y], in0[at.x] != 0.0));
}
"#;

// one workgroup of 256 over p[8] elements: out[0] the scale, out[1] the zero point of the range
// extended to hold 0 (NaNs skipped), as ONNX DynamicQuantizeLinear and the CPU engine define them
const DYNAMIC_RANGE: &str = r#"
var<workgroup> lows: array<f32, 256>;
var<workgroup> highs: array<f32, 256>;
@compute @workgroup_size(256)
fn main(@builtin(local_invocation_index) t: u32) {
  var lo = 0.0;
  var hi = 0.0;
  for (var i = t; i < p[8u]; i = i + 256u) {
    let v = in0[i];
    if (v < lo) { lo = v; }
    if (v > hi) { hi = v; }
  }
  lows[t] = lo;
  highs[t] = hi;
  workgroupBarrier();
  for (var s = 128u; s > 0u; s = s >> 1u) {
    if (t < s) {
      lows[t] = min(lows[t], lows[t + s]);
      highs[t] = max(highs[t], highs[t + s]);
    }
    workgroupBarrier();
  }
  if (t == 0u) {
    let scale = (highs[0] - lows[0]) / 255.0;
    var zero_point = 0.0;
    if (scale > 0.0) { zero_point = clamp(round(-lows[0] / scale), 0.0, 255.0); }
    out[0] = scale;
    out[1] = zero_point;
  }
}
"#;

// in1 = [scale, zero point]; NaN (and everything when the scale is 0) → the zero point
const DYNAMIC_QUANTIZE: &str = r#"
@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
  let i = thread_index(gid);
  if (i >= p[0u]) { return; }
  let scale = in1[0u];
  let x = in0[i];
  var q = in1[1u];
  if (scale > 0.0 && (bitcast<u32>(x) & 0x7fffffffu) <= 0x7f800000u) {
    q = clamp(round(x / scale) + q, 0.0, 255.0);
  }
  out[i] = q;
}
"#;

// the parameter words of CONV and DECONV after N (p[8])
const CONV_GEOMETRY: &str = r#"
struct ConvGeometry {
  C: u32, H: u32, W: u32, O: u32, OH: u32, OW: u32, KH: u32, KW: u32,
  SH: u32, SW: u32, DH: u32, DW: u32, PH: u32, PW: u32, G: u32,
}
fn conv_geometry() -> ConvGeometry {
  return ConvGeometry(p[9u], p[10u], p[11u], p[12u], p[13u], p[14u], p[15u], p[16u],
                      p[17u], p[18u], p[19u], p[20u], p[21u], p[22u], p[23u]);
}
"#;

// p[8..] N C H W  O OH OW  KH KW  SH SW  DH DW  PH PW  group has_bias; one thread per four
// adjacent outputs of a row (p[0] counts threads): each tap's weight is read once for four
const CONV: &str = r#"
@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
  let i = thread_index(gid);
  if (i >= p[0u]) { return; }
  let geo = conv_geometry();
  let OWB = (geo.OW + 3u) / 4u;
  let ow0 = (i % OWB) * 4u;
  let oh = (i / OWB) % geo.OH;
  let o = (i / (OWB * geo.OH)) % geo.O;
  let n = i / (OWB * geo.OH * geo.O);
  let cpg = geo.C / geo.G;
  let g = o / (geo.O / geo.G);
  var acc = vec4<f32>(0.0);
  if (p[24u] == 1u) { acc = vec4<f32>(in2[o]); } else if (p[24u] == 2u) { acc = vec4<f32>(in2[0u]); }
  let iw0 = i32(ow0 * geo.SW) - i32(geo.PW);
  let step = i32(geo.SW);
  for (var ci = 0u; ci < cpg; ci = ci + 1u) {
    let c = g * cpg + ci;
    let xbase = (n * geo.C + c) * geo.H * geo.W;
    let wbase = (o * cpg + ci) * geo.KH * geo.KW;
    for (var kh = 0u; kh < geo.KH; kh = kh + 1u) {
      let ih = i32(oh * geo.SH + kh * geo.DH) - i32(geo.PH);
      if (ih < 0i || ih >= i32(geo.H)) { continue; }
      let row = xbase + u32(ih) * geo.W;
      for (var kw = 0u; kw < geo.KW; kw = kw + 1u) {
        let wv = in1[wbase + kh * geo.KW + kw];
        let iw = vec4<i32>(iw0 + i32(kw * geo.DW)) + vec4<i32>(0i, step, 2i * step, 3i * step);
        let inside = (iw >= vec4<i32>(0i)) & (iw < vec4<i32>(i32(geo.W)));
        let at = vec4<u32>(clamp(iw, vec4<i32>(0i), vec4<i32>(i32(geo.W) - 1i)));
        let xv = vec4<f32>(in0[row + at.x], in0[row + at.y], in0[row + at.z], in0[row + at.w]);
        acc = acc + select(vec4<f32>(0.0), xv, inside) * wv;
      }
    }
  }
  let obase = ((n * geo.O + o) * geo.OH + oh) * geo.OW;
  for (var q = 0u; q < 4u; q = q + 1u) {
    if (ow0 + q < geo.OW) { out[obase + ow0 + q] = epilogue(acc[q]); }
  }
}
"#;

// p[8] reduced axes (1..=4), p[10..16] output dims, p[16..22] a strides per output axis,
// p[22..28] b strides per output axis, p[28..32] reduced dims, p[32..36] a strides, p[36..40] b
// (all left-padded: a single reduced axis is in the last word of each group)
const EINSUM: &str = r#"
@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
  let i = thread_index(gid);
  if (i >= p[0u]) { return; }
  var rem = i;
  var ia = 0u;
  var ib = 0u;
  for (var k = 5i; k >= 0i; k = k - 1i) {
    let d = p[10u + u32(k)];
    let c = rem % d;
    rem = rem / d;
    ia = ia + c * p[16u + u32(k)];
    ib = ib + c * p[22u + u32(k)];
  }
  var acc = 0.0;
  if (p[8u] == 1u) {
    let K = p[31u]; let sa = p[35u]; let sb = p[39u];
    for (var r = 0u; r < K; r = r + 1u) {
      acc = acc + in0[ia + r * sa] * in1[ib + r * sb];
    }
  } else {
    let total = p[28u] * p[29u] * p[30u] * p[31u];
    for (var r = 0u; r < total; r = r + 1u) {
      var rr = r;
      var ja = ia;
      var jb = ib;
      for (var k = 3i; k >= 0i; k = k - 1i) {
        let d = p[28u + u32(k)];
        let c = rr % d;
        rr = rr / d;
        ja = ja + c * p[32u + u32(k)];
        jb = jb + c * p[36u + u32(k)];
      }
      acc = acc + in0[ja] * in1[jb];
    }
  }
  out[i] = epilogue(acc);
}
"#;

// p[8..] N C H W  OH OW  KH KW  SH SW  DH DW  PH PW  op
const POOL: &str = r#"
@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
  let i = thread_index(gid);
  if (i >= p[0u]) { return; }
  let C = p[9u]; let H = p[10u]; let W = p[11u];
  let OH = p[12u]; let OW = p[13u]; let KH = p[14u]; let KW = p[15u];
  let SH = p[16u]; let SW = p[17u]; let DH = p[18u]; let DW = p[19u];
  let PH = p[20u]; let PW = p[21u]; let op = p[22u];
  let ow = i % OW;
  let oh = (i / OW) % OH;
  let nc = i / (OW * OH);
  let xbase = nc * H * W;
  var acc = 0.0;
  if (op == 0u) { acc = -3.4028235e38; }
  var count = 0u;
  for (var kh = 0u; kh < KH; kh = kh + 1u) {
    let ih = i32(oh * SH + kh * DH) - i32(PH);
    if (ih < 0i || ih >= i32(H)) { continue; }
    for (var kw = 0u; kw < KW; kw = kw + 1u) {
      let iw = i32(ow * SW + kw * DW) - i32(PW);
      if (iw < 0i || iw >= i32(W)) { continue; }
      let x = in0[xbase + u32(ih) * W + u32(iw)];
      if (op == 0u) { acc = max(acc, x); } else { acc = acc + x; }
      count = count + 1u;
    }
  }
  if (op == 2u) { acc = acc / f32(KH * KW); }
  if (op == 3u) { acc = acc / f32(max(count, 1u)); }
  out[i] = epilogue(acc);
}
"#;

// p[8] op, p[10..16] output dims, p[16..22] input strides per output axis,
// p[22..28] reduced dims, p[28..34] reduced strides
const REDUCE: &str = r#"
@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
  let i = thread_index(gid);
  if (i >= p[0u]) { return; }
  var rem = i;
  var base = 0u;
  for (var k = 5i; k >= 0i; k = k - 1i) {
    let d = p[10u + u32(k)];
    let c = rem % d;
    rem = rem / d;
    base = base + c * p[16u + u32(k)];
  }
  let op = p[8u];
  var acc = 0.0;
  if (op == 1u) { acc = -3.4028235e38; }
  if (op == 2u) { acc = 3.4028235e38; }
  if (op == 3u) { acc = 1.0; }
  let total = p[22u] * p[23u] * p[24u] * p[25u] * p[26u] * p[27u];
  for (var r = 0u; r < total; r = r + 1u) {
    var rr = r;
    var j = base;
    for (var k = 5i; k >= 0i; k = k - 1i) {
      let d = p[22u + u32(k)];
      let c = rr % d;
      rr = rr / d;
      j = j + c * p[28u + u32(k)];
    }
    let x = in0[j];
    switch op {
      case 0u: { acc = acc + x; }
      case 1u: { acc = max(acc, x); }
      case 2u: { acc = min(acc, x); }
      case 3u: { acc = acc * x; }
      default: { acc = acc + x * x; }
    }
  }
  if (op == 4u) { acc = acc / f32(total); }
  out[i] = epilogue(acc);
}
"#;

// p[8] source offset, p[9] destination offset, p[10..16] dims, p[16..22] source strides,
// p[22..28] destination strides; p[0] counts the copied elements
const COPY: &str = r#"
@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
  let i = thread_index(gid);
  if (i >= p[0u]) { return; }
  var rem = i;
  var s = p[8u];
  var d = p[9u];
  for (var k = 5i; k >= 0i; k = k - 1i) {
    let n = p[10u + u32(k)];
    let c = rem % n;
    rem = rem / n;
    s = s + c * p[16u + u32(k)];
    d = d + c * p[22u + u32(k)];
  }
  out[d] = epilogue(in0[s]);
}
"#;

/// What the `Rows` kernel computes along its axis.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub(crate) enum RowOp {
    Softmax = 0,
    LogSoftmax = 1,
    /// `x · (mean(x²) + eps)^-½` (tract's `RmsNorm`; eps in the next word).
    RmsNorm = 2,
}

// one thread per row: p[0] rows, p[8] axis length, p[9] inner size (axis stride), p[10] RowOp,
// p[11] eps (f32 bits, RMS normalization)
const ROWS: &str = r#"
@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
  let i = thread_index(gid);
  if (i >= p[0u]) { return; }
  let L = p[8u]; let inner = p[9u];
  let base = (i / inner) * L * inner + i % inner;
  if (p[10u] == 2u) {
    var ss = 0.0;
    for (var k = 0u; k < L; k = k + 1u) { let x = in0[base + k * inner]; ss = ss + x * x; }
    let r = inverseSqrt(ss / f32(L) + pf(11u));
    for (var k = 0u; k < L; k = k + 1u) { out[base + k * inner] = epilogue(in0[base + k * inner] * r); }
    return;
  }
  var m = -3.4028235e38;
  for (var k = 0u; k < L; k = k + 1u) { m = max(m, in0[base + k * inner]); }
  var s = 0.0;
  for (var k = 0u; k < L; k = k + 1u) { s = s + exp(in0[base + k * inner] - m); }
  for (var k = 0u; k < L; k = k + 1u) {
    let x = in0[base + k * inner] - m;
    if (p[10u] == 1u) { out[base + k * inner] = epilogue(x - log(s)); }
    else { out[base + k * inner] = epilogue(exp(x) / s); }
  }
}
"#;

// the CONV words; kernel as [G, O/G, C/G, KH, KW]: out[o, oh, ow] sums x[c, ih, iw] · w where
// oh + PH = ih·SH + kh·DH (and the same for w)
const DECONV: &str = r#"
@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
  let i = thread_index(gid);
  if (i >= p[0u]) { return; }
  let geo = conv_geometry();
  let ow = i % geo.OW;
  let oh = (i / geo.OW) % geo.OH;
  let o = (i / (geo.OW * geo.OH)) % geo.O;
  let n = i / (geo.OW * geo.OH * geo.O);
  let cpg = geo.C / geo.G;
  let g = o / (geo.O / geo.G);
  var acc = 0.0;
  if (p[24u] == 1u) { acc = in2[o]; } else if (p[24u] == 2u) { acc = in2[0u]; }
  for (var ci = 0u; ci < cpg; ci = ci + 1u) {
    let c = g * cpg + ci;
    let xbase = (n * geo.C + c) * geo.H * geo.W;
    let wbase = (o * cpg + ci) * geo.KH * geo.KW;
    for (var kh = 0u; kh < geo.KH; kh = kh + 1u) {
      let th = i32(oh + geo.PH) - i32(kh * geo.DH);
      if (th < 0i || th % i32(geo.SH) != 0i) { continue; }
      let ih = u32(th) / geo.SH;
      if (ih >= geo.H) { continue; }
      for (var kw = 0u; kw < geo.KW; kw = kw + 1u) {
        let tw = i32(ow + geo.PW) - i32(kw * geo.DW);
        if (tw < 0i || tw % i32(geo.SW) != 0i) { continue; }
        let iw = u32(tw) / geo.SW;
        if (iw >= geo.W) { continue; }
        acc = acc + in0[xbase + ih * geo.W + iw] * in1[wbase + kh * geo.KW + kw];
      }
    }
  }
  out[i] = epilogue(acc);
}
"#;

// p[8] length in, p[9] length out, p[10] inner size, p[11] taps per output; in1: the taps'
// input indices (u32 bits, `window` per output index) then their weights (an output index
// outside the input has all weights 0: its value is 0, as tract's Resize)
const RESAMPLE: &str = r#"
@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
  let i = thread_index(gid);
  if (i >= p[0u]) { return; }
  let LI = p[8u]; let LO = p[9u]; let inner = p[10u]; let window = p[11u];
  let j = i % inner;
  let x = (i / inner) % LO;
  let outer = i / (inner * LO);
  var acc = 0.0;
  for (var k = 0u; k < window; k = k + 1u) {
    let t = x * window + k;
    let wt = in1[LO * window + t];
    if (wt != 0.0) {
      acc = acc + wt * in0[(outer * LI + bitcast<u32>(in1[t])) * inner + j];
    }
  }
  out[i] = epilogue(acc);
}
"#;

// across channels of [N, C, plane]: p[8] C, p[9] plane, p[10] size, p[11] alpha / size,
// p[12] beta, p[13] bias (f32 bits)
const LRN: &str = r#"
@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
  let i = thread_index(gid);
  if (i >= p[0u]) { return; }
  let C = p[8u]; let plane = p[9u]; let size = p[10u];
  let c = (i / plane) % C;
  let first = i - c * plane;
  let lo = c - min(c, (size - 1u) / 2u);
  let hi = min(C - 1u, c + size / 2u);
  var s = 0.0;
  for (var k = lo; k <= hi; k = k + 1u) { let x = in0[first + k * plane]; s = s + x * x; }
  out[i] = epilogue(in0[i] / pow(pf(13u) + pf(11u) * s, pf(12u)));
}
"#;

// p[8..14]: 1 / scale, zero point, lo, hi of the quantize step, scale and zero point of the
// dequantize step (f32 bits). WGSL's round() is round-half-to-even, as ONNX's; NaN goes to the
// zero point (as tract and the CPU engine's FakeQuant)
const FAKE_QUANT: &str = r#"
@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
  let i = thread_index(gid);
  if (i >= p[0u]) { return; }
  let x = in0[i];
  let r = select(0.0, round(x * pf(8u)), x == x);
  let q = min(max(r + pf(9u), pf(10u)), pf(11u));
  out[i] = epilogue((q - pf(13u)) * pf(12u));
}
"#;

// in0: 8-bit integers held as f32; in1: the 256 results, indexed by the value's byte (two's
// complement for i8)
const LUT: &str = r#"
@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
  let i = thread_index(gid);
  if (i >= p[0u]) { return; }
  out[i] = epilogue(in1[u32(i32(in0[i]) & 255i)]);
}
"#;

// p[8] length of the gathered axis, p[9] indices, p[10] inner size; in1: the indices (integers
// held as f32; negative ones count from the end, as ONNX's; one outside the axis gives NaN, which
// the runtime's output check reports, where the CPU engine refuses the run)
const GATHER: &str = r#"
@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
  let i = thread_index(gid);
  if (i >= p[0u]) { return; }
  let L = p[8u]; let n = p[9u]; let inner = p[10u];
  let k = i % inner;
  let j = (i / inner) % n;
  let outer = i / (inner * n);
  var ix = i32(in1[j]);
  if (ix < 0i) { ix = ix + i32(L); }
  if (ix < 0i || ix >= i32(L)) { out[i] = bitcast<f32>(0x7fc00000u); return; }
  out[i] = epilogue(in0[(outer * L + u32(ix)) * inner + k]);
}
"#;

/// Output rows and columns of one `Matmul` workgroup.
pub(crate) const MATMUL_TILE: u32 = 32;

// dispatch (N/32, M/32, batch), 8×8 threads; p[8] M, p[9] N, p[10] K, p[11] bias 0 none / 1 in2,
// p[12..15] a strides (batch, m, k), p[15..18] b strides (batch, k, n),
// p[18..21] out strides (batch, m, n), p[21..24] bias strides (batch, m, n), p[24] / p[25]
// output / bias offsets (a column chunk of a product whose weights were split). Thread (x, y)
// owns rows m0 + y + 8i and columns n0 + x + 8j, i, j < 4, reading A and B from the buffers
// (register-blocked; see ARCHITECTURE.md for the workgroup-memory variant measured and dropped).
const MATMUL: &str = r#"
fn store_row(b: u32, m: u32, n: u32, row: vec4<f32>) {
  if (m >= p[8u]) { return; }
  for (var j = 0u; j < 4u; j = j + 1u) {
    let c = n + 8u * j;
    if (c >= p[9u]) { return; }
    var y = row[j];
    if (p[11u] == 1u) { y = y + in2[p[25u] + b * p[21u] + m * p[22u] + c * p[23u]]; }
    out[p[24u] + b * p[18u] + m * p[19u] + c * p[20u]] = epilogue(y);
  }
}
@compute @workgroup_size(8, 8)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
  let M = p[8u]; let N = p[9u]; let K = p[10u];
  let b = wg.z;
  let m = wg.y * 32u + lid.y; let n = wg.x * 32u + lid.x;
  let sam = p[13u]; let sak = p[14u]; let sbk = p[16u]; let sbn = p[17u];
  let a0 = b * p[12u] + min(m, M - 1u) * sam;
  let a1 = b * p[12u] + min(m + 8u, M - 1u) * sam;
  let a2 = b * p[12u] + min(m + 16u, M - 1u) * sam;
  let a3 = b * p[12u] + min(m + 24u, M - 1u) * sam;
  let b0 = b * p[15u] + min(n, N - 1u) * sbn;
  let b1 = b * p[15u] + min(n + 8u, N - 1u) * sbn;
  let b2 = b * p[15u] + min(n + 16u, N - 1u) * sbn;
  let b3 = b * p[15u] + min(n + 24u, N - 1u) * sbn;
  var acc0 = vec4<f32>(0.0); var acc1 = vec4<f32>(0.0);
  var acc2 = vec4<f32>(0.0); var acc3 = vec4<f32>(0.0);
  for (var k = 0u; k < K; k = k + 1u) {
    let bv = vec4<f32>(in1[b0 + k * sbk], in1[b1 + k * sbk], in1[b2 + k * sbk], in1[b3 + k * sbk]);
    acc0 = acc0 + in0[a0 + k * sak] * bv;
    acc1 = acc1 + in0[a1 + k * sak] * bv;
    acc2 = acc2 + in0[a2 + k * sak] * bv;
    acc3 = acc3 + in0[a3 + k * sak] * bv;
  }
  store_row(b, m, n, acc0);
  store_row(b, m + 8u, n, acc1);
  store_row(b, m + 16u, n, acc2);
  store_row(b, m + 24u, n, acc3);
}
"#;
