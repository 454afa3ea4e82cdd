"""A classifier's linear head: the feature tensor before global average pooling and the FC weights."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import numpy_helper

from ..errors import InputError
from .features import pooled_axes
from .inspect import _shapes


def _initializer(g: onnx.GraphProto, name: str) -> np.ndarray | None:
    found = next((t for t in g.initializer if t.name == name), None)
    if found is None:
        found = next((numpy_helper.to_array(a.t) for n in g.node if n.op_type == "Constant" and n.output[0] == name
                      for a in n.attribute if a.name == "value"), None)
        return None if found is None else np.asarray(found)
    return numpy_helper.to_array(found)


def cam_weights(proto: onnx.ModelProto) -> tuple[str, np.ndarray]:
    """The feature tensor before global average pooling and the FC weights (K, C).

    Follows the output back through Softmax, Add (bias), Gemm or MatMul, and
    Flatten/Reshape/Squeeze/Identity to a global average pool: GlobalAveragePool, a
    ReduceMean over the two spatial axes (NCHW or NHWC), an AveragePool whose kernel
    covers the whole map, or a ReduceMean over the token axis of (N, T, D) tokens (a
    transformer's average-pooled head; the tokens must lie on a patch grid).

    Raises
    ------
    InputError
        When the model does not end in global average pooling + fully connected layer.
    """
    g = proto.graph
    producer = {o: n for n in g.node for o in n.output}
    refuse = InputError("cam needs a model that ends in GlobalAveragePool (or a ReduceMean / AveragePool over the "
                        "whole map) + a fully connected layer (Gemm or MatMul); use --method grad-cam for this model")
    node, weights = producer.get(g.output[0].name), None
    while node is not None and node.op_type in ("Softmax", "Add", "Identity", "Flatten", "Reshape",
                                                "Squeeze", "Gemm", "MatMul"):
        if node.op_type in ("Gemm", "MatMul"):
            if weights is not None:
                raise refuse
            w = _initializer(g, node.input[1])
            attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
            if w is None or w.ndim != 2 or attrs.get("transA", 0):
                raise refuse
            weights = w * attrs.get("alpha", 1.0) if attrs.get("transB", 0) and node.op_type == "Gemm" \
                else w.T * attrs.get("alpha", 1.0)
        node = next((producer[i] for i in node.input if i in producer and _initializer(g, i) is None), None)
    if node is None or weights is None or (node.op_type != "GlobalAveragePool" and (
            node.op_type not in ("ReduceMean", "AveragePool") or not _pools(node, _shapes(proto), g))):
        raise refuse
    return node.input[0], np.asarray(weights, np.float64)


def _pools(node: onnx.NodeProto, shapes: dict, g: onnx.GraphProto) -> bool:
    """Whether a ReduceMean / AveragePool averages a whole 4-D map, or (N, T, D) tokens over T."""
    if pooled_axes(node, shapes, g) is not None:
        return node.op_type == "ReduceMean" or node.op_type == "AveragePool"
    shape = shapes.get(node.input[0])
    if node.op_type != "ReduceMean" or shape is None or len(shape) != 3:
        return False
    axes = next((list(a.ints) for a in node.attribute if a.name == "axes"), None)
    if axes is None and len(node.input) > 1:
        axes = _initializer(g, node.input[1])
    return axes is not None and [int(a) % 3 for a in np.asarray(axes).reshape(-1)] == [1]
