"""Tiny ONNX classifiers built in code, whose answers can be derived by hand."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def linear_classifier(path: Path, weights: np.ndarray, *, layout: str = "NCHW",
                      batch: int | None = None, softmax: bool = False,
                      preprocessing: dict | None = None, opset: int = 17) -> Path:
    """A model whose logits are ``weights`` (K, C, H, W) dotted with the input.

    logits[n, k] = sum_{c,y,x} weights[k, c, y, x] * input[n, c, y, x]; with
    ``softmax`` the output is softmax(logits). The input is laid out as ``layout``
    (the weights are always given in NCHW order).
    """
    k, c, h, w = weights.shape
    dims = [batch if batch else "N"] + ([c, h, w] if layout == "NCHW" else [h, w, c])
    wl = weights if layout == "NCHW" else weights.transpose(0, 2, 3, 1)
    mat = wl.reshape(k, -1).T.astype(np.float32)
    nodes = [helper.make_node("Flatten", ["input"], ["flat"], axis=1),
             helper.make_node("MatMul", ["flat", "W"], ["logits" if not softmax else "z"])]
    if softmax:
        nodes.append(helper.make_node("Softmax", ["z"], ["logits"], axis=1))
    graph = helper.make_graph(
        nodes, "linear",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, dims)],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [dims[0], k])],
        [numpy_helper.from_array(mat, "W")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    if preprocessing is not None:
        helper.set_model_props(model, {"explainer.preprocessing": json.dumps(preprocessing)})
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def feature_map_model(path: Path) -> Path:
    """Not a classifier: returns its (N, 3, 8, 8) input through a Relu."""
    graph = helper.make_graph(
        [helper.make_node("Relu", ["input"], ["features"])], "features",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, 8, 8])],
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["N", 3, 8, 8])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def brute_force_occlusion(f, x: np.ndarray, lo_y, lo_x, size, value) -> np.ndarray:
    """Reference map (upsampling "none") by explicit loops: one mask at a time.

    ``f`` maps one (1, C, H, W) input to the target's score (a float). NaN where no mask covers.
    """
    _, c, h, w = x.shape
    total = np.zeros((h, w))
    count = np.zeros((h, w))
    base = f(x)
    for y0 in lo_y:
        for x0 in lo_x:
            ys = slice(max(y0, 0), min(y0 + size[0], h))
            xs = slice(max(x0, 0), min(x0 + size[1], w))
            masked = x.copy()
            for ch in range(c):
                masked[0, ch, ys, xs] = value[ch]
            total[ys, xs] += base - f(masked)
            count[ys, xs] += 1
    return np.divide(total, count, out=np.full_like(total, np.nan), where=count > 0)
