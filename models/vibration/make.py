"""Train the `vibration` sample model: healthy vs worn machine, from 3-axis accelerometer windows.

The windows are synthetic, made by exactly the signal model the agent's emulated MPU-6050 uses
(`sensors/src/sim.rs`; keep the two in step): 128 samples at 200 Hz of acceleration in g, x/y/z,
quantized like the MPU-6050 at +-4 g (8192 LSB/g).

  healthy: gravity on z plus the machine's running speed f0 in 20..30 Hz at 0.05..0.15 g,
           white noise sigma 0.01 g
  worn:    the same plus looseness/imbalance harmonics at 2*f0 and 3*f0 (0.08..0.25 g each) and
           rougher noise (sigma 0.03 g)

Writes model.onnx (opset 17; input "accel" N x 3 x 128 float32, output "logits" N x 2),
calib_x.npy (calibration, training distribution: healthy windows only, as a fleet would see),
test_x.npy / test_y.npy (held out, both classes; 0 = normal, 1 = anomaly).

Regenerate:  python3 models/vibration/make.py   (needs torch, onnx, numpy; CI never runs it)
"""
import os

import numpy as np
import torch
from torch import nn

HERE = os.path.dirname(os.path.abspath(__file__))
RATE_HZ = 200.0
WINDOW = 128
LSB_PER_G = 8192.0
rng = np.random.default_rng(0)
torch.manual_seed(0)


def window(worn: bool, start: int) -> np.ndarray:
    """One window, samples start..start+WINDOW of a machine drawn at random."""
    t = (start + np.arange(WINDOW)) / RATE_HZ
    f0 = rng.uniform(20.0, 30.0)
    a1 = rng.uniform(0.05, 0.15)
    phase = rng.uniform(0, 2 * np.pi, size=3)
    gain = np.array([1.0, 0.6, 0.3])
    x = np.zeros((3, WINDOW))
    for axis in range(3):
        x[axis] = gain[axis] * a1 * np.sin(2 * np.pi * f0 * t + phase[axis])
    x[2] += 1.0
    sigma = 0.01
    if worn:
        for harmonic in (2, 3):
            amp = rng.uniform(0.08, 0.25)
            hp = rng.uniform(0, 2 * np.pi, size=3)
            for axis in range(3):
                x[axis] += gain[axis] * amp * np.sin(2 * np.pi * harmonic * f0 * t + hp[axis])
        sigma = 0.03
    x += rng.normal(0.0, sigma, size=x.shape)
    return (np.round(np.clip(x, -4.0, 4.0 - 1 / LSB_PER_G) * LSB_PER_G) / LSB_PER_G).astype(np.float32)


def dataset(n: int):
    y = rng.integers(0, 2, size=n)
    x = np.stack([window(bool(label), int(rng.integers(0, 100000))) for label in y])
    return x, y.astype(np.int64)


class VibrationCnn(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv1d(3, 16, 7, padding=3), nn.ReLU(),
            nn.Conv1d(16, 16, 5, stride=2, padding=2), nn.ReLU(),
            nn.Conv1d(16, 32, 5, stride=2, padding=2), nn.ReLU(),
            nn.AdaptiveAvgPool1d(1), nn.Flatten(), nn.Linear(32, 2),
        )

    def forward(self, accel):
        # remove gravity and scale: the model sees vibration, not orientation
        centered = accel - accel.mean(dim=2, keepdim=True)
        return self.net(centered * 10.0)


x_train, y_train = dataset(4000)
x_test, y_test = dataset(600)
model = VibrationCnn()
opt = torch.optim.Adam(model.parameters(), lr=3e-3)
xt, yt = torch.from_numpy(x_train), torch.from_numpy(y_train)
for epoch in range(25):
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
    acc = (model(torch.from_numpy(x_test)).argmax(1).numpy() == y_test).mean()
print(f"torch test accuracy: {acc:.4f}")

torch.onnx.export(
    model, torch.zeros(1, 3, WINDOW), os.path.join(HERE, "model.onnx"), opset_version=17,
    input_names=["accel"], output_names=["logits"],
    dynamic_axes={"accel": {0: "N"}, "logits": {0: "N"}}, dynamo=False,
)
healthy = x_train[y_train == 0]
np.save(os.path.join(HERE, "calib_x.npy"), healthy[:300])
np.save(os.path.join(HERE, "test_x.npy"), x_test)
np.save(os.path.join(HERE, "test_y.npy"), y_test)

import onnxruntime as ort  # noqa: E402

sess = ort.InferenceSession(os.path.join(HERE, "model.onnx"))
ort_acc = (sess.run(None, {"accel": x_test})[0].argmax(1) == y_test).mean()
print(f"onnxruntime test accuracy: {ort_acc:.4f}")
