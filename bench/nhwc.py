"""A channel-first ONNX convnet rewritten the way TensorFlow exports one (tf2onnx without its
optimizer): the input and every activation channel-last (NHWC), each layout-bound operator
(Conv, BatchNormalization, pooling, LRN) between a Transpose to NCHW and one back. The model
computes the same function; its graph is full of transposes around the convolutions.

    python3 nhwc.py IN.onnx OUT.onnx
"""
import sys

import onnx
from onnx import helper

CHANNEL_FIRST = {"Conv", "BatchNormalization", "MaxPool", "AveragePool", "GlobalAveragePool",
                 "GlobalMaxPool", "LRN", "InstanceNormalization"}


def rewrite(model):
    g = model.graph
    inp = g.input[0]
    dims = inp.type.tensor_type.shape.dim
    if len(dims) != 4:
        raise ValueError("expects one 4-d NCHW input")
    n, c, h, w = [type(d)() for d in dims]
    for new, d in zip((n, c, h, w), list(dims)):
        new.CopyFrom(d)
    del dims[:]
    for d in (n, h, w, c):
        dims.add().CopyFrom(d)
    # layout[v]: the name of activation v's channel-last copy (v itself once it is born NHWC)
    layout = {inp.name: inp.name}
    nodes = []
    for node in g.node:
        x = node.input[0] if node.input else None
        if node.op_type in CHANNEL_FIRST:
            if x in layout:
                to_nchw = f"{x}__nchw_{len(nodes)}"
                nodes.append(helper.make_node("Transpose", [layout[x]], [to_nchw], perm=[0, 3, 1, 2]))
                node.input[0] = to_nchw
            y = node.output[0]
            node.output[0] = y + "__nchw"
            nodes.append(node)
            nodes.append(helper.make_node("Transpose", [y + "__nchw"], [y], perm=[0, 2, 3, 1]))
            layout[y] = y
        elif node.op_type in ("Flatten", "Reshape", "Gemm", "MatMul", "Softmax", "Squeeze"):
            if x in layout:
                back = f"{x}__back_{len(nodes)}"
                nodes.append(helper.make_node("Transpose", [layout[x]], [back], perm=[0, 3, 1, 2]))
                node.input[0] = back
            nodes.append(node)
        else:
            # element-wise on channel-last values stays channel-last (Concat moves its axis)
            if any(i in layout for i in node.input):
                if node.op_type == "Concat":
                    for a in node.attribute:
                        if a.name == "axis" and a.i in (1, -3):
                            a.i = 3
                for y in node.output:
                    layout[y] = y
            nodes.append(node)
    del g.node[:]
    g.node.extend(nodes)
    del g.value_info[:]
    return model


if __name__ == "__main__":
    m = rewrite(onnx.load(sys.argv[1]))
    onnx.checker.check_model(m)
    onnx.save(m, sys.argv[2])
