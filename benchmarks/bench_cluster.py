"""Cluster runs: images/s on LocalClusters of 1 and 2 worker processes, and the cost per task.

Run from the repository root (needs the `cluster` extra)::

    .venv/bin/python benchmarks/bench_cluster.py [--rounds 2] [--no-write]

Every ONNX Runtime session has one intra-op thread (EXPLAINER_THREADS=1, as on a worker),
in this process too. Measured, rounds alternating so that all see the same background load:

- in-process: the time per image of the workload in this process (the compute alone);
- on a LocalCluster of 1 and of 2 workers (both started and warmed up first, each worker
  has built the model): the wall time of ``run_tasks`` over the images -> images/s;
  overhead per task = workers x wall / images - in-process time per image;
- empty tasks: 400 no-op tasks through ``run_tasks`` on the 1-worker cluster: the floor of
  a task's round trip (submit, schedule, run, result, as_completed);
- per-image costs for the paper estimate in docs/cluster.md: occlusion (defaults, 122
  passes) and integrated gradients (25 steps) on the bundled EfficientNet-Lite0 (224x224),
  one thread, in-process.

Workloads: ``shortcut`` (models/shortcut/testset, 48 images 64x64, occlusion defaults:
tiny tasks, the overhead shows; once one image per task, once 8 per task as ``--chunk 8``) and ``lite0`` (the 3 bundled 224x224 examples twice,
occlusion defaults: tasks of about a second, the compute shows). Prints a markdown
section and writes it into benchmarks/RESULTS.md (``--no-write``: print only).
"""

from __future__ import annotations

import argparse
import math
import datetime as _dt
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

os.environ["EXPLAINER_THREADS"] = "1"  # before any session exists: one-thread sessions here as on workers

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import explainer  # noqa: E402
from explainer.cluster.commands import image_task  # noqa: E402
from explainer.cluster.connect import connect, run_tasks  # noqa: E402
from explainer.cluster.worker import audit_task, chunk_task, explain_task  # noqa: E402

SECTION = "## Cluster runs (Dask LocalCluster, CPU, issue 19)"


def _noop(i: int) -> int:
    return i


def _workloads() -> dict[str, tuple[str, list[Path], int]]:
    """name -> (model, images, images per task)."""
    shortcut = sorted((ROOT / "models/shortcut/testset").rglob("*.png"))
    lite0 = sorted((ROOT / "models/efficientnet_lite0/examples").glob("*.png")) * 2
    return {"shortcut": (str(ROOT / "models/shortcut/model.onnx"), shortcut, 1),
            "shortcut --chunk 8": (str(ROOT / "models/shortcut/model.onnx"), shortcut, 8),
            "lite0": (str(ROOT / "models/efficientnet_lite0/model.onnx"), lite0, 1)}


def _in_process(model: Any, images: list[Path]) -> tuple[float, float]:
    """Wall and CPU seconds per image in this process."""
    t0, c0 = time.perf_counter(), time.process_time()
    for p in images:
        explainer.occlusion_sensitivity(model, p)
    return (time.perf_counter() - t0) / len(images), (time.process_time() - c0) / len(images)


def _on_cluster(cluster: Any, model: Any, images: list[Path], chunk: int = 1) -> tuple[float, float, float]:
    """Wall seconds of the run; CPU seconds per image of the workers and of this process
    (the client and, for a LocalCluster, the scheduler)."""
    calls = [(model.describe(), model.spec.sha256, "occlusion", {}, "off", None, image_task(p)) for p in images]
    tasks = [(chunk_task, (explain_task, calls[i:i + chunk])) for i in range(0, len(calls), chunk)]
    w0, c0 = cluster.client.run(time.process_time), time.process_time()
    t0 = time.perf_counter()
    run_tasks(cluster, tasks, len(tasks), lambda i, r: None)
    wall = time.perf_counter() - t0
    c1, w1 = time.process_time(), cluster.client.run(time.process_time)
    workers = sum(w1[a] - w0.get(a, 0.0) for a in w1)  # a worker restarted mid-run would count from 0
    return wall, workers / len(images), (c1 - c0) / len(images)


