"""Reverse-pass rules for operators that move data: reshapes, transposes, slices, pads, concat."""

from __future__ import annotations

import numpy as np
import onnx

from .grad_builder import Builder
from .grad_rules import Grads, Rule, attr, only_first, refuse

INT64_MAX = np.iinfo(np.int64).max


def reshape(b: Builder, node: onnx.NodeProto, gys: list) -> Grads:
    """Reshape, Flatten, Squeeze, Unsqueeze: the gradient takes the input's shape back."""
    return only_first(b, node, b.reshape_like(gys[0], node.input[0], node.output[0]))


def transpose(b: Builder, node: onnx.NodeProto, gys: list) -> Grads:
    perm = attr(node, "perm") or list(range(b.rank(node.input[0], node)))[::-1]
    return [b.node("Transpose", [gys[0]], perm=[int(i) for i in np.argsort(perm)])]


def expand(b: Builder, node: onnx.NodeProto, gys: list) -> Grads:
    return only_first(b, node, b.unbroadcast(gys[0], node.output[0], node.input[0], node))


def concat(b: Builder, node: onnx.NodeProto, gys: list) -> Grads:
    rank = b.rank(node.output[0], node)
    axis = attr(node, "axis") % rank
    try:
        sizes = b.ints([b.static_dims(x, [axis], node)[0] for x in node.input])
    except ValueError:  # sizes known only at run time
        sizes = b.node("Concat", [b.node("Slice", [b.shape_of(x), b.ints([axis]), b.ints([axis + 1])])
                                  for x in node.input], axis=0)
    parts = b.node("Split", [gys[0], sizes], n_out=len(node.input), axis=axis)
    parts = parts if isinstance(parts, list) else [parts]
    return [p if b.needs(x) else None for p, x in zip(parts, node.input)]


def split(b: Builder, node: onnx.NodeProto, gys: list) -> Grads:
    axis = attr(node, "axis", 0) % b.rank(node.input[0], node)
    dtype = b.dtype(node.input[0])
    zero = onnx.helper.make_tensor("zero", dtype, [1], [0])
    parts = [g if g else b.node("ConstantOfShape", [b.shape_of(y)], value=zero)
             for g, y in zip(gys, node.output)]
    return only_first(b, node, b.node("Concat", parts, axis=axis))


def slice_(b: Builder, node: onnx.NodeProto, gys: list) -> Grads:
    x, g = node.input[0], gys[0]
    rank = b.rank(x, node)
    starts = b.const_input(node, 1, "starts")
    ends = b.const_input(node, 2, "ends")
    axes = b.const_input(node, 3, "axes")
    steps = b.const_input(node, 4, "steps")
    axes = [int(a) % rank for a in (axes if axes is not None else range(len(starts)))]
    steps = steps if steps is not None else np.ones(len(axes), np.int64)
    dims = b.static_dims(x, axes, node)
    pads = np.zeros(2 * rank, np.int64)
    for a, d, s, e, st in zip(axes, dims, starts, ends, steps):
        idx = np.arange(d)[slice(int(max(min(s, INT64_MAX), -INT64_MAX)), int(e), int(st))]
        if st == 1 and idx.size:
            pads[a], pads[a + rank] = idx[0], d - 1 - idx[-1]
        else:
            g = along_axis(b, g, a, rank, _selection(idx, d), x)
    if pads.any():
        g = b.node("Pad", [g, b.ints(pads)], mode="constant")
    return only_first(b, node, g)


def _selection(idx: np.ndarray, d: int) -> np.ndarray:
    """(len(idx), d) matrix with a 1 at [i, idx[i]] (repeats add up)."""
    p = np.zeros((len(idx), d))
    np.add.at(p, (np.arange(len(idx)), idx), 1.0)
    return p


def along_axis(b: Builder, g: str, axis: int, rank: int, matrix: np.ndarray | str, like: str) -> str:
    """Contract ``g``'s ``axis`` with ``matrix`` (out_len, in_len; an array or a tensor name)."""
    perm = list(range(rank))
    perm[axis], perm[-1] = perm[-1], perm[axis]
    moved = b.node("Transpose", [g], perm=perm) if axis != rank - 1 else g
    mat = matrix if isinstance(matrix, str) else b.const(matrix, b.dtype(like), hint="sel")
    out = b.node("MatMul", [moved, mat])
    return b.node("Transpose", [out], perm=perm) if axis != rank - 1 else out


def pad(b: Builder, node: onnx.NodeProto, gys: list) -> Grads:
    x, g = node.input[0], gys[0]
    rank = b.rank(x, node)
    pads = b.const_input(node, 1, "pads")
    pads = np.asarray(pads if pads is not None else attr(node, "pads"), np.int64)
    axes = b.const_input(node, 3, "axes")
    axes = [int(a) % rank for a in axes] if axes is not None else list(range(rank))
    full = np.zeros(2 * rank, np.int64)
    for i, a in enumerate(axes):
        full[a], full[a + rank] = pads[i], pads[i + len(axes)]
    mode = attr(node, "mode", b"constant")
    mode = mode.decode() if isinstance(mode, bytes) else mode
    if mode == "constant":
        return only_first(b, node, _unpad_constant(b, g, full, rank))
    if (full < 0).any() or mode not in ("reflect", "edge", "wrap"):
        raise refuse(node, f"mode {mode!r} with pads {full.tolist()}")
    dims = b.static_dims(x, [a for a in range(rank) if full[a] or full[a + rank]], node)
    for a, d in zip([a for a in range(rank) if full[a] or full[a + rank]], dims):
        src = np.pad(np.arange(d), (int(full[a]), int(full[a + rank])), mode=mode)
        g = along_axis(b, g, a, rank, _selection(src, d), x)
    return only_first(b, node, g)


def _unpad_constant(b: Builder, g: str, full: np.ndarray, rank: int) -> str:
    """Adjoint of a constant Pad: pad back what was cropped, then crop what was padded."""
    crop = np.maximum(-full, 0)
    if crop.any():
        g = b.node("Pad", [g, b.ints(crop)], mode="constant")
    keep = np.maximum(full, 0)
    axes = [a for a in range(rank) if keep[a] or keep[a + rank]]
    if not axes:
        return g
    ends = [-int(keep[a + rank]) if keep[a + rank] else INT64_MAX for a in axes]
    return b.node("Slice", [g, b.ints([int(keep[a]) for a in axes]), b.ints(ends), b.ints(axes)])


RULES: dict[str, Rule] = {
    "Reshape": reshape, "Flatten": reshape, "Squeeze": reshape, "Unsqueeze": reshape,
    "Transpose": transpose, "Expand": expand, "Concat": concat, "Split": split,
    "Slice": slice_, "Pad": pad,
}
