"""The layers of an ONNX model, with output shapes, and the default feature layer."""

from __future__ import annotations

from dataclasses import dataclass

import onnx

from .shape_fill import infer_complete

RELU_LIKE = {"Relu", "Clip", "LeakyRelu", "PRelu", "Elu", "Selu", "HardSwish"}
GATHERS = {"Add", "Concat", "Sum", "Max"}


@dataclass(frozen=True)
class Layer:
    """One node of the graph: its name, operator and first output tensor."""

    name: str
    op_type: str
    output: str
    shape: tuple[int | str | None, ...] | None


def _shapes(model: onnx.ModelProto) -> dict[str, tuple[int | str | None, ...]]:
    try:
        inferred = infer_complete(model)
    except Exception:  # shape inference is a convenience here, never required
        inferred = model
    g = inferred.graph
    out = {}
    for vi in list(g.value_info) + list(g.output) + list(g.input):
        if vi.type.HasField("tensor_type") and vi.type.tensor_type.HasField("shape"):
            out[vi.name] = tuple(d.dim_value if d.HasField("dim_value") else (d.dim_param or None)
                                 for d in vi.type.tensor_type.shape.dim)
    return out


def layers(model: onnx.ModelProto) -> list[Layer]:
    """Every node in graph order with the shape of its first output (None if unknown)."""
    shapes = _shapes(model)
    return [Layer(n.name or n.output[0], n.op_type, n.output[0], shapes.get(n.output[0]))
            for n in model.graph.node if n.output]


def image_dependent(model: onnx.ModelProto) -> set[str]:
    """The tensors computed from the image input (not from weights alone, as a position-bias MLP)."""
    weights = {t.name for t in model.graph.initializer}
    found = {i.name for i in model.graph.input if i.name not in weights}
    for n in model.graph.node:
        if any(i in found for i in n.input):
            found.update(o for o in n.output if o)
    return found


def default_feature_layer(model: onnx.ModelProto, layout: str = "NCHW",
                          axes: dict[str, int] | None = None) -> Layer | None:
    """MATLAB gradCAM's default FeatureLayer.

    The last layer with a non-singleton spatial size that is ReLU-like (Relu, Clip
    as ReLU6, ...) or gathers only ReLU-like outputs (Add, Concat). ``axes`` gives
    the channel axis (1 or 3) of 4-D tensors read from the graph (features.py); a
    tensor not in it has the input's ``layout``. For networks without such a layer,
    :func:`explainer.graph.feature_default.default_feature` goes on with the global
    pool's input and token models.
    """
    producers = {n.output[0]: n.op_type for n in model.graph.node if n.output}
    nodes = {n.output[0]: n for n in model.graph.node if n.output}
    best = None
    on_path = image_dependent(model)
    for layer in layers(model):
        shape = layer.shape
        if shape is None or len(shape) != 4 or layer.output not in on_path:
            continue
        channels_first = (axes or {}).get(layer.output, 1 if layout == "NCHW" else 3) == 1
        h, w = (shape[2], shape[3]) if channels_first else (shape[1], shape[2])
        if h == 1 or w == 1 or (isinstance(h, int) and isinstance(w, int) and h * w <= 1):  # sizes unknown: kept
            continue
        if layer.op_type in RELU_LIKE:
            best = layer
        elif layer.op_type in GATHERS:
            ins = [i for i in nodes[layer.output].input if i in producers]
            if ins and all(producers[i] in RELU_LIKE for i in ins):
                best = layer
    return best
