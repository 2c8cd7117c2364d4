"""YOLOv8n as Ultralytics exports it to ONNX (opset 17, BatchNorm folded into the convolutions,
SiLU as Sigmoid·Mul, C2f's Split/Concat, SPPF's three max pools, nearest Resize, the Detect head
with its DFL softmax over 16 bins, anchors and strides as constants), written out layer by layer
with seeded random weights: the same graph, shapes and operator mix as `yolo export
format=onnx imgsz=SIZE` on yolov8n.pt, without PyTorch or a download. Speed does not depend on
the weights' values; the outputs mean nothing.

    python3 yolov8n.py OUT.onnx [SIZE]      (SIZE: input side, default 320)
"""
import sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

NC, REG_MAX = 80, 16


class Graph:
    def __init__(self, seed=0):
        self.rng = np.random.default_rng(seed)
        self.nodes, self.inits, self.n = [], [], 0

    def name(self, base):
        self.n += 1
        return f"{base}_{self.n}"

    def const(self, array, base="c"):
        name = self.name(base)
        self.inits.append(numpy_helper.from_array(np.asarray(array), name))
        return name

    def op(self, op_type, inputs, n_out=1, **attrs):
        outs = [self.name(op_type.lower()) for _ in range(n_out)]
        self.nodes.append(helper.make_node(op_type, inputs, outs, name=self.name(op_type), **attrs))
        return outs[0] if n_out == 1 else outs

    def conv2d(self, x, c1, c2, k=1, s=1):
        w = self.rng.normal(0, (2.0 / (c1 * k * k)) ** 0.5, (c2, c1, k, k)).astype(np.float32)
        b = self.rng.normal(0, 0.05, c2).astype(np.float32)
        p = k // 2
        return self.op("Conv", [x, self.const(w, "w"), self.const(b, "b")], kernel_shape=[k, k],
                       strides=[s, s], pads=[p, p, p, p], dilations=[1, 1], group=1)

    def conv(self, x, c1, c2, k=1, s=1):
        """Ultralytics Conv: Conv2d (BatchNorm folded) + SiLU."""
        y = self.conv2d(x, c1, c2, k, s)
        return self.op("Mul", [y, self.op("Sigmoid", [y])])

    def c2f(self, x, c1, c2, n, shortcut):
        c = c2 // 2
        y = self.op("Split", [self.conv(x, c1, 2 * c), self.const(np.array([c, c], np.int64), "split")],
                    n_out=2, axis=1)
        ys = list(y)
        for _ in range(n):
            h = self.conv(self.conv(ys[-1], c, c, 3), c, c, 3)
            ys.append(self.op("Add", [ys[-1], h]) if shortcut else h)
        return self.conv(self.op("Concat", ys, axis=1), (2 + n) * c, c2)

    def sppf(self, x, c1, c2):
        c = c1 // 2
        y = [self.conv(x, c1, c)]
        for _ in range(3):
            y.append(self.op("MaxPool", [y[-1]], kernel_shape=[5, 5], strides=[1, 1], pads=[2, 2, 2, 2]))
        return self.conv(self.op("Concat", y, axis=1), 4 * c, c2)

    def upsample(self, x):
        return self.op("Resize", [x, "", self.const(np.array([1, 1, 2, 2], np.float32), "scales")],
                       mode="nearest", coordinate_transformation_mode="asymmetric", nearest_mode="floor")


