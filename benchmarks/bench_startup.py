"""The CLI's fixed cost, and integrated gradients through the CLI with the gradient graph cached.

Run from the repository root::

    .venv/bin/python benchmarks/bench_startup.py [--repeats 3]

Measures, alternating runs so that all see the same background load (medians):

- ``python -c "import explainer.cli"``: the import cost;
- ``explainer classify coffee.png``: the CLI's fixed cost (imports, the isolated probe of
  the model, its session, one forward pass);
- ``explainer explain --method integrated-gradients --num-steps 50`` with the gradient
  graph cache empty (built in the run), filled (read from the cache), and turned off;
- 50 plain forward passes in-process (one ``session.run`` of a batch of 50; best of 3):
  the yardstick of the issue's target "CLI IG <= 4x the time of 50 forward passes".

Prints a markdown section.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
IMAGE = ROOT / "models/efficientnet_lite0/examples/coffee.png"
CLI = [sys.executable, "-m", "explainer"]


def _wall(cmd: list[str], env: dict[str, str]) -> float:
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - t0


def _forward_50() -> float:
    import onnxruntime as ort

    s = ort.InferenceSession(str(ROOT / "models/efficientnet_lite0/model.onnx"), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).random((50, 3, 224, 224), dtype=np.float32)
    s.run(None, {"input": x[:2]})
    best = np.inf
    for _ in range(3):
        t0 = time.perf_counter()
        s.run(None, {"input": x})
        best = min(best, time.perf_counter() - t0)
    return best


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    out = Path(tempfile.mkdtemp(prefix="explainer-startup-"))
    cache = out / "graphs"
    env = dict(os.environ, EXPLAINER_GRAPH_CACHE=str(cache))
    ig = CLI + ["explain", "--method", "integrated-gradients", "--num-steps", "50", "--quiet", str(IMAGE)]
    times: dict[str, list[float]] = {}
    fwd = []
    for r in range(args.repeats):
        shutil.rmtree(cache, ignore_errors=True)
        runs = [("import explainer.cli", [sys.executable, "-c", "import explainer.cli"], env),
                ("explainer classify (fixed cost)", CLI + ["classify", str(IMAGE)], env),
                ("IG 50 steps, graph cache empty (built, then stored)", ig + ["--out", str(out / f"a{r}")], env),
                ("IG 50 steps, graph cached", ig + ["--out", str(out / f"b{r}")], env),
                ("IG 50 steps, cache off", ig + ["--out", str(out / f"c{r}")],
                 dict(env, EXPLAINER_GRAPH_CACHE="off"))]
        for name, cmd, e in runs:
            times.setdefault(name, []).append(_wall(cmd, e))
        fwd.append(_forward_50())
    shutil.rmtree(out, ignore_errors=True)
    f50 = float(np.median(fwd))
    load = os.getloadavg()
    print(f"## Start-up and the CLI's fixed cost (CPU)\n\n- Date: {_dt.datetime.utcnow():%Y-%m-%d %H:%M} UTC; "
          f"`nproc` = {os.cpu_count()}; load average at the end {load[0]:.1f}, {load[1]:.1f}, {load[2]:.1f} "
          f"(shared machine; runs alternate, medians of {args.repeats})\n- reproduce: "
          f"`.venv/bin/python benchmarks/bench_startup.py`\n")
    print(f"50 plain forward passes in-process (one batch of 50): {f50:.2f} s.\n")
    print("| run | wall s (median; all) | / 50 forward passes |\n|---|---|---|")
    for name, ts in times.items():
        print(f"| {name} | {np.median(ts):.2f} ({', '.join(f'{t:.2f}' for t in ts)}) | {np.median(ts) / f50:.1f}x |")


if __name__ == "__main__":
    main()
