"""Reverse-pass rules for activations and elementwise arithmetic.

Every rule has the signature ``rule(b, node, gys) -> grads``: ``b`` is the
:class:`~explainer.graph.grad_builder.Builder`, ``gys`` holds the gradient tensor
name of each node output (None where no gradient flows back), and ``grads`` the
gradient of each node input (None where none is needed: ``b.needs(name)`` is False).
Rules emit only default-domain operators.
"""

from __future__ import annotations

import math
from typing import Callable

import numpy as np
import onnx
from onnx import helper

from ..errors import InputError
from .grad_builder import Builder

Grads = list[str | None]
Rule = Callable[[Builder, onnx.NodeProto, list[str | None]], Grads]


def attr(node: onnx.NodeProto, name: str, default=None):
    """The value of a node attribute, or ``default``."""
    for a in node.attribute:
        if a.name == name:
            return helper.get_attribute_value(a)
    return default


def refuse(node: onnx.NodeProto, why: str) -> InputError:
    """The error for a node whose gradient this exporter cannot build."""
    return InputError(f"cannot differentiate {node.op_type} node {node.name!r}: {why}")


def only_first(b: Builder, node: onnx.NodeProto, grad: str) -> Grads:
    """Gradient for input 0 only; refuse when another input also depends on the wrt tensor."""
    for name in node.input[1:]:
        if b.needs(name):
            raise refuse(node, f"its input {name!r} depends on the differentiated tensor "
                               "(only the gradient through the first input is supported)")
    return [grad] + [None] * (len(node.input) - 1)


def _rectify(b: Builder, g: str, y: str, lo: str | None, hi: str | None, relu_like: bool) -> str:
    """Backward of a clamp ``y = clip(x, lo, hi)`` under the export's ReLU rule."""
    mode = b.relu if relu_like else "standard"
    if mode == "deconv":
        return b.node("Relu", [g])
    if mode == "guided":
        g = b.node("Relu", [g])
    mask = _step_mask(b, y, lo, hi)
    if mask:
        return b.node("Mul", [g, mask])
    cond = b.node("Greater", [y, lo]) if lo else None
    if hi:
        upper = b.node("Less", [y, hi])
        cond = b.node("And", [cond, upper]) if cond else upper
    return b.where(cond, g, y) if cond else g


def _step_mask(b: Builder, y: str, lo: str | None, hi: str | None) -> str | None:
    """The float mask ``lo < y < hi`` of a ReLU or ReLU6 output as HardSigmoid steps, or None.

    ``HardSigmoid(y) = clip(alpha y + beta, 0, 1)`` with a power-of-two ``alpha`` so large
    that every representable ``y`` inside the bounds maps to 1 and the bounds to 0: ONNX
    Runtime runs HardSigmoid and Mul in its blocked (NCHWc) layout, where the comparison
    operators would force a reorder of every activation and gradient (measured: the
    gradient model runs about 20% faster). Used for float32 when ``lo`` is 0 and ``hi``
    absent or a positive scalar in [2**-100, 2**100]; the exact comparisons serve the rest.
    Exact except for subnormal activations below 2**-127, which pass the fraction
    ``y * 2**127`` of the gradient instead of all of it.
    """
    if b.dtype(y) != onnx.TensorProto.FLOAT:
        return None
    low = b.value(lo) if lo else None
    high = b.value(hi) if hi else None
    if low is None or low.size != 1 or float(low.reshape(())) != 0.0:
        return None
    top = float(high.reshape(())) if high is not None and high.size == 1 else 0.0
    if hi and (not 2.0 ** -100 <= top <= 2.0 ** 100 or float(np.float32(top)) != top):
        return None
    mask = b.node("HardSigmoid", [y], alpha=2.0 ** 127, beta=0.0)
    if not hi:
        return mask
    # alpha (hi - y) >= alpha ulp(hi) / 2 >= 2**102 for every y < hi; alpha hi < 2**127 is exact
    alpha = 2.0 ** (126 - math.floor(math.log2(top)))
    below = b.node("HardSigmoid", [y], alpha=-alpha, beta=alpha * top)
    return b.node("Mul", [mask, below])


