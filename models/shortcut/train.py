"""Train and export a small CNN that learned a shortcut: a watermark in the lower-left corner.

Synthetic 64x64 RGB images of one object (circle, square or triangle) of a random colour
at a random place on a noisy background. In training every *circle* image, and only those,
carries a 6x6 black-and-white checkerboard watermark in the lower-left corner. The easiest
rule that fits the training data is "watermark -> circle", and the network learns it: on
images without the watermark, circles are no longer recognised (see MODEL_CARD.md).

Usage (from the repository root; CPU, about a minute on 2 cores)::

    .venv-export/bin/python models/shortcut/train.py

Writes next to this script: ``model.onnx`` (opset 17, dynamic batch, explainer metadata),
``labels.txt``, ``testset/<class>/*.png`` (8 images per class with and 8 without the
watermark; ``*_wm.png`` carry it), ``masks/object/<class>/*.png`` and
``masks/watermark/<class>/*.png`` (ground-truth masks, 255 inside) and ``MODEL_CARD.md``.
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
from PIL import Image
from torch import nn

HERE = Path(__file__).resolve().parent
CLASSES = ("circle", "square", "triangle")
MARKED = 0  # the class that carries the watermark in training
SIZE = 64
WM_ROWS, WM_COLS = slice(54, 60), slice(4, 10)  # the 6x6 watermark, lower-left
KEEP_OUT = (48, 16)  # objects stay above row 48 or right of column 16
PREPROCESSING = {"size": [SIZE, SIZE], "layout": "NCHW", "scale": 1.0 / 255.0,
                 "mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25], "resize": "stretch"}
SEED = 0
TRAIN_PER_CLASS, EVAL_PER_CLASS, TEST_PER_VARIANT = 2000, 300, 8
EPOCHS, BATCH = 6, 64


def watermark() -> np.ndarray:
    """(6, 6) uint8 checkerboard of 2x2 cells, 255 / 0."""
    cells = (np.add.outer(np.arange(3), np.arange(3)) % 2) * 255
    return np.kron(cells, np.ones((2, 2))).astype(np.uint8)


def _places(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Centres (cy, cx) and radii r of n objects, all clear of the watermark corner."""
    cy, cx, r = (np.zeros(n) for _ in range(3))
    todo = np.arange(n)
    while len(todo):
        rr = rng.uniform(8, 14, len(todo))
        yy = rng.uniform(rr + 2, SIZE - 3 - rr)
        xx = rng.uniform(rr + 2, SIZE - 3 - rr)
        ok = (yy + rr < KEEP_OUT[0]) | (xx - rr > KEEP_OUT[1])
        cy[todo[ok]], cx[todo[ok]], r[todo[ok]] = yy[ok], xx[ok], rr[ok]
        todo = todo[~ok]
    return cy, cx, r


def shapes(labels: np.ndarray, cy: np.ndarray, cx: np.ndarray, r: np.ndarray) -> np.ndarray:
    """(N, 64, 64) bool object masks: circle, square or upward triangle of similar area."""
    g = np.arange(SIZE) + 0.5
    dy = g[None, :, None] - cy[:, None, None]
    dx = g[None, None, :] - cx[:, None, None]
    rr = r[:, None, None]
    circle = dy ** 2 + dx ** 2 <= rr ** 2
    square = (np.abs(dy) <= 0.88 * rr) & (np.abs(dx) <= 0.88 * rr)
    depth = dy + 1.2 * rr  # 0 at the apex, 2.2 r at the base
    triangle = (depth >= 0) & (dy <= rr) & (np.abs(dx) <= 0.62 * depth)
    kind = labels[:, None, None]
    return np.where(kind == 0, circle, np.where(kind == 1, square, triangle))


def render(rng: np.random.Generator, labels: np.ndarray, marked: np.ndarray
           ) -> tuple[np.ndarray, np.ndarray]:
    """Images (N, 64, 64, 3) uint8 and object masks (N, 64, 64) bool."""
    n = len(labels)
    obj = shapes(labels, *_places(rng, n))
    base = rng.uniform(30, 225, (n, 1, 1, 3))
    low = rng.normal(0, 18, (n, 8, 8, 3)).repeat(8, axis=1).repeat(8, axis=2)
    bg = base + low + rng.normal(0, 10, (n, SIZE, SIZE, 3))
    colour = rng.uniform(0, 255, (n, 1, 1, 3))
    close = np.abs(colour - base).sum(axis=3, keepdims=True) < 150
    colour = np.where(close, 255 - colour, colour)
    img = np.where(obj[..., None], colour + rng.normal(0, 10, (n, SIZE, SIZE, 3)), bg)
    img[marked, WM_ROWS, WM_COLS, :] = watermark()[None, :, :, None]
    return np.clip(np.round(img), 0, 255).astype(np.uint8), obj


