"""Data-parallel CPU runs of one ONNX model: pieces of a batch on one-thread sessions at once.

A gradient graph keeps every activation its backward pass needs, so its working set
grows with the batch and leaves the cache long before the forward pass's does (the
bundled model keeps about 50 MiB per image). Splitting the batch into pieces whose
activations fit in ``CHUNK_BYTES`` and running them on one session per core, each
with one intra-op thread, instead of the whole batch on one multi-threaded session,
cuts the bundled model's gradient cost from about 3.4x to 2.7x a forward pass at
batch 32 on 2 cores (benchmarks/RESULTS.md). Each sample's result does not depend on
the plan beyond float rounding.
"""

from __future__ import annotations

import functools
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import onnx

from ..errors import InputError
from .base import batch_slices

CHUNK_BYTES = 16 * 2**20
MAX_WORKERS = 8
_ITEM_BYTES = {onnx.TensorProto.FLOAT16: 2, onnx.TensorProto.DOUBLE: 8}


THREADS_ENV = "EXPLAINER_THREADS"  # caps every session's intra-op threads (cluster workers set 1)


def thread_cap() -> int | None:
    """``$EXPLAINER_THREADS`` as a positive integer, or None when unset."""
    text = os.environ.get(THREADS_ENV, "").strip()
    if not text:
        return None
    if not text.isdigit() or int(text) < 1:
        raise InputError(f"{THREADS_ENV} must be a positive integer, got {text!r}")
    return int(text)


def cpu_cores() -> int:
    """The CPUs this process may use: :func:`machine_cores`, capped by ``$EXPLAINER_THREADS``."""
    return min(machine_cores(), thread_cap() or machine_cores())


def session_options(threads: int = 0) -> Any:
    """ONNX Runtime SessionOptions with ``threads`` intra-op threads (0: ORT's default), both
    capped by ``$EXPLAINER_THREADS`` when it is set."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    cap = thread_cap()
    if threads or cap:
        options.intra_op_num_threads = min(threads or cap or 1, cap or threads)
    return options


@functools.lru_cache(maxsize=1)
def machine_cores() -> int:
    """The CPUs this process may run on: its affinity, capped by a cgroup v2 CPU quota (read once)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    try:
        quota = quota_cores(Path("/sys/fs/cgroup/cpu.max").read_text(encoding="ascii"))
    except (OSError, UnicodeDecodeError):
        quota = None
    return max(1, min(cores, quota or cores))


def quota_cores(cpu_max: str) -> int | None:
    """Whole CPUs allowed by a cgroup v2 ``cpu.max`` line ("QUOTA PERIOD" or "max PERIOD"), at least 1."""
    parts = cpu_max.split()
    if len(parts) != 2 or parts[0] == "max":
        return None
    try:
        quota, period = int(parts[0]), int(parts[1])
    except ValueError:
        return None
    return max(1, quota // period) if quota > 0 and period > 0 else None


def sample_bytes(proto: onnx.ModelProto) -> int:
    """Bytes of one sample's intermediate tensors (shape inference; unknown shapes count 0)."""
    try:
        inferred = onnx.shape_inference.infer_shapes(proto)
    except Exception:
        return 0
    total = 0
    for info in inferred.graph.value_info:
        t = info.type.tensor_type
        dims = [d.dim_value if d.HasField("dim_value") else 0 for d in t.shape.dim][1:]
        if dims and all(dims):
            total += int(np.prod(dims)) * _ITEM_BYTES.get(t.elem_type, 4)
    return total


def plan(n: int, per_sample: int, cores: int, fixed: int | None = None) -> tuple[int, int, int]:
    """How to run ``n`` samples: (chunk, workers, threads).

    Parameters
    ----------
    n : int
        Samples in the batch.
    per_sample : int
        ``sample_bytes`` of the model.
    cores : int
        CPUs to use.
    fixed : int, optional
        The model's fixed batch size: pieces are then exactly that size (padded).

    Returns
    -------
    chunk : int
        Samples per session call.
    workers : int
        Sessions running at once (1: the pieces run one after another).
    threads : int
        Intra-op threads of each session (0: ONNX Runtime's default, all cores).
    """
    if fixed:
        chunk = fixed
    else:
        chunk = max(1, min(n, CHUNK_BYTES // max(per_sample, 1)))
        chunk = max(1, min(chunk, -(-n // min(cores, MAX_WORKERS))))
    pieces = -(-n // chunk)
    workers = max(1, min(cores, MAX_WORKERS, pieces))
    return chunk, workers, (max(1, cores // workers) if workers > 1 else 0)


class SessionSet:
    """ORT sessions of one serialized model, built on first use, by intra-op thread count.

    Parameters
    ----------
    model : bytes
        The serialized ONNX model.
    providers : sequence of str
    sample_bytes : int
        ``sample_bytes`` of the model, for ``plan``.
    """

    def __init__(self, model: bytes, providers: Sequence[str], sample_bytes: int = 0) -> None:
        self.model, self.providers, self.sample_bytes = model, list(providers), sample_bytes
        self.sessions: dict[int, list[Any]] = {}

    def get(self, threads: int, count: int = 1) -> list[Any]:
        """``count`` sessions with ``threads`` intra-op threads each (0: the default)."""
        import onnxruntime as ort

        have = self.sessions.setdefault(threads, [])
        while len(have) < count:
            have.append(ort.InferenceSession(self.model, session_options(threads), providers=self.providers))
        return have[:count]

    def run_pieces(self, n: int, run: Callable[[Any, slice], Any], chunk: int, workers: int,
                   threads: int) -> list[Any]:
        """``run(session, piece)`` for the pieces of ``n`` samples in order, ``workers`` at once."""
        pieces = batch_slices(n, chunk)
        sessions = self.get(threads, workers)
        if workers == 1:
            return [run(sessions[0], s) for s in pieces]

        def work(j: int) -> list[Any]:
            return [run(sessions[j], s) for s in pieces[j::workers]]

        with ThreadPoolExecutor(workers) as pool:
            done = list(pool.map(work, range(workers)))
        return [done[i % workers][i // workers] for i in range(len(pieces))]
