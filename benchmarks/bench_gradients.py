"""Cost of a gradient evaluation relative to a forward pass, on the bundled model (CPU).

Runs the forward model and its gradient models (explainer.graph.gradients, standard and
guided ReLU rules) in ONNX Runtime on the same random batches, at batch sizes 1, 8 and 32,
and reports gradient time / forward time, with ONNX Runtime's default threads (one per
core) and with one thread (the compute cost, without the memory-bandwidth contention of
the elementwise mask operations between cores). Each session is timed in blocks of consecutive
calls after a pause and a discarded call, so that it runs in its steady state, as in an
explanation, and not while another session's idle threads still spin on the 2 cores
(timing the sessions call by call in turn made the forward pass look up to 1.7x slower).
Rounds alternate the sessions; the report gives medians over all timed calls.

"explainer" is the product's path, ``OnnxModel.gradients``: on CPU it splits the batch
into pieces whose activations fit in the cache and runs them on one one-thread session
per core at once (explainer.backends.cpu_parallel). Its ratio is taken against the faster
of the plain forward pass and the forward pass run with the same plan.

    .venv/bin/python benchmarks/bench_gradients.py            # prints and appends to RESULTS.md
    .venv/bin/python benchmarks/bench_gradients.py --no-write
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path
from typing import Callable

import numpy as np
import onnx
import onnxruntime as ort

import explainer
from explainer.backends.cpu_parallel import SessionSet, cpu_cores, plan, sample_bytes
from explainer.graph.gradients import gradient_model

ROOT = Path(__file__).resolve().parent.parent
MODEL = ROOT / "models" / "efficientnet_lite0" / "model.onnx"


def session(proto: onnx.ModelProto | Path, threads: int = 0) -> ort.InferenceSession:
    data = str(proto) if isinstance(proto, Path) else proto.SerializeToString()
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads  # 0: ONNX Runtime's default (one per core)
    return ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])


def steady(runs: dict[str, Callable[[], object]], rounds: int, block: int = 5) -> dict[str, float]:
    """Median seconds per call of each function, timed in blocks of ``block`` consecutive calls."""
    times: dict[str, list[float]] = {k: [] for k in runs}
    for _ in range(rounds):
        for key, run in runs.items():
            time.sleep(0.2)  # let the previous session's worker threads stop spinning
            run()
            for _ in range(block):
                t0 = time.perf_counter()
                run()
                times[key].append(time.perf_counter() - t0)
    return {k: float(np.median(v)) for k, v in times.items()}


def measure(batches: list[int], rounds: int) -> list[dict]:
    proto = onnx.load(str(MODEL))
    standard, guided = gradient_model(proto), gradient_model(proto, relu="guided")
    sessions = {"forward_s": session(MODEL), "standard_s": session(standard), "guided_s": session(guided),
                "forward_1t_s": session(MODEL, 1), "standard_1t_s": session(standard, 1)}
    model = explainer.load_model(MODEL, device="cpu")
    forward_set = SessionSet(MODEL.read_bytes(), ["CPUExecutionProvider"])
    per_sample = sample_bytes(proto)
    rng = np.random.default_rng(0)
    rows = []
    for n in batches:
        x = rng.normal(size=(n, 3, 224, 224)).astype(np.float32)
        wl = np.zeros((n, 1000), np.float32)
        wl[:, 1] = 1
        feeds = {"input": x, "logit_weights": wl, "probability_weights": np.zeros_like(wl)}
        runs: dict[str, Callable[[], object]] = {
            key: (lambda s=s, feed={k: v for k, v in feeds.items() if k in {i.name for i in s.get_inputs()}}:
                  s.run(None, feed)) for key, s in sessions.items()}
        chunk, workers, threads = plan(n, per_sample, cpu_cores())
        runs["forward_planned_s"] = lambda: forward_set.run_pieces(
            n, lambda s, part: s.run(None, {"input": x[part]}), chunk, workers, threads)
        runs["explainer_s"] = lambda: model.gradients(x, wl, np.zeros_like(wl))
        rows.append({"batch": n, "plan": f"{-(-n // chunk)}x{chunk} on {workers}x{threads or 'all'}",
                     **steady(runs, max(2, rounds // n))})
        print(rows[-1], flush=True)
    return rows


def report(rows: list[dict]) -> str:
    lines = ["## Gradient graphs (CPU)", "",
             f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}. Bundled EfficientNet-Lite0 (224x224), "
             f"ONNX Runtime {ort.__version__} CPUExecutionProvider, {os.cpu_count()} cores "
             f"({platform.processor() or platform.machine()}), default session options. Gradient model = "
             "`explainer.graph.gradients.gradient_model` (outputs the logits and d score / d input); each "
             "session timed in steady state (blocks of consecutive calls), medians. Target: ratio <= 3.", "",
             "| batch | forward (ms) | forward, planned (ms) | explainer: pieces on sessions x threads "
             "| explainer gradient (ms) | ratio | one session: gradient, standard (ms) | ratio "
             "| gradient, guided (ms) | ratio | 1 thread: forward (ms) | gradient (ms) | ratio |",
             "|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        f, f1, best = r["forward_s"], r["forward_1t_s"], min(r["forward_s"], r["forward_planned_s"])
        lines.append(f"| {r['batch']} | {1e3 * f:.1f} | {1e3 * r['forward_planned_s']:.1f} | {r['plan']} | "
                     f"{1e3 * r['explainer_s']:.1f} | {r['explainer_s'] / best:.2f} | "
                     f"{1e3 * r['standard_s']:.1f} | {r['standard_s'] / f:.2f} | "
                     f"{1e3 * r['guided_s']:.1f} | {r['guided_s'] / f:.2f} | {1e3 * f1:.1f} | "
                     f"{1e3 * r['standard_1t_s']:.1f} | {r['standard_1t_s'] / f1:.2f} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batches", type=int, nargs="+", default=[1, 8, 32])
    p.add_argument("--rounds", type=int, default=16, help="rounds at batch 1 (fewer for larger batches)")
    p.add_argument("--no-write", action="store_true")
    args = p.parse_args()
    text = report(measure(args.batches, args.rounds))
    print(text)
    if not args.no_write:
        with open(ROOT / "benchmarks" / "RESULTS.md", "a", encoding="utf-8") as f:
            f.write("\n" + text)


if __name__ == "__main__":
    main()
