"""Export the `mobilenetv2` sample model: torchvision's MobileNetV2 architecture with seeded random
weights (no download), 1x3x224x224, for speed work and for checking our outputs against ONNX Runtime.

Writes model.onnx (opset 17), calib_x.npy (4 synthetic RGB images, raw pixel values 0..255, NCHW),
ref_input.npy (one more such image) and ref_output.npy: ONNX Runtime's logits for ref_input after the
same normalization the bundle applies ((x / 255 - mean) / std, computed in float32).

Regenerate:  python3 models/mobilenetv2/make.py   (needs torch, torchvision, onnx, onnxruntime)
"""
import os

import numpy as np
import torch
import torchvision

HERE = os.path.dirname(os.path.abspath(__file__))
torch.manual_seed(0)
rng = np.random.default_rng(0)

model = torchvision.models.mobilenet_v2(weights=None)
model.eval()
# BatchNorm running stats at init are (0, 1); give them plausible values so activations are not
# degenerate and the comparison against ONNX Runtime means something.
with torch.no_grad():
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
torch.onnx.export(
    model, torch.zeros(1, 3, 224, 224), os.path.join(HERE, "model.onnx"), opset_version=17,
    input_names=["image"], output_names=["logits"], dynamo=False,
)


def synthetic_images(n):
    """Smooth random images (low-frequency noise upsampled), pixel values 0..255."""
    low = rng.uniform(0, 255, size=(n, 3, 7, 7)).astype(np.float32)
    img = low.repeat(32, axis=2).repeat(32, axis=3)
    img += rng.normal(0, 12, size=img.shape).astype(np.float32)
    return np.clip(img, 0, 255).round().astype(np.float32)


calib = synthetic_images(4)
ref = synthetic_images(1)
np.save(os.path.join(HERE, "calib_x.npy"), calib)
np.save(os.path.join(HERE, "ref_input.npy"), ref)

mean = np.array([0.485, 0.456, 0.406], dtype=np.float32).reshape(1, 3, 1, 1)
std = np.array([0.229, 0.224, 0.225], dtype=np.float32).reshape(1, 3, 1, 1)
normalized = ((ref * np.float32(1.0 / 255.0)) - mean) / std

import onnxruntime as ort  # noqa: E402

sess = ort.InferenceSession(os.path.join(HERE, "model.onnx"))
out = sess.run(None, {"image": normalized.astype(np.float32)})[0]
np.save(os.path.join(HERE, "ref_output.npy"), out)
print("ref output range", out.min(), out.max(), "argmax", out.argmax())
