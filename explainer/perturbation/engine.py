"""Streams perturbed batches through a Model, generation overlapped with inference."""

from __future__ import annotations

import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
from tqdm import tqdm

from ..model import Model, batch_slices, scores
from ..errors import InputError, ModelError
from ..xp import to_numpy


@dataclass
class RunStats:
    """Counters a method reports in its Explanation's timings."""

    forward_passes: int = 0
    model_s: float = 0.0


def check_batch_size(mini_batch_size: int) -> int:
    """Validate MATLAB's MiniBatchSize option."""
    if isinstance(mini_batch_size, bool) or not isinstance(mini_batch_size, (int, np.integer)) \
            or mini_batch_size < 1:
        raise InputError(f"mini_batch_size must be a positive integer, got {mini_batch_size!r}")
    return int(mini_batch_size)


def timed_predict(model: Model, batch: Any, stats: RunStats, *, first: int | None = None) -> np.ndarray:
    """``model.predict`` on a host copy of ``batch``, counted in ``stats``.

    A model with ``accepts_device_arrays`` true (an ONNX Runtime CUDA session) gets ``batch``
    as it is, so a CuPy batch stays on the GPU. ``first`` (the index of the batch's first
    input in the run) makes a NaN error name the batch.
    """
    feed = batch if getattr(model, "accepts_device_arrays", False) else to_numpy(batch)
    t0 = time.perf_counter()
    out = model.predict(feed)
    stats.model_s += time.perf_counter() - t0
    stats.forward_passes += feed.shape[0]
    if not np.all(np.isfinite(out)):
        where = "" if first is None else f" (inputs {first}-{first + feed.shape[0] - 1})"
        raise ModelError(f"the model returned NaN or Inf for a batch of {feed.shape[0]} inputs{where}")
    return out


def stream(model: Model, n: int, mini_batch_size: int, make_batch: Callable[[int, int], Any],
           stats: RunStats, *, progress: bool = False, desc: str = "") -> np.ndarray:
    """Run ``n`` perturbed inputs through ``model`` in order.

    ``make_batch(start, stop)`` builds inputs ``start..stop-1`` as an (B, C, H, W)
    array while up to ``model.in_flight`` (default 1) earlier batches run in worker
    threads, so mask generation overlaps inference.

    Returns
    -------
    outputs : (n, K) float32 ndarray, row i for input i
    """
    size = check_batch_size(mini_batch_size)
    in_flight = max(1, int(getattr(model, "in_flight", 1)))
    parts: list[np.ndarray] = []
    pending: deque[Future] = deque()
    with ThreadPoolExecutor(max_workers=in_flight) as pool, \
            tqdm(total=n, desc=desc, unit="pass", disable=not progress, leave=False) as bar:
        for s in batch_slices(n, size):
            pending.append(pool.submit(timed_predict, model, make_batch(s.start, s.stop), stats,
                                       first=s.start))
            while len(pending) > in_flight or (pending and pending[0].done()):
                parts.append(_collect(pending.popleft(), bar))
        while pending:
            parts.append(_collect(pending.popleft(), bar))
    return np.concatenate(parts, axis=0) if parts else np.zeros((0, 0), np.float32)


def _collect(future: Future, bar: tqdm) -> np.ndarray:
    out = future.result()
    bar.update(out.shape[0])
    return out


class BatchRing:
    """Reused (B, C, H, W) float32 buffers that ``make_batch`` fills in place.

    ``stream()`` keeps at most ``model.in_flight`` batches running while the next
    one is built, so ``in_flight + 2`` buffers are never overwritten in use. Reuse
    saves allocating (and page-faulting) a fresh 77 MB array per 128-image batch.
    """

    def __init__(self, model: Model, mini_batch_size: int, count: int, item_shape: tuple[int, ...],
                 xp: Any) -> None:
        self.batch = check_batch_size(mini_batch_size)
        self.shape = (min(self.batch, max(count, 1)),) + tuple(item_shape)
        self.xp = xp
        self.buffers: list[Any] = [None] * (max(1, int(getattr(model, "in_flight", 1))) + 2)

    def take(self, start: int, stop: int) -> Any:
        """The buffer for inputs ``start..stop-1`` (a view of ``stop - start`` rows)."""
        slot = (start // self.batch) % len(self.buffers)
        if self.buffers[slot] is None:
            self.buffers[slot] = self.xp.empty(self.shape, self.xp.float32)
        return self.buffers[slot][:stop - start]


def perturb(model: Model, x: Any, count: int, fill: Callable[[Any, int, int], Any], mini_batch_size: int,
            stats: RunStats, xp: Any, *, score: str, target: int, progress: bool = False,
            desc: str = "") -> np.ndarray:
    """The pipeline every mask-based method shares: fill reused buffers, stream, score.

    ``fill(out, start, stop)`` writes perturbed inputs ``start..stop-1`` into ``out``
    ((stop - start, C, H, W), on ``xp``) and returns it; batches run through
    :func:`stream` (in order, overlapped, counted in ``stats``, with a progress bar).

    Returns
    -------
    y : (count,) float64 ndarray, the ``target``'s ``score`` of every perturbed input
    """
    ring = BatchRing(model, mini_batch_size, count, tuple(x.shape[1:]), xp)
    outputs = stream(model, count, mini_batch_size, lambda start, stop: fill(ring.take(start, stop), start, stop),
                     stats, progress=progress, desc=desc)
    return scores(outputs, model.spec, score)[:, target]
