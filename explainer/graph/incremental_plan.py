"""Where to cut the convolutional prefix for inputs that differ from a base in one box.

A plan is a chain of cut tensors ``input = t0, t1, ..., tm``. Segment ``t_i -> t_(i+1)``
runs on a crop of ``t_i`` just large enough for every position of ``t_(i+1)`` that the
box can change; the last segment ``tm -> outputs`` runs at full size on the cached
activation of ``tm`` with the changed region pasted in. Splits are chosen by dynamic
programming over a cost model (graph/incremental.py) that
only depends on the graph and the box size, so a plan (and the map) is deterministic.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .incremental import COPY_COST, Geometry, Prefix, relative

SEGMENT_COST = 3e6
"""Per-sample overhead of one more segment (session call, crop gather, paste), in multiply-adds."""


@dataclass(frozen=True)
class Segment:
    """Segment ``start -> end`` of a plan, run on (crop[0], crop[1]) crops of ``start``.

    ``geometry`` is ``end`` measured from ``start``; ``changed`` is ``end`` measured from
    the input (which of its positions a box of the input can change).
    """

    start: str
    end: str
    crop: tuple[int, int]
    geometry: Geometry
    changed: Geometry


@dataclass(frozen=True)
class Plan:
    """Segments in order, then the full-size suffix from ``last`` to the outputs.

    ``cost`` and ``full_cost`` are the cost model's estimates per input (multiply-adds)
    of this plan and of a plain forward pass.
    """

    box: tuple[int, int]
    segments: tuple[Segment, ...]
    last: str
    cost: float
    full_cost: float

    @property
    def speedup(self) -> float:
        return self.full_cost / self.cost


def changed_range(g: Geometry, size: np.ndarray, y0: np.ndarray, y1: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """First and last positions (inclusive) of a tensor that input rows ``[y0, y1)`` reach.

    ``g`` is the tensor's geometry measured from the input, ``size`` its extent; ``y0``,
    ``y1`` (..., 2) int arrays, one column per axis.
    """
    lo = np.maximum(-((g.hi - y0) // g.stride), 0)  # ceil((y0 - hi) / stride)
    hi = np.minimum((y1 - 1 + g.lo) // g.stride, size - 1)
    return lo, hi


def crop_start(rel: Geometry, out_lo: np.ndarray, extent: np.ndarray, crop: np.ndarray) -> np.ndarray:
    """Aligned top-left of the crop of a segment's input that computes outputs from ``out_lo``."""
    need = np.maximum(out_lo * rel.stride - rel.lo, 0)
    return np.minimum(need // rel.stride * rel.stride, extent - crop)


def _crop(rel: Geometry, changed: Geometry, extent_in: np.ndarray, extent_out: np.ndarray,
          box: np.ndarray, full: np.ndarray) -> np.ndarray:
    """The smallest aligned crop that serves every box position (per axis)."""
    crop = np.zeros(2, int)
    for axis in range(2):
        y0 = np.arange(0, full[axis] - box[axis] + 1)
        lo, hi = changed_range(_axis(changed, axis), extent_out[axis], y0, y0 + box[axis])
        r = _axis(rel, axis)
        need0 = np.maximum(lo * r.stride - r.lo, 0)
        need1 = np.minimum(hi * r.stride + r.hi, extent_in[axis] - 1)
        size = int((need1 + 1 - need0 // r.stride * r.stride).max())
        while size < extent_in[axis] and (extent_in[axis] - size) % int(r.stride):
            size += 1
        crop[axis] = min(size, int(extent_in[axis]))
    return crop


def _axis(g: Geometry, axis: int) -> Geometry:
    return Geometry(g.stride[axis], g.lo[axis], g.hi[axis])


def plan(pre: Prefix, box: tuple[int, int]) -> Plan:
    """The cheapest chain of segments for inputs that differ from the base in a ``box``.

    Parameters
    ----------
    pre : the graph's prefix (graph.incremental.prefix)
    box : (h, w), the largest changed box of the inputs (e.g. the occlusion mask size)
    """
    full = np.array(pre.shapes[pre.input][1:])
    bx = np.minimum(np.array(box), full)
    absolute = relative(pre, pre.input)
    cuts = list(pre.cuts)
    order = {s.output: k for k, s in enumerate(pre.steps)}
    step_cost = np.array([s.cost for s in pre.steps])
    ext = {t: np.array(pre.shapes[t][1:]) for t in cuts}
    suffix = [_full_cost(pre, order, t, step_cost) for t in cuts]
    best = {cuts[0]: (0.0, ())}
    for i, a in enumerate(cuts[:-1]):
        if a not in best:
            continue
        rel = relative(pre, a, absolute)
        first = 0 if a == pre.input else order[a] + 1
        strides = np.array([rel[s.output].stride for s in pre.steps[first:]])
        for b in cuts[i + 1:]:
            crop = _crop(rel[b], absolute[b], ext[a], ext[b], bx, full)
            k = order[b] + 1 - first
            sizes = -(-crop[None, :] // strides[:k])
            cost = best[a][0] + float((step_cost[first:first + k] * sizes.prod(1)).sum()) \
                + COPY_COST * pre.shapes[a][0] * float(crop.prod()) + SEGMENT_COST
            if b not in best or cost < best[b][0]:
                best[b] = (cost, best[a][1] + (Segment(a, b, (int(crop[0]), int(crop[1])), rel[b], absolute[b]),))
    total = {t: best[t][0] + suffix[i] for i, t in enumerate(cuts) if t in best}
    last = min(total, key=lambda t: (total[t], cuts.index(t)))
    return Plan((int(bx[0]), int(bx[1])), best[last][1], last, total[last], suffix[0])


def _full_cost(pre: Prefix, order: dict[str, int], start: str, step_cost: np.ndarray) -> float:
    """Cost of running from cut ``start`` to the outputs at full size (with the paste copy)."""
    first = 0 if start == pre.input else order[start] + 1
    area = np.array([pre.shapes[s.output][1] * pre.shapes[s.output][2] for s in pre.steps[first:]])
    copy = 0.0 if start == pre.input else COPY_COST * float(np.prod(pre.shapes[start]))
    return float((step_cost[first:] * area).sum()) + pre.tail_cost + copy
