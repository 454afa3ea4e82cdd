"""The default feature layer of any network, and the attention Softmax nodes of token models.

The rule is documented in features.py (MATLAB's ReLU rule, else the global pool's input,
else the token tensor entering the last attention block, on its patch grid).
"""

from __future__ import annotations

from dataclasses import dataclass

import onnx

from ..errors import InputError

from .features import FeatureView, Shape, channel_axes, pooled_axes, token_grid
from .inspect import Layer, _shapes, default_feature_layer, image_dependent, layers

PASS = {"Dropout", "Identity", "Cast"}


def attention_softmaxes(model: onnx.ModelProto, shapes: dict[str, Shape] | None = None) -> list[onnx.NodeProto]:
    """Softmax nodes over the last axis of a rank >= 3 tensor whose output is multiplied (MatMul/Einsum)
    with the values: the attention weights (N, heads, T, T) of a transformer, in graph order."""
    shapes = _shapes(model) if shapes is None else shapes
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for n in model.graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    found = []
    for n in model.graph.node:
        shape = shapes.get(n.input[0]) if n.input else None
        if n.op_type != "Softmax" or shape is None or len(shape) < 3:
            continue
        axis = next((a.i for a in n.attribute if a.name == "axis"), -1) % len(shape)
        if axis != len(shape) - 1:
            continue
        out, seen = [n.output[0]], set()
        while out:
            name = out.pop()
            for c in consumers.get(name, []):
                if c.op_type in PASS and c.output[0] not in seen:
                    seen.add(c.output[0])
                    out.append(c.output[0])
                elif c.op_type in ("MatMul", "Einsum"):
                    found.append(n)
                    out = []
                    break
    return found


def default_feature(model: onnx.ModelProto, input_layout: str) -> tuple[Layer, FeatureView] | None:
    """The default feature layer and how it maps to (N, C, h, w) maps, or None."""
    shapes = _shapes(model)
    axes = channel_axes(model, input_layout, shapes)
    by_output = {lay.output: lay for lay in layers(model)}
    matlab = default_feature_layer(model, input_layout, axes)
    if matlab is not None:
        return matlab, FeatureView(matlab.output, "NHWC" if axes.get(matlab.output) == 3 else "NCHW")
    on_path = image_dependent(model)
    for node in reversed(model.graph.node):
        spatial = pooled_axes(node, shapes, model.graph) if node.input and node.input[0] in on_path else None
        shape = shapes.get(node.input[0]) if node.input else None
        if spatial is None or shape is None:
            continue
        h, w = (shape[a] for a in spatial)
        if isinstance(h, int) and isinstance(w, int) and h * w > 1 and node.input[0] in by_output:
            return by_output[node.input[0]], FeatureView(node.input[0], "NHWC" if spatial == [1, 2] else "NCHW")
        if h is None or w is None or isinstance(h, str) or isinstance(w, str):  # sizes fixed at run time
            if node.input[0] in by_output:
                return by_output[node.input[0]], FeatureView(node.input[0],
                                                             "NHWC" if spatial == [1, 2] else "NCHW")
        break
    return _token_feature(model, input_layout, shapes, by_output)


@dataclass(frozen=True)
class Attention:
    """The attention weights of a token model: Softmax outputs (N, heads, T, T), in graph order,
    and the patch grid (h, w) of the T - ``prefix`` tokens after the ``prefix`` leading ones."""

    tensors: tuple[str, ...]
    grid: tuple[int, int]
    prefix: int


def attention(model: onnx.ModelProto, input_layout: str) -> Attention:
    """The model's global attention layers and token grid.

    Raises
    ------
    InputError
        No attention Softmax, or attention over other token sets than the whole grid
        (windowed attention as in Swin: each window's T is not the model's token count).
    """
    shapes = _shapes(model)
    soft = attention_softmaxes(model, shapes)
    if not soft:
        raise InputError("attention-rollout needs a transformer: this model has no attention Softmax "
                         "(a Softmax over the last axis whose output multiplies the values); use grad-cam")
    by_output = {lay.output: lay for lay in layers(model)}
    found = _token_feature(model, input_layout, shapes, by_output)
    sizes = {(shapes.get(n.output[0]) or (None,))[-1] for n in soft}
    if found is None:
        raise InputError("attention-rollout: the attention does not span the token grid of the model "
                         "(windowed attention, as in Swin, is not rolled out); use grad-cam")
    view = found[1]
    grid = view.grid or (0, 0)
    t = view.prefix + grid[0] * grid[1]
    if {s for s in sizes if isinstance(s, int)} - {t}:
        raise InputError(windowed(sorted(s for s in sizes if isinstance(s, int)), t))
    return Attention(tuple(n.output[0] for n in soft), grid, view.prefix)


def windowed(sizes: list[int], t: int) -> str:
    """The refusal for attention over other token sets than the model's ``t`` tokens."""
    return (f"attention-rollout: the attention is over {sizes} tokens, not the model's {t} (windowed "
            "attention, as in Swin, is not rolled out); use grad-cam")


def default_layer(model: onnx.ModelProto, input_layout: str) -> Layer | None:
    """The default feature layer alone (see :func:`default_feature`)."""
    found = default_feature(model, input_layout)
    return found[0] if found else None


def _token_feature(model: onnx.ModelProto, input_layout: str, shapes: dict[str, Shape],
                   by_output: dict[str, Layer]) -> tuple[Layer, FeatureView] | None:
    """The (N, T, D) residual stream entering the last attention block, on its patch grid."""
    soft = attention_softmaxes(model, shapes)
    if not soft:
        return None
    producers = {o: n for n in model.graph.node for o in n.output}
    order = {o: i for i, n in enumerate(model.graph.node) for o in n.output}
    last = soft[-1]
    ancestors, stack = set(), list(last.input)
    while stack:
        name = stack.pop()
        if name and name not in ancestors:
            ancestors.add(name)
            if name in producers:
                stack.extend(producers[name].input)
    after = order[last.output[0]]
    candidates = []
    for n in model.graph.node:
        if n.op_type != "Add" or order[n.output[0]] <= after:
            continue
        for i in n.input:
            shape = shapes.get(i)
            if i in ancestors and i in by_output and shape is not None and len(shape) == 3:
                candidates.append(i)
    for tensor in sorted(set(candidates), key=lambda t: -order.get(t, -1)):
        grid = token_grid(model, tensor, input_layout, shapes)
        if grid is not None:
            return by_output[tensor], FeatureView(tensor, "tokens", grid[0], grid[1])
    return None
