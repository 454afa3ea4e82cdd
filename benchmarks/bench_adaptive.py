"""Adaptive RISE and LIME: forward passes saved and agreement with the full-budget map.

Run from the repository root::

    .venv/bin/python benchmarks/bench_adaptive.py [--quality balanced] [--shortcut-images 24]

For every image (the bundled EfficientNet-Lite0 examples, and the shortcut model's test
set), runs RISE (4000 masks) and LIME (2048 samples, tree and linear surrogates) at
``quality="best"`` (every sample) and at the adaptive preset, and reports the passes the
adaptive run used, the ratio, and the Spearman rank correlation of the adaptive map with
the full-budget map (pixels for RISE; the features' importances for LIME, the surrogate's
own output). With ``--reference K`` it also runs the independent (paper's) design at the
full budget and an independent reference with K times the default budget with another seed, and reports how well
each of the two (paper's full budget, adaptive) agrees with that reference: whether the
adaptive map is as close to the converged map as the previous default's. Prints a
markdown section.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import inspect
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


def _runs(model, image, quality: str, reference: int, methods: list[str]) -> list[tuple]:
    """(method, full passes, adaptive passes, spearman(adaptive, full), adaptive wall s,
    spearman(paper's full-budget map, reference), spearman(adaptive, reference)) for one image.

    "full" is the default design at quality "best" (every sample); the paper's full-budget
    map is the independent design at quality "best" (the previous default); the reference
    is an independent-design run with ``reference`` times the default samples and another seed (None when
    ``reference`` is 0): the converged map both should approach.
    """
    rows = []
    for name, fn, key, opts, budget in (
            ("RISE", rise, None, {}, "num_masks"),
            ("LIME tree", lime, "feature_importance", dict(model_type="tree"), "num_samples"),
            ("LIME linear", lime, "feature_importance", dict(model_type="linear"), "num_samples")):
        if name.lower().replace(" ", "-") not in methods:
            continue
        full = fn(model, image, **opts)
        t0 = time.perf_counter()
        fast = fn(model, image, quality=quality, **opts)
        wall = time.perf_counter() - t0
        pick = (lambda e: e.map) if key is None else (lambda e: e.arrays[key])
        paper_rho = fast_rho = None
        if reference:  # LIME has one design: its full-budget run is the paper's
            ind = dict(design="independent") if fn is rise else {}
            size = reference * inspect.signature(fn).parameters[budget].default
            ref = pick(fn(model, image, seed=99, **ind, **{budget: size}, **opts))
            paper = pick(fn(model, image, **ind, **opts)) if ind else pick(full)
            paper_rho, fast_rho = spearman(paper, ref), spearman(pick(fast), ref)
        rows.append((name, full.timings["forward_passes"], fast.timings["forward_passes"],
                     spearman(pick(full), pick(fast)), wall, paper_rho, fast_rho))
    return rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quality", default="balanced")
    ap.add_argument("--shortcut-images", type=int, default=24)
    ap.add_argument("--bundled-images", type=int, default=3)
    ap.add_argument("--methods", default="rise,lime-tree,lime-linear")
    ap.add_argument("--reference", type=int, default=0,
                    help="also compare with an independent run of K times the default budget (0: off)")
    args = ap.parse_args()
    started = time.perf_counter()
    results: dict[str, list] = {}
    eff = load_model(str(ROOT / "models/efficientnet_lite0/model.onnx"))
    for img in sorted((ROOT / "models/efficientnet_lite0/examples").glob("*.png"))[:args.bundled_images]:
        for row in _runs(eff, str(img), args.quality, args.reference, args.methods.split(",")):
            results.setdefault(("EfficientNet-Lite0 examples",) + row[:1], []).append(row)
        print(f"done {img.name}", file=sys.stderr, flush=True)
    short = load_model(str(ROOT / "models/shortcut/model.onnx"))
    images = sorted((ROOT / "models/shortcut/testset").glob("*/*.png"))[::max(1, 48 // args.shortcut_images)]
    for img in images[:args.shortcut_images]:
        for row in _runs(short, str(img), args.quality, args.reference, args.methods.split(",")):
            results.setdefault(("shortcut test set",) + row[:1], []).append(row)
    load = os.getloadavg()
    print(f"## Adaptive RISE and LIME (CPU)\n\n- Date: {_dt.datetime.utcnow():%Y-%m-%d %H:%M} UTC; "
          f"`nproc` = {os.cpu_count()}; load average at the end {load[0]:.1f} (a shared machine: "
          f"pass counts and correlations do not depend on load)\n- quality = {args.quality!r} "
          f"vs quality = 'best' (every sample, the defaults 4000 masks / 2048 samples); "
          f"reproduce: `.venv/bin/python benchmarks/bench_adaptive.py`\n")
    print("| set | method | images | passes full | passes adaptive: mean (max) | fewer passes: mean (min) "
          "| Spearman with full: mean (min) | Spearman with reference: paper's full budget / adaptive, "
          "mean (min) |\n|---|---|---|---|---|---|---|---|")
    for (where, name), rows in results.items():
        full = np.array([r[1] for r in rows])
        used = np.array([r[2] for r in rows])
        rho = np.array([r[3] for r in rows])
        ratio = full / used
        ref = "-"
        if rows[0][5] is not None:
            paper, fast = np.array([r[5] for r in rows]), np.array([r[6] for r in rows])
            ref = f"{paper.mean():.3f} ({paper.min():.3f}) / {fast.mean():.3f} ({fast.min():.3f})"
        print(f"| {where} | {name} | {len(rows)} | {full.max()} | {used.mean():.0f} ({used.max()}) | "
              f"{ratio.mean():.1f}x ({ratio.min():.1f}x) | {rho.mean():.3f} ({rho.min():.3f}) | {ref} |")
    print(f"\nTotal benchmark time {time.perf_counter() - started:.0f} s.")


if __name__ == "__main__":
    main()
