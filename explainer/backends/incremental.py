"""Incremental inference (Krypton, Nakandala et al. 2019) for inputs that differ from a base in a box.

``incremental_model(model, x, box)`` returns a Model whose ``predict`` gives the same
outputs as ``model.predict`` (to float32 rounding) for inputs equal to ``x`` outside one
box of at most ``box`` pixels: it caches the activations of ``x`` at the plan's cut
tensors and, per input, recomputes only the crop of each segment that the box reaches
(graph/incremental_plan.py), then runs the suffix at full size. Inputs whose changed
pixels do not fit the box run as plain forward passes.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from ..graph.incremental import Prefix, prefix, segment, with_cut_outputs
from ..graph.incremental_plan import Plan, changed_range, crop_start, plan
from .base import Model, ModelBase
from .cpu_parallel import cpu_cores, session_options
from .isolation import run_with_deadline
from .onnx_safety import in_memory_bytes, load_in_memory

MIN_SPEEDUP = 1.2
"""Below this estimated speed-up a plan is not worth its sessions: full passes instead."""
CHUNK = 8
"""Inputs per run of the chain: ONNX Runtime's time per image grows by a quarter from a
batch of 8 to one of 64 on the bundled model (the activations leave the cache), and the
per-run overhead of the 11 sessions is small next to 8 images (benchmarks/RESULTS.md)."""


def changed_boxes(batch: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Bounding box of the pixels where each input differs from ``x``.

    Parameters
    ----------
    batch : (N, C, H, W) float32 ndarray
    x : (1, C, H, W) float32 ndarray

    Returns
    -------
    (N, 4) int ndarray of y0, y1, x0, x1 (half-open); y0 = y1 = 0 where nothing differs.
    """
    diff = (batch != x).any(axis=1)
    rows, cols = diff.any(axis=2), diff.any(axis=1)
    out = np.zeros((len(batch), 4), int)
    some = rows.any(axis=1)
    h, w = rows.shape[1], cols.shape[1]
    out[some, 0] = rows[some].argmax(1)
    out[some, 1] = h - rows[some, ::-1].argmax(1)
    out[some, 2] = cols[some].argmax(1)
    out[some, 3] = w - cols[some, ::-1].argmax(1)
    return out


