"""Checking gradient models against central finite differences.

A test builds a few-node ONNX graph (input ``x``, float64 or float32), exports its
gradient model, and compares: (1) the float64 gradient model run by onnx's reference
evaluator (plain NumPy, independent of ONNX Runtime) against central differences of
the float64 forward model, and (2) the float32 gradient model run by ONNX Runtime
against that float64 gradient.
"""

from __future__ import annotations

import math

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper
from onnx.reference import ReferenceEvaluator
from onnx.reference.op_run import OpRun

from explainer.graph.gradients import gradient_model

TYPES = {np.float64: TensorProto.DOUBLE, np.float32: TensorProto.FLOAT}


def build(nodes, x_shape, out_shape, inits=None, *, dtype=np.float64, out="y", opset=17) -> onnx.ModelProto:
    """A model with input ``x`` of ``x_shape`` ('N' allowed), output ``out`` and float initializers."""
    t = TYPES[dtype]
    tensors = []
    for name, value in (inits or {}).items():
        value = np.asarray(value)
        tensors.append(numpy_helper.from_array(value.astype(dtype) if value.dtype.kind == "f" else value, name))
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", t, x_shape)],
                              [helper.make_tensor_value_info(out, t, out_shape)], tensors)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    if out_shape is None:  # take the output's shape from shape inference
        inferred = onnx.shape_inference.infer_shapes(model, strict_mode=True)
        found = {v.name: v for v in list(inferred.graph.value_info) + list(inferred.graph.output)}
        model.graph.output[0].CopyFrom(found[out])
    onnx.checker.check_model(model)
    return model


class LRN(OpRun):
    """The ONNX spec's LRN (onnx's reference evaluator disagrees with the spec and ORT)."""

    op_domain = ""

    def _run(self, x, alpha=1e-4, beta=0.75, bias=1.0, size=None):  # noqa: D102
        c = x.shape[1]
        lo, hi = (size - 1) // 2, size - 1 - (size - 1) // 2
        sq = np.stack([(x[:, max(0, i - lo):min(c, i + hi + 1)] ** 2).sum(axis=1) for i in range(c)], axis=1)
        return (x / (bias + alpha / size * sq) ** beta,)


class ConvTranspose(OpRun):
    """Brute-force N-D ConvTranspose (onnx's reference evaluator mishandles group > 1)."""

    op_domain = ""

    def _run(self, x, w, bias=None, auto_pad=None, dilations=None, group=1, kernel_shape=None,  # noqa: D102
             output_padding=None, output_shape=None, pads=None, strides=None):
        nd = x.ndim - 2
        s, d = strides or [1] * nd, dilations or [1] * nd
        op, pads = output_padding or [0] * nd, pads or [0] * (2 * nd)
        n, c = x.shape[:2]
        cg, mg = c // group, w.shape[1]
        full = [si * (i - 1) + (k - 1) * di + 1 + o for si, i, k, di, o in zip(s, x.shape[2:], w.shape[2:], d, op)]
        y = np.zeros((n, group * mg, *full))
        for j in np.ndindex(*w.shape[2:]):
            at = tuple(slice(ji * di, ji * di + si * (i - 1) + 1, si)
                       for ji, di, si, i in zip(j, d, s, x.shape[2:]))
            for g in range(group):
                xs, ws = x[:, g * cg:(g + 1) * cg], w[g * cg:(g + 1) * cg, :, *j]
                y[(slice(None), slice(g * mg, (g + 1) * mg)) + at] += np.einsum("nc...,cm->nm...", xs, ws)
        crop = tuple(slice(p0, f - p1) for p0, p1, f in zip(pads[:nd], pads[nd:], full))
        y = y[(slice(None), slice(None)) + crop]
        return (y + bias.reshape([-1] + [1] * nd) if bias is not None else y,)


class Erf(OpRun):
    """Erf in the input's precision (onnx's reference evaluator computes it in float32)."""

    op_domain = ""

    def _run(self, x):  # noqa: D102
        return (np.vectorize(math.erf, otypes=[x.dtype])(x),)


class Gelu(OpRun):
    """Gelu (opset 20) in the input's precision."""

    op_domain = ""

    def _run(self, x, approximate="none"):  # noqa: D102
        if approximate == "tanh":
            return (0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3))),)
        return (0.5 * x * (1 + np.vectorize(math.erf, otypes=[x.dtype])(x / math.sqrt(2))),)


