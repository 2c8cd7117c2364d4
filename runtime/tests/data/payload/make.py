"""Graphs for `runtime/tests/payload.rs`: one whose typed form has no NNEF form in tract
(MaxPool's indices output: `edgectl pack` falls back to the ONNX payload under `auto` and refuses
under `nnef`, naming the op), and one whose tensor names are not NNEF identifiers (`/`, `:`, a
leading digit, as in Caffe2 and TensorFlow exports: the optimized payload keeps them exact) and
whose metadata holds text tract's NNEF cannot carry (PaddleOCR's character list), and BERT's
erf-based GELU (tract's `GeluExact`).

    python3 make.py        # writes *.onnx here (onnx from PyPI)
"""
import onnx
from onnx import TensorProto, helper

graph = helper.make_graph(
    [helper.make_node("MaxPool", ["x"], ["pooled", "indices"], kernel_shape=[2, 2], strides=[2, 2]),
     helper.make_node("Cast", ["indices"], ["y"], to=TensorProto.FLOAT)],
    "maxpool_indices",
    [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 4, 4])],
    [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2, 2, 2])],
)
model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
model.ir_version = 8
onnx.checker.check_model(model, full_check=True)
onnx.save(model, "maxpool_indices.onnx")

graph = helper.make_graph(
    [helper.make_node("Relu", ["gpu_0/data_0"], ["0:relu"], name="conv/1"),
     helper.make_node("Mul", ["0:relu", "scale/w"], ["prob:0"], name="mul:2")],
    "odd_names",
    [helper.make_tensor_value_info("gpu_0/data_0", TensorProto.FLOAT, [1, 3, 4, 4])],
    [helper.make_tensor_value_info("prob:0", TensorProto.FLOAT, [1, 3, 4, 4])],
    [helper.make_tensor("scale/w", TensorProto.FLOAT, [1], [0.5])],
)
model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
model.ir_version = 8
# metadata as PaddleOCR writes it (its character list: newlines, quotes, CJK)
helper.set_model_props(model, {"character": "'\n疗\n\"\n\\\n2", "producer": "plain"})
onnx.checker.check_model(model, full_check=True)
onnx.save(model, "odd_names.onnx")

# GELU as BERT exports it, 0.5 x (1 + erf(x / sqrt 2)): tract folds it into its GeluExact op
graph = helper.make_graph(
    [helper.make_node("Div", ["x", "sqrt2"], ["scaled"]),
     helper.make_node("Erf", ["scaled"], ["erf"]),
     helper.make_node("Add", ["erf", "one"], ["shifted"]),
     helper.make_node("Mul", ["x", "shifted"], ["twice"]),
     helper.make_node("Mul", ["twice", "half"], ["y"])],
    "gelu_erf",
    [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 16])],
    [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 16])],
    [helper.make_tensor("sqrt2", TensorProto.FLOAT, [], [2 ** 0.5]),
     helper.make_tensor("one", TensorProto.FLOAT, [], [1.0]),
     helper.make_tensor("half", TensorProto.FLOAT, [], [0.5])],
)
model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
model.ir_version = 8
onnx.checker.check_model(model, full_check=True)
onnx.save(model, "gelu_erf.onnx")