def _noop_cost(cluster: Any, n: int = 400) -> tuple[float, float]:
    """Wall and CPU (workers + this process) seconds per empty task."""
    tasks = [(_noop, (i,)) for i in range(n)]
    run_tasks(cluster, tasks[:20], 20, lambda i, r: None)  # warm
    w0, c0 = cluster.client.run(time.process_time), time.process_time()
    t0 = time.perf_counter()
    run_tasks(cluster, tasks, len(tasks), lambda i, r: None)
    wall = time.perf_counter() - t0
    c1, w1 = time.process_time(), cluster.client.run(time.process_time)
    return wall / n, (sum(w1[a] - w0.get(a, 0.0) for a in w1) + c1 - c0) / n


def _estimate(costs: dict[str, tuple[float, float]], overhead: float) -> list[str]:
    """docs/cluster.md's paper estimate: 10^6 images on one-thread workers at 90% utilisation."""
    lines = ["Paper estimate for 10^6 images (docs/cluster.md): per image the CPU seconds above + "
             f"{overhead * 1e3:.0f} ms of task overhead (CPU, lite0 row above, capped below by the "
             "empty task's), one-thread workers at 90% utilisation:", "",
             "| 10^6 images | core-hours | workers for 24 h | workers for 8 h |", "|---|---:|---:|---:|"]
    for k, (_, cpu) in costs.items():
        total = 1e6 * (cpu + overhead)
        lines.append(f"| {k} | {total / 3600:,.0f} | {math.ceil(total / (0.9 * 86400))} | "
                     f"{math.ceil(total / (0.9 * 28800))} |")
    return lines + [""]


def _per_image_costs(repeats: int = 3) -> dict[str, tuple[float, float]]:
    """Explain, and audit (explain + deletion + insertion, 32 steps), one image in-process."""
    model = explainer.load_model(ROOT / "models/efficientnet_lite0/model.onnx")
    image = ROOT / "models/efficientnet_lite0/examples/coffee.png"
    task, target = image_task(image), int(explainer.classify(model, image, top=1)[0]["index"])

    def audit(method: str) -> Any:
        return audit_task(model.describe(), model.spec.sha256, [method], 32, 0, target, task, None)

    runs = {"occlusion": lambda: explainer.occlusion_sensitivity(model, image),
            "integrated-gradients": lambda: explainer.integrated_gradients(model, image),
            "audit occlusion": lambda: audit("occlusion"),
            "audit integrated-gradients": lambda: audit("integrated-gradients")}
    out = {}
    for name, run in runs.items():
        run()  # warm (the gradient graph is built or read from the cache here)
        times = []
        for _ in range(repeats):
            t0, c0 = time.perf_counter(), time.process_time()
            run()
            times.append((time.perf_counter() - t0, time.process_time() - c0))
        out[name] = (_med(times, 0), _med(times, 1))
    return out


def measure(rounds: int) -> str:
    load0 = os.getloadavg()
    start = _dt.datetime.now(_dt.timezone.utc)
    work = _workloads()
    models = {k: explainer.load_model(m) for k, (m, _, _) in work.items()}
    inproc: dict[str, list[tuple[float, float]]] = {k: [] for k in work}
    wall: dict[tuple[str, int], list[tuple[float, float, float]]] = {(k, n): [] for k in work for n in (1, 2)}
    t0 = time.perf_counter()
    with connect(workers=1) as one, connect(workers=2) as two:
        clusters = {1: one, 2: two}
        for n, c in clusters.items():
            c.client.wait_for_workers(n, timeout=120)
            for k, (_, images, chunk) in work.items():  # warm-up: every worker builds both models
                _on_cluster(c, models[k], images[:2 * n], chunk)
        started = time.perf_counter() - t0
        for _ in range(rounds):
            for k, (_, images, chunk) in work.items():
                inproc[k].append(_in_process(models[k], images))
                for n, c in clusters.items():
                    wall[(k, n)].append(_on_cluster(c, models[k], images, chunk))
        noop = _noop_cost(one)
    costs = _per_image_costs()
    ig = explainer.integrated_gradients(models["lite0"], ROOT / "models/efficientnet_lite0/examples/coffee.png")
    load1 = os.getloadavg()
    return _report(work, inproc, wall, noop, costs, start, load0, load1, rounds, started,
                   ig.params.get("num_steps_used"))


def _med(rows: list[tuple[float, ...]], j: int) -> float:
    return statistics.median(r[j] for r in rows)


