"""Reverse-pass rules for transformer-era arithmetic: Erf, Gelu, Mish, Pow, Where, Max, LayerNorm, Einsum."""

from __future__ import annotations

import math

import numpy as np
import onnx

from .grad_builder import Builder
from .grad_rules import Grads, Rule, attr, only_first, refuse


def erf(b: Builder, node: onnx.NodeProto, gys: list) -> Grads:
    x = node.input[0]
    bell = b.node("Exp", [b.node("Neg", [b.node("Mul", [x, x])])])
    return [b.node("Mul", [gys[0], b.node("Mul", [bell, b.scalar(2.0 / math.sqrt(math.pi), x)])])]


def gelu(b: Builder, node: onnx.NodeProto, gys: list) -> Grads:
    x, g = node.input[0], gys[0]
    approx = attr(node, "approximate", b"none")
    if (approx.decode() if isinstance(approx, bytes) else approx) == "tanh":
        c = math.sqrt(2.0 / math.pi)
        x2 = b.node("Mul", [x, x])
        u = b.node("Mul", [b.node("Mul", [x, b.scalar(c, x)]),
                           b.node("Add", [b.scalar(1.0, x), b.node("Mul", [x2, b.scalar(0.044715, x)])])])
        t = b.node("Tanh", [u])
        du = b.node("Add", [b.scalar(c, x), b.node("Mul", [x2, b.scalar(3 * 0.044715 * c, x)])])
        half = b.node("Mul", [b.node("Add", [b.scalar(1.0, x), t]), b.scalar(0.5, x)])
        sech2 = b.node("Sub", [b.scalar(1.0, x), b.node("Mul", [t, t])])
        slope = b.node("Add", [half, b.node("Mul", [b.node("Mul", [x, b.scalar(0.5, x)]),
                                                     b.node("Mul", [sech2, du])])])
    else:
        cdf = b.node("Mul", [b.node("Add", [b.scalar(1.0, x), b.node("Erf", [b.node("Mul", [
            x, b.scalar(1.0 / math.sqrt(2.0), x)])])]), b.scalar(0.5, x)])
        pdf = b.node("Mul", [b.node("Exp", [b.node("Mul", [b.node("Mul", [x, x]), b.scalar(-0.5, x)])]),
                             b.scalar(1.0 / math.sqrt(2.0 * math.pi), x)])
        slope = b.node("Add", [cdf, b.node("Mul", [x, pdf])])
    return [b.node("Mul", [g, slope])]


def softplus(b: Builder, node: onnx.NodeProto, gys: list) -> Grads:
    return [b.node("Mul", [gys[0], b.node("Sigmoid", [node.input[0]])])]


def mish(b: Builder, node: onnx.NodeProto, gys: list) -> Grads:
    """y = x tanh(softplus(x)); dy/dx = t + x sigmoid(x) (1 - t^2)."""
    x = node.input[0]
    t = b.node("Tanh", [b.node("Softplus", [x])])
    sech2 = b.node("Sub", [b.scalar(1.0, x), b.node("Mul", [t, t])])
    slope = b.node("Add", [t, b.node("Mul", [b.node("Mul", [x, b.node("Sigmoid", [x])]), sech2])])
    return [b.node("Mul", [gys[0], slope])]


def reciprocal(b: Builder, node: onnx.NodeProto, gys: list) -> Grads:
    y = node.output[0]
    return [b.node("Neg", [b.node("Mul", [gys[0], b.node("Mul", [y, y])])])]


def pow_(b: Builder, node: onnx.NodeProto, gys: list) -> Grads:
    (a, p), y, g = node.input, node.output[0], gys[0]
    ga = gp = None
    if b.needs(a):
        pv = b.value(p)
        if pv is not None and pv.size == 1 and float(pv.reshape(())) == 2.0:
            slope = b.node("Mul", [a, b.scalar(2.0, a)])
        else:
            pc = b.node("Cast", [p], to=b.dtype(a))
            slope = b.node("Mul", [pc, b.node("Pow", [a, b.node("Sub", [pc, b.scalar(1.0, a)])])])
        ga = b.unbroadcast(b.node("Mul", [g, slope]), y, a, node)
    if b.needs(p):
        gp = b.unbroadcast(b.node("Mul", [g, b.node("Mul", [y, b.node("Log", [a])])]), y, p, node)
    return [ga, gp]


def where(b: Builder, node: onnx.NodeProto, gys: list) -> Grads:
    cond, a, c = node.input
    y, g = node.output[0], gys[0]
    ga = b.unbroadcast(b.where(cond, g, y), y, a, node) if b.needs(a) else None
    gc = b.unbroadcast(b.where(b.node("Not", [cond]), g, y), y, c, node) if b.needs(c) else None
    return [None, ga, gc]