class IncrementalModel(ModelBase):
    """A Model that runs inputs near a base input ``x`` incrementally (see the module doc).

    ``info`` says which path ran, for an Explanation's params.
    """

    backend = "onnxruntime"

    def __init__(self, model: Model, pre: Prefix, chosen: Plan, x: np.ndarray) -> None:
        import onnxruntime as ort

        self.model, self.spec, self.plan = model, model.spec, chosen
        self.in_flight = getattr(model, "in_flight", 1)
        providers = list(getattr(model, "providers", ["CPUExecutionProvider"]))
        cuts = [s.start for s in chosen.segments[1:]] + [chosen.last]
        cache = ort.InferenceSession(in_memory_bytes(with_cut_outputs(pre, cuts), "incremental model"),
                                     session_options(),
                                     providers=providers)
        names = [o.name for o in cache.get_outputs()]
        values = cache.run(None, {pre.input: x.astype(np.float32)})
        self.cached = dict(zip(names, values))
        self.cached[pre.input] = x
        self.base = np.asarray(values[0], np.float32).reshape(1, -1)
        self.x = x
        self.workers = cpu_cores() if providers[0] == "CPUExecutionProvider" else 1
        self._buffers: dict[tuple[int, str], np.ndarray] = {}
        models = [in_memory_bytes(segment(pre, s.start, s.end), "incremental model") for s in chosen.segments]
        models.append(in_memory_bytes(segment(pre, chosen.last, None), "incremental model"))
        # one chain of single-threaded sessions, run by every worker thread at once (a run
        # is thread-safe and uses its caller's thread): built, packed and warmed up once
        self.chain = [_session(m, providers, self.workers) for m in models]
        self.suffix = self.chain[-1]
        self.output = self.suffix.get_outputs()[0].name
        self.extent = {t: np.array(v.shape[2:]) for t, v in self.cached.items() if np.ndim(v) == 4}
        self.info = dict(path="incremental", cuts=len(chosen.segments) + 1,
                         estimated_speedup=round(chosen.speedup, 2))

    def predict(self, batch: np.ndarray) -> np.ndarray:
        """(N, C, H, W) float32 -> (N, K) float32, like the wrapped model."""
        batch = np.asarray(batch, np.float32)
        boxes = changed_boxes(batch, self.x)
        size = np.stack([boxes[:, 1] - boxes[:, 0], boxes[:, 3] - boxes[:, 2]], 1)
        fits = (size <= np.array(self.plan.box)).all(1)
        same = (size == 0).all(1)
        run = fits & ~same
        if run.all():
            return self._parallel(batch, boxes)
        out = np.empty((len(batch), self.base.shape[1]), np.float32)
        out[same] = self.base
        if run.any():
            out[run] = self._parallel(batch[run], boxes[run])
        if (~fits).any():
            out[~fits] = self.model.predict(batch[~fits])
        return out

    def _parallel(self, batch: np.ndarray, boxes: np.ndarray) -> np.ndarray:
        """The batch through the chain in pieces of at most ``CHUNK`` inputs, dealt round-robin
        to one thread per core on the single-threaded sessions (small crops gain nothing from
        intra-op threads; each input's result does not depend on the piece it is in)."""
        n = len(batch)
        pieces = np.array_split(np.arange(n), -(-n // CHUNK))
        out = np.empty((n, self.base.shape[1]), np.float32)

        def work(worker: int) -> None:
            for p in pieces[worker::self.workers]:
                out[p[0]:p[-1] + 1] = self._incremental(batch[p[0]:p[-1] + 1], boxes[p[0]:p[-1] + 1], worker)

        workers = min(self.workers, len(pieces))
        if workers == 1:
            work(0)
        else:
            with ThreadPoolExecutor(workers) as pool:
                list(pool.map(work, range(workers)))
        return out

    def _incremental(self, batch: np.ndarray, boxes: np.ndarray, worker: int) -> np.ndarray:
        y0, y1 = boxes[:, [0, 2]], boxes[:, [1, 3]]
        n = len(batch)
        values, origin, lo, hi = None, None, None, None
        for seg, session in zip(self.plan.segments, self.chain):
            ext_in, ext_out = self.extent[seg.start], self.extent[seg.end]
            out_lo, out_hi = changed_range(seg.changed, ext_out, y0, y1)
            start = crop_start(seg.geometry, out_lo, ext_in, np.array(seg.crop))
            crops = self._crops((worker, seg.start), batch, start, seg.crop, values, origin, lo, hi)
            values = run_with_deadline(session, None, {seg.start: crops}, "an incremental segment")[0]
            origin, lo, hi = start // seg.geometry.stride, out_lo, out_hi
        full = self._suffix_input(worker, n)
        zero = np.zeros((n, 2), int)
        shape = np.array(full.shape[2:])
        self._paste(full, zero, shape, values, origin, lo, hi)
        try:
            out = run_with_deadline(self.suffix, [self.output], {self.plan.last: full}, "the model")[0]
        finally:  # back to the cached activation: the next batch pastes into a clean copy
            self._paste(full, zero, shape, np.broadcast_to(self.cached[self.plan.last], full.shape), zero, lo, hi)
        return np.asarray(out, np.float32).reshape(n, -1)

    def _suffix_input(self, worker: int, n: int) -> np.ndarray:
        """(n, C, H, W): the cached activation of the last cut, n times, kept between batches."""
        key = (worker, "suffix")
        cached = self.cached[self.plan.last]
        buf = self._buffers.get(key)
        if buf is None or len(buf) < n:
            buf = self._buffers[key] = np.empty((n,) + cached.shape[1:], np.float32)
            buf[...] = cached
        return buf[:n]

    def _crops(self, key: tuple[int, str], batch: np.ndarray, start: np.ndarray, crop: tuple[int, int],
               values: Any, origin: Any, lo: Any, hi: Any) -> np.ndarray:
        """(N, C, crop) crops of ``tensor`` at ``start``: of the inputs, or of the cache with
        the previous segment's changed region pasted in."""
        h, w = crop
        source = batch if values is None else self.cached[key[1]]
        crops = self._buffer(key, (len(start), source.shape[1], h, w))
        for i, (a, b) in enumerate(start):  # slices beat a fancy-index gather (C is not innermost)
            crops[i] = source[i if values is None else 0, :, a:a + h, b:b + w]
        if values is not None:
            self._paste(crops, start, np.array(crop), values, origin, lo, hi)
        return crops

    def _buffer(self, key: tuple[int, str], shape: tuple[int, ...]) -> np.ndarray:
        """A reused float32 array of ``shape`` (the segments' inputs: no fresh pages per batch)."""
        buf = self._buffers.get(key)
        if buf is None or buf.shape[1:] != shape[1:] or len(buf) < shape[0]:
            buf = self._buffers[key] = np.empty(shape, np.float32)
        return buf[:shape[0]]

    @staticmethod
    def _paste(dst: np.ndarray, dst_origin: np.ndarray, dst_size: np.ndarray, src: np.ndarray,
               src_origin: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> None:
        """Copy positions lo..hi (full coordinates) of each ``src`` into ``dst`` where both hold them."""
        a = np.maximum(lo, dst_origin)
        b = np.minimum(hi + 1, dst_origin + dst_size)
        for i in range(len(dst)):
            if (b[i] > a[i]).all():
                (ya, xa), (yb, xb) = a[i], b[i]
                (dy, dx), (sy, sx) = dst_origin[i], src_origin[i]
                dst[i, :, ya - dy:yb - dy, xa - dx:xb - dx] = src[i, :, ya - sy:yb - sy, xa - sx:xb - sx]


def _session(model: bytes, providers: list[str], workers: int) -> Any:
    """A segment's session. No memory pattern: ONNX Runtime plans one per input shape in
    the second run and allocates it afresh, a second warm-up per segment that costs more
    than the pattern saves on crops (the arena still reuses memory from the first run)."""
    import onnxruntime as ort

    options = session_options(1 if workers > 1 else 0)
    options.enable_mem_pattern = False
    return ort.InferenceSession(model, options, providers=providers)


def incremental_model(model: Model, x: np.ndarray, box: tuple[int, int]) -> tuple[Model, dict[str, Any]]:
    """``model`` made incremental around ``x`` for boxes up to ``box``, or ``model`` itself.

    Returns
    -------
    (model to run, info)
        info["path"] is "incremental" or "full", with the reason for "full".
    """
    reason = _unsupported(model)
    if reason:
        return model, dict(path="full", reason=reason)
    proto = load_in_memory(Path(model.spec.source))
    pre = prefix(proto, model.spec.input_name)
    if len(pre.cuts) < 2:
        return model, dict(path="full", reason=f"no convolutional prefix (stops at {pre.stop})")
    chosen = plan(pre, box)
    if not chosen.segments or chosen.speedup < MIN_SPEEDUP:
        return model, dict(path="full", reason=f"estimated speed-up {chosen.speedup:.2f} < {MIN_SPEEDUP}: "
                                               f"the patch reaches the whole map before {pre.stop}")
    try:
        inc = IncrementalModel(model, pre, chosen, x)
    except Exception as e:  # a segment ONNX Runtime will not run: the plain path is always right
        return model, dict(path="full", reason=f"segments did not build ({str(e).splitlines()[0][:120]})")
    return inc, inc.info


def _unsupported(model: Model) -> str:
    spec = model.spec
    if getattr(model, "backend", "") != "onnxruntime" or not hasattr(model, "session") \
            or not Path(spec.source).is_file():
        return "incremental inference needs an in-process ONNX Runtime model"
    if getattr(model, "accepts_device_arrays", False):
        return "incremental inference runs on the CPU provider only"
    if spec.preprocessing.layout != "NCHW" or spec.fixed_batch_size:
        return "incremental inference needs an NCHW model with a free batch size"
    if getattr(model, "_dtype", np.float32) != np.float32:
        return "incremental inference needs a float32 model"
    return ""