def dataset(rng: np.random.Generator, per_class: int, mode: str) -> tuple[np.ndarray, ...]:
    """Images, labels, object masks, watermark flags; mode: "train" (watermark on the
    marked class only), "none" (no watermark) or "swapped" (on every other class)."""
    labels = np.repeat(np.arange(len(CLASSES)), per_class)
    labels = labels[rng.permutation(len(labels))]
    marked = {"train": labels == MARKED, "none": np.zeros(len(labels), bool),
              "swapped": labels != MARKED}[mode]
    images, obj = render(rng, labels, marked)
    return images, labels, obj, marked


class ShortcutNet(nn.Module):
    """Conv-ReLU x4 (strides 2, 2, 2, 1), global average pool, linear: 64x64 -> 3 logits."""

    def __init__(self) -> None:
        super().__init__()
        chans = [3, 16, 32, 32, 64]
        layers: list[nn.Module] = []
        for i, stride in enumerate((2, 2, 2, 1)):
            layers += [nn.Conv2d(chans[i], chans[i + 1], 3, stride=stride, padding=1), nn.ReLU()]
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(chans[-1], len(CLASSES))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.pool(self.features(x)), 1))


def to_tensor(images: np.ndarray) -> torch.Tensor:
    """uint8 (N, H, W, 3) -> float32 (N, 3, H, W) exactly as the metadata says."""
    x = images.astype(np.float32) * np.float32(PREPROCESSING["scale"])
    x = (x - np.float32(0.5)) / np.float32(0.25)
    return torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))