def build(size=320):
    g = Graph()
    x = "images"
    b0 = g.conv(x, 3, 16, 3, 2)
    b1 = g.conv(b0, 16, 32, 3, 2)
    b2 = g.c2f(b1, 32, 32, 1, True)
    b3 = g.conv(b2, 32, 64, 3, 2)
    b4 = g.c2f(b3, 64, 64, 2, True)
    b5 = g.conv(b4, 64, 128, 3, 2)
    b6 = g.c2f(b5, 128, 128, 2, True)
    b7 = g.conv(b6, 128, 256, 3, 2)
    b8 = g.c2f(b7, 256, 256, 1, True)
    b9 = g.sppf(b8, 256, 256)
    h12 = g.c2f(g.op("Concat", [g.upsample(b9), b6], axis=1), 384, 128, 1, False)
    p3 = g.c2f(g.op("Concat", [g.upsample(h12), b4], axis=1), 192, 64, 1, False)
    p4 = g.c2f(g.op("Concat", [g.conv(p3, 64, 64, 3, 2), h12], axis=1), 192, 128, 1, False)
    p5 = g.c2f(g.op("Concat", [g.conv(p4, 128, 128, 3, 2), b9], axis=1), 384, 256, 1, False)

    # Detect: per level a box branch (4·16 DFL bins) and a class branch, flattened and joined
    c2, c3 = max(16, 64 // 4, REG_MAX * 4), max(64, min(NC, 100))
    flat, anchors, strides = [], [], []
    for feat, ch, stride in ((p3, 64, 8), (p4, 128, 16), (p5, 256, 32)):
        box = g.conv2d(g.conv(g.conv(feat, ch, c2, 3), c2, c2, 3), c2, 4 * REG_MAX)
        cls = g.conv2d(g.conv(g.conv(feat, ch, c3, 3), c3, c3, 3), c3, NC)
        joined = g.op("Concat", [box, cls], axis=1)
        flat.append(g.op("Reshape", [joined, g.const(np.array([1, 4 * REG_MAX + NC, -1], np.int64), "shape")]))
        side = size // stride
        sy, sx = np.meshgrid(np.arange(side) + 0.5, np.arange(side) + 0.5, indexing="ij")
        anchors.append(np.stack([sx.ravel(), sy.ravel()]))
        strides.append(np.full(side * side, stride))
    anchors = np.concatenate(anchors, 1)[None].astype(np.float32)  # [1, 2, A]
    strides = np.concatenate(strides)[None].astype(np.float32)  # [1, A]
    a = anchors.shape[2]
    cat = g.op("Concat", flat, axis=2)
    box, cls = g.op("Split", [cat, g.const(np.array([4 * REG_MAX, NC], np.int64), "split")], n_out=2, axis=1)
    # DFL: softmax over each side's 16 bins, expectation by a 1×1 conv with weights 0..15
    d = g.op("Reshape", [box, g.const(np.array([1, 4, REG_MAX, a], np.int64), "shape")])
    d = g.op("Softmax", [g.op("Transpose", [d], perm=[0, 2, 1, 3])], axis=1)
    proj = np.arange(REG_MAX, dtype=np.float32).reshape(1, REG_MAX, 1, 1)
    d = g.op("Conv", [d, g.const(proj, "dfl")], kernel_shape=[1, 1])
    dist = g.op("Reshape", [d, g.const(np.array([1, 4, a], np.int64), "shape")])
    lt, rb = g.op("Split", [dist, g.const(np.array([2, 2], np.int64), "split")], n_out=2, axis=1)
    anc = g.const(anchors, "anchors")
    x1y1, x2y2 = g.op("Sub", [anc, lt]), g.op("Add", [anc, rb])
    cxy = g.op("Div", [g.op("Add", [x1y1, x2y2]), g.const(np.array(2, np.float32), "two")])
    wh = g.op("Sub", [x2y2, x1y1])
    dbox = g.op("Mul", [g.op("Concat", [cxy, wh], axis=1), g.const(strides, "strides")])
    out = g.op("Concat", [dbox, g.op("Sigmoid", [cls])], axis=1)
    g.nodes.append(helper.make_node("Identity", [out], ["output0"], name="output"))

    graph = helper.make_graph(
        g.nodes, "yolov8n",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, size, size])],
        [helper.make_tensor_value_info("output0", TensorProto.FLOAT, [1, 4 + NC, a])],
        g.inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="edgefleet-bench")
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


if __name__ == "__main__":
    size = int(sys.argv[2]) if len(sys.argv) > 2 else 320
    onnx.save(build(size), sys.argv[1])