def max_min(b: Builder, node: onnx.NodeProto, gys: list) -> Grads:
    """Elementwise Max / Min of two tensors: the gradient goes to the one picked (the first on ties)."""
    if len(node.input) == 1:
        return [gys[0]]
    if len(node.input) != 2:
        raise refuse(node, "more than two operands")
    (a, c), y, g = node.input, node.output[0], gys[0]
    first = b.node("GreaterOrEqual" if node.op_type == "Max" else "LessOrEqual", [a, c])
    ga = b.unbroadcast(b.where(first, g, y), y, a, node) if b.needs(a) else None
    gc = b.unbroadcast(b.where(b.node("Not", [first]), g, y), y, c, node) if b.needs(c) else None
    return [ga, gc]


def _kept(b: Builder, node: onnx.NodeProto, gys: list) -> tuple[str, str, list[int]] | None:
    """The gradient and the result of a Reduce* node with the reduced axes kept (size 1), and the axes.

    None when the node reduces nothing (``noop_with_empty_axes`` and no axes).
    """
    x, y, g = node.input[0], node.output[0], gys[0]
    rank = b.rank(x, node)
    axes = b.const_input(node, 1, "axes") if len(node.input) > 1 else attr(node, "axes")
    if axes is None or len(axes) == 0:
        if attr(node, "noop_with_empty_axes", 0):
            return None
        axes = list(range(rank))
    axes = sorted(int(a) % rank for a in np.asarray(axes).reshape(-1))
    if not attr(node, "keepdims", 1):
        g, y = (b.node("Unsqueeze", [t, b.ints(axes)]) for t in (g, y))
    return g, y, axes


def reduce_extreme(b: Builder, node: onnx.NodeProto, gys: list) -> Grads:
    """ReduceMax / ReduceMin: the gradient shared by the elements equal to the result."""
    kept = _kept(b, node, gys)
    if kept is None:
        return only_first(b, node, gys[0])
    g, y, axes = kept
    x = node.input[0]
    hit = b.node("Cast", [b.node("Equal", [x, y])], to=b.dtype(x))
    count = b.node("ReduceSum", [hit, b.ints(axes)], keepdims=1)
    return only_first(b, node, b.node("Mul", [hit, b.node("Div", [g, count])]))


def reduce_norm(b: Builder, node: onnx.NodeProto, gys: list) -> Grads:
    """ReduceL1, ReduceL2, ReduceSumSquare, ReduceLogSumExp: g times d y / d x (broadcast back)."""
    kept = _kept(b, node, gys)
    if kept is None:
        return only_first(b, node, gys[0])
    g, y, _ = kept
    x = node.input[0]
    slope = {"ReduceL1": lambda: b.node("Sign", [x]),
             "ReduceL2": lambda: b.node("Div", [x, y]),
             "ReduceSumSquare": lambda: b.node("Mul", [x, b.scalar(2.0, x)]),
             "ReduceLogSumExp": lambda: b.node("Exp", [b.node("Sub", [x, y])])}[node.op_type]()
    return only_first(b, node, b.node("Mul", [g, slope]))


def layer_norm(b: Builder, node: onnx.NodeProto, gys: list) -> Grads:
    """dx = (g' - mean(g') - xhat mean(g' xhat)) / sigma, g' = g * scale, over the normalised axes."""
    x, scale = node.input[:2]
    if any(gys[1:]):
        raise refuse(node, "gradients through its Mean / InvStdDev outputs")
    if any(b.needs(n) for n in node.input[1:]):
        raise refuse(node, "its scale or bias depends on the differentiated tensor")
    rank = b.rank(x, node)
    axes = list(range(attr(node, "axis", -1) % rank, rank))
    eps = attr(node, "epsilon", 1e-5)
    centred = b.node("Sub", [x, b.reduce_mean(x, axes)])
    var = b.reduce_mean(b.node("Mul", [centred, centred]), axes)
    inv = b.node("Reciprocal", [b.node("Sqrt", [b.node("Add", [var, b.scalar(eps, x)])])])
    xhat = b.node("Mul", [centred, inv])
    gs = b.node("Mul", [gys[0], scale])
    inner = b.node("Sub", [b.node("Sub", [gs, b.reduce_mean(gs, axes)]),
                           b.node("Mul", [xhat, b.reduce_mean(b.node("Mul", [gs, xhat]), axes)])])
    return [b.node("Mul", [inner, inv])] + [None] * (len(node.input) - 1)


