"""Where a gradient evaluation's time goes: ONNX Runtime's per-node profile, by operator.

Run from the repository root::

    .venv/bin/python benchmarks/profile_gradient.py [--batch 32]

Profiles the bundled model's forward graph and its input-gradient graph (as the explainer
builds it) on one single-threaded session each (the explainer's CPU plan runs one
single-threaded session per core), a few runs each, and prints the kernel time per
operator type, for the forward graph and the gradient graph, in milliseconds per image.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import sys
import tempfile
from pathlib import Path

import numpy as np
import onnxruntime as ort

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from explainer.backends.onnx_gradients import load_with_weights  # noqa: E402
from explainer.graph.gradients import gradient_model  # noqa: E402

MODEL = ROOT / "models/efficientnet_lite0/model.onnx"


def profile(model: bytes | str, feed: dict, runs: int) -> dict[str, float]:
    """Kernel microseconds per operator type, summed over ``runs`` runs (warm-up excluded)."""
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.enable_profiling = True
    opts.profile_file_prefix = os.path.join(tempfile.mkdtemp(prefix="explainer-prof-"), "p")
    s = ort.InferenceSession(model, opts, providers=["CPUExecutionProvider"])
    s.run(None, feed)
    for _ in range(runs):
        s.run(None, feed)
    path = s.end_profiling()
    events = json.loads(Path(path).read_text())
    Path(path).unlink()
    per_op: dict[str, float] = collections.defaultdict(float)
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
            per_op[e["args"].get("op_name", "?")] += e["dur"]
    return dict(per_op)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    n = args.batch
    x = np.random.default_rng(0).random((n, 3, 224, 224), dtype=np.float32)
    w = np.zeros((n, 1000), np.float32)
    w[:, 967] = 1.0
    fwd = profile(str(MODEL), {"input": x}, args.runs)
    grad_bytes = gradient_model(load_with_weights(MODEL)).SerializeToString()
    grad = profile(grad_bytes, {"input": x, "logit_weights": w, "probability_weights": 0 * w}, args.runs)
    scale = 1e-3 / ((args.runs + 1) * n)  # us over runs+1 runs -> ms per image
    tf, tg = sum(fwd.values()) * scale, sum(grad.values()) * scale
    print(f"## Gradient profile (batch {n}, one thread, ms per image)\n")
    print(f"forward {tf:.2f} ms, gradient {tg:.2f} ms: ratio {tg / tf:.2f}\n")
    print("| operator | forward ms | gradient graph ms | share of gradient |\n|---|---|---|---|")
    for op in sorted(set(fwd) | set(grad), key=lambda o: -grad.get(o, 0)):
        g = grad.get(op, 0) * scale
        print(f"| {op} | {fwd.get(op, 0) * scale:.2f} | {g:.2f} | {g / tg:.0%} |")


if __name__ == "__main__":
    main()