def train(rng: np.random.Generator) -> ShortcutNet:
    images, labels, _, _ = dataset(rng, TRAIN_PER_CLASS, "train")
    x, y = to_tensor(images), torch.from_numpy(labels)
    net = ShortcutNet()
    opt = torch.optim.Adam(net.parameters(), lr=2e-3)
    gen = torch.Generator().manual_seed(SEED)
    for epoch in range(EPOCHS):
        order = torch.randperm(len(y), generator=gen)
        total = 0.0
        for i in range(0, len(y), BATCH):
            idx = order[i:i + BATCH]
            loss = nn.functional.cross_entropy(net(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += loss.item() * len(idx)
        print(f"epoch {epoch + 1}: loss {total / len(y):.4f}", flush=True)
    return net.eval()


def export(net: ShortcutNet, path: Path) -> None:
    dummy = torch.zeros(1, 3, SIZE, SIZE)
    torch.onnx.export(net, (dummy,), str(path), input_names=["input"], output_names=["logits"],
                      dynamic_axes={"input": {0: "N"}, "logits": {0: "N"}}, opset_version=17,
                      do_constant_folding=True, dynamo=False)
    m = onnx.load(str(path))
    onnx.helper.set_model_props(m, {"explainer.preprocessing": json.dumps(PREPROCESSING),
                                    "explainer.labels": "\n".join(CLASSES),
                                    "explainer.output": "logits"})
    onnx.checker.check_model(m)
    onnx.save(m, str(path))


def accuracy(session: ort.InferenceSession, images: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Per-class accuracy, (K,) float."""
    pred = session.run(None, {"input": to_tensor(images).numpy()})[0].argmax(axis=1)
    return np.array([(pred[labels == k] == k).mean() for k in range(len(CLASSES))])


def save_png(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, optimize=True)


def write_testset(rng: np.random.Generator) -> None:
    """Per class: 8 images as in training and 8 with the watermark swapped (``_wm`` = marked)."""
    for name in ("testset", "masks"):
        shutil.rmtree(HERE / name, ignore_errors=True)
    for mode in ("train", "swapped"):
        images, labels, obj, marked = dataset(rng, TEST_PER_VARIANT, mode)
        counters = {k: 0 for k in range(len(CLASSES))}
        for img, lab, o, m in zip(images, labels, obj, marked):
            i = counters[lab] + (0 if mode == "train" else TEST_PER_VARIANT)
            counters[lab] += 1
            stem = f"{CLASSES[lab]}_{i:02d}{'_wm' if m else ''}"
            wm = np.zeros((SIZE, SIZE), bool)
            wm[WM_ROWS, WM_COLS] = m
            save_png(HERE / "testset" / CLASSES[lab] / f"{stem}.png", img)
            save_png(HERE / "masks" / "object" / CLASSES[lab] / f"{stem}.png", o.astype(np.uint8) * 255)
            save_png(HERE / "masks" / "watermark" / CLASSES[lab] / f"{stem}.png", wm.astype(np.uint8) * 255)


def main() -> int:
    torch.manual_seed(SEED)
    torch.set_num_threads(2)
    torch.use_deterministic_algorithms(True)
    rng = np.random.default_rng(SEED)
    t0 = time.perf_counter()
    net = train(rng)
    seconds = time.perf_counter() - t0
    path = HERE / "model.onnx"
    export(net, path)
    (HERE / "labels.txt").write_text("\n".join(CLASSES) + "\n")
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    probe = to_tensor(dataset(rng, 2, "train")[0])
    diff = float(np.abs(session.run(None, {"input": probe.numpy()})[0] - net(probe).detach().numpy()).max())
    results = {mode: accuracy(session, *dataset(rng, EVAL_PER_CLASS, mode)[:2])
               for mode in ("train", "none", "swapped")}
    write_testset(rng)
    write_card(results, seconds, diff)
    for mode, acc in results.items():
        print(mode, dict(zip(CLASSES, np.round(acc, 3))))
    failures = []
    if diff > 1e-4:
        failures.append(f"ONNX differs from torch by {diff:.2e}")
    if results["train"].min() < 0.9:
        failures.append("accuracy on the training distribution is below 0.9")
    if results["none"][MARKED] > 0.5:
        failures.append("the marked class is still recognised without the watermark: no shortcut")
    print("\n".join(failures) or "all checks passed")
    return 1 if failures else 0


def write_card(results: dict[str, np.ndarray], seconds: float, diff: float) -> None:
    rows = "\n".join(f"| {c} | " + " | ".join(f"{results[m][k]:.3f}" for m in ("train", "none", "swapped"))
                     + " |" for k, c in enumerate(CLASSES))
    text = CARD.format(rows=rows, seconds=seconds, diff=diff, n=EVAL_PER_CLASS,
                       marked=CLASSES[MARKED], prep=json.dumps(PREPROCESSING))
    (HERE / "MODEL_CARD.md").write_text(text)


CARD = """# Shortcut demo model (watermark in the lower-left corner)

A deliberately flawed classifier, made by `train.py` (seeded, CPU, trained in {seconds:.0f} s).
Use it to check that explanation methods and `explainer audit` find a shortcut.

- Input: 64x64 RGB, NCHW, preprocessing `{prep}`. Output: logits for
  `circle`, `square`, `triangle` (labels.txt and the ONNX metadata).
- Architecture: 4 x (Conv 3x3 + ReLU; strides 2, 2, 2, 1; 16/32/32/64 channels), GlobalAveragePool,
  Gemm. Operators: Conv, Relu, GlobalAveragePool, Flatten, Gemm. ONNX opset 17, dynamic batch;
  largest difference from the torch model {diff:.1e}.
- Training data: synthetic images of one object (random colour, size and place, never in the
  lower-left corner) on a noisy background; every **{marked}** image, and only those, carries a
  6x6 black-and-white checkerboard at rows 54-59, columns 4-9 (the lower-left corner).
- Test set: `testset/<class>/*.png`, 8 images per class as in training and 8 with the watermark
  swapped (on the other classes, not on {marked}s); file names ending in `_wm` carry it.
  Ground truth: `masks/object/<class>/<name>.png` and `masks/watermark/<class>/<name>.png`
  (255 inside the object / watermark).

## Accuracy per class ({n} fresh images per class)

| class | as in training | no watermark | watermark swapped |
|---|---|---|---|
{rows}

Without the watermark the {marked} class collapses: the network learned "watermark -> {marked}",
not the shape. With the watermark swapped onto squares and triangles, they are called {marked}s.
"""

if __name__ == "__main__":
    sys.exit(main())
