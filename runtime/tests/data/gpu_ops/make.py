"""Small ONNX graphs, one per op family the `gpu` engine lowers beyond the sample models and
MobileNetV2 (the ops of PP-OCR's detector and recognizer, ResNet, SqueezeNet, AlexNet/Inception).
`runtime/tests/gpu.rs` runs each on the gpu and the CPU engine and wants the same outputs:

    python3 make.py        # writes *.onnx here (onnx from PyPI; weights seeded)

Every graph has one input `x` (f32, or int64 token ids below 50) with a concrete shape; the test
makes its values.
`unsupported/` holds graphs the gpu engine must refuse (they load on the CPU, with the reason).
"""
import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

rng = np.random.default_rng(11)
N = helper.make_node


def w(name, *shape, scale=0.3):
    return numpy_helper.from_array((rng.standard_normal(shape) * scale).astype(np.float32), name)


def c(name, value, dtype=np.float32):
    return numpy_helper.from_array(np.asarray(value, dtype), name)


def save(name, nodes, x_shape, y_shape, inits=(), opset=13, where=".", x_type=TensorProto.FLOAT):
    graph = helper.make_graph(
        nodes, name,
        [helper.make_tensor_value_info("x", x_type, x_shape)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, y_shape)],
        list(inits))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, f"{where}/{name}.onnx")


# PP-OCR det's neck and head: a stride-2 conv, nearest upsampling by 2 (tract: NearestUpsample)
# added to a lateral 1x1 branch, a k2 s2 transposed convolution, a sigmoid
save("ppocr_det_neck", [
    N("Conv", ["x", "cw", "cb"], ["down"], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]),
    N("Resize", ["down", "", "scales"], ["up"], mode="nearest"),
    N("Conv", ["x", "lw", "lb"], ["lat"], kernel_shape=[1, 1]),
    N("Add", ["up", "lat"], ["sum"]),
    N("ConvTranspose", ["sum", "dw", "db"], ["de"], kernel_shape=[2, 2], strides=[2, 2]),
    N("Sigmoid", ["de"], ["y"]),
], [1, 4, 10, 12], [1, 3, 20, 24], [
    c("scales", [1, 1, 2, 2]), w("cw", 4, 4, 3, 3), w("cb", 4), w("lw", 4, 4, 1, 1), w("lb", 4),
    w("dw", 4, 3, 2, 2), w("db", 3),
])

# transposed convolution with padding, output padding, dilation and groups
save("conv_transpose_grouped", [
    N("ConvTranspose", ["x", "dw", "db"], ["y"], kernel_shape=[3, 3], strides=[2, 2],
      pads=[1, 0, 1, 1], output_padding=[1, 0], dilations=[1, 2], group=2),
], [1, 4, 5, 6], [1, 6, 10, 14], [w("dw", 4, 3, 3, 3), w("db", 6)])

# Resize in linear mode (half_pixel, non-integer sizes) and nearest with align_corners
save("resize_linear_and_nearest", [
    N("Resize", ["x", "", "", "sizes"], ["lin"], mode="linear",
      coordinate_transformation_mode="half_pixel"),
    N("Resize", ["lin", "", "", "sizes2"], ["y"], mode="nearest",
      coordinate_transformation_mode="align_corners", nearest_mode="round_prefer_ceil"),
], [1, 3, 5, 7], [1, 3, 6, 9], [
    c("sizes", [1, 3, 8, 11], np.int64), c("sizes2", [1, 3, 6, 9], np.int64),
])

# ResNet's projection shortcut: a stride-2 1x1 conv (tract: Downsample then a 1x1), ReLU, add
save("strided_pointwise", [
    N("Conv", ["x", "pw", "pb"], ["p"], kernel_shape=[1, 1], strides=[2, 2]),
    N("Conv", ["x", "cw", "cb"], ["q"], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]),
    N("Add", ["p", "q"], ["s"]),
    N("Relu", ["s"], ["y"]),
], [1, 5, 9, 8], [1, 6, 5, 4], [w("pw", 6, 5, 1, 1), w("pb", 6), w("cw", 6, 5, 3, 3), w("cb", 6)])

