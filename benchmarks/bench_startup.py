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
  the yardstick of the issue's target "CLI IG <= 4x the time of 50 forward passes";
- the floor of the CLI's IG: ``python -c "import numpy, onnxruntime"``, and in a fresh process
  the first (forward) session, the gradient sessions from the cached graph as the CLI plans
  them, and the 50 gradient evaluations (two rounds of 25, as IG's 25 -> 50 schedule).

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


FLOOR = """
import json, sys, time
import numpy as np, onnxruntime as ort
from explainer.api import load_model
from explainer.backends.cpu_parallel import cpu_cores, plan, session_options
from explainer.backends.onnx_gradients import gradient_session
path = sys.argv[1]
t0 = time.perf_counter()
ort.InferenceSession(path, session_options(), providers=["CPUExecutionProvider"])
t1 = time.perf_counter()
model = load_model(path)
t2 = time.perf_counter()
sessions = gradient_session(model, None, "standard")  # the cached gradient graph (read, verified)
chunk, workers, threads = plan(25, sessions.sample_bytes, cpu_cores(), model.spec.fixed_batch_size)
sessions.get(threads, workers)
t3 = time.perf_counter()
x = np.random.default_rng(0).random((25, 3, 224, 224), dtype=np.float32)
w = np.zeros((25, model.spec.num_classes), np.float32)
w[:, 967] = 1
for _ in range(2):
    model.gradients(x, w, np.zeros_like(w))
t4 = time.perf_counter()
print(json.dumps({"forward session (first in the process)": t1 - t0, "explainer load_model (checks, session, "
                  "probe)": t2 - t1, "gradient sessions from the cache": t3 - t2, "50 gradient evaluations": t4 - t3}))
"""


def _floor(env: dict[str, str]) -> dict[str, float]:
    import json

    out = subprocess.run([sys.executable, "-c", FLOOR, str(ROOT / "models/efficientnet_lite0/model.onnx")],
                         check=True, env=env, cwd=ROOT, capture_output=True, text=True).stdout
    return json.loads(out)


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
    floor: dict[str, list[float]] = {}
    for r in range(args.repeats):
        shutil.rmtree(cache, ignore_errors=True)
        runs = [("import explainer.cli", [sys.executable, "-c", "import explainer.cli"], env),
                ("explainer classify (fixed cost)", CLI + ["classify", str(IMAGE)], env),
                ("IG 50 steps, graph cache empty (built, then stored)", ig + ["--out", str(out / f"a{r}")], env),
                ("IG 50 steps, graph cached", ig + ["--out", str(out / f"b{r}")], env),
                ("IG 50 steps, cache off", ig + ["--out", str(out / f"c{r}")],
                 dict(env, EXPLAINER_GRAPH_CACHE="off")),
                ("python -c 'import numpy, onnxruntime'", [sys.executable, "-c", "import numpy, onnxruntime"], env)]
        for name, cmd, e in runs:
            times.setdefault(name, []).append(_wall(cmd, e))
        for name, t in _floor(env).items():  # the gradient graph is cached by now
            floor.setdefault(name, []).append(t)
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
    print("\nThe floor of the CLI's IG (in a fresh process after the imports; medians):\n\n| part | s |\n|---|---|")
    imports = float(np.median(times["python -c 'import numpy, onnxruntime'"]))
    print(f"| python -c 'import numpy, onnxruntime' (interpreter start included) | {imports:.3f} |")
    for name, ts in floor.items():
        print(f"| {name} | {np.median(ts):.3f} |")
    best = imports + sum(float(np.median(floor[k])) for k in floor if not k.startswith("explainer load_model"))
    print(f"| **sum without explainer's own work** (imports, forward and gradient sessions, 50 gradients) | "
          f"**{best:.2f}** ({best / f50:.1f}x the 50 forward passes) |")


if __name__ == "__main__":
    main()
