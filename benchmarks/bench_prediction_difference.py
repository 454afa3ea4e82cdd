"""Prediction difference analysis benchmark (CPU): efficiency and sampler cost.

Run from the repository root::

    .venv/bin/python benchmarks/bench_prediction_difference.py

Measures, in one process:

1. R(b), the model's own peak throughput (plain ``session.run``, random inputs), before
   and after the explain runs (the larger is used: efficiencies are conservative).
2. The samplers alone (no model): loading the folder, fitting the patch Gaussian
   (uncached) and loading it (cached), the 25 conditioning matrices, and generating all
   perturbed inputs of a k = 10, stride 8, S = 10 run (7,840 inputs).
3. ``prediction_difference`` on coffee.png, k = 10, stride 8, S = 10, marginal and
   conditional; and coarse-to-fine (stride 2, fraction 0.05, S = 2).
4. efficiency = (forward passes / R) / wall time.

Prints a markdown report and puts it in benchmarks/RESULTS.md under
"## Prediction difference analysis (CPU)" (unless --no-write).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import os
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image
from skimage import data as skdata

import explainer
from explainer.methods.prediction_difference import prediction_difference, prediction_difference_cost
from explainer.methods.prediction_difference_core import ChunkedSamples, grid_windows
from explainer.perturbation.sampling import ConditionalSampler, MarginalSampler, load_folder

ROOT = Path(__file__).resolve().parents[1]
IMAGE = ROOT / "models" / "efficientnet_lite0" / "examples" / "coffee.png"
RESULTS = Path(__file__).resolve().parent / "RESULTS.md"
HEADING = "## Prediction difference analysis (CPU)"
IMAGES = ("astronaut", "chelsea", "rocket", "camera", "coins", "moon", "immunohistochemistry", "hubble_deep_field",
          "retina", "colorwheel", "logo")


def peak(session, name: str, sizes=(1, 32, 128), min_s: float = 3.0) -> dict[int, float]:
    """Best images/s of plain session.run per batch size (2 rounds of >= min_s)."""
    rates = {}
    for b in sizes:
        x = np.random.default_rng(0).standard_normal((b, 3, 224, 224), dtype=np.float32)
        session.run(None, {name: x})
        best = 0.0
        for _ in range(2):
            n, t0 = 0, time.perf_counter()
            while time.perf_counter() - t0 < min_s:
                session.run(None, {name: x})
                n += b
            best = max(best, n / (time.perf_counter() - t0))
        rates[b] = best
    return rates


def folder(path: Path) -> Path:
    for name in IMAGES:
        im = np.asarray(getattr(skdata, name)())
        im = np.repeat(im[:, :, None], 3, axis=2) if im.ndim == 2 else im[:, :, :3]
        Image.fromarray(im.astype(np.uint8)).save(path / f"{name}.png")
    return path


def clock(fn):
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def sampler_costs(model, data: Path, cache: Path) -> list[tuple[str, float, str]]:
    pre, x = model.spec.preprocessing, explainer.preprocess(explainer.read_image(IMAGE), model.spec.preprocessing)
    windows = grid_windows((224, 224), 10, (8, 8))
    n = len(windows) * 10
    rows = []
    t, arr = clock(lambda: load_folder(data, pre))
    rows.append(("marginal: load + preprocess folder", t, f"{arr.shape[0]} images"))
    marg = MarginalSampler(arr, 10)
    t, _ = clock(lambda: ConditionalSampler.from_folder(data, pre, 10, 14, cache_dir=cache))
    rows.append(("conditional: fit patch Gaussian (uncached, 20,000 patches, l = 14)", t, "once per folder"))
    t, cond = clock(lambda: ConditionalSampler.from_folder(data, pre, 10, 14, cache_dir=cache))
    rows.append(("conditional: load cached Gaussian", t, "hash folder + read .npz"))
    t, _ = clock(lambda: [cond.matrices(a, b) for a in range(5) for b in range(5)])
    rows.append(("conditional: 25 conditioning matrices (S12 S22^-1, chol S_1|2)", t, "once per run"))
    for name, s in (("marginal", marg), ("conditional", cond)):
        gen = ChunkedSamples(s, x, windows, 10, 0, 0, np)
        t, _ = clock(lambda: [gen.batch(i, min(i + 128, n)) for i in range(0, n, 128)])
        rows.append((f"{name}: sample + build all {n} inputs (k 10, stride 8, S 10)", t,
                     f"{1000 * t / n:.2f} s per 1000 inputs"))
    return rows


def explain_runs(model, data: Path, cache: Path) -> list[dict]:
    runs = [("marginal, k 10, stride 8, S 10", dict(sampling="marginal")),
            ("conditional, k 10, stride 8, S 10", dict(sampling="conditional")),
            ("marginal, coarse-to-fine 0.05, k 10, stride 2, S 2",
             dict(sampling="marginal", stride=2, num_samples=2, coarse_to_fine=0.05))]
    out = []
    for label, kw in runs:
        kw = {"window_size": 10, "stride": 8, "num_samples": 10, **kw}
        t, e = clock(lambda: prediction_difference(model, IMAGE, data=data, cache_dir=cache, **kw))
        out.append(dict(label=label, wall=t, passes=e.timings["forward_passes"], model_s=e.timings["model_s"],
                        windows=e.params["num_windows"]))
        print(f"  {label}: {t:.1f} s, {out[-1]['passes']} passes", flush=True)
    return out


def report(r_before, r_after, samplers, runs) -> str:
    r = {b: max(r_before[b], r_after[b]) for b in r_before}
    best_b = max(r, key=r.get)
    lines = [HEADING, "",
             f"- Date: {_dt.datetime.now(_dt.timezone.utc):%Y-%m-%d %H:%M} UTC; `nproc` = {os.cpu_count()}, "
             "no GPU; a shared machine (other jobs ran at the same time: compare only numbers of one run)",
             "- Model: bundled EfficientNet-Lite0 (224 x 224), image coffee.png, top-1 class, mini_batch_size 128;"
             f" sampling folder: {len(IMAGES)} scikit-image images",
             "- Reproduce: `.venv/bin/python benchmarks/bench_prediction_difference.py`", "",
             "| batch size | " + " | ".join(map(str, r)) + " |", "|---" * (len(r) + 1) + "|",
             "| R before, images/s | " + " | ".join(f"{r_before[b]:.1f}" for b in r) + " |",
             "| R after, images/s | " + " | ".join(f"{r_after[b]:.1f}" for b in r) + " |", "",
             f"R_best = {r[best_b]:.1f} images/s (batch {best_b}) = {1000 / r[best_b]:.1f} s per 1000 forward "
             f"passes; R(128) = {r[128]:.1f} images/s = {1000 / r[128]:.1f} s per 1000.", "",
             "| run | windows | forward passes | wall s | in model.predict s (share) | efficiency vs R_best | "
             "efficiency vs R(128) |", "|---|---|---|---|---|---|---|"]
    for x in runs:
        lines.append(f"| {x['label']} | {x['windows']} | {x['passes']} | {x['wall']:.1f} | {x['model_s']:.1f} "
                     f"({x['model_s'] / x['wall']:.1%}) | {x['passes'] / r[best_b] / x['wall']:.3f} | "
                     f"{x['passes'] / r[128] / x['wall']:.3f} |")
    lines += ["", "Samplers alone (no model):", "", "| step | s | note |", "|---|---|---|"]
    lines += [f"| {name} | {t:.3f} | {note} |" for name, t, note in samplers]
    full = prediction_difference_cost()["forward_passes"]
    lines += ["", f"Projected: the paper's setting (k 10, stride 1, S 10) = {full:,} forward passes = "
              f"{full / r[best_b] / 3600:.1f} h at R_best on this machine.", ""]
    return "\n".join(lines)


def write(section: str) -> None:
    text = RESULTS.read_text() if RESULTS.exists() else "# Benchmarks\n"
    if HEADING in text:
        start = text.index(HEADING)
        nxt = text.find("\n## ", start + len(HEADING))
        text = text[:start] + section + ("" if nxt < 0 else text[nxt:])
    else:
        text = text.rstrip("\n") + "\n\n" + section
    RESULTS.write_text(text)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--no-write", action="store_true")
    args = p.parse_args()
    model = explainer.load_model()
    name = model.session.get_inputs()[0].name
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "data").mkdir()
        data, cache = folder(Path(tmp) / "data"), Path(tmp) / "cache"
        print("R before", flush=True)
        r_before = peak(model.session, name)
        samplers = sampler_costs(model, data, cache)
        runs = explain_runs(model, data, cache)
        r_after = peak(model.session, name)
    section = report(r_before, r_after, samplers, runs)
    print(section)
    if not args.no_write:
        write(section)


if __name__ == "__main__":
    main()
