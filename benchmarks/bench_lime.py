"""LIME and RISE benchmark (CPU): efficiency, seed agreement, and explainer vs the `lime` package.

Run from the repository root in an environment with the package and ``lime`` installed::

    .venv-export/bin/python benchmarks/bench_lime.py

In one process (same machine state for every number):

1. R(b), the model's own peak throughput (plain ``session.run``), as in bench_occlusion.py.
2. explainer LIME (defaults: 49 SLIC superpixels, 2048 samples, tree surrogate) and RISE
   (defaults: 4000 masks, s = 7, p = 0.5) on coffee.png: wall time, forward passes,
   efficiency = (forward passes / R_best) / wall.
3. LIME seed agreement: default settings, seeds 0..S-1; for each pair the overlap of the top-10
   features (count / 10), the IoU of the top-10 features' pixel sets, and the Spearman rank
   correlation of all importances (tree: S seeds; linear surrogate: seeds 0 and 1).
4. lime 0.2 ``LimeImageExplainer.explain_instance`` with the same ORT session, the same SLIC
   segmentation (as ``segmentation_fn``), the same number of samples, the same batch size and
   the same replacement (per-channel mean colour as ``hide_color``), against explainer LIME with
   the linear surrogate: wall time and top-10 agreement of the two linear models.

Appends a markdown section "## LIME and RISE (CPU)" to benchmarks/RESULTS.md (unless --no-write).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import itertools
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from bench_occlusion import IMAGE, cpu_model, peak_throughput  # noqa: E402

RESULTS = HERE / "RESULTS.md"
MINI_BATCH = 128


def top_k(importance: np.ndarray, k: int = 10) -> np.ndarray:
    return np.argsort(-importance, kind="stable")[:k]


def agreement(imp_a: np.ndarray, imp_b: np.ndarray, labels: np.ndarray) -> tuple[float, float, float]:
    """(top-10 overlap fraction, IoU of the top-10 pixel sets, Spearman rho of importances)."""
    from scipy.stats import spearmanr

    ta, tb = top_k(imp_a), top_k(imp_b)
    overlap = len(set(ta) & set(tb)) / len(ta)
    pa, pb = np.isin(labels, ta), np.isin(labels, tb)
    iou = float((pa & pb).sum() / max((pa | pb).sum(), 1))
    return overlap, iou, float(spearmanr(imp_a, imp_b)[0])


def timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def run_lime_package(model, pixels, labels, target, num_samples, seed):
    """lime's LimeImageExplainer on the same session and segmentation; returns (wall, coefs, passes)."""
    from lime import lime_image

    spec = model.spec.preprocessing
    scale, mean, std = np.float32(spec.scale), np.float32(spec.mean), np.float32(spec.std)
    passes = [0]

    def classifier_fn(images: np.ndarray) -> np.ndarray:  # (B, H, W, 3) pixel values
        x = ((images.astype(np.float32) * scale - mean) / std).transpose(0, 3, 1, 2)
        passes[0] += len(x)
        out = model.session.run(None, {model.spec.input_name: np.ascontiguousarray(x)})[0]
        e = np.exp(out - out.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)

    explainer_ = lime_image.LimeImageExplainer(random_state=seed)
    hide = pixels.reshape(-1, 3).mean(axis=0)  # = explainer's replacement="mean" in pixel units
    wall, exp = timed(lambda: explainer_.explain_instance(
        pixels.astype(np.float64), classifier_fn, labels=(target,), top_labels=None,
        hide_color=hide, num_features=100000, num_samples=num_samples, batch_size=MINI_BATCH,
        segmentation_fn=lambda img: labels, random_seed=seed))
    coef = np.zeros(labels.max() + 1)
    for j, c in exp.local_exp[target]:
        coef[j] = c
    return wall, coef, passes[0]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--min-s", type=float, default=3.0, help="seconds per throughput round")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--seeds", type=int, default=4, help="LIME seeds for the agreement study")
    ap.add_argument("--skip-rise", action="store_true")
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()
    t_start = time.perf_counter()

    import lime as lime_pkg
    import onnxruntime as ort

    import explainer
    from explainer.methods.common import load_input
    from explainer.methods.lime import lime
    from explainer.methods.rise import rise

    model = explainer.load_model()
    inp = load_input(model, IMAGE)
    pixels = inp.pixels
    print("1. peak throughput", flush=True)
    R = peak_throughput(model.session, model.spec.input_name, args.min_s, args.rounds)
    r_best = max(R.values())
    rows = []

    def record(name, wall, passes):
        rows.append((name, passes, wall, passes / r_best / wall))
        print(f"  {name}: {passes} passes, {wall:.2f} s, efficiency {rows[-1][3]:.3f}", flush=True)

    print("2. explainer LIME / RISE, default settings", flush=True)
    lime_runs = {}
    seeds = {"tree": args.seeds, "linear": min(2, args.seeds)}
    for surrogate in ("tree", "linear"):
        for seed in range(seeds[surrogate]):
            wall, e = timed(lambda: lime(model, inp, model_type=surrogate, seed=seed))
            lime_runs[surrogate, seed] = e
            if seed == 0:
                record(f"explainer LIME ({surrogate}, 2048 samples, {e.params['num_features']} superpixels)",
                       wall, e.timings["forward_passes"])
    target = lime_runs["tree", 0].target
    labels = lime_runs["tree", 0].arrays["feature_map"]
    if not args.skip_rise:
        wall, r = timed(lambda: rise(model, inp))
        record("explainer RISE (4000 masks, s=7, p=0.5)", wall, r.timings["forward_passes"])

    print("3. seed agreement", flush=True)
    agree = {}
    for surrogate in ("tree", "linear"):
        pairs = [agreement(lime_runs[surrogate, a].arrays["feature_importance"],
                           lime_runs[surrogate, b].arrays["feature_importance"], labels)
                 for a, b in itertools.combinations(range(seeds[surrogate]), 2)] or [(np.nan,) * 3]
        agree[surrogate] = np.array(pairs)
        print(f"  {surrogate}: {agree[surrogate].mean(axis=0)}", flush=True)

    print("4. lime package", flush=True)
    wall_pkg, coef_pkg, passes_pkg = run_lime_package(model, pixels, labels, target, 2048, 0)
    record("lime 0.2 LimeImageExplainer (same session, segmentation, samples, batch)", wall_pkg, passes_pkg)
    ours_lin = lime_runs["linear", 0].arrays["feature_importance"]
    pkg_agree = agreement(ours_lin, coef_pkg, labels)
    print(f"  lime vs explainer linear: {pkg_agree}", flush=True)

    total = time.perf_counter() - t_start
    lines = ["## LIME and RISE (CPU)\n",
             f"- Date: {_dt.datetime.now().astimezone().strftime('%Y-%m-%d %H:%M %Z')}; machine: "
             f"{len(os.sched_getaffinity(0))} cores, {cpu_model()}, no GPU; load average at the end "
             f"{os.getloadavg()[0]:.1f} (other jobs were running: absolute times are noisy, ratios less so)",
             f"- Versions: Python {platform.python_version()}, onnxruntime {ort.__version__}, "
             f"lime {getattr(lime_pkg, '__version__', '0.2.0.1')}, numpy {np.__version__}",
             f"- Image coffee.png, target {target} ({model.spec.labels[target]}), mini-batch {MINI_BATCH}; "
             "reproduce: `.venv-export/bin/python benchmarks/bench_lime.py`",
             "- R (plain session.run, images/s): " + ", ".join(f"b={b}: {v:.1f}" for b, v in R.items())
             + f"; R_best = {r_best:.1f}\n",
             "| run | forward passes | wall s | efficiency (passes / R_best / wall) |", "|---|---|---|---|"]
    lines += [f"| {n} | {p} | {w:.2f} | {e:.3f} |" for n, p, w, e in rows]
    lines.append(f"\nexplainer LIME (linear) vs lime package wall time: lime takes "
                 f"{wall_pkg / rows[1][2]:.2f}x as long.\n")
    lines.append(f"LIME seed agreement (default settings, same {labels.max() + 1} SLIC superpixels; tree: "
                 f"seeds 0..{args.seeds - 1}, {len(agree['tree'])} pairs; linear: seeds 0, 1): mean (min)\n")
    lines.append("| surrogate | top-10 feature overlap | IoU of top-10 pixel sets | Spearman rho of importances |")
    lines.append("|---|---|---|---|")
    for s, a in agree.items():
        lines.append(f"| {s} | " + " | ".join(f"{a[:, i].mean():.2f} ({a[:, i].min():.2f})" for i in range(3)) + " |")
    lines.append(f"\nexplainer LIME (linear, seed 0) vs lime package (Ridge alpha=1, seed 0), same samples count "
                 f"and segmentation: top-10 overlap {pkg_agree[0]:.2f}, pixel IoU {pkg_agree[1]:.2f}, "
                 f"Spearman {pkg_agree[2]:.2f}.\n\nTotal benchmark time {total:.0f} s.\n")
    report = "\n".join(lines) + "\n"
    print(report)
    if not args.no_write:
        old = RESULTS.read_text(encoding="utf-8") if RESULTS.exists() else "# Benchmarks\n\n"
        RESULTS.write_text(old.rstrip("\n") + "\n\n" + report, encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
