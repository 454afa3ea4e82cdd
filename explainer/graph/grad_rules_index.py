"""Reverse-pass rules for indexing operators, with sizes and indices known only at run time.

Each selection along an axis (Gather, Slice, Pad, Resize) is a linear map from the input's
``d`` positions to the output's; its adjoint contracts the gradient with the (out, d)
matrix of that map, built in the gradient graph: ``OneHot`` of the selected source
positions (``Range(0, d)`` put through the same Slice or Pad), or the forward Resize applied
to an identity. Where the sizes and arguments are constants the static rules of
grad_rules_shape.py run instead.
"""

from __future__ import annotations

import numpy as np
import onnx

from ..errors import InputError
from .grad_builder import Builder
from .grad_rules import Grads, Rule, attr, only_first, refuse
from .grad_rules_shape import along_axis, pad as static_pad, slice_ as static_slice


def _input(node: onnx.NodeProto, i: int) -> str:
    return node.input[i] if i < len(node.input) else ""


def one_hot(b: Builder, idx: str, depth: str, like: str) -> str:
    """(len(idx), d) matrix with a 1 at [i, idx[i]] (indices outside [-d, d) give a zero row)."""
    values = b.const(np.array([0.0, 1.0]), b.dtype(like), hint="onoff")
    scalar = b.node("Squeeze", [depth, b.ints([0])])
    return b.node("OneHot", [idx, scalar, values], axis=-1)


def positions(b: Builder, x: str, axis: int) -> tuple[str, str]:
    """``Range(0, d)`` over ``x``'s axis and ``d`` (a 1-element int64 tensor)."""
    d = b.dim(x, axis)
    scalar = b.node("Squeeze", [d, b.ints([0])])
    return b.node("Range", [b.const(np.int64(0), hint="i0"), scalar, b.const(np.int64(1), hint="i1")]), d


def _element(b: Builder, name: str, i: int, default: int | None = None) -> str:
    """Element ``i`` of a 1-D int tensor as a 1-element tensor (``default`` when ``name`` is absent)."""
    if not name:
        return b.ints([default])
    val = b.value(name)
    if val is not None:
        return b.ints([int(np.asarray(val).reshape(-1)[i])])
    return b.node("Slice", [name, b.ints([i]), b.ints([i + 1])])


def slice_(b: Builder, node: onnx.NodeProto, gys: list) -> Grads:
    try:
        return static_slice(b, node, gys)
    except InputError:
        pass
    x, g = node.input[0], gys[0]
    rank = b.rank(x, node)
    axes = b.value(_input(node, 3)) if _input(node, 3) else None
    if _input(node, 3) and axes is None:
        raise refuse(node, "its axes are computed in the graph")
    if axes is None:
        count = (b.shape(node.input[1]) or (None,))[0]
        if not isinstance(count, int):
            raise refuse(node, "the number of its starts is unknown")
        axes = list(range(count))
    for i, a in enumerate(int(v) % rank for v in np.asarray(axes).reshape(-1)):
        r, d = positions(b, x, a)
        idx = b.node("Slice", [r, _element(b, node.input[1], i), _element(b, node.input[2], i), b.ints([0]),
                               _element(b, _input(node, 4), i, 1)])
        g = along_axis(b, g, a, rank, one_hot(b, idx, d, x), x)
    return only_first(b, node, g)


def pad(b: Builder, node: onnx.NodeProto, gys: list) -> Grads:
    try:
        return static_pad(b, node, gys)
    except InputError:
        pass
    x, g = node.input[0], gys[0]
    rank = b.rank(x, node)
    mode = attr(node, "mode", b"constant")
    mode = mode.decode() if isinstance(mode, bytes) else mode
    axes = b.value(_input(node, 3)) if _input(node, 3) else np.arange(rank)
    if axes is None:
        raise refuse(node, "its axes are computed in the graph")
    axes = [int(a) % rank for a in np.asarray(axes).reshape(-1)]
    pads = node.input[1] if _input(node, 1) else b.ints(list(attr(node, "pads")))
    known = b.value(pads)
    for i, a in enumerate(axes):
        if known is not None and not known[i] and not known[i + len(axes)]:
            continue
        r, d = positions(b, x, a)
        both = b.node("Concat", [_element(b, pads, i), _element(b, pads, i + len(axes))], axis=0)
        # constant padding takes the index d: out of OneHot's range, a zero row
        extra = [b.node("Squeeze", [d, b.ints([0])])] if mode == "constant" else []
        idx = b.node("Pad", [r, both] + extra, mode=mode)
        g = along_axis(b, g, a, rank, one_hot(b, idx, d, x), x)
    return only_first(b, node, g)


