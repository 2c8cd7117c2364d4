"""Train the `digits` sample model: a small CNN on scikit-learn's bundled 8x8 digits set.

Writes model.onnx (opset 17), calib_x.npy (calibration inputs, from the training split),
test_x.npy / test_y.npy (held-out test split). Inputs are raw digit intensities 0..16, shaped
N x 1 x 8 x 8, float32; the bundle's spec.toml scales them to 0..1 (no client preprocessing).

Regenerate:  python3 models/digits/make.py   (needs torch, onnx, scikit-learn; CI never runs it)
"""
import os

import numpy as np
import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from torch import nn

HERE = os.path.dirname(os.path.abspath(__file__))
torch.manual_seed(0)
np.random.seed(0)

digits = load_digits()
x = digits.images.astype(np.float32)[:, None, :, :]  # N,1,8,8 in 0..16
y = digits.target.astype(np.int64)
x_train, x_test, y_train, y_test = train_test_split(x, y, test_size=0.2, random_state=0, stratify=y)


class DigitsCnn(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(),
            nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(),
            nn.MaxPool2d(2),  # 4x4
            nn.Conv2d(32, 32, 3, padding=1), nn.ReLU(),
        )
        self.head = nn.Sequential(nn.Flatten(), nn.Dropout(0.2), nn.Linear(32 * 4 * 4, 10))

    def forward(self, raw):
        # The model expects inputs already scaled to 0..1 by the bundle's normalization.
        return self.head(self.features(raw))


model = DigitsCnn()
opt = torch.optim.Adam(model.parameters(), lr=2e-3)
xt = torch.from_numpy(x_train / 16.0)
yt = torch.from_numpy(y_train)
for epoch in range(60):
    model.train()
    perm = torch.randperm(len(xt))
    for i in range(0, len(xt), 64):
        idx = perm[i:i + 64]
        opt.zero_grad()
        loss = nn.functional.cross_entropy(model(xt[idx]), yt[idx])
        loss.backward()
        opt.step()
model.eval()
with torch.no_grad():
    acc = (model(torch.from_numpy(x_test / 16.0)).argmax(1).numpy() == y_test).mean()
print(f"torch test accuracy: {acc:.4f}")

torch.onnx.export(
    model, torch.zeros(1, 1, 8, 8), os.path.join(HERE, "model.onnx"), opset_version=17,
    input_names=["image"], output_names=["logits"],
    dynamic_axes={"image": {0: "N"}, "logits": {0: "N"}}, dynamo=False,
)
np.save(os.path.join(HERE, "calib_x.npy"), x_train[:200])
np.save(os.path.join(HERE, "test_x.npy"), x_test)
np.save(os.path.join(HERE, "test_y.npy"), y_test)

import onnxruntime as ort  # noqa: E402

sess = ort.InferenceSession(os.path.join(HERE, "model.onnx"))
ort_acc = (sess.run(None, {"image": x_test / np.float32(16.0)})[0].argmax(1) == y_test).mean()
print(f"onnxruntime test accuracy: {ort_acc:.4f}")
