"""Feature layers read from the graph: each tensor's layout, the global pool, token grids.

A 4-D tensor's layout comes from the graph, not from the input's: the input's channel
axis is followed through Transpose nodes, operators that work on NCHW (Conv, pools,
BatchNormalization, ...) fix it at axis 1, and shape-keeping operators pass it on; a pool
over two axes tells which are spatial. So an NHWC-input network that transposes to NCHW
at its front is NCHW inside, and a channels-last block (ConvNeXt, Swin) is NHWC.

The default feature layer (``default_feature``):

1. MATLAB gradCAM's: the last ReLU-like layer with non-singleton spatial size, or the
   last Add/Concat of ReLU-like outputs (inspect.py);
2. else the input of the last global pooling (GlobalAveragePool / GlobalMaxPool, a
   ReduceMean / ReduceMax over the two spatial axes, an AveragePool over the whole map),
   when its spatial size exceeds 1, whatever the activation;
3. else, for token models, the token tensor (N, T, D) entering the last attention block
   (the residual stream that the last attention Softmax reads and adds back to), shown on
   the patch grid of the last 4-D tensor before it; the T - h * w leading tokens (class,
   distillation and register tokens) are dropped.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
from onnx import helper

from .inspect import _shapes

Shape = tuple
NCHW_OPS = {"Conv", "ConvTranspose", "MaxPool", "AveragePool", "GlobalAveragePool", "GlobalMaxPool",
            "BatchNormalization", "InstanceNormalization", "LRN", "MaxUnpool", "LpPool", "GlobalLpPool"}
KEEPS = {"Relu", "Clip", "LeakyRelu", "PRelu", "Elu", "Selu", "HardSwish", "HardSigmoid", "Sigmoid", "Tanh",
         "Mul", "Add", "Sub", "Div", "Sum", "Max", "Min", "Identity", "Dropout", "Cast", "Softplus", "Mish",
         "Erf", "Gelu", "Pow", "Sqrt", "Neg", "Abs", "Exp", "Where", "Slice", "Concat", "Pad", "Resize",
         "LayerNormalization", "MatMul", "Gemm", "Split", "Softmax", "Reciprocal", "Expand", "Tile"}
MAX_PREFIX = 16


@dataclass(frozen=True)
class FeatureView:
    """How a layer tensor maps to (N, C, h, w) feature maps.

    ``layout``: "NCHW", "NHWC" or "tokens" ((N, T, D) with ``prefix`` leading tokens
    dropped and the rest on the ``grid`` (h, w), row-major).
    """

    tensor: str
    layout: str
    grid: tuple[int, int] | None = None
    prefix: int = 0

    def describe(self) -> dict:
        """A JSON-ready summary (what ``explainer inspect`` prints)."""
        out: dict = {"tensor": self.tensor, "layout": self.layout}
        if self.layout == "tokens":
            out.update(grid=list(self.grid or ()), prefix_tokens=self.prefix)
        return out


def to_maps(t: np.ndarray, view: FeatureView) -> np.ndarray:
    """A layer tensor as (N, C, h, w) maps.

    Parameters
    ----------
    t : (N, C, h, w), (N, h, w, C) or (N, T, D) ndarray, as ``view.layout`` says
    """
    if view.layout == "tokens":
        gh, gw = view.grid or (0, 0)
        if t.ndim != 3 or t.shape[1] != view.prefix + gh * gw:
            raise ValueError(f"tokens {list(t.shape)} do not fit {view.prefix} + {gh}x{gw}")
        return t[:, view.prefix:].reshape(t.shape[0], gh, gw, t.shape[2]).transpose(0, 3, 1, 2)
    if t.ndim != 4:
        raise ValueError(f"a {t.ndim}-D tensor is not a feature map")
    return t.transpose(0, 3, 1, 2) if view.layout == "NHWC" else t


def channel_axes(model: onnx.ModelProto, input_layout: str,
                 shapes: dict[str, Shape] | None = None) -> dict[str, int]:
    """The channel axis (1 or 3) of every 4-D tensor whose layout the graph tells."""
    shapes = _shapes(model) if shapes is None else shapes
    g = model.graph
    axis: dict[str, int] = {i.name: 1 if input_layout == "NCHW" else 3 for i in g.input}
    for node in g.node:
        known = [axis[i] for i in node.input if i in axis and len(shapes.get(i) or ()) == 4]
        for out in node.output:
            if len(shapes.get(out) or ()) != 4:
                continue
            if node.op_type in NCHW_OPS:
                axis[out] = 1
            elif node.op_type == "Transpose" and known:
                perm = [int(p) for p in _attr(node, "perm", [3, 2, 1, 0])]
                axis[out] = perm.index(known[0])
            elif node.op_type in KEEPS and known:
                axis[out] = known[0]
    for node in g.node:  # a pool over two axes names the spatial ones
        spatial = pooled_axes(node, shapes, g)
        if spatial and node.input[0] not in axis:
            axis[node.input[0]] = 3 if spatial == [1, 2] else 1
    return axis


def pooled_axes(node: onnx.NodeProto, shapes: dict[str, Shape], g: onnx.GraphProto) -> list[int] | None:
    """The two spatial axes a global-pooling node averages (or maxes) a 4-D tensor over, else None."""
    shape = shapes.get(node.input[0]) if node.input else None
    if shape is None or len(shape) != 4:
        return None
    if node.op_type in ("GlobalAveragePool", "GlobalMaxPool"):
        return [2, 3]
    if node.op_type in ("ReduceMean", "ReduceMax"):
        axes = _attr(node, "axes", None)
        if axes is None and len(node.input) > 1:
            axes = _constant(node.input[1], g)
        found = sorted(int(a) % 4 for a in axes) if axes is not None else None
        return found if found in ([2, 3], [1, 2]) else None
    if node.op_type == "AveragePool":
        kernel = list(_attr(node, "kernel_shape", []))
        return [2, 3] if kernel and kernel == list(shape[2:]) and not any(_attr(node, "pads", [])) else None
    return None


def view_of(model: onnx.ModelProto, tensor: str, input_layout: str,
            shapes: dict[str, Shape] | None = None) -> FeatureView:
    """How ``tensor`` maps to feature maps: its layout from the graph, or its token grid.

    Raises
    ------
    ValueError
        When the tensor is neither 4-D nor a token tensor on a patch grid.
    """
    shapes = _shapes(model) if shapes is None else shapes
    shape = shapes.get(tensor)
    if shape is not None and len(shape) == 4:
        axis = channel_axes(model, input_layout, shapes).get(tensor, 1 if input_layout == "NCHW" else 3)
        return FeatureView(tensor, "NHWC" if axis == 3 else "NCHW")
    if shape is not None and len(shape) == 3:
        found = token_grid(model, tensor, input_layout, shapes)
        if found is not None:
            return FeatureView(tensor, "tokens", found[0], found[1])
        raise ValueError(f"cannot place the {shape[1]} tokens of {tensor!r} on a patch grid")
    raise ValueError(f"{tensor!r} has shape {list(shape) if shape is not None else 'unknown'}; "
                     "a feature layer is a 4-D (N, C, h, w) / (N, h, w, C) map or (N, T, D) tokens")


def token_grid(model: onnx.ModelProto, tensor: str, input_layout: str,
               shapes: dict[str, Shape]) -> tuple[tuple[int, int], int] | None:
    """The patch grid (h, w) and leading-token count of an (N, T, D) tensor, from the last 4-D map before it.

    The map is the latest 4-D ancestor of ``tensor`` (the patch embedding) with
    h * w <= T <= h * w + 16.
    """
    t = (shapes.get(tensor) or (None,) * 3)[1]
    if not isinstance(t, int):
        return None
    producers = {o: n for n in model.graph.node for o in n.output}
    order = {o: i for i, n in enumerate(model.graph.node) for o in n.output}
    ancestors, stack = set(), [tensor]
    while stack:
        name = stack.pop()
        if name in ancestors:
            continue
        ancestors.add(name)
        if name in producers:
            stack.extend(i for i in producers[name].input if i)
    axes = channel_axes(model, input_layout, shapes)
    best = None
    for name in ancestors:
        shape = shapes.get(name)
        if shape is None or len(shape) != 4 or name not in axes:
            continue
        h, w = (shape[2], shape[3]) if axes[name] == 1 else (shape[1], shape[2])
        if isinstance(h, int) and isinstance(w, int) and h * w > 1 and 0 <= t - h * w <= MAX_PREFIX:
            if best is None or order.get(name, -1) > order.get(best[0], -1):
                best = (name, (h, w), t - h * w)
    return None if best is None else (best[1], best[2])


def _attr(node: onnx.NodeProto, name: str, default):
    for a in node.attribute:
        if a.name == name:
            return helper.get_attribute_value(a)
    return default


def _constant(name: str, g: onnx.GraphProto) -> np.ndarray | None:
    from onnx import numpy_helper

    for t in g.initializer:
        if t.name == name:
            return numpy_helper.to_array(t)
    for n in g.node:
        if n.op_type == "Constant" and n.output[0] == name and n.attribute[0].name == "value":
            return numpy_helper.to_array(n.attribute[0].t)
    return None