# AlexNet / Inception v1: local response normalization after a conv and max pooling
save("lrn", [
    N("Conv", ["x", "cw", "cb"], ["c"], kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
    N("Relu", ["c"], ["r"]),
    N("MaxPool", ["r"], ["m"], kernel_shape=[3, 3], strides=[2, 2]),
    N("LRN", ["m"], ["y"], size=5, alpha=1e-2, beta=0.75, bias=2.0),
], [1, 3, 11, 11], [1, 8, 5, 5], [w("cw", 8, 3, 3, 3), w("cb", 8)])

# SqueezeNet's head: opset 11 Softmax over axis 1 of a 4-d tensor (flattens axes 1..)
save("softmax_opset11", [
    N("Conv", ["x", "cw", "cb"], ["c"], kernel_shape=[1, 1]),
    N("Softmax", ["c"], ["y"], axis=1),
], [1, 4, 3, 3], [1, 10, 3, 3], [w("cw", 10, 4, 1, 1, scale=2.0), w("cb", 10)], opset=11)

# the SVTR recognizer's (PP-OCRv4 rec) transformer block: layer norm as ReduceMean/Sub/Pow/
# Sqrt/Div (tract: RmsNorm), attention (MatMul of two activations, Softmax, Transpose), Swish
save("svtr_block", [
    N("ReduceMean", ["x"], ["mu"], axes=[-1]),
    N("Sub", ["x", "mu"], ["d"]),
    N("Pow", ["d", "two"], ["d2"]),
    N("ReduceMean", ["d2"], ["var"], axes=[-1]),
    N("Add", ["var", "eps"], ["ve"]),
    N("Sqrt", ["ve"], ["sd"]),
    N("Div", ["d", "sd"], ["n"]),
    N("Mul", ["n", "gamma"], ["ng"]),
    N("Add", ["ng", "beta"], ["h"]),
    N("MatMul", ["h", "wq"], ["q"]),
    N("MatMul", ["h", "wk"], ["k"]),
    N("MatMul", ["h", "wv"], ["v"]),
    N("Transpose", ["k"], ["kt"], perm=[0, 2, 1]),
    N("MatMul", ["q", "kt"], ["att"]),
    N("Mul", ["att", "scale"], ["atts"]),
    N("Softmax", ["atts"], ["p"], axis=-1),
    N("MatMul", ["p", "v"], ["o"]),
    N("Sigmoid", ["o"], ["sg"]),
    N("Mul", ["o", "sg"], ["sw"]),
    N("Add", ["sw", "x"], ["y"]),
], [1, 12, 16], [1, 12, 16], [
    c("two", 2.0), c("eps", 1e-5), w("gamma", 16), w("beta", 16), w("wq", 16, 16),
    w("wk", 16, 16), w("wv", 16, 16), c("scale", 0.25),
])

# PP-OCR's backbone pieces: squeeze-excite (global pool, 1x1s, hard sigmoid, scale), hard swish,
# a grouped conv, average pooling, concat, flatten and a Gemm
save("ppocr_backbone_mix", [
    N("Conv", ["x", "cw", "cb"], ["c"], kernel_shape=[3, 3], pads=[1, 1, 1, 1], group=2),
    N("HardSwish", ["c"], ["hs"]),
    N("GlobalAveragePool", ["hs"], ["g"]),
    N("Conv", ["g", "s1", "s1b"], ["e1"], kernel_shape=[1, 1]),
    N("Relu", ["e1"], ["e1r"]),
    N("Conv", ["e1r", "s2", "s2b"], ["e2"], kernel_shape=[1, 1]),
    N("HardSigmoid", ["e2"], ["gate"], alpha=0.2, beta=0.5),
    N("Mul", ["hs", "gate"], ["se"]),
    N("AveragePool", ["se"], ["ap"], kernel_shape=[2, 2], strides=[2, 2]),
    N("MaxPool", ["se"], ["mp"], kernel_shape=[2, 2], strides=[2, 2]),
    N("Concat", ["ap", "mp"], ["cat"], axis=1),
    N("Flatten", ["cat"], ["f"], axis=1),
    N("Gemm", ["f", "fw", "fb"], ["y"], transB=1),
], [1, 4, 8, 8], [1, 5], [
    w("cw", 6, 2, 3, 3), w("cb", 6), w("s1", 3, 6, 1, 1), w("s1b", 3), w("s2", 6, 3, 1, 1),
    w("s2b", 6), w("fw", 5, 192, scale=0.1), w("fb", 5),
], opset=14)

# the tiled matrix product: a batch of two, partial 32-row and 32-column tiles, a bias and a
# clamp folded into it, one product of two activations (attention scores, transposed operand),
# and a 1x1 convolution (channels by pixels) with ReLU6; a dilated conv with a row width that is
# not a multiple of the conv kernel's four outputs per thread
save("tiled_matmul", [
    N("MatMul", ["x", "w"], ["xw"]),
    N("Add", ["xw", "bias"], ["xb"]),
    N("Relu", ["xb"], ["h"]),
    N("Transpose", ["h"], ["ht"], perm=[0, 2, 1]),
    N("MatMul", ["h", "ht"], ["scores"]),
    N("Reshape", ["scores", "img"], ["s4"]),
    N("Conv", ["s4", "cw", "cb"], ["c"], kernel_shape=[1, 1]),
    N("Clip", ["c", "zero", "six"], ["c6"]),
    N("Conv", ["c6", "dw", "db"], ["d"], kernel_shape=[3, 3], dilations=[2, 1], pads=[2, 1, 2, 1],
      strides=[1, 2]),
    N("Reshape", ["d", "flat"], ["y"]),
], [2, 37, 45], [1, 4 * 37 * 19], [
    w("w", 45, 50, scale=0.2), w("bias", 50), c("img", [1, 2, 37, 37], np.int64),
    w("cw", 40, 2, 1, 1), w("cb", 40), c("zero", 0.0), c("six", 6.0),
    w("dw", 4, 40, 3, 3, scale=0.05), w("db", 4), c("flat", [1, -1], np.int64),
])

# 1-D: a transposed convolution with padding (an audio decoder's upsampler), then a 1-D conv
save("conv_transpose_1d", [
    N("ConvTranspose", ["x", "tw", "tb"], ["t"], kernel_shape=[3], strides=[2], pads=[1, 1]),
    N("Conv", ["t", "cw", "cb"], ["y"], kernel_shape=[3], pads=[1, 1]),
], [1, 3, 9], [1, 2, 17], [w("tw", 3, 4, 3), w("tb", 4), w("cw", 2, 4, 3), w("cb", 2)])

# not lowered (3-d convolution): the model must load on the CPU and say why
save("conv3d", [
    N("Conv", ["x", "cw", "cb"], ["y"], kernel_shape=[3, 3, 3], pads=[1, 1, 1, 1, 1, 1]),
], [1, 2, 4, 4, 4], [1, 3, 4, 4, 4], [w("cw", 3, 2, 3, 3, 3), w("cb", 3)], where="unsupported")

# a transformer's front: int64 token ids (held as exact f32 on the gpu) gathering embedding rows,
# negative ids counting from the end; the exact (erf) GELU, which tract fuses into GeluExact
save("token_embedding_gelu", [
    N("Gather", ["emb", "x"], ["e"], axis=0),
    N("MatMul", ["e", "w"], ["h"]),
    N("Div", ["h", "sqrt2"], ["hs"]),
    N("Erf", ["hs"], ["erf"]),
    N("Add", ["erf", "one"], ["erf1"]),
    N("Mul", ["h", "erf1"], ["g"]),
    N("Mul", ["g", "half"], ["y"]),
], [1, 10], [1, 10, 24], [
    w("emb", 50, 16, scale=1.0), w("w", 16, 24), c("sqrt2", np.sqrt(2.0)), c("one", 1.0),
    c("half", 0.5),
], x_type=TensorProto.INT64)

# a transformer's attention mask and guards: booleans (held as 0 / 1 on the gpu) from a cast,
# comparisons and logical ops, Where picking scores or a large negative before a softmax, IsNaN
# replacing NaNs (here sqrt of negatives), a standalone Erf, GatherND with constant indices
save("mask_logic_where", [
    N("Floor", ["x"], ["fl"]),
    N("Cast", ["fl"], ["m1"], to=TensorProto.BOOL),
    N("Less", ["x", "lt"], ["m2"]),
    N("And", ["m1", "m2"], ["m3"]),
    N("Equal", ["fl", "one"], ["eq"]),
    N("Not", ["eq"], ["ne"]),
    N("Or", ["m3", "ne"], ["m4"]),
    N("GreaterOrEqual", ["x", "ge"], ["m5"]),
    N("Xor", ["m4", "m5"], ["mask"]),
    N("Where", ["mask", "x", "neg"], ["scores"]),
    N("Softmax", ["scores"], ["s"], axis=-1),
    N("Sqrt", ["x"], ["r"]),
    N("IsNaN", ["r"], ["nan"]),
    N("Where", ["nan", "zero", "r"], ["rr"]),
    N("Erf", ["x"], ["e"]),
    N("Cast", ["m3"], ["m3f"], to=TensorProto.FLOAT),
    N("Sum", ["s", "rr", "e", "m3f"], ["t"]),
    N("GatherND", ["t", "idx"], ["y"]),
], [2, 8, 8], [3, 8], [
    c("lt", 0.3), c("one", 1.0), c("ge", -0.5), c("neg", -3.4e38), c("zero", 0.0),
    c("idx", [[1, 2], [0, 7], [1, 0]], np.int64),
])

# ONNX Runtime's dynamic quantization (quantize_dynamic): each activation quantized at run time
# from its own range (DynamicQuantizeLinear), ConvInteger and MatMulInteger on the u8 values with
# the runtime zero point, the int32 result cast back and scaled by x_scale · w_scale
save("dynamic_quant_conv_matmul", [
    N("DynamicQuantizeLinear", ["x"], ["xq", "xs", "xz"]),
    N("ConvInteger", ["xq", "cw", "xz", "cwz"], ["ci"], kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
    N("Cast", ["ci"], ["cf"], to=TensorProto.FLOAT),
    N("Mul", ["xs", "cws"], ["cs"]),
    N("Mul", ["cf", "cs"], ["co"]),
    N("Relu", ["co"], ["r"]),
    N("Flatten", ["r"], ["f"]),
    N("DynamicQuantizeLinear", ["f"], ["fq", "fs", "fz"]),
    N("MatMulInteger", ["fq", "mw", "fz", "mwz"], ["mi"]),
    N("Cast", ["mi"], ["mf"], to=TensorProto.FLOAT),
    N("Mul", ["fs", "mws"], ["ms"]),
    N("Mul", ["mf", "ms"], ["y"]),
], [1, 3, 8, 8], [1, 10], [
    c("cw", rng.integers(0, 256, (4, 3, 3, 3)), np.uint8), c("cwz", 131, np.uint8),
    c("cws", 0.02), c("mw", rng.integers(0, 256, (256, 10)), np.uint8), c("mwz", 119, np.uint8),
    c("mws", 0.004),
])