def instance_norm(b: Builder, node: onnx.NodeProto, gys: list) -> Grads:
    """LayerNorm's reverse over the spatial axes, with a per-channel scale (C,)."""
    x, scale = node.input[:2]
    if any(b.needs(n) for n in node.input[1:]):
        raise refuse(node, "its scale or bias depends on the differentiated tensor")
    rank = b.rank(x, node)
    axes = list(range(2, rank))
    eps = attr(node, "epsilon", 1e-5)
    centred = b.node("Sub", [x, b.reduce_mean(x, axes)])
    var = b.reduce_mean(b.node("Mul", [centred, centred]), axes)
    inv = b.node("Reciprocal", [b.node("Sqrt", [b.node("Add", [var, b.scalar(eps, x)])])])
    xhat = b.node("Mul", [centred, inv])
    gs = b.node("Mul", [gys[0], b.node("Reshape", [scale, b.ints([-1] + [1] * (rank - 2))])])
    inner = b.node("Sub", [b.node("Sub", [gs, b.reduce_mean(gs, axes)]),
                           b.node("Mul", [xhat, b.reduce_mean(b.node("Mul", [gs, xhat]), axes)])])
    return [b.node("Mul", [inner, inv]), None, None]


def elu_selu(b: Builder, node: onnx.NodeProto, gys: list) -> Grads:
    """Elu: g where x > 0, else g (y + alpha); Selu: gamma times that with alpha gamma's y."""
    x, y, g = node.input[0], node.output[0], gys[0]
    if node.op_type == "Elu":
        alpha, gamma = attr(node, "alpha", 1.0), 1.0
    else:
        alpha, gamma = attr(node, "alpha", 1.67326319217681884765625), attr(node, "gamma", 1.05070102214813232421875)
    neg = b.node("Mul", [g, b.node("Add", [y, b.scalar(alpha * gamma, x)])])
    pos = b.node("Mul", [g, b.scalar(gamma, x)]) if gamma != 1.0 else g
    return [b.node("Where", [b.node("Greater", [x, b.zero(b.dtype(x))]), pos, neg])]


def mean(b: Builder, node: onnx.NodeProto, gys: list) -> Grads:
    """Mean of n tensors: each gets g / n, summed back to its shape."""
    y = node.output[0]
    part = b.node("Mul", [gys[0], b.scalar(1.0 / len(node.input), y)])
    return [b.unbroadcast(part, y, x, node) if b.needs(x) else None for x in node.input]


def einsum(b: Builder, node: onnx.NodeProto, gys: list) -> Grads:
    """One or two operands without repeated subscripts: each gradient is another Einsum."""
    eq = attr(node, "equation")
    eq = (eq.decode() if isinstance(eq, bytes) else eq).replace(" ", "")
    lhs, arrow, out = eq.partition("->")
    terms = lhs.split(",")
    if len(terms) != len(node.input) or len(terms) > 2:
        raise refuse(node, "only one- and two-operand equations are supported")
    dots = ""
    if "..." in eq:
        spare = iter(c for c in "ABCDEFGHIJKLMNOPQRSTUVWXYZ" if c not in eq)
        ell = [b.rank(n, node) - len(t.replace("...", "")) for n, t in zip(node.input, terms)]
        dots = "".join(next(spare) for _ in range(max(ell)))
        terms = [t.replace("...", dots[len(dots) - e:] if e else "") for t, e in zip(terms, ell)]
    if not arrow:
        letters = "".join(terms)
        out = dots + "".join(sorted(c for c in set(letters) if letters.count(c) == 1 and c not in dots))
    out = out.replace("...", dots)
    if any(len(set(t)) != len(t) for t in terms + [out]):
        raise refuse(node, "repeated subscripts (diagonals)")
    grads: Grads = []
    for i, (name, term) in enumerate(zip(node.input, terms)):
        if not b.needs(name):
            grads.append(None)
            continue
        others = [(n, t) for j, (n, t) in enumerate(zip(node.input, terms)) if j != i]
        reach = set(out).union(*[set(t) for _, t in others])
        kept = "".join(c for c in term if c in reach)
        spec = ",".join([out] + [t for _, t in others]) + "->" + kept
        grad = b.node("Einsum", [gys[0]] + [n for n, _ in others], equation=spec)
        if kept != term:
            grad = b.node("Expand", [b.node("Unsqueeze", [grad, b.ints([k for k, c in enumerate(term)
                                                                        if c not in reach])]),
                                     b.shape_of(name)])
        grads.append(grad)
    return grads


RULES: dict[str, Rule] = {
    "Erf": erf, "Gelu": gelu, "Softplus": softplus, "Mish": mish, "Reciprocal": reciprocal, "Pow": pow_,
    "Where": where, "Max": max_min, "Min": max_min, "ReduceMax": reduce_extreme, "ReduceMin": reduce_extreme,
    "ReduceL1": reduce_norm, "ReduceL2": reduce_norm, "ReduceSumSquare": reduce_norm, "ReduceLogSumExp": reduce_norm,
    "LayerNormalization": layer_norm, "Einsum": einsum, "InstanceNormalization": instance_norm,
    "Elu": elu_selu, "Selu": elu_selu, "Mean": mean,
}
