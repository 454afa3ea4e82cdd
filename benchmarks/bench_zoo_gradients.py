"""Gradient / forward cost on transformer-era models: the zoo's ViT and ConvNeXt next to the bundled model.

Each model's forward session and its gradient model (explainer.graph.gradients, input
gradient, standard rule) run in ONNX Runtime on the same random batches (batch 1 and 32,
default threads), timed in steady state as in bench_gradients.py; the report gives the
medians and gradient time / forward time.

    .venv/bin/python benchmarks/bench_zoo_gradients.py            # prints and appends to RESULTS.md
    .venv/bin/python benchmarks/bench_zoo_gradients.py --no-write
"""

from __future__ import annotations

import argparse
import platform
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

from bench_gradients import session, steady
from explainer.graph.gradients import gradient_model

ROOT = Path(__file__).resolve().parent.parent
MODELS = {"bundled EfficientNet-Lite0 (224x224)": ROOT / "explainer" / "data" / "efficientnet_lite0" / "model.onnx",
          "zoo ViT (32x32, 2 blocks, 17 tokens)": ROOT / "tests" / "zoo" / "vit.onnx",
          "zoo ConvNeXt (32x32, 3 blocks)": ROOT / "tests" / "zoo" / "convnext.onnx"}


def measure(batches: list[int], rounds: int) -> list[dict]:
    rows = []
    rng = np.random.default_rng(0)
    for label, path in MODELS.items():
        proto = onnx.load(str(path))
        dims = [d.dim_value for d in proto.graph.input[0].type.tensor_type.shape.dim]
        fwd, grad = session(path), session(gradient_model(proto))
        name, k = proto.graph.input[0].name, int(np.prod([d.dim_value for d in
                                                          proto.graph.output[0].type.tensor_type.shape.dim[1:]]))
        for n in batches:
            x = rng.normal(size=[n] + dims[1:]).astype(np.float32)
            w = np.zeros((n, k), np.float32)
            w[:, 0] = 1
            feed = {name: x, "logit_weights": w, "probability_weights": np.zeros_like(w)}
            t = steady({"forward": lambda: fwd.run(None, {name: x}),
                        "gradient": lambda: grad.run(["gradient"], feed)}, rounds)
            rows.append(dict(model=label, batch=n, forward=t["forward"] * 1e3, gradient=t["gradient"] * 1e3))
    return rows


def report(rows: list[dict]) -> str:
    lines = [f"\n## Gradient / forward on transformer-era models (CPU, issue 12)\n",
             f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}. ONNX Runtime {ort.__version__} "
             f"CPUExecutionProvider, {platform.machine()}, default threads; plain sessions of the forward model "
             "and of `gradient_model` (input gradient, standard rule), steady-state medians. "
             "Reproduce: `.venv/bin/python benchmarks/bench_zoo_gradients.py`.\n",
             "| model | batch | forward (ms) | gradient (ms) | ratio |", "|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['model']} | {r['batch']} | {r['forward']:.2f} | {r['gradient']:.2f} | "
                     f"{r['gradient'] / r['forward']:.2f} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--no-write", action="store_true")
    args = p.parse_args()
    text = report(measure([1, 32], args.rounds))
    print(text)
    if not args.no_write:
        with open(ROOT / "benchmarks" / "RESULTS.md", "a", encoding="utf-8") as f:
            f.write(text)


if __name__ == "__main__":
    main()
