"""Adaptive RISE and LIME: forward passes saved and agreement with the full-budget map.

Run from the repository root::

    .venv/bin/python benchmarks/bench_adaptive.py [--quality balanced] [--shortcut-images 24]

For every image (the bundled EfficientNet-Lite0 examples, and the shortcut model's test
set), runs RISE (4000 masks) and LIME (2048 samples, tree and linear surrogates) at
``quality="best"`` (every sample) and at the adaptive preset, and reports the passes the
adaptive run used, the ratio, and the Spearman rank correlation of the adaptive map with
the full-budget map (pixels for RISE; the features' importances for LIME, the surrogate's
own output). Prints a markdown section.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from explainer.api import load_model  # noqa: E402
from explainer.methods.lime import lime  # noqa: E402
from explainer.methods.rise import rise  # noqa: E402
from explainer.perturbation.adaptive import spearman  # noqa: E402


def _runs(model, image, quality: str) -> list[tuple[str, int, int, float, float]]:
    """(method, full passes, adaptive passes, spearman, adaptive wall s) for one image."""
    rows = []
    for name, fn, key, opts in (("RISE", rise, None, {}),
                                ("LIME tree", lime, "feature_importance", dict(model_type="tree")),
                                ("LIME linear", lime, "feature_importance", dict(model_type="linear"))):
        full = fn(model, image, **opts)
        t0 = time.perf_counter()
        fast = fn(model, image, quality=quality, **opts)
        wall = time.perf_counter() - t0
        a, b = (full.map, fast.map) if key is None else (full.arrays[key], fast.arrays[key])
        rows.append((name, full.timings["forward_passes"], fast.timings["forward_passes"],
                     spearman(a, b), wall))
    return rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quality", default="balanced")
    ap.add_argument("--shortcut-images", type=int, default=24)
    ap.add_argument("--bundled-images", type=int, default=3)
    args = ap.parse_args()
    started = time.perf_counter()
    results: dict[str, list] = {}
    eff = load_model(str(ROOT / "models/efficientnet_lite0/model.onnx"))
    for img in sorted((ROOT / "models/efficientnet_lite0/examples").glob("*.png"))[:args.bundled_images]:
        for row in _runs(eff, str(img), args.quality):
            results.setdefault(("EfficientNet-Lite0 examples",) + row[:1], []).append(row)
        print(f"done {img.name}", file=sys.stderr, flush=True)
    short = load_model(str(ROOT / "models/shortcut/model.onnx"))
    images = sorted((ROOT / "models/shortcut/testset").glob("*/*.png"))[::max(1, 48 // args.shortcut_images)]
    for img in images[:args.shortcut_images]:
        for row in _runs(short, str(img), args.quality):
            results.setdefault(("shortcut test set",) + row[:1], []).append(row)
    load = os.getloadavg()
    print(f"## Adaptive RISE and LIME (CPU)\n\n- Date: {_dt.datetime.utcnow():%Y-%m-%d %H:%M} UTC; "
          f"`nproc` = {os.cpu_count()}; load average at the end {load[0]:.1f} (a shared machine: "
          f"pass counts and correlations do not depend on load)\n- quality = {args.quality!r} "
          f"vs quality = 'best' (every sample, the defaults 4000 masks / 2048 samples); "
          f"reproduce: `.venv/bin/python benchmarks/bench_adaptive.py`\n")
    print("| set | method | images | passes full | passes adaptive: mean (max) | fewer passes: mean (min) "
          "| Spearman with full: mean (min) |\n|---|---|---|---|---|---|---|")
    for (where, name), rows in results.items():
        full = np.array([r[1] for r in rows])
        used = np.array([r[2] for r in rows])
        rho = np.array([r[3] for r in rows])
        ratio = full / used
        print(f"| {where} | {name} | {len(rows)} | {full.max()} | {used.mean():.0f} ({used.max()}) | "
              f"{ratio.mean():.1f}x ({ratio.min():.1f}x) | {rho.mean():.3f} ({rho.min():.3f}) |")
    print(f"\nTotal benchmark time {time.perf_counter() - started:.0f} s.")


if __name__ == "__main__":
    main()
