"""Three QLinearConv layers (the QOperator convolution the runtime expands into dequantize →
float Conv → quantize, engine/qops.rs) and ONNX Runtime's outputs for a fixed input:

    python3 make_conv.py   # writes qconv.onnx, xc.npy, yc.npy (ORT 1.32 from PyPI)

x: f32 [1, 4, 9, 9] → QuantizeLinear (u8) → QLinearConv 3×3 stride 2, explicit pads, int8
weights per output channel, int32 bias → QLinearConv 1×1, weights per tensor, no bias →
QLinearConv depthwise 3×3 (group 8), auto_pad SAME_UPPER, u8 weights with a zero point →
DequantizeLinear → y [1, 8, 5, 5].
"""
import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

rng = np.random.default_rng(11)


def c(name, value):
    return numpy_helper.from_array(np.asarray(value), name)


inits = [
    c("xs", np.float32(0.02)), c("xz", np.uint8(120)),
    c("w1", rng.integers(-127, 127, (8, 4, 3, 3)).astype(np.int8)),
    c("w1s", (rng.random(8) * 0.01 + 0.005).astype(np.float32)), c("w1z", np.zeros(8, np.int8)),
    c("b1", rng.integers(-3000, 3000, 8).astype(np.int32)),
    c("y1s", np.float32(0.05)), c("y1z", np.uint8(128)),
    c("w2", rng.integers(-127, 127, (8, 8, 1, 1)).astype(np.int8)),
    c("w2s", np.float32(0.004)), c("w2z", np.int8(0)),
    c("y2s", np.float32(0.04)), c("y2z", np.uint8(100)),
    c("w3", rng.integers(0, 255, (8, 1, 3, 3)).astype(np.uint8)),
    c("w3s", (rng.random(8) * 0.01 + 0.005).astype(np.float32)), c("w3z", np.full(8, 128, np.uint8)),
    c("b3", rng.integers(-500, 500, 8).astype(np.int32)),
    c("y3s", np.float32(0.03)), c("y3z", np.uint8(90)),
]
nodes = [
    helper.make_node("QuantizeLinear", ["x", "xs", "xz"], ["xq"]),
    helper.make_node("QLinearConv", ["xq", "xs", "xz", "w1", "w1s", "w1z", "y1s", "y1z", "b1"], ["c1"],
                     kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]),
    helper.make_node("QLinearConv", ["c1", "y1s", "y1z", "w2", "w2s", "w2z", "y2s", "y2z"], ["c2"]),
    helper.make_node("QLinearConv", ["c2", "y2s", "y2z", "w3", "w3s", "w3z", "y3s", "y3z", "b3"], ["c3"],
                     group=8, auto_pad="SAME_UPPER"),
    helper.make_node("DequantizeLinear", ["c3", "y3s", "y3z"], ["y"]),
]


def save_and_run(name, nodes, inits, output, shape, x):
    """Saves the graph (input x [1, 4, 9, 9] f32, one f32 output) as NAME.onnx and returns ONNX
    Runtime's output for x."""
    graph = helper.make_graph(
        nodes, name,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 9, 9])],
        [helper.make_tensor_value_info(output, TensorProto.FLOAT, shape)],
        inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, f"{name}.onnx")
    session = ort.InferenceSession(f"{name}.onnx", providers=["CPUExecutionProvider"])
    return session.run(None, {"x": x})[0]


x = rng.normal(0, 1, (1, 4, 9, 9)).astype(np.float32)
y = save_and_run("qconv", nodes, inits, "y", [1, 8, 5, 5], x)
np.save("xc.npy", x)
np.save("yc.npy", y)
print("y range", y.min(), y.max(), "distinct levels", len(np.unique(y)))

# ConvInteger, as ONNX Runtime's dynamic quantization emits it: x f32 [1, 4, 9, 9] →
# DynamicQuantizeLinear → ConvInteger 3×3 stride 2 pads 1 (int8 weights, weight zero point 2:
# ONNX Runtime has no per-channel one) → Cast → × (x_scale · w_scale) → yi [1, 6, 5, 5].
# Writes qconvint.onnx and yi.npy (same input, xc.npy).
inits = [
    c("wi", rng.integers(-127, 127, (6, 4, 3, 3)).astype(np.int8)),
    c("wiz", np.int8(2)),
    c("wis", np.float32(0.01)),
]
nodes = [
    helper.make_node("DynamicQuantizeLinear", ["x"], ["xq", "xqs", "xqz"]),
    helper.make_node("ConvInteger", ["xq", "wi", "xqz", "wiz"], ["acc"],
                     kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]),
    helper.make_node("Cast", ["acc"], ["accf"], to=TensorProto.FLOAT),
    helper.make_node("Mul", ["xqs", "wis"], ["sc"]),
    helper.make_node("Mul", ["accf", "sc"], ["yi"]),
]
yi = save_and_run("qconvint", nodes, inits, "yi", [1, 6, 5, 5], x)
np.save("yi.npy", yi)
print("yi range", yi.min(), yi.max())
