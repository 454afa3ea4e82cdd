"""Finite differences of the test zoo's ONNX models in float64 (onnx's reference evaluator).

``Zoo(name)`` loads a zoo model twice: as explainer runs it (float32, ONNX Runtime) and as
a float64 copy run by the reference evaluator, whose central differences the gradient
methods are checked against.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

import explainer
from grad_check import reference

ZOO = Path(__file__).parent / "zoo"
NAMES = sorted(p.stem for p in ZOO.glob("*.onnx"))
H = 1e-5


def to_float64(model: onnx.ModelProto) -> onnx.ModelProto:
    """A float64 copy: float weights, constants and Casts to float become double (Resize's scales stay float)."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    g = out.graph
    keep = {n.input[i] for n in g.node if n.op_type == "Resize" for i in (1, 2) if i < len(n.input)}
    for t in g.initializer:
        if t.data_type == TensorProto.FLOAT and t.name not in keep:
            t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(t).astype(np.float64), t.name))
    for n in g.node:
        for a in n.attribute:
            if a.type == onnx.AttributeProto.TENSOR and a.t.data_type == TensorProto.FLOAT \
                    and not (n.op_type == "Constant" and n.output[0] in keep):
                a.t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(a.t).astype(np.float64), a.t.name))
            if n.op_type == "Cast" and a.name == "to" and a.i == TensorProto.FLOAT:
                a.i = TensorProto.DOUBLE
    del g.value_info[:]
    for v in list(g.input) + list(g.output):
        v.type.tensor_type.elem_type = TensorProto.DOUBLE
    return out


class Zoo:
    """One zoo model: ``model`` (explainer's), ``x`` (1, 3, 32, 32) NCHW input, float64 references."""

    def __init__(self, name: str, seed: int = 0) -> None:
        self.name = name
        self.path = ZOO / f"{name}.onnx"
        self.model = explainer.load_model(self.path, size=(32, 32) if "dynamic" in name else None)
        self.proto = onnx.load(str(self.path))
        rng = np.random.default_rng(seed)
        pixels = rng.integers(0, 256, (40, 40, 3)).astype(np.uint8)
        from explainer.methods.common import load_input

        self.x = load_input(self.model, pixels).x
        self.nhwc = self.model.spec.preprocessing.layout == "NHWC"
        self.input = self.proto.graph.input[0].name
        last = next(n for n in self.proto.graph.node if self.proto.graph.output[0].name in n.output)
        self.logits = last.input[0] if last.op_type == "Softmax" else self.proto.graph.output[0].name

    def _evaluator(self, layer: str | None) -> tuple:
        m = to_float64(self.proto)
        g = m.graph
        if layer is not None:  # the layer tensor becomes an input that overrides its producer
            for n in g.node:
                for i, o in enumerate(n.output):
                    if o == layer:
                        n.output[i] = layer + "__computed"
            g.input.append(helper.make_tensor_value_info(layer, TensorProto.DOUBLE, None))
        del g.output[:]
        g.output.append(helper.make_tensor_value_info(self.logits, TensorProto.DOUBLE, None))
        return reference(m), m

    def score(self, batch: np.ndarray, target: int, score: str, layer: str | None = None,
              layer_value: np.ndarray | None = None) -> np.ndarray:
        """The target's logit or probability (float64) for an NCHW batch, or for layer values."""
        ev, _ = self._evaluator(layer)
        if layer is None:
            feed = {self.input: batch.transpose(0, 2, 3, 1) if self.nhwc else batch}
        else:
            n = len(layer_value)
            image = np.repeat(self.x.astype(np.float64), n, axis=0)
            feed = {self.input: image.transpose(0, 2, 3, 1) if self.nhwc else image, layer: layer_value}
        z = np.asarray(ev.run(None, feed)[0], np.float64).reshape(len(next(iter(feed.values()))), -1)
        if score == "logit":
            return z[:, target]
        e = np.exp(z - z.max(axis=1, keepdims=True))
        return (e / e.sum(axis=1, keepdims=True))[:, target]

    def fd(self, point: np.ndarray, coords: np.ndarray, target: int, score: str,
           layer: str | None = None) -> np.ndarray:
        """Central differences d score / d point.flat[coords] (point: the input (1, C, H, W) or a layer tensor)."""
        base = np.repeat(point.astype(np.float64).reshape(1, -1), 2 * len(coords), axis=0)
        for k, i in enumerate(coords):
            base[2 * k, i] += H
            base[2 * k + 1, i] -= H
        batch = base.reshape((-1,) + point.shape[1:])
        s = self.score(batch, target, score) if layer is None else self.score(None, target, score, layer, batch)
        return (s[0::2] - s[1::2]) / (2 * H)


def rel_l2(a: np.ndarray, b: np.ndarray) -> float:
    """||a - b|| / ||b||."""
    return float(np.linalg.norm(np.asarray(a, np.float64) - b) / max(np.linalg.norm(b), 1e-30))
