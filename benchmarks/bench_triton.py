"""Occlusion through a local Triton server vs that server's own peak throughput vs in-process ONNX Runtime.

Run from the repository root with the test environment (tritonclient installed)::

    .venv/bin/python benchmarks/bench_triton.py [--no-write] [--min-s 3]

1. R_triton: the bundled EfficientNet-Lite0's peak throughput through the local server
   (``explainer triton-server``'s binary and wrapper) with plain gRPC requests of random
   inputs, perf-analyzer style: C client threads each sending batches of B back to back,
   best images/s over a small (B, C) grid.
2. R_ort: plain ``session.run`` in this process, best images/s over batch sizes.
3. explainer.occlusion_sensitivity on coffee.png (default settings, 122 forward passes)
   through the server over gRPC and HTTP at several --concurrency values, and in-process.
   Efficiency = (forward passes / R) / wall time, against R_triton and against R_ort,
   with both R measured again in every round (a shared machine's load drifts).

Appends (or replaces) the "## Triton (local server)" section of benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
import explainer  # noqa: E402
from explainer.backends.triton.server import LocalTritonServer  # noqa: E402

IMAGE = ROOT / "models" / "efficientnet_lite0" / "examples" / "coffee.png"
RESULTS = Path(__file__).resolve().parent / "RESULTS.md"
HEADING = "## Triton (local server)"
MODEL = "efficientnet_lite0"


def triton_rate(grpc_port: int, batch: int, clients: int, min_s: float) -> float:
    """Images/s of ``clients`` threads sending ``batch``-image gRPC requests back to back.

    After one warm-up request each, every client sends requests for at least ``min_s``
    seconds and at least 2 requests; rate = images answered / time to the last answer.
    """
    import tritonclient.grpc as g

    x = np.random.default_rng(0).standard_normal((batch, 3, 224, 224), dtype=np.float32)
    ready = threading.Barrier(clients + 1)
    ends: list[float] = []
    lock = threading.Lock()
    start = [0.0]

    def client() -> None:
        c = g.InferenceServerClient(f"127.0.0.1:{grpc_port}")
        inp = g.InferInput("input", list(x.shape), "FP32")
        inp.set_data_from_numpy(x)
        c.infer(MODEL, [inp])  # warm-up
        ready.wait()
        ready.wait()
        n = 0
        while n < 2 or time.perf_counter() - start[0] < min_s:
            c.infer(MODEL, [inp])
            n += 1
            with lock:
                ends.append(time.perf_counter())

    threads = [threading.Thread(target=client) for _ in range(clients)]
    for t in threads:
        t.start()
    ready.wait()
    start[0] = time.perf_counter()
    ready.wait()
    for t in threads:
        t.join()
    return len(ends) * batch / (max(ends) - start[0])


def ort_rate(model, batch: int, min_s: float) -> float:
    x = np.random.default_rng(0).standard_normal((batch, 3, 224, 224), dtype=np.float32)
    model.predict(x)
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < min_s:
        model.predict(x)
        n += batch
    return n / (time.perf_counter() - start)


def explain_time(model, repeats: int) -> tuple[float, int, np.ndarray]:
    walls, e = [], None
    for _ in range(repeats):
        t = time.perf_counter()
        e = explainer.occlusion_sensitivity(model, str(IMAGE))
        walls.append(time.perf_counter() - t)
    return statistics.median(walls), e.timings["forward_passes"], e.map


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--min-s", type=float, default=2.0, help="seconds per throughput measurement")
    ap.add_argument("--rounds", type=int, default=3, help="rounds of (R measurements, one run per setting)")
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()
    local = explainer.load_model()
    ref = explainer.occlusion_sensitivity(local, str(IMAGE)).map
    with LocalTritonServer(http_port=0, grpc_port=0) as server:
        grid = {(b, c): triton_rate(server.grpc_port, b, c, args.min_s)
                for b, c in ((16, 1), (16, 4), (64, 2), (128, 1), (128, 2))}
        best = max(grid, key=grid.get)
        settings = [("in-process ONNX Runtime", None, local)]
        for url in (server.grpc_url, server.http_url):
            for conc in (1, 4, 8):
                settings.append((f"Triton {url.split(':')[0]}", conc,
                                 explainer.load_model(f"{url}/{MODEL}", concurrency=conc)))
        walls = {i: [] for i in range(len(settings))}
        diffs, passes = {}, 0
        eff_t = {i: [] for i in walls}
        eff_o = {i: [] for i in walls}
        r_seen = []
        for _ in range(args.rounds):  # R measured in every round: the load of a shared machine drifts
            r_t = triton_rate(server.grpc_port, *best, args.min_s)
            r_o = max(ort_rate(local, b, args.min_s / 2) for b in (64, 128))
            r_seen.append((r_t, r_o))
            for i, (_, _, model) in enumerate(settings):
                wall, passes, m = explain_time(model, 1)
                walls[i].append(wall)
                eff_t[i].append(passes / r_t / wall)
                eff_o[i].append(passes / r_o / wall)
                diffs[i] = max(diffs.get(i, 0.0), float(np.abs(m - ref).max()))
    med = statistics.median
    lines = [HEADING, "",
             f"{time.strftime('%Y-%m-%d')}, {os.cpu_count()} CPU cores, Triton 2.51 (nvidia-pytriton 0.7.0 "
             "tritonserver, python-backend wrapper running ONNX Runtime) on 127.0.0.1, EfficientNet-Lite0, "
             f"occlusion on coffee.png with default settings ({passes} forward passes, MiniBatchSize 128). "
             f"{args.rounds} rounds, each measuring R_triton (plain gRPC requests, {best[0]} images x {best[1]} "
             "clients, the best of the grid below) and R_ort (plain in-process `predict`, best of batch 64/128), "
             "then one run per setting; the table gives medians over rounds of the wall time and of the "
             f"per-round efficiency. Load average at the end: {os.getloadavg()[0]:.1f} (a shared machine: "
             "absolute times are inflated, ratios less so). "
             "Reproduce: `.venv/bin/python benchmarks/bench_triton.py`.", "",
             "Peak-throughput grid through the server (images/s, batch x clients): "
             + ", ".join(f"{b}x{c}: {r:.0f}" for (b, c), r in grid.items()) + ". Per round (R_triton, R_ort): "
             + ", ".join(f"({t:.0f}, {o:.0f})" for t, o in r_seen) + ".", "",
             "| path | concurrency | wall (s) | efficiency vs R_triton | efficiency vs R_ort | max abs diff vs in-process |",
             "|---|---|---|---|---|---|"]
    for i, (name, conc, _) in enumerate(settings):
        lines.append(f"| {name} | {conc or '-'} | {med(walls[i]):.2f} | {med(eff_t[i]):.2f} | "
                     f"{med(eff_o[i]):.2f} | {diffs[i]:.1e} |")
    report = "\n".join(lines) + "\n"
    print(report)
    if not args.no_write:
        _write(report)
    return 0


def _write(report: str) -> None:
    """Replace this benchmark's own section of RESULTS.md, or append it."""
    text = RESULTS.read_text(encoding="utf-8") if RESULTS.exists() else "# Benchmarks\n"
    if HEADING in text:
        start = text.index(HEADING)
        nxt = text.find("\n## ", start + len(HEADING))
        text = text[:start] + report + (text[nxt + 1:] if nxt >= 0 else "")
    else:
        text = text.rstrip("\n") + "\n\n" + report
    RESULTS.write_text(text, encoding="utf-8")
    print(f"wrote {HEADING!r} in {RESULTS}")


if __name__ == "__main__":
    sys.exit(main())
