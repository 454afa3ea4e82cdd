"""Served explanations: client-side vs server-side (M_explain) through a local Triton server.

Run from the repository root with the test environment::

    EXPLAINER_TRITON_VENV=... .venv/bin/python benchmarks/bench_served.py [--rounds 2] [--no-write]

1. R: the served model's in-server peak, from Triton's own statistics: 2 clients send
   batches of 128 back to back (directly, no proxy); R = images / the model's compute
   time (compute_input + compute_infer + compute_output) over those requests.
2. For each link (direct, 1 Gbit/s, 100 Mbit/s; a pacing TCP proxy on 127.0.0.1,
   benchmarks/throttle.py) and each method, one client-side run (every perturbed image
   crosses the link) and one server-side run (``--server-side on``: the image, the
   options, the map and the record cross it), in alternation, ``--rounds`` times.
   Bytes = everything the proxy carried both ways during the run (gRPC framing included).
3. Server-side efficiency = (forward passes / R) / wall time; also the model's busy
   fraction during the run (its compute time in the server's statistics / wall time),
   which a shared machine's load affects less.

Appends (or replaces) the "## Served explanations" section of benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))
import explainer  # noqa: E402
from explainer.methods.common import load_input  # noqa: E402
from explainer.backends.triton.explain_client import explain_served  # noqa: E402
from explainer.backends.triton.explain_export import export_explainer  # noqa: E402
from explainer.backends.triton.repo import write_model  # noqa: E402
from explainer.backends.triton.server import LocalTritonServer  # noqa: E402
from throttle import Throttle  # noqa: E402

MODEL = "efficientnet_lite0"
IMAGE = ROOT / "models" / MODEL / "examples" / "coffee.png"
RESULTS = Path(__file__).resolve().parent / "RESULTS.md"
HEADING = "## Served explanations"
METHODS = {"occlusion": ("occlusion", {}), "rise-500": ("rise", {"num_masks": 500, "seed": 0})}
LINKS = {"direct": None, "1 Gbit/s": 1000.0, "100 Mbit/s": 100.0}


def compute_ns(client, name: str) -> tuple[int, int]:
    """(inferences, compute ns) of model ``name`` so far, from the server's statistics.

    Compute time is summed over executions (``batch_stats``), not over requests: requests
    merged by the dynamic batcher share one execution.
    """
    s = client.get_inference_statistics(name, as_json=True)["model_stats"][0]
    ns = sum(int(b.get(k, {}).get("ns", 0)) for b in s.get("batch_stats", [])
             for k in ("compute_input", "compute_infer", "compute_output"))
    return int(s.get("inference_count", 0)), ns


def peak_rate(server: LocalTritonServer, batches: int = 4) -> float:
    """The served model's images per second of its own compute time, batches of 128, 2 in flight."""
    import tritonclient.grpc as g

    x = np.random.default_rng(0).standard_normal((128, 3, 224, 224), dtype=np.float32)
    stats = g.InferenceServerClient(f"127.0.0.1:{server.grpc_port}")

    def send(n: int) -> None:
        c = g.InferenceServerClient(f"127.0.0.1:{server.grpc_port}")
        for _ in range(n):
            inp = g.InferInput("input", list(x.shape), "FP32")
            inp.set_data_from_numpy(x)
            c.infer(MODEL, [inp])

    send(1)
    n0, t0 = compute_ns(stats, MODEL)
    threads = [threading.Thread(target=send, args=(batches // 2,)) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    n1, t1 = compute_ns(stats, MODEL)
    return (n1 - n0) / ((t1 - t0) / 1e9)


def one_run(model, proxy: Throttle, stats, side: str, method: str, options: dict, x) -> dict:
    proxy.reset()
    n0, c0 = compute_ns(stats, MODEL)
    t0 = time.perf_counter()
    if side == "server":
        e = explain_served(model, f"{MODEL}_explain", method, x, None, options)
    else:
        e = explainer.methods.discover()[method].function(model, x, None, **options)
    wall = time.perf_counter() - t0
    n1, c1 = compute_ns(stats, MODEL)
    return {"wall": wall, "bytes": proxy.total, "passes": n1 - n0, "busy": (c1 - c0) / 1e9 / wall, "map": e.map}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--no-write", action="store_true")
    ap.add_argument("--links", default=",".join(LINKS), help="a subset of: " + ", ".join(LINKS))
    ap.add_argument("--methods", default=",".join(METHODS), help="a subset of: " + ", ".join(METHODS))
    args = ap.parse_args()
    links = {k: LINKS[k] for k in args.links.split(",")}
    methods = {k: METHODS[k] for k in args.methods.split(",")}
    import tritonclient.grpc as g

    with tempfile.TemporaryDirectory() as tmp:
        write_model(tmp, ROOT / "models" / MODEL / "model.onnx", MODEL)
        export_explainer(tmp, MODEL)
        with LocalTritonServer(tmp, http_port=0, grpc_port=0) as server:
            stats = g.InferenceServerClient(f"127.0.0.1:{server.grpc_port}")
            load0 = os.getloadavg()
            rows, rates = {}, []
            for link, mbit in links.items():
                proxy = Throttle(("127.0.0.1", server.grpc_port), mbit)
                model = explainer.load_model(f"grpc://127.0.0.1:{proxy.port}/{MODEL}", timeout=600)
                x = load_input(model, str(IMAGE))
                for name, (method, options) in methods.items():
                    if not rates:
                        explain_served(model, f"{MODEL}_explain", method, x, None, options)  # warm-up
                    for _ in range(args.rounds):
                        rates.append(peak_rate(server))
                        for side in ("client", "server"):
                            r = one_run(model, proxy, stats, side, method, options, x)
                            r["R"] = rates[-1]
                            rows.setdefault((link, name, side), []).append(r)
                        a, b = (rows[(link, name, s)][-1]["map"] for s in ("client", "server"))
                        assert np.array_equal(a, b), "server-side map differs from client-side"
                    print(link, name, {s: round(statistics.median(r["wall"] for r in rows[(link, name, s)]), 2)
                                       for s in ("client", "server")}, flush=True)
                proxy.close()
            load1 = os.getloadavg()
    report = _report(rows, rates, load0, load1, args.rounds)
    print(report)
    if not args.no_write:
        _write(report)
    return 0


def _report(rows: dict, rates: list[float], load0, load1, rounds: int) -> str:
    image_map = 3 * 224 * 224 * 4 + 224 * 224 * 4
    lines = [HEADING, "",
             f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {os.cpu_count()} CPU cores, no GPU; Triton 2.51 "
             "(nvidia-pytriton's tritonserver, python-backend wrapper running ONNX Runtime) on 127.0.0.1; "
             f"EfficientNet-Lite0, coffee.png; M_explain exported with the defaults (1 instance, 2 BLS requests in "
             f"flight). Links: direct (loopback), or a pacing proxy (benchmarks/throttle.py) at 1 Gbit/s and 100 "
             f"Mbit/s each way. Load average at start {load0[0]:.1f} and end {load1[0]:.1f}"
             + (": **the machine was loaded by other work**, so absolute times are inflated; "
                if max(load0[0], load1[0]) > 3 else " (a quiet machine); ")
             + "each client-side/server-side pair ran back to back with R measured just before it. "
             "R comes from batches of 128 sent by 2 clients at once; the explainer's BLS requests are smaller "
             "parts, which this CPU runs faster per image, so an efficiency above 1 means at the peak. "
             f"Medians over {rounds} rounds. Reproduce: `.venv/bin/python benchmarks/bench_served.py`.", "",
             f"R (in-server peak, images per second of the model's compute time, batches of 128): "
             f"{', '.join(f'{r:.0f}' for r in rates)}.", "",
             f"image + map = {image_map / 1e6:.2f} MB (FP32 (1,3,224,224) input + (224,224) map).", "",
             "| link | method | side | forward passes | wall (s) | MB on the wire | wire / (image + map) "
             "| efficiency vs R | model busy fraction |",
             "|---|---|---|---:|---:|---:|---:|---:|---:|"]
    for (link, name, side), rs in rows.items():
        wall = statistics.median(r["wall"] for r in rs)
        mb = statistics.median(r["bytes"] for r in rs)
        eff = statistics.median(r["passes"] / r["R"] / r["wall"] for r in rs)
        busy = statistics.median(r["busy"] for r in rs)
        lines.append(f"| {link} | {name} | {side} | {rs[0]['passes']} | {wall:.2f} | {mb / 1e6:.2f} | "
                     f"{mb / image_map:.2f} | {eff:.2f} | {busy:.2f} |")
    return "\n".join(lines) + "\n"


def _write(report: str) -> None:
    text = RESULTS.read_text(encoding="utf-8")
    if HEADING in text:
        start = text.index(HEADING)
        rest = text.find("\n## ", start + len(HEADING))
        text = text[:start] + report + (text[rest + 1:] if rest >= 0 else "")
    else:
        text = text.rstrip("\n") + "\n\n" + report
    RESULTS.write_text(text, encoding="utf-8")


if __name__ == "__main__":
    sys.exit(main())
