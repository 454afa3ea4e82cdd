"""Reverse-pass rules for pooling, reductions and local response normalisation."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper

from .grad_builder import Builder
from .grad_rules import Grads, Rule, attr, only_first, refuse
from .grad_rules_nn import geometry, transpose_sized


def max_pool(b: Builder, node: onnx.NodeProto, gys: list) -> Grads:
    """Route each output's gradient to the input element the pool picked (MaxPool's Indices)."""
    if attr(node, "storage_order", 0):
        raise refuse(node, "storage_order=1")
    x = node.input[0]
    if len(node.output) < 2 or not node.output[1]:
        del node.output[1:]
        node.output.append(b.fresh("indices"))  # the forward node also returns the argmax
    flat = b.ints([-1])
    zero = helper.make_tensor("zero", b.dtype(x), [1], [0])
    zeros = b.node("ConstantOfShape", [b.node("Reshape", [b.node("Size", [x]), flat])], value=zero)
    scattered = b.node("ScatterElements", [zeros, b.node("Reshape", [node.output[1], flat]),
                                           b.node("Reshape", [gys[0], flat])], axis=0, reduction="add")
    return [b.reshape_like(scattered, x)]


def average_pool(b: Builder, node: onnx.NodeProto, gys: list) -> Grads:
    """Spread each output's gradient over its window: a ConvTranspose of ones per channel."""
    x, y = node.input[0], node.output[0]
    kernel = list(attr(node, "kernel_shape"))
    nd = len(kernel)
    s, d, pb, pe = geometry(b, node, x, kernel)
    dims = b.static_dims(x, list(range(2, 2 + nd)), node)
    outs = b.static_dims(y, list(range(2, 2 + nd)), node)
    counts = np.ones(())
    for n, o, k, si, di, p0, p1 in zip(dims, outs, kernel, s, d, pb, pe):
        pos = np.arange(o)[:, None] * si - p0 + np.arange(k)[None, :] * di
        lo, hi = (-p0, n + p1) if attr(node, "count_include_pad", 0) else (0, n)
        counts = np.multiply.outer(counts, ((pos >= lo) & (pos < hi)).sum(axis=1))
    scaled = b.node("Mul", [gys[0], b.const(1.0 / np.maximum(counts, 1), b.dtype(x), hint="inv_count")])
    planes = b.node("Reshape", [scaled, b.ints([-1, 1] + outs)])
    ones = b.const(np.ones([1, 1] + kernel), b.dtype(x), hint="ones")
    spread = transpose_sized(b, planes, ones, kernel, (s, d, pb, pe), dims, outs, x)
    return [b.reshape_like(spread, x)]


def global_average_pool(b: Builder, node: onnx.NodeProto, gys: list) -> Grads:
    x = node.input[0]
    rank = b.rank(x, node)
    try:
        dims = b.static_dims(x, list(range(2, rank)), node)
    except ValueError:  # sizes known at run time only
        return [b.node("Expand", [b.node("Div", [gys[0], _count(b, x, node.output[0])]), b.shape_of(x)])]
    # broadcast by a constant (not Expand to a runtime shape): the result's shape stays known
    spread = b.const(np.full([1, 1] + dims, 1.0 / float(np.prod(dims))), b.dtype(x), hint="spread")
    return [b.node("Mul", [gys[0], spread])]


def global_max_pool(b: Builder, node: onnx.NodeProto, gys: list) -> Grads:
    x = node.input[0]
    hit = b.node("Equal", [x, node.output[0]])
    return [b.where(hit, b.node("Expand", [gys[0], b.shape_of(x)]), x)]


def reduce(b: Builder, node: onnx.NodeProto, gys: list) -> Grads:
    """ReduceSum / ReduceMean: broadcast the gradient back (divided by the count for a mean)."""
    x, g = node.input[0], gys[0]
    rank = b.rank(x, node)
    axes = b.const_input(node, 1, "axes") if len(node.input) > 1 else attr(node, "axes")
    if axes is None or len(axes) == 0:
        if attr(node, "noop_with_empty_axes", 0):
            return only_first(b, node, g)
        axes = list(range(rank))
    axes = sorted(int(a) % rank for a in axes)
    if not attr(node, "keepdims", 1):
        g = b.node("Unsqueeze", [g, b.ints(axes)])
    if node.op_type == "ReduceMean":
        try:
            g = b.node("Mul", [g, b.scalar(1.0 / float(np.prod(b.static_dims(x, axes, node))), x)])
        except ValueError:  # sizes known at run time only
            g = b.node("Div", [g, _count(b, x, node.output[0])])
    return only_first(b, node, b.node("Expand", [g, b.shape_of(x)]))


def _count(b: Builder, x: str, y: str) -> str:
    """How many elements of ``x`` each element of the reduction ``y`` averages (run time, x's type)."""
    return b.node("Cast", [b.node("Div", [b.node("Size", [x]), b.node("Size", [y])])], to=b.dtype(x))


def _channel_window_sum(b: Builder, t: str, x: str, size: int, before: int, after: int, rank: int) -> str:
    """Sum of ``t`` over a window of channels [c - before, c + after] (zeros beyond the ends)."""
    lifted = b.node("Unsqueeze", [t, b.ints([1])])
    ones = b.const(np.ones([1, 1, size] + [1] * (rank - 2)), b.dtype(x), hint="ones")
    pads = [before] + [0] * (rank - 2) + [after] + [0] * (rank - 2)
    summed = b.node("Conv", [lifted, ones], pads=pads, kernel_shape=[size] + [1] * (rank - 2))
    return b.node("Squeeze", [summed, b.ints([1])])


def lrn(b: Builder, node: onnx.NodeProto, gys: list) -> Grads:
    """y = x s^-beta, s = bias + alpha/size * sum_window(x^2)."""
    x, g = node.input[0], gys[0]
    rank = b.rank(x, node)
    size = int(attr(node, "size"))
    alpha, beta, bias = attr(node, "alpha", 1e-4), attr(node, "beta", 0.75), attr(node, "bias", 1.0)
    lo, hi = (size - 1) // 2, size - 1 - (size - 1) // 2
    sq = _channel_window_sum(b, b.node("Mul", [x, x]), x, size, lo, hi, rank)
    s = b.node("Add", [b.node("Mul", [sq, b.scalar(alpha / size, x)]), b.scalar(bias, x)])
    t = b.node("Pow", [s, b.scalar(-beta, x)])
    inner = b.node("Div", [b.node("Mul", [b.node("Mul", [g, x]), t]), s])
    back = _channel_window_sum(b, inner, x, size, hi, lo, rank)
    cross = b.node("Mul", [b.node("Mul", [back, x]), b.scalar(2.0 * alpha * beta / size, x)])
    return [b.node("Sub", [b.node("Mul", [g, t]), cross])]


RULES: dict[str, Rule] = {
    "MaxPool": max_pool, "AveragePool": average_pool, "GlobalAveragePool": global_average_pool,
    "GlobalMaxPool": global_max_pool, "ReduceSum": reduce, "ReduceMean": reduce, "LRN": lrn,
}