def gather(b: Builder, node: onnx.NodeProto, gys: list) -> Grads:
    data, idx = node.input[:2]
    g, rank = gys[0], b.rank(data, node)
    axis = attr(node, "axis", 0) % rank
    ri = b.rank(idx, node)
    known, size = b.value(idx), (b.shape(data) or (None,) * rank)[axis]
    if known is not None and known.size == 1 and isinstance(size, int) and size > 0:  # one slice: zero-pad it
        at = int(known.reshape(())) % size
        if ri == 1:
            g = b.node("Squeeze", [g, b.ints([axis])])
        pads = [0] * (2 * rank)
        pads[axis], pads[rank + axis] = at, size - 1 - at
        return [b.node("Pad", [b.node("Unsqueeze", [g, b.ints([axis])]), b.ints(pads)], mode="constant"), None]
    if ri == 0:
        g = b.node("Unsqueeze", [g, b.ints([axis])])
        idx = b.node("Reshape", [idx, b.ints([-1])])
    elif ri > 1:
        parts = [b.node("Shape", [data], start=0, end=axis)] if axis else []
        parts.append(b.ints([-1]))
        if axis + 1 < rank:
            parts.append(b.node("Shape", [data], start=axis + 1, end=rank))
        g = b.node("Reshape", [g, b.node("Concat", parts, axis=0)])
        idx = b.node("Reshape", [idx, b.ints([-1])])
    return [along_axis(b, g, axis, rank, one_hot(b, idx, b.dim(data, axis), data), data), None]


def gather_elements(b: Builder, node: onnx.NodeProto, gys: list) -> Grads:
    data, idx = node.input[:2]
    axis = attr(node, "axis", 0) % b.rank(data, node)
    zero = onnx.helper.make_tensor("zero", b.dtype(data), [1], [0])
    zeros = b.node("ConstantOfShape", [b.shape_of(data)], value=zero)
    return [b.node("ScatterElements", [zeros, idx, gys[0]], axis=axis, reduction="add"), None]


def tile(b: Builder, node: onnx.NodeProto, gys: list) -> Grads:
    """y = tile(x, r): sum the gradient's (r_i, d_i) blocks over the repeats."""
    x, reps = node.input[:2]
    rank = b.rank(x, node)
    parts = []
    for a in range(rank):
        parts += [_element(b, reps, a), b.dim(x, a)]
    blocks = b.node("Reshape", [gys[0], b.node("Concat", parts, axis=0)])
    summed = b.node("ReduceSum", [blocks, b.ints(list(range(0, 2 * rank, 2)))], keepdims=0)
    return only_first(b, node, summed)


def resize(b: Builder, node: onnx.NodeProto, gys: list) -> Grads:
    """Resize is separable: per resized axis, the (out, in) matrix is the same Resize of an identity."""
    x, y, g = node.input[0], node.output[0], gys[0]
    rank = b.rank(x, node)
    ctm = attr(node, "coordinate_transformation_mode", b"half_pixel")
    if (ctm.decode() if isinstance(ctm, bytes) else ctm) == "tf_crop_and_resize" or attr(node, "axes"):
        raise refuse(node, "tf_crop_and_resize and the axes attribute are not supported")
    if b.opset < 11 or len(node.input) < 3:
        raise refuse(node, "Resize before opset 11")
    scales, sizes = _input(node, 2), _input(node, 3)
    known = b.value(scales) if scales else None
    if scales and known is not None and known.size == 0:
        scales = ""
    xs, ys = b.shape(x) or (None,) * rank, b.shape(y) or (None,) * rank
    keep = {k: v for k, v in ((a.name, onnx.helper.get_attribute_value(a)) for a in node.attribute)
            if k not in ("axes", "keep_aspect_ratio_policy")}
    for a in range(1, rank):
        if scales and known is not None and float(known.reshape(-1)[a]) == 1.0:
            continue
        if isinstance(xs[a], int) and xs[a] == ys[a] and not scales:
            continue
        d = b.dim(x, a)
        eye = b.node("EyeLike", [b.node("ConstantOfShape", [b.node("Concat", [d, d], axis=0)])], dtype=b.dtype(x))
        dims = [d] + [b.ints([1])] * (a - 1) + [d] + [b.ints([1])] * (rank - a - 1)
        probe = b.node("Reshape", [eye, b.node("Concat", dims, axis=0)])
        if scales:
            one = b.const(np.ones(1), onnx.TensorProto.FLOAT, hint="one")
            factor = b.node("Slice", [scales, b.ints([a]), b.ints([a + 1])])
            vec = b.node("Concat", [one] * a + [factor] + [one] * (rank - a - 1), axis=0)
            out = b.node("Resize", [probe, "", vec], **keep)
        else:
            target = [d] + [b.ints([1])] * (a - 1) + [b.dim(y, a)] + [b.ints([1])] * (rank - a - 1)
            out = b.node("Resize", [probe, "", "", b.node("Concat", target, axis=0)], **keep)
        matrix = b.node("Transpose", [b.node("Reshape", [out, b.node("Concat", [d, b.ints([-1])], axis=0)])],
                        perm=[1, 0])
        g = along_axis(b, g, a, rank, matrix, x)
    return only_first(b, node, g)


RULES: dict[str, Rule] = {
    "Slice": slice_, "Pad": pad, "Gather": gather, "GatherElements": gather_elements, "Tile": tile,
    "Resize": resize,
}
