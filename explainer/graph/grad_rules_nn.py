"""Reverse-pass rules for convolutions, dense layers and normalisation."""

from __future__ import annotations

import numpy as np
import onnx

from .grad_builder import Builder
from .grad_rules import Grads, Rule, attr, only_first, refuse

# Conv's input gradient as a Conv with flipped, transposed weights (precomputed at export)
# where the geometry allows it (stride 1); ConvTranspose otherwise. Measured faster on ORT CPU.
PREFER_FLIPPED_CONV = True


def geometry(b: Builder, node: onnx.NodeProto, x: str, kernel: list[int]) -> tuple[list, list, list, list]:
    """Strides, dilations, begin pads and end pads of a Conv-like node (auto_pad resolved)."""
    nd = len(kernel)
    s = list(attr(node, "strides") or [1] * nd)
    d = list(attr(node, "dilations") or [1] * nd)
    auto = attr(node, "auto_pad", b"NOTSET")
    auto = auto.decode() if isinstance(auto, bytes) else auto
    if auto in ("NOTSET", ""):
        pads = list(attr(node, "pads") or [0] * (2 * nd))
        return s, d, pads[:nd], pads[nd:]
    if auto == "VALID":
        return s, d, [0] * nd, [0] * nd
    dims = b.static_dims(x, list(range(2, 2 + nd)), node)
    total = [max((-(-n // si) - 1) * si + (k - 1) * di + 1 - n, 0) for n, si, k, di in zip(dims, s, kernel, d)]
    small = [t // 2 for t in total]
    big = [t - t // 2 for t in total]
    return (s, d, small, big) if auto == "SAME_UPPER" else (s, d, big, small)


def _kernel(b: Builder, node: onnx.NodeProto, w: str) -> list[int]:
    k = attr(node, "kernel_shape")
    if k:
        return list(k)
    shape = b.shape(w)
    if shape is None or not all(isinstance(v, int) for v in shape[2:]):
        raise refuse(node, "its kernel shape is unknown")
    return list(shape[2:])


def spatial(b: Builder, name: str, nd: int) -> list[int | None]:
    """The ``nd`` trailing (spatial) sizes of a tensor, None where not fixed."""
    shape = b.shape(name) or ()
    return [shape[2 + i] if len(shape) == 2 + nd and isinstance(shape[2 + i], int) else None
            for i in range(nd)]


def transpose_sized(b: Builder, g: str, w: str, kernel: list[int], geo: tuple, dims: list, outs: list,
                    x: str, **attrs) -> str:
    """ConvTranspose of ``g`` (spatial sizes ``outs``) with ``w``, cut to spatial sizes ``dims``.

    ``geo`` is (strides, dilations, begin pads, end pads); ``x`` gives the sizes at run time
    when ``dims`` are not fixed.
    """
    s, d, pb, pe = geo
    nd = len(kernel)
    ext = [(k - 1) * di + 1 for k, di in zip(kernel, d)]
    if None not in dims and None not in outs:
        natural = [si * (o - 1) + e - p0 - p1 for si, o, e, p0, p1 in zip(s, outs, ext, pb, pe)]
        op = [n - m for n, m in zip(dims, natural)]
        if all(0 <= v < max(si, di) for v, si, di in zip(op, s, d)):
            return b.node("ConvTranspose", [g, w], strides=s, dilations=d, pads=pb + pe,
                          output_padding=op, kernel_shape=kernel, **attrs)
        op, ends = [max(v, 0) for v in op], b.ints(dims)
    else:
        op = [si - 1 for si in s]
        ends = b.node("Slice", [b.shape_of(x), b.ints([2]), b.ints([2 + nd])])
    out = b.node("ConvTranspose", [g, w], strides=s, dilations=d, pads=pb + pe, output_padding=op,
                 kernel_shape=kernel, **attrs)
    return b.node("Slice", [out, b.ints([0] * nd), ends, b.ints(list(range(2, 2 + nd)))])


def conv(b: Builder, node: onnx.NodeProto, gys: list) -> Grads:
    x, w, g = node.input[0], node.input[1], gys[0]
    kernel = _kernel(b, node, w)
    s, d, pb, pe = geometry(b, node, x, kernel)
    group = attr(node, "group", 1)
    ext = [(k - 1) * di for k, di in zip(kernel, d)]
    weights, nd = b.value(w), len(kernel)
    pads = [e - p for e, p in zip(ext, pb)] + [e - p for e, p in zip(ext, pe)]
    if PREFER_FLIPPED_CONV and weights is not None and all(v == 1 for v in s) and min(pads) >= 0:
        gx = b.node("Conv", [g, b.const(_flipped(weights, group), b.dtype(w), hint="wflip")], group=group,
                    dilations=d, pads=pads, kernel_shape=kernel)
    else:
        gx = _strided_depthwise(b, node, g, weights, (s, d, pb, pe)) if PREFER_FLIPPED_CONV else None
        # other strided convs: ConvTranspose measured faster than a Conv over the zero-upsampled gradient
        gx = gx or transpose_sized(b, g, w, kernel, (s, d, pb, pe), spatial(b, x, nd),
                                   spatial(b, node.output[0], nd), x, group=group)
    return only_first(b, node, gx)


def _strided_depthwise(b: Builder, node: onnx.NodeProto, g: str, weights: np.ndarray | None,
                       geo: tuple) -> str | None:
    """Input gradient of a strided depthwise Conv, or None where this form does not apply.

    The gradient ``g`` (N, M, h, w) is spread onto the stride grid by a 1x1 ConvTranspose
    with unit weights (zeros between the samples), then correlated with the flipped kernel
    at stride 1: a depthwise Conv that ONNX Runtime runs in its blocked layout, measured
    faster than a depthwise ConvTranspose. Needs constant weights with one input channel
    per group and fixed spatial sizes.
    """
    s, d, pb, pe = geo
    x, y = node.input[0], node.output[0]
    nd = len(s)
    dims, outs = spatial(b, x, nd), spatial(b, y, nd)
    if weights is None or weights.shape[1] != 1 or None in dims or None in outs:
        return None
    ext = [(k - 1) * di for k, di in zip(weights.shape[2:], d)]
    begin = [e - p for e, p in zip(ext, pb)]
    end = [n - si * o - p0 + e for n, si, o, p0, e in zip(dims, s, outs, begin, ext)]
    if min(begin + end) < 0:
        return None
    m = weights.shape[0]
    group = attr(node, "group", 1)
    spread = b.node("ConvTranspose", [g, b.const(np.ones((m, 1) + (1,) * nd), b.dtype(node.input[1]), hint="one")],
                    strides=s, group=m, output_padding=[si - 1 for si in s], kernel_shape=[1] * nd)
    return b.node("Conv", [spread, b.const(_flipped(weights, group), b.dtype(node.input[1]), hint="wflip")],
                  group=group, dilations=d, pads=begin + end, kernel_shape=list(weights.shape[2:]))


def _flipped(weights: np.ndarray, group: int) -> np.ndarray:
    """Conv weights (M, C/g, k...) -> weights of the adjoint correlation (C, M/g, k...) flipped."""
    m, cg = weights.shape[:2]
    wf = weights.reshape((group, m // group, cg) + weights.shape[2:]).swapaxes(1, 2)
    wf = wf.reshape((group * cg, m // group) + weights.shape[2:])
    return np.ascontiguousarray(np.flip(wf, axis=tuple(range(2, wf.ndim))))


def conv_transpose(b: Builder, node: onnx.NodeProto, gys: list) -> Grads:
    """ConvTranspose is the adjoint of Conv with the same weights and geometry."""
    x, w, g = node.input[0], node.input[1], gys[0]
    if attr(node, "output_shape") or attr(node, "auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET"):
        raise refuse(node, "output_shape / auto_pad are not supported (give explicit pads)")
    kernel = _kernel(b, node, w)
    s, d, pb, pe = geometry(b, node, x, kernel)
    gx = b.node("Conv", [g, w], strides=s, dilations=d, pads=pb + pe, kernel_shape=kernel,
                group=attr(node, "group", 1))
    return only_first(b, node, gx)


def gemm(b: Builder, node: onnx.NodeProto, gys: list) -> Grads:
    a, c = node.input[:2]
    g, alpha, beta = gys[0], attr(node, "alpha", 1.0), attr(node, "beta", 1.0)
    ta, tb = attr(node, "transA", 0), attr(node, "transB", 0)
    ga = gc = gbias = None
    if b.needs(a):
        ga = (b.node("Gemm", [g, c], alpha=alpha, transB=1 - tb) if not ta
              else b.node("Gemm", [c, g], alpha=alpha, transA=tb, transB=1))
    if b.needs(c):
        gc = (b.node("Gemm", [a, g], alpha=alpha, transA=1 - ta) if not tb
              else b.node("Gemm", [g, a], alpha=alpha, transA=1, transB=ta))
    if len(node.input) > 2 and b.needs(node.input[2]):
        scaled = b.node("Mul", [g, b.scalar(beta, node.input[2])])
        gbias = b.unbroadcast(scaled, node.output[0], node.input[2], node)
    return [ga, gc, gbias][:len(node.input)]


def matmul(b: Builder, node: onnx.NodeProto, gys: list) -> Grads:
    (a, c), y, g = node.input, node.output[0], gys[0]
    ra, rc = b.rank(a, node), b.rank(c, node)
    if ra < 2 or rc < 2:
        raise refuse(node, "1-D operands are not supported")
    batch = (b.shape(y) or ())[:-2]
    ga = gc = None
    if b.needs(a):
        cval = b.value(c)
        ct = (b.const(np.swapaxes(cval, -1, -2), b.dtype(c), hint="wT") if cval is not None
              else b.node("Transpose", [c], perm=list(range(rc - 2)) + [rc - 1, rc - 2]))
        ga = b.unbroadcast(b.node("MatMul", [g, ct]), batch + (b.shape(a)[-2:]), a, node)
    if b.needs(c):
        at = b.node("Transpose", [a], perm=list(range(ra - 2)) + [ra - 1, ra - 2])
        gc = b.unbroadcast(b.node("MatMul", [at, g]), batch + (b.shape(c)[-2:]), c, node)
    return [ga, gc]


def batch_norm(b: Builder, node: onnx.NodeProto, gys: list) -> Grads:
    x = node.input[0]
    if attr(node, "training_mode", 0) or len(node.output) > 1:
        raise refuse(node, "training-mode BatchNormalization")
    rank = b.rank(x, node)
    eps = attr(node, "epsilon", 1e-5)
    scale, var = b.value(node.input[1]), b.value(node.input[4])
    shape = [-1] + [1] * (rank - 2)
    if scale is not None and var is not None:
        factor = b.const((scale / np.sqrt(var.astype(np.float64) + eps)).reshape(shape), b.dtype(x))
    else:
        root = b.node("Sqrt", [b.node("Add", [node.input[4], b.scalar(eps, x)])])
        factor = b.node("Reshape", [b.node("Div", [node.input[1], root]), b.ints(shape)])
    return only_first(b, node, b.node("Mul", [gys[0], factor]))


RULES: dict[str, Rule] = {
    "Conv": conv, "ConvTranspose": conv_transpose, "Gemm": gemm, "MatMul": matmul,
    "BatchNormalization": batch_norm,
}
