"""Cost of a gradient evaluation relative to a forward pass, on the bundled model (CPU).

Runs the forward model and its gradient model (explainer.graph.gradients) in ONNX
Runtime on the same random batches, at batch sizes 1, 8 and 32, and reports the
ratio gradient time / forward time (median of timed rounds, interleaved so that
machine noise hits both alike). Also times the alternative formulation of Conv's
input gradient (ConvTranspose everywhere instead of Conv with flipped weights).

    .venv/bin/python benchmarks/bench_gradients.py            # prints and appends to RESULTS.md
    .venv/bin/python benchmarks/bench_gradients.py --no-write
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

from explainer.graph import grad_rules_nn
from explainer.graph.gradients import gradient_model

ROOT = Path(__file__).resolve().parent.parent
MODEL = ROOT / "models" / "efficientnet_lite0" / "model.onnx"


def session(proto: onnx.ModelProto | Path) -> ort.InferenceSession:
    data = str(proto) if isinstance(proto, Path) else proto.SerializeToString()
    return ort.InferenceSession(data, providers=["CPUExecutionProvider"])


def timed(runs: dict, rounds: int) -> dict:
    """Median seconds per call of each function, calls interleaved round by round (after a warm-up)."""
    for run in runs.values():
        run()
    times: dict = {k: [] for k in runs}
    for _ in range(rounds):
        for key, run in runs.items():
            t0 = time.perf_counter()
            run()
            times[key].append(time.perf_counter() - t0)
    return {k: float(np.median(v)) for k, v in times.items()}


def measure(batches: list[int], rounds: int) -> list[dict]:
    proto = onnx.load(str(MODEL))
    fwd = session(MODEL)
    grad = session(gradient_model(proto))
    grad_rules_nn.PREFER_FLIPPED_CONV = False
    grad_ct = session(gradient_model(proto))
    grad_rules_nn.PREFER_FLIPPED_CONV = True
    rng = np.random.default_rng(0)
    rows = []
    for n in batches:
        x = rng.normal(size=(n, 3, 224, 224)).astype(np.float32)
        wl = np.zeros((n, 1000), np.float32)
        wl[:, 1] = 1
        feed = {"input": x, "logit_weights": wl, "probability_weights": wl}
        t = timed({"forward_s": lambda: fwd.run(None, {"input": x}),
                   "gradient_s": lambda: grad.run(None, feed),
                   "convtranspose_s": lambda: grad_ct.run(None, feed)}, max(3, rounds // n))
        rows.append({"batch": n, **t})
        print(rows[-1], flush=True)
    return rows


def report(rows: list[dict]) -> str:
    lines = ["## Gradient graphs (CPU)", "",
             f"Bundled EfficientNet-Lite0 (224x224), ONNX Runtime {ort.__version__} CPUExecutionProvider, "
             f"{os.cpu_count()} cores ({platform.processor() or platform.machine()}), default session options. "
             "Gradient model = `explainer.graph.gradients.gradient_model` (outputs the logits and d score / "
             "d input); median of timed rounds. Target: ratio <= 3.", "",
             "| batch | forward (ms) | gradient model (ms) | ratio | ConvTranspose-only variant (ms) | its ratio |",
             "|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['batch']} | {1e3 * r['forward_s']:.1f} | {1e3 * r['gradient_s']:.1f} | "
                     f"{r['gradient_s'] / r['forward_s']:.2f} | {1e3 * r['convtranspose_s']:.1f} | "
                     f"{r['convtranspose_s'] / r['forward_s']:.2f} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batches", type=int, nargs="+", default=[1, 8, 32])
    p.add_argument("--rounds", type=int, default=64, help="timed calls at batch 1 (fewer for larger batches)")
    p.add_argument("--no-write", action="store_true")
    args = p.parse_args()
    text = report(measure(args.batches, args.rounds))
    print(text)
    if not args.no_write:
        with open(ROOT / "benchmarks" / "RESULTS.md", "a", encoding="utf-8") as f:
            f.write("\n" + text)


if __name__ == "__main__":
    main()
