"""Occlusion sensitivity benchmark (CPU): explainer vs. the model's own peak throughput vs. Captum.

Run from the repository root (see benchmarks/README.md for the set-up)::

    .venv-bench/bin/python benchmarks/bench_occlusion.py

Measures, in one process so that every number comes from the same machine state:

1. R(b): the model's own peak throughput (images/s) with plain ``session.run`` on random
   inputs for batch sizes 1, 8, 32, 64, 128 (best of repeated timed runs).
2. explainer.occlusion_sensitivity on coffee.png: default settings, a dense setting, and
   the setting used for the Captum comparison. Median wall time of several repeats.
3. captum.attr.Occlusion doing the same work, with (a) the same ONNX Runtime session
   wrapped as a torch function and (b) the PyTorch model itself.
4. efficiency = (forward passes / R) / wall time, against R_best and R(128).

Prints a markdown report and writes it to benchmarks/RESULTS.md (unless --no-write).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
IMAGE = ROOT / "models" / "efficientnet_lite0" / "examples" / "coffee.png"
RESULTS = Path(__file__).resolve().parent / "RESULTS.md"
BATCH_SIZES = (1, 8, 32, 64, 128)
MINI_BATCH = 128
REPRO = ".venv-bench/bin/python benchmarks/bench_occlusion.py"


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


# --------------------------------------------------------------------------- model throughput
def peak_throughput(session, input_name: str, min_s: float, rounds: int) -> dict[int, float]:
    """Best images/s of plain session.run per batch size: `rounds` timed rounds of >= min_s."""
    rng = np.random.default_rng(0)
    rates = {}
    for b in BATCH_SIZES:
        x = rng.standard_normal((b, 3, 224, 224), dtype=np.float32)
        for _ in range(3):  # warm-up
            session.run(None, {input_name: x})
        best = 0.0
        for _ in range(rounds):
            n, t0 = 0, time.perf_counter()
            while True:
                session.run(None, {input_name: x})
                n += b
                dt = time.perf_counter() - t0
                if dt >= min_s:
                    break
            best = max(best, n / dt)
        rates[b] = best
        print(f"  R({b:3d}) = {best:7.1f} images/s", flush=True)
    return rates


def local_rate(session, input_name: str, seconds: float = 1.5, rounds: int = 2) -> float:
    """R(128) measured right now (best of `rounds` rounds of >= `seconds`), to pair with an explain run
    so that both see the same background load."""
    x = np.random.default_rng(1).standard_normal((MINI_BATCH, 3, 224, 224), dtype=np.float32)
    best = 0.0
    for _ in range(rounds):
        n, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            session.run(None, {input_name: x})
            n += MINI_BATCH
        best = max(best, n / (time.perf_counter() - t0))
    return best


# --------------------------------------------------------------------------- helpers
def timed(fn, repeats: int, warmup=None):
    """Run fn() `repeats` times after a warm-up (default: one fn() call); return
    (median wall s, all walls, last result)."""
    result = fn() if warmup is None else warmup()
    walls = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        result = fn()
        walls.append(time.perf_counter() - t0)
    return statistics.median(walls), walls, result


class Counter:
    """Wraps a forward function and counts the inputs it sees."""

    def __init__(self, fn):
        self.fn, self.n = fn, 0

    def __call__(self, x):
        self.n += int(x.shape[0])
        return self.fn(x)


def captum_windows(n: int, m: int, s: int) -> int:
    """Windows per axis Captum's Occlusion evaluates: ceil((n - m) / s) + 1."""
    return -(-(n - m) // s) + 1


def write_section(path: Path, section: str) -> None:
    """Replace this benchmark's "## " section of RESULTS.md (or append it), keeping the others."""
    import re

    text = path.read_text(encoding="utf-8") if path.exists() else "# Benchmarks\n"
    heading = section.splitlines()[0]
    pattern = re.compile(rf"^{re.escape(heading)}\n.*?(?=^## |\Z)", re.S | re.M)
    if pattern.search(text):
        text = pattern.sub(lambda _: section + "\n", text, count=1).rstrip("\n") + "\n"
    else:
        text = text.rstrip("\n") + "\n\n" + section
    path.write_text(text, encoding="utf-8")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--min-s", type=float, default=3.0, help="seconds per throughput round")
    ap.add_argument("--rounds", type=int, default=2, help="throughput rounds per batch size (best kept)")
    ap.add_argument("--repeats", type=int, default=3, help="timed repeats per explain run (median)")
    ap.add_argument("--torch-repeats", type=int, default=2,
                    help="timed repeats of Captum with the PyTorch model (slow; warm-up is one batch)")
    ap.add_argument("--no-write", action="store_true", help="do not write benchmarks/RESULTS.md")
    args = ap.parse_args()

    t_start = time.perf_counter()
    load_start = os.getloadavg()
    cpu_start = time.process_time()
    import onnxruntime as ort
    import torch
    import captum
    from captum.attr import Occlusion

    import explainer
    from explainer.methods.common import load_input

    torch.set_num_threads(2)
    model = explainer.load_model()
    session, input_name = model.session, model.spec.input_name
    x = load_input(model, IMAGE).x  # (1, 3, 224, 224) float32
    base = model.predict(x)
    target = int(np.argmax(base[0]))
    label = model.spec.labels[target]
    value = x.mean(axis=(0, 2, 3)).astype(np.float32)  # explainer's mask_value="auto"
    print(f"target {target} ({label}); mask value {value.tolist()}")

    print("1. model peak throughput (plain session.run)")
    R = peak_throughput(session, input_name, args.min_s, args.rounds)
    b_best = max(R, key=R.get)
    R_best, R_mb = R[b_best], R[MINI_BATCH]

    rows = []  # (name, windows, passes, median wall, walls, model_s or None)

    def eff(passes: float, wall: float, rate: float) -> float:
        return passes / rate / wall

    def run_explainer(name, repeats, **kw):
        fn = lambda: explainer.occlusion_sensitivity(model, x, target, mini_batch_size=MINI_BATCH, **kw)
        r0 = local_rate(session, input_name)
        wall, walls, e = timed(fn, repeats)
        r_loc = max(r0, local_rate(session, input_name))
        passes = e.timings["forward_passes"]
        rows.append(dict(name=name, windows=e.params["num_masks"], passes=passes, wall=wall, walls=walls,
                         model_s=e.timings["model_s"], r_loc=r_loc))
        print(f"  {name}: {e.params['num_masks']} masks, {passes} passes, median {wall:.3f} s "
              f"(model.predict {e.timings['model_s']:.3f} s), efficiency {eff(passes, wall, R_best):.3f}",
              flush=True)
        return e

    print("2. explainer.occlusion_sensitivity")
    run_explainer("explainer, defaults (mask 45, stride 22, clipping on, bicubic)", max(5, args.repeats))
    run_explainer("explainer, dense (mask 45, stride 8, clipping off, bicubic)", args.repeats,
                  mask_size=45, stride=8, mask_clipping="off")

    # Captum's windows start at 0, s, 2s, ... up to ceil((224-m)/s)*s; when (224-m) % s != 0 the
    # last one runs past the edge and is cropped, i.e. Captum then evaluates one more window per
    # axis than explainer's mask_clipping="off" (which keeps only windows fully inside). 224-45=179
    # is prime, so with mask 45 the two never agree (stride 8: 24^2=576 vs 23^2=529). The matched
    # comparison therefore uses mask 44, stride 9: (224-44)/9 = 20 -> 21^2 = 441 windows on both.
    M, S = 44, 9
    cmp_kw = dict(mask_size=M, stride=S, mask_clipping="off")
    e_cmp = run_explainer(f"explainer, Captum-matched (mask {M}, stride {S}, clipping off, none)",
                          args.repeats, output_upsampling="none", **cmp_kw)

    print("3. captum.attr.Occlusion, same work")
    xt = torch.from_numpy(x)
    baseline = torch.from_numpy(value).view(1, 3, 1, 1)

    def ort_forward(t: torch.Tensor) -> torch.Tensor:
        out = session.run(None, {input_name: np.ascontiguousarray(t.detach().numpy())})[0]
        return torch.softmax(torch.from_numpy(out), dim=1)

    sys.path.insert(0, str(ROOT / "models" / "efficientnet_lite0"))
    from export import ExportWrapper, build_torch_model  # noqa: E402

    net = ExportWrapper(build_torch_model()).eval()

    def torch_forward(t: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return torch.softmax(net(t), dim=1)

    def run_captum(name, fwd, m, s, repeats, full_warmup=True):
        counter = Counter(fwd)
        occ = Occlusion(counter)

        def fn():
            counter.n = 0
            with torch.no_grad():
                return occ.attribute(xt, sliding_window_shapes=(3, m, m), strides=(3, s, s),
                                     baselines=baseline, target=target, perturbations_per_eval=MINI_BATCH)

        warm = None if full_warmup else (lambda: fwd(xt.expand(MINI_BATCH, -1, -1, -1).contiguous()))
        r0 = local_rate(session, input_name)
        wall, walls, attr = timed(fn, repeats, warm)
        r_loc = max(r0, local_rate(session, input_name))
        windows = captum_windows(224, m, s) ** 2
        rows.append(dict(name=name, windows=windows, passes=counter.n, wall=wall, walls=walls, model_s=None,
                         r_loc=r_loc))
        print(f"  {name}: {windows} windows, {counter.n} passes, median {wall:.3f} s, "
              f"efficiency {eff(counter.n, wall, R_best):.3f}", flush=True)
        return attr.detach().numpy()[0]

    a_ort = run_captum(f"Captum Occlusion, ONNX Runtime session (mask {M}, stride {S})", ort_forward, M, S,
                       args.repeats)
    a_torch = run_captum(f"Captum Occlusion, PyTorch model (mask {M}, stride {S})", torch_forward, M, S,
                         args.torch_repeats, full_warmup=False)

    # --- map agreement (matched setting)
    ours = e_cmp.map.astype(np.float64)
    chan_spread = float(np.abs(a_ort - a_ort[:1]).max())
    d_ort = float(np.abs(ours - a_ort[0]).max())
    d_torch = float(np.abs(ours - a_torch[0]).max())
    scale = float(np.abs(ours).max())
    win_ok = rows[-1]["windows"] == rows[-2]["windows"] == e_cmp.params["num_masks"]

    # --- the literal mask 45 / stride 8 case: Captum evaluates a different (larger) set of windows
    e45 = explainer.occlusion_sensitivity(model, x, target, mask_size=45, stride=8, mask_clipping="off",
                                          output_upsampling="none", mini_batch_size=MINI_BATCH)
    c45 = Counter(ort_forward)
    a45 = Occlusion(c45).attribute(xt, sliding_window_shapes=(3, 45, 45), strides=(3, 8, 8),
                                   baselines=baseline, target=target,
                                   perturbations_per_eval=MINI_BATCH).numpy()[0, 0]
    # Captum's extra windows start at 23*8 = 184; pixels with y, x < 184 see the same windows.
    d45_common = float(np.abs(e45.map[:184, :184] - a45[:184, :184]).max())
    d45_all = float(np.abs(e45.map - a45).max())

    total_s = time.perf_counter() - t_start
    load_end = os.getloadavg()
    cpu_share = (time.process_time() - cpu_start) / total_s

    # --- report
    ex_cmp = next(r for r in rows if r["name"].startswith("explainer, Captum-matched"))
    lines = []
    lines.append("## Occlusion sensitivity (CPU)\n")
    lines.append(f"- Date: {_dt.datetime.now().astimezone().strftime('%Y-%m-%d %H:%M %Z')}")
    lines.append(f"- Machine: `nproc` = {os.cpu_count() if not hasattr(os, 'sched_getaffinity') else len(os.sched_getaffinity(0))}, "
                 f"CPU: {cpu_model()}, no GPU")
    lines.append(f"- Load average (1, 5, 15 min) at start {', '.join(f'{v:.2f}' for v in load_start)}, at end "
                 f"{', '.join(f'{v:.2f}' for v in load_end)}; this process used {cpu_share:.2f} CPUs on "
                 f"average (other load on the machine makes every number here slower)")
    lines.append(f"- Versions: Python {platform.python_version()}, onnxruntime {ort.__version__} "
                 f"({session.get_providers()[0]}), torch {torch.__version__} ({torch.get_num_threads()} threads), "
                 f"captum {captum.__version__}, numpy {np.__version__}")
    lines.append(f"- Model: models/efficientnet_lite0/model.onnx; image coffee.png, target {target} ({label}); "
                 f"input given as the preprocessed (1,3,224,224) tensor; mini_batch_size / "
                 f"perturbations_per_eval = {MINI_BATCH}; mask value / baseline = per-channel input mean")
    lines.append(f"- How to reproduce: `{REPRO}` (from the repository root, set-up in benchmarks/README.md)")
    lines.append("")
    lines.append("### Model peak throughput R (plain `session.run`, random inputs, best of "
                 f"{args.rounds} rounds of >= {args.min_s:g} s)\n")
    lines.append("| batch size | " + " | ".join(str(b) for b in BATCH_SIZES) + " |")
    lines.append("|---|" + "---|" * len(BATCH_SIZES))
    lines.append("| images/s | " + " | ".join(f"{R[b]:.1f}" for b in BATCH_SIZES) + " |")
    lines.append(f"\nR_best = {R_best:.1f} images/s (batch {b_best}); R(128) = {R_mb:.1f} images/s.\n")
    lines.append("### Explain runs (median wall time)\n")
    lines.append("efficiency = (forward passes / R) / wall time; 1.0 = no cost beyond the model's own.\n")
    lines.append("Local R(128) = R(128) measured just before and after that run (best of the two), "
                 "so that the run and its reference see the same background load.\n")
    lines.append("| run | windows | forward passes | wall s (median, range) | time in model.predict s | "
                 "efficiency vs R_best | efficiency vs R(128) | local R(128) | efficiency vs local R(128) | "
                 "time / explainer (matched) |")
    lines.append("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        ms = f"{r['model_s']:.3f}" if r["model_s"] is not None else "-"
        ratio = f"{r['wall'] / ex_cmp['wall']:.2f}" if "matched" in r["name"] or r["name"].startswith("Captum") \
            else "-"
        lines.append(f"| {r['name']} | {r['windows']} | {r['passes']} | {r['wall']:.3f} "
                     f"(n={len(r['walls'])}, {min(r['walls']):.3f}-{max(r['walls']):.3f}) | {ms} | "
                     f"{eff(r['passes'], r['wall'], R_best):.3f} | {eff(r['passes'], r['wall'], R_mb):.3f} | "
                     f"{r['r_loc']:.1f} | {eff(r['passes'], r['wall'], r['r_loc']):.3f} | {ratio} |")
    lines.append("")
    lines.append(f"Captum / explainer wall-time ratio (mask {M}, stride {S}, {ex_cmp['windows']} windows): "
                 f"(a) ONNX Runtime forward {rows[-2]['wall'] / ex_cmp['wall']:.2f}x, "
                 f"(b) PyTorch forward {rows[-1]['wall'] / ex_cmp['wall']:.2f}x.\n")
    lines.append("### Map agreement (explainer `output_upsampling=\"none\"`, `mask_clipping=\"off\"` vs Captum)\n")
    lines.append(f"- Windows evaluated, mask {M} stride {S}: explainer {e_cmp.params['num_masks']}, "
                 f"Captum {captum_windows(224, M, S) ** 2} -> {'equal' if win_ok else 'NOT EQUAL'}.")
    lines.append(f"- max |explainer - Captum(ONNX Runtime)| = {d_ort:.2e} (map max |value| {scale:.3e}); "
                 f"Captum's 3 channels identical to {chan_spread:.1e}.")
    lines.append(f"- max |explainer - Captum(PyTorch)| = {d_torch:.2e} (ONNX Runtime vs PyTorch numerics).")
    lines.append(f"- Mask 45, stride 8: explainer evaluates {e45.params['num_masks']} windows, Captum "
                 f"{captum_windows(224, 45, 8) ** 2} ({c45.n} passes): Captum's windows start at 0, 8, ..., 184 and "
                 f"the last row/column (start 184) runs past the edge and is cropped, so Captum is *not* "
                 f"'fully inside' when (224 - mask) % stride != 0 (224 - 45 = 179 is prime). Max diff on "
                 f"pixels y, x < 184 (same windows) {d45_common:.2e}; over the whole map {d45_all:.2e}.")
    lines.append(f"\nTotal benchmark run time: {total_s:.0f} s.")
    report = "\n".join(lines) + "\n"
    print()
    print(report)
    if not args.no_write:
        write_section(RESULTS, report)
        print(f"wrote {RESULTS}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
