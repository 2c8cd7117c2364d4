"""A small QOperator graph with every com.microsoft quantized op the runtime adds to tract
(QLinearAdd, QLinearMul, QLinearSigmoid, QLinearLeakyRelu, QLinearConcat,
QLinearGlobalAveragePool, QGemm), and ONNX Runtime's outputs for a fixed input:

    python3 make.py        # writes qops.onnx, x.npy, y.npy (ORT 1.32 from PyPI)

Input x: f32 [1, 4, 5, 5] → QuantizeLinear (u8) → the ops above → DequantizeLinear → y [1, 6].
"""
import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

rng = np.random.default_rng(7)
MS = "com.microsoft"


def c(name, value):
    return numpy_helper.from_array(np.asarray(value), name)


inits = [
    c("xs", np.float32(0.02)), c("xz", np.uint8(10)),
    c("b", rng.integers(0, 255, (1, 4, 5, 5)).astype(np.uint8)), c("bs", np.float32(0.01)), c("bz", np.uint8(128)),
    c("as", np.float32(0.03)), c("az", np.uint8(100)),
    c("ms", np.float32(0.05)), c("mz", np.uint8(20)),
    c("ss", np.float32(1.0 / 256)), c("sz", np.uint8(0)),
    c("ls", np.float32(0.04)), c("lz", np.uint8(60)),
    c("cs", np.float32(0.05)), c("cz", np.uint8(50)),
    c("gs", np.float32(0.02)), c("gz", np.uint8(30)),
    # QGemm: A [1, 8] u8, B [6, 8] i8 per output channel (transB), int32 bias
    c("w", rng.integers(-127, 127, (6, 8)).astype(np.int8)),
    c("ws", (rng.random(6) * 0.01 + 0.005).astype(np.float32)), c("wz", np.zeros(6, np.int8)),
    c("wb", rng.integers(-2000, 2000, 6).astype(np.int32)),
    c("ys", np.float32(0.03)), c("yz", np.uint8(128)),
    c("flat", np.array([1, 8], np.int64)),
]
nodes = [
    helper.make_node("QuantizeLinear", ["x", "xs", "xz"], ["xq"]),
    helper.make_node("QLinearAdd", ["xq", "xs", "xz", "b", "bs", "bz", "as", "az"], ["a"], domain=MS),
    helper.make_node("QLinearMul", ["a", "as", "az", "xq", "xs", "xz", "ms", "mz"], ["m"], domain=MS),
    helper.make_node("QLinearSigmoid", ["m", "ms", "mz", "ss", "sz"], ["s"], domain=MS),
    helper.make_node("QLinearLeakyRelu", ["a", "as", "az", "ls", "lz"], ["l"], domain=MS, alpha=0.1),
    helper.make_node("QLinearConcat", ["cs", "cz", "s", "ss", "sz", "l", "ls", "lz"], ["cat"], domain=MS, axis=1),
    helper.make_node("QLinearGlobalAveragePool", ["cat", "cs", "cz", "gs", "gz"], ["g"], domain=MS),
    helper.make_node("Reshape", ["g", "flat"], ["gf"]),
    helper.make_node("QGemm", ["gf", "gs", "gz", "w", "ws", "wz", "wb", "ys", "yz"], ["yq"], domain=MS,
                     transB=1, alpha=1.0),
    helper.make_node("DequantizeLinear", ["yq", "ys", "yz"], ["y"]),
]
graph = helper.make_graph(
    nodes, "qops",
    [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 5, 5])],
    [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 6])],
    inits)
model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13), helper.make_opsetid(MS, 1)])
model.ir_version = 8
onnx.save(model, "qops.onnx")
x = rng.normal(0, 1, (1, 4, 5, 5)).astype(np.float32)
y = ort.InferenceSession("qops.onnx", providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
np.save("x.npy", x)
np.save("y.npy", y)
print("y =", y)