def relu(b: Builder, node: onnx.NodeProto, gys: list) -> Grads:
    y = node.output[0]
    return [_rectify(b, gys[0], y, b.zero(b.dtype(y)), None, relu_like=True)]


def clip(b: Builder, node: onnx.NodeProto, gys: list) -> Grads:
    y = node.output[0]
    bounds: list[str | None] = []
    for i, key in ((1, "min"), (2, "max")):
        if i < len(node.input) and node.input[i]:
            bounds.append(node.input[i])
        elif attr(node, key) is not None:
            bounds.append(b.scalar(attr(node, key), y))
        else:
            bounds.append(None)
    lo = b.value(bounds[0]) if bounds[0] else None
    relu_like = lo is not None and lo.size == 1 and float(lo.reshape(())) == 0.0
    grads: Grads = [_rectify(b, gys[0], y, bounds[0], bounds[1], relu_like)] + [None] * (len(node.input) - 1)
    for i, test in ((1, "Less"), (2, "Greater")):  # a run-time bound that depends on the input
        if i < len(node.input) and b.needs(node.input[i]):
            beyond = b.where(b.node(test, [node.input[0], node.input[i]]), gys[0], y)
            grads[i] = b.unbroadcast(beyond, y, node.input[i], node)
    return grads


def leaky_relu(b: Builder, node: onnx.NodeProto, gys: list) -> Grads:
    x, g = node.input[0], gys[0]
    neg = b.node("Mul", [g, b.scalar(attr(node, "alpha", 0.01), x)])
    return [b.node("Where", [b.node("Greater", [x, b.zero(b.dtype(x))]), g, neg])]


def prelu(b: Builder, node: onnx.NodeProto, gys: list) -> Grads:
    x, g = node.input[0], gys[0]
    neg = b.node("Mul", [g, node.input[1]])
    return only_first(b, node, b.node("Where", [b.node("Greater", [x, b.zero(b.dtype(x))]), g, neg]))


def sigmoid(b: Builder, node: onnx.NodeProto, gys: list) -> Grads:
    y = node.output[0]
    return [b.node("Mul", [gys[0], b.node("Mul", [y, b.node("Sub", [b.scalar(1.0, y), y])])])]


def tanh(b: Builder, node: onnx.NodeProto, gys: list) -> Grads:
    y = node.output[0]
    return [b.node("Mul", [gys[0], b.node("Sub", [b.scalar(1.0, y), b.node("Mul", [y, y])])])]


def hard_sigmoid(b: Builder, node: onnx.NodeProto, gys: list) -> Grads:
    y = node.output[0]
    g = b.node("Mul", [gys[0], b.scalar(attr(node, "alpha", 0.2), y)])
    return [_rectify(b, g, y, b.zero(b.dtype(y)), b.scalar(1.0, y), relu_like=False)]


def hard_swish(b: Builder, node: onnx.NodeProto, gys: list) -> Grads:
    x, g = node.input[0], gys[0]
    slope = b.node("Add", [b.node("Mul", [x, b.scalar(1.0 / 3.0, x)]), b.scalar(0.5, x)])
    mid = b.node("Where", [b.node("Greater", [x, b.scalar(3.0, x)]), g, b.node("Mul", [g, slope])])
    return [b.where(b.node("Not", [b.node("Less", [x, b.scalar(-3.0, x)])]), mid, x)]


def softmax(b: Builder, node: onnx.NodeProto, gys: list) -> Grads:
    y, g = node.output[0], gys[0]
    axis = _softmax_axis(b, node)
    dot = b.node("ReduceSum", [b.node("Mul", [g, y]), b.ints([axis])], keepdims=1)
    return [b.node("Mul", [y, b.node("Sub", [g, dot])])]


