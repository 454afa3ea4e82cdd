"""Incremental (Krypton-style) occlusion and prediction difference vs full forward passes.

Run from the repository root::

    .venv/bin/python benchmarks/bench_incremental.py [--repeats 2] [--pda-stride 12]

In one process, interleaved (naive, incremental, incremental, naive, ...) so that both
see the same background load:

1. occlusion, mask 16, stride 4, clipping off (53 x 53 = 2809 masks), upsampling "none",
   on coffee.png: wall time with ``incremental="off"`` and ``"auto"`` (the plan, the cached
   activations and the segment sessions are built inside the timed call), the maps'
   largest difference, and the plan.
2. the floor of this plan: the suffix alone (the last cut to the output at full size) on
   128 cached activations, run as the incremental path runs it (pieces of ``CHUNK`` on
   the single-threaded sessions, one thread per core), as a share of ``model.predict`` on 128 images.
3. prediction difference, window 10, 10 samples, marginal sampling, at ``--pda-stride``
   (the per-pass cost does not depend on the stride: every sample differs from the image
   in one 10 x 10 window): wall time naive and incremental, seconds per forward pass, and
   the stride-1 run (46,225 windows x 10 = 462,250 passes) extrapolated from it.

Prints a markdown section.
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
from explainer.methods.common import load_input  # noqa: E402
from explainer.methods.occlusion import occlusion_sensitivity  # noqa: E402
from explainer.methods.prediction_difference import prediction_difference  # noqa: E402

IMAGE = ROOT / "models/efficientnet_lite0/examples/coffee.png"


def _timed(fn, **kw):
    t0 = time.perf_counter()
    e = fn(**kw)
    return time.perf_counter() - t0, e


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--pda-stride", type=int, default=12)
    ap.add_argument("--pda-data", default="")
    args = ap.parse_args()
    started = time.perf_counter()
    model = load_model(str(ROOT / "models/efficientnet_lite0/model.onnx"))
    x = load_input(model, str(IMAGE)).x
    occ = dict(model=model, image=x, mask_size=16, stride=4, mask_clipping="off", output_upsampling="none")
    naive_t, inc_t, diffs, inc_e = [], [], [], None
    for r in range(args.repeats):
        for mode in (("off", "auto") if r % 2 == 0 else ("auto", "off")):
            t, e = _timed(occlusion_sensitivity, incremental=mode, **occ)
            (naive_t if mode == "off" else inc_t).append(t)
            if mode == "off":
                naive_e = e
            else:
                inc_e = e
        diffs.append(float(np.abs(naive_e.map - inc_e.map).max()))
    info = inc_e.params["inference"]
    floor = _suffix_share(model, x)
    load = os.getloadavg()
    print(f"## Incremental inference (CPU)\n\n- Date: {_dt.datetime.utcnow():%Y-%m-%d %H:%M} UTC; "
          f"`nproc` = {os.cpu_count()}; load average at the end {load[0]:.1f}, {load[1]:.1f}, {load[2]:.1f} "
          f"(a shared, loaded machine: absolute times are slow; naive and incremental runs alternate, "
          f"so their ratio is the number to read)\n- Model: bundled EfficientNet-Lite0, coffee.png; "
          f"reproduce: `.venv/bin/python benchmarks/bench_incremental.py`\n")
    print("| run | passes | naive s (each) | incremental s (each) | speed-up (median of ratios) | max map diff |")
    print("|---|---|---|---|---|---|")
    ratios = [a / b for a, b in zip(naive_t, inc_t)]
    print(f"| occlusion mask 16 stride 4 (2809 masks) | {inc_e.timings['forward_passes']} | "
          f"{', '.join(f'{t:.1f}' for t in naive_t)} | {', '.join(f'{t:.1f}' for t in inc_t)} | "
          f"{np.median(ratios):.2f}x | {max(diffs):.1e} (map max {np.abs(inc_e.map).max():.1e}) |")
    pda = _pda(model, x, args)
    print(f"\nPlan: {info}. Floor of this plan: the suffix alone, run as the incremental path runs it, "
          f"takes {floor:.0%} of the naive forward pass of the same 128 inputs, so no choice of crops "
          f"before it can exceed {1 / floor:.1f}x.\n")
    print(pda)
    print(f"\nTotal benchmark time {time.perf_counter() - started:.0f} s.")


def _suffix_share(model, x: np.ndarray) -> float:
    """Wall time of the plan's suffix on 128 cached activations, run as the incremental
    path runs it (pieces of ``CHUNK``, one thread per core), over that of
    ``model.predict`` on the same 128 images (median of 3 alternating runs)."""
    from concurrent.futures import ThreadPoolExecutor

    from explainer.backends.incremental import CHUNK, incremental_model

    runner, _ = incremental_model(model, x, (16, 16))
    full = np.repeat(runner.cached[runner.plan.last], 128, axis=0)
    batch = np.repeat(x, 128, axis=0)
    model.predict(batch[:8])
    pieces = [full[s:s + CHUNK] for s in range(0, 128, CHUNK)]

    def suffix(worker: int) -> None:
        for p in pieces[worker::runner.workers]:
            runner.suffix.run(None, {runner.plan.last: p})

    best_s, best_f = [], []
    with ThreadPoolExecutor(runner.workers) as pool:
        list(pool.map(suffix, range(runner.workers)))
        for _ in range(3):
            t0 = time.perf_counter()
            list(pool.map(suffix, range(runner.workers)))
            best_s.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            model.predict(batch)
            best_f.append(time.perf_counter() - t0)
    return float(np.median(np.array(best_s) / np.array(best_f)))


def _pda(model, x: np.ndarray, args) -> str:
    import tempfile

    sys.path.insert(0, str(ROOT / "benchmarks"))
    from bench_prediction_difference import folder

    data = args.pda_data or str(folder(Path(tempfile.mkdtemp(prefix="explainer-bench-"))))
    opts = dict(model=model, image=x, window_size=10, stride=args.pda_stride, num_samples=10, data=data)
    t_naive, naive = _timed(prediction_difference, incremental="off", **opts)
    t_inc, inc = _timed(prediction_difference, **opts)
    passes = inc.timings["forward_passes"]
    per_naive, per_inc = t_naive / passes, t_inc / passes
    full = 46225 * 10
    return (f"Prediction difference, window 10, 10 samples, marginal, stride {args.pda_stride}: "
            f"{passes} passes; naive {t_naive:.1f} s, incremental {t_inc:.1f} s "
            f"({t_naive / t_inc:.2f}x; {inc.params['inference'].get('path')}), max map diff "
            f"{np.abs(naive.map - inc.map).max():.1e} (map max {np.abs(naive.map).max():.1e}). "
            f"Stride 1 (462,250 passes) at these per-pass costs: naive {full * per_naive / 60:.0f} min, "
            f"incremental {full * per_inc / 60:.0f} min.")


if __name__ == "__main__":
    main()