def reference(model: onnx.ModelProto) -> ReferenceEvaluator:
    """onnx's NumPy evaluator with spec-conforming LRN and ConvTranspose, and Erf and Gelu in float64."""
    return ReferenceEvaluator(model, new_ops=[LRN, ConvTranspose, Erf, Gelu])


def score(z: np.ndarray, wl: np.ndarray, wp: np.ndarray, probabilities: bool = False) -> float:
    """sum(wl * z + wp * softmax(z)) for (N, ...) outputs flattened to (N, K)."""
    z = z.reshape(len(z), -1).astype(np.float64)
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return float((wl * z).sum() + (wp * e / e.sum(axis=1, keepdims=True)).sum())


def finite_differences(f, x: np.ndarray, h: float = 1e-6) -> np.ndarray:
    """Central differences of the scalar function ``f`` at every element of ``x``."""
    grad = np.zeros_like(x, dtype=np.float64)
    flat, out = x.reshape(-1), grad.reshape(-1)
    for i in range(flat.size):
        keep = flat[i]
        flat[i] = keep + h
        up = f(x)
        flat[i] = keep - h
        down = f(x)
        flat[i] = keep
        out[i] = (up - down) / (2 * h)
    return grad


def rel_err(a: np.ndarray, b: np.ndarray) -> float:
    """||a - b|| / ||b|| (absolute when b is 0)."""
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-12))


def weights(rng: np.random.Generator, n: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    return rng.normal(size=(n, k)).astype(np.float32), rng.normal(size=(n, k)).astype(np.float32)


def check(make, x: np.ndarray, rng: np.random.Generator, *, relu: str = "standard",
          tol: float = 1e-3, h: float = 1e-6, ort: bool = True) -> np.ndarray:
    """``make(dtype)`` builds the model; return the float64 gradient after both comparisons."""
    m64, m32 = make(np.float64), make(np.float32)
    fwd = reference(m64)
    z = fwd.run(None, {"x": x})[0]
    wl, wp = weights(rng, len(x), int(np.prod(z.shape[1:])))
    g64 = reference(gradient_model(m64, relu=relu)).run(
        ["gradient"], {"x": x, "logit_weights": wl, "probability_weights": wp})[0]
    fd = finite_differences(lambda v: score(fwd.run(None, {"x": v})[0], wl, wp), x.copy(), h)
    assert g64.shape == x.shape
    assert rel_err(g64, fd) <= tol, (rel_err(g64, fd), g64, fd)
    if not ort:
        return g64
    g32 = run_ort(gradient_model(m32, relu=relu), x.astype(np.float32), wl, wp)
    assert rel_err(g32, g64) <= tol, (rel_err(g32, g64), g32, g64)
    return g64


def run_ort(model: onnx.ModelProto, x: np.ndarray, wl: np.ndarray, wp: np.ndarray,
            names: list[str] | None = None) -> np.ndarray:
    """The ``gradient`` output (or ``names``) of a model run by a fresh plain ORT session."""
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    sess = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    out = sess.run(names or ["gradient"], {"x": x, "logit_weights": wl, "probability_weights": wp})
    return out if names else out[0]


def to_double(model: onnx.ModelProto, size: int, dtype=np.float64) -> onnx.ModelProto:
    """A copy of an image classifier at a ``size`` x ``size`` input, weights and tensors in ``dtype``."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    g = out.graph
    for t in g.initializer:
        a = numpy_helper.to_array(t)
        if a.dtype.kind == "f":
            t.CopyFrom(numpy_helper.from_array(a.astype(dtype), t.name))
    for n in g.node:
        if n.op_type == "Constant" and numpy_helper.to_array(n.attribute[0].t).dtype.kind == "f":
            n.attribute[0].t.CopyFrom(numpy_helper.from_array(
                numpy_helper.to_array(n.attribute[0].t).astype(dtype), n.output[0]))
    del g.value_info[:]
    for v in list(g.input) + list(g.output):
        v.type.tensor_type.elem_type = TYPES[dtype]
    dims = g.input[0].type.tensor_type.shape.dim
    dims[2].dim_value = dims[3].dim_value = size
    return out