def log_softmax(b: Builder, node: onnx.NodeProto, gys: list) -> Grads:
    y, g = node.output[0], gys[0]
    total = b.node("ReduceSum", [g, b.ints([_softmax_axis(b, node)])], keepdims=1)
    return [b.node("Sub", [g, b.node("Mul", [b.node("Exp", [y]), total])])]


def _softmax_axis(b: Builder, node: onnx.NodeProto) -> int:
    rank = b.rank(node.input[0], node)
    axis = attr(node, "axis", -1 if b.opset >= 13 else 1)
    axis = axis % rank
    if b.opset < 13 and axis != rank - 1:
        raise refuse(node, "opset < 13 Softmax over several axes")
    return axis


def exp(b: Builder, node: onnx.NodeProto, gys: list) -> Grads:
    return [b.node("Mul", [gys[0], node.output[0]])]


def log(b: Builder, node: onnx.NodeProto, gys: list) -> Grads:
    return [b.node("Div", [gys[0], node.input[0]])]


def sqrt(b: Builder, node: onnx.NodeProto, gys: list) -> Grads:
    y = node.output[0]
    return [b.node("Div", [gys[0], b.node("Mul", [y, b.scalar(2.0, y)])])]


def neg(b: Builder, node: onnx.NodeProto, gys: list) -> Grads:
    return [b.node("Neg", [gys[0]])]


def abs_(b: Builder, node: onnx.NodeProto, gys: list) -> Grads:
    return [b.node("Mul", [gys[0], b.node("Sign", [node.input[0]])])]


def identity(b: Builder, node: onnx.NodeProto, gys: list) -> Grads:
    return [gys[0]] + [None] * (len(node.input) - 1)


def cast(b: Builder, node: onnx.NodeProto, gys: list) -> Grads:
    return [b.node("Cast", [gys[0]], to=b.dtype(node.input[0]))] + [None] * (len(node.input) - 1)


def add(b: Builder, node: onnx.NodeProto, gys: list) -> Grads:
    y, g = node.output[0], gys[0]
    return [b.unbroadcast(g, y, x, node) if b.needs(x) else None for x in node.input]


def sub(b: Builder, node: onnx.NodeProto, gys: list) -> Grads:
    (a, c), y, g = node.input, node.output[0], gys[0]
    return [b.unbroadcast(g, y, a, node) if b.needs(a) else None,
            b.unbroadcast(b.node("Neg", [g]), y, c, node) if b.needs(c) else None]


def mul(b: Builder, node: onnx.NodeProto, gys: list) -> Grads:
    (a, c), y, g = node.input, node.output[0], gys[0]
    return [b.unbroadcast(b.node("Mul", [g, c]), y, a, node) if b.needs(a) else None,
            b.unbroadcast(b.node("Mul", [g, a]), y, c, node) if b.needs(c) else None]


def div(b: Builder, node: onnx.NodeProto, gys: list) -> Grads:
    (a, c), y, g = node.input, node.output[0], gys[0]
    ga = b.node("Div", [g, c])
    gc = b.node("Neg", [b.node("Mul", [ga, y])]) if b.needs(c) else None
    return [b.unbroadcast(ga, y, a, node) if b.needs(a) else None,
            b.unbroadcast(gc, y, c, node) if gc else None]


RULES: dict[str, Rule] = {
    "Relu": relu, "Clip": clip, "LeakyRelu": leaky_relu, "PRelu": prelu, "Sigmoid": sigmoid,
    "Tanh": tanh, "HardSigmoid": hard_sigmoid, "HardSwish": hard_swish, "Softmax": softmax,
    "LogSoftmax": log_softmax, "Exp": exp, "Log": log, "Sqrt": sqrt, "Neg": neg, "Abs": abs_,
    "Identity": identity, "Dropout": identity, "Cast": cast, "CastLike": cast,
    "Add": add, "Sum": add, "Sub": sub, "Mul": mul, "Div": div,
}