def _report(work, inproc, wall, noop, costs, start, load0, load1, rounds, started, ig_steps) -> str:
    import distributed
    import onnxruntime

    lines = [SECTION, "",
             f"- Date: {start:%Y-%m-%d %H:%M} UTC; {rounds} alternating rounds, medians",
             f"- Machine: `nproc` = {os.cpu_count()}, {platform.machine()}, no GPU, SHARED with other "
             f"jobs: load average (1, 5, 15 min) at start {', '.join(f'{v:.2f}' for v in load0)}, "
             f"at end {', '.join(f'{v:.2f}' for v in load1)}. A load above 2 means the workers did "
             "not get free cores: wall-clock rates and speed-ups are then floors; the CPU-time "
             "columns do not depend on the load",
             f"- Versions: Python {platform.python_version()}, onnxruntime {onnxruntime.__version__}, "
             f"distributed {distributed.__version__}; every session one intra-op thread (EXPLAINER_THREADS=1)",
             "- How to reproduce: `.venv/bin/python benchmarks/bench_cluster.py`", "",
             "| workload | images | in-process s/image (CPU s) | 1 worker images/s | 2 workers images/s | "
             "wall speed-up 2 vs 1 | CPU per image on the cluster, workers + client (s) | "
             "CPU overhead per task (ms) | 2 workers on 2 free cores, from CPU time |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for k, (_, images, _) in work.items():
        n = len(images)
        t, cpu = _med(inproc[k], 0), _med(inproc[k], 1)
        w1, w2 = _med(wall[(k, 1)], 0), _med(wall[(k, 2)], 0)
        rows = wall[(k, 1)] + wall[(k, 2)]
        workers, client = _med(rows, 1), _med(rows, 2)
        overhead = workers + client - cpu
        lines.append(f"| {k} occlusion | {n} | {t:.4f} ({cpu:.4f}) | {n / w1:.1f} | {n / w2:.1f} | "
                     f"{w1 / w2:.2f}x | {workers:.4f} + {client:.4f} | {overhead * 1e3:.1f} | "
                     f"{2 / (workers + client):.1f} images/s = {2 * cpu / (workers + client):.2f}x in-process |")
    lines += ["", "CPU overhead per task = (workers' + this process's CPU time per image on the cluster) "
              "- in-process CPU time per image: decoding the bytes, pickling the task and the "
              "Explanation, scheduling, the client's bookkeeping. \"2 workers on 2 free cores\" is "
              "2 / (that CPU time per image): the rate when nothing else runs on the machine.", "",
              f"Empty tasks (400, 1 worker): {noop[0] * 1e3:.2f} ms wall and {noop[1] * 1e3:.2f} ms CPU "
              "(worker + client + scheduler) per task: Dask's own floor. "
              f"Starting a 1- and a 2-worker LocalCluster and building both models on every worker: "
              f"{started:.1f} s.", "",
              "Per-image cost, bundled EfficientNet-Lite0 224x224, coffee.png, one thread, in-process, "
              "median of 3 (for docs/cluster.md; audit = the method + deletion and insertion curves of "
              f"32 steps; integrated gradients with its defaults, which chose {ig_steps} steps here), "
              "wall / CPU seconds:", "", "| per image | wall s | CPU s |", "|---|---:|---:|"]
    lines += [f"| {k} | {w:.2f} | {c:.2f} |" for k, (w, c) in costs.items()] + [""]
    lite0 = wall[("lite0", 1)] + wall[("lite0", 2)]
    lite0_overhead = _med(lite0, 1) + _med(lite0, 2) - _med(inproc["lite0"], 1)
    lines += _estimate(costs, max(noop[1], lite0_overhead))
    return "\n".join(lines)


def _write(section: str) -> None:
    path = ROOT / "benchmarks/RESULTS.md"
    text = path.read_text()
    if SECTION in text:
        head, _, rest = text.partition(SECTION)
        nxt = rest.find("\n## ")
        text = head + section + (rest[nxt + 1:] if nxt >= 0 else "")
    else:
        text = text.rstrip("\n") + "\n\n" + section
    path.write_text(text)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()
    section = measure(args.rounds)
    print(section)
    if not args.no_write:
        _write(section)


if __name__ == "__main__":
    main()
