"""The convolutional prefix of a classifier graph, for incremental (Krypton-style) inference.

Pure proto -> data / proto functions: which tensors lie in the fully convolutional part
of the graph (every output position depends on a bounded window of the input), where the
graph can be cut into a chain of one-tensor-in, one-tensor-out segments, the spatial
geometry of every tensor relative to a cut, and the segments as stand-alone models.

Geometry, per spatial axis: tensor position ``o`` depends on positions
``[o * stride - lo, o * stride + hi]`` of the tensor it is measured from (positions
outside the tensor are padding).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
from onnx import helper

POINTWISE = {"Relu", "Clip", "Sigmoid", "HardSigmoid", "HardSwish", "LeakyRelu", "Elu", "Selu",
             "Tanh", "Identity", "BatchNormalization", "Dropout", "Abs", "Neg", "Exp", "Log",
             "Sqrt", "Reciprocal", "Softplus", "Erf", "Gelu", "Mish", "Celu", "ThresholdedRelu"}
BINARY = {"Add", "Sub", "Mul", "Div", "Max", "Min", "Sum", "Pow", "PRelu"}
WINDOWED = {"Conv", "MaxPool", "AveragePool"}
OUT_COST, IN_COST, COPY_COST = 170.0, 80.0, 60.0
"""The cost model, in dense-convolution multiply-adds: per value a window op writes and
reads (ONNX Runtime's CPU kernels are memory-bound outside dense convolutions: fitted to a
per-node profile of the bundled model, benchmarks/RESULTS.md) and per value copied by NumPy.
Depthwise convolutions cost only their reads and writes."""


@dataclass(frozen=True)
class Geometry:
    """(stride, lo, hi) per spatial axis, each an (2,) int array, as in the module doc."""

    stride: np.ndarray
    lo: np.ndarray
    hi: np.ndarray


@dataclass(frozen=True)
class Step:
    """One node of the convolutional prefix.

    Attributes
    ----------
    index : position of the node in the graph
    output : its (first) output tensor
    cost : cost-model units (OUT_COST) per output position
    """

    index: int
    output: str
    cost: float


@dataclass(frozen=True)
class Prefix:
    """The convolutional prefix of a graph.

    Attributes
    ----------
    input : the image input's name
    steps : nodes of the prefix in graph order
    cuts : tensors (the input first) through which every path to the output passes,
        in graph order; a chain of segments between cuts is the same function
    shapes : (C, H, W) of every prefix tensor at the model's input size
    stop : why the prefix ends (the first node that is not convolutional)
    tail_cost : cost estimate of the nodes after the prefix (multiply-adds)
    """

    input: str
    steps: tuple[Step, ...]
    cuts: tuple[str, ...]
    shapes: dict[str, tuple[int, int, int]]
    stop: str
    tail_cost: float
    model: onnx.ModelProto


def _attrs(node: onnx.NodeProto) -> dict:
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def _constants(graph: onnx.GraphProto) -> dict[str, tuple[int, ...]]:
    shapes = {i.name: tuple(i.dims) for i in graph.initializer}
    for n in graph.node:
        if n.op_type == "Constant" and n.output:
            value = _attrs(n).get("value")
            shapes[n.output[0]] = tuple(value.dims) if value is not None else ()
    return shapes


def _window(node: onnx.NodeProto, weights: dict[str, tuple[int, ...]]) -> tuple | None:
    """(kernel extent, stride, pad before) per axis of a Conv/pool, or None if unsupported."""
    a = _attrs(node)
    if a.get("auto_pad", b"NOTSET") not in (b"NOTSET", b"VALID", "NOTSET", "VALID") or a.get("ceil_mode", 0):
        return None
    if node.op_type == "Conv":
        if len(node.input) < 2 or node.input[1] not in weights or len(weights[node.input[1]]) != 4:
            return None
        kernel = weights[node.input[1]][2:]
    else:
        if len(node.output) > 1 and node.output[1]:
            return None
        kernel = tuple(a.get("kernel_shape", ()))
    if len(kernel) != 2:
        return None
    strides = tuple(a.get("strides", (1, 1)))
    dil = tuple(a.get("dilations", (1, 1)))
    pads = tuple(a.get("pads", (0, 0, 0, 0)))
    extent = np.array([(k - 1) * d + 1 for k, d in zip(kernel, dil)])
    return extent, np.array(strides), np.array(pads[:2])


def compose(g: Geometry, extent: np.ndarray, stride: np.ndarray, pad: np.ndarray) -> Geometry:
    """Geometry after a window op (extent, stride, pad before) applied to a ``g`` tensor."""
    return Geometry(g.stride * stride, g.lo + pad * g.stride, g.hi + (extent - 1 - pad) * g.stride)


def _merge(gs: list[Geometry]) -> Geometry | None:
    if any((g.stride != gs[0].stride).any() for g in gs):
        return None
    return Geometry(gs[0].stride, np.max([g.lo for g in gs], 0), np.max([g.hi for g in gs], 0))


def _step(node: onnx.NodeProto, geo: dict[str, Geometry], consts: dict[str, tuple[int, ...]],
          shapes: dict[str, tuple[int, int, int]]) -> tuple[Geometry, tuple[int, int, int], float] | None:
    """Geometry, (C, H, W) and per-position cost of a prefix node's output (None: not convolutional)."""
    data = [i for i in node.input if i and i not in consts]
    if not data or any(i not in geo for i in data) or len([o for o in node.output if o]) != 1:
        return None
    op = node.op_type
    if any(i in consts and len(consts[i]) >= 2 and any(d > 1 for d in consts[i][-2:])
           for i in node.input if i) and op != "Conv":
        return None  # a constant with a spatial extent (e.g. a position table)
    c, h, w = shapes[data[0]]
    if op in POINTWISE or (op in BINARY | {"Concat"}):
        if op == "Concat" and _attrs(node).get("axis") not in (1, -3):
            return None
        merged = _merge([geo[i] for i in data])
        if merged is None or any(shapes[i][1:] != (h, w) for i in data):
            return None
        c = sum(shapes[i][0] for i in data) if op == "Concat" else max(shapes[i][0] for i in data)
        return merged, (c, h, w), IN_COST * c * len(data)
    if op not in WINDOWED or len(data) != 1:
        return None
    window = _window(node, consts)
    if window is None:
        return None
    extent, stride, pad = window
    pads_all = np.array(_attrs(node).get("pads", (0, 0, 0, 0)))
    size = (np.array([h, w]) + pads_all[:2] + pads_all[2:] - extent) // stride + 1
    if (size < 1).any():
        return None
    cin, macs = c, 0.0
    if op == "Conv":
        cout, cin_g = consts[node.input[1]][:2]
        macs = 0.0 if cin_g == 1 else float(cout * cin_g * np.prod(extent))
        c = int(cout)
    cost = macs + OUT_COST * c + IN_COST * cin * float(np.prod(stride))
    return compose(geo[data[0]], extent, stride, pad), (c, int(size[0]), int(size[1])), cost


def prefix(model: onnx.ModelProto, image_input: str) -> Prefix:
    """Find the convolutional prefix, its cut tensors and their shapes.

    Parameters
    ----------
    model : an NCHW classifier with fixed input height and width
    image_input : the name of its image input
    """
    g = model.graph
    consts = _constants(g)
    dims = [d.dim_value for d in next(i for i in g.input if i.name == image_input).type.tensor_type.shape.dim]
    one = np.ones(2, int)
    geo = {image_input: Geometry(one, 0 * one, 0 * one)}
    shapes = {image_input: (int(dims[1]), int(dims[2]), int(dims[3]))}
    steps: list[Step] = []
    stop, tail = "", 0.0
    for index, node in enumerate(g.node):
        if node.op_type == "Constant":
            continue
        found = _step(node, geo, consts, shapes) if not stop else None
        if found is None:
            if not stop and any(i in geo for i in node.input):
                stop = f"{node.op_type} node {node.name or node.output[0]!r}"
            tail += _tail_cost(node, consts)
            continue
        geo[node.output[0]], shapes[node.output[0]], cost = found
        steps.append(Step(index, node.output[0], cost))
    cuts = _cuts(g, image_input, {s.output for s in steps}, consts)
    return Prefix(image_input, tuple(steps), cuts, shapes, stop or "the graph output", tail, model)


def _tail_cost(node: onnx.NodeProto, consts: dict[str, tuple[int, ...]]) -> float:
    if node.op_type in ("Gemm", "MatMul") and len(node.input) > 1 and node.input[1] in consts:
        return float(np.prod(consts[node.input[1]]))
    return 0.0


def _cuts(g: onnx.GraphProto, image_input: str, region: set[str], consts: dict) -> tuple[str, ...]:
    """Region tensors that are the only live activation at their point in the graph order."""
    last_use: dict[str, int] = {}
    nodes = [n for n in g.node if n.op_type != "Constant"]
    for i, n in enumerate(nodes):
        for t in n.input:
            if t and t not in consts:
                last_use[t] = i
    outputs = {o.name for o in g.output}
    cuts, live = [image_input], {image_input}
    for i, n in enumerate(nodes):
        live |= {o for o in n.output if o}
        live = {t for t in live if last_use.get(t, -1) > i or t in outputs}
        if len(live) == 1 and n.output[0] in live and n.output[0] in region:
            cuts.append(n.output[0])
    return tuple(cuts)


def relative(pre: Prefix, start: str, absolute: dict[str, Geometry] | None = None) -> dict[str, Geometry]:
    """Geometry of every prefix tensor after the cut ``start``, measured from ``start``.

    ``absolute`` (this function's result for ``pre.input``), when given, is rebased
    instead of walking the graph again: every path from the input to a later tensor
    passes through the cut, so a geometry measured from the input is the cut's composed
    with the one measured from the cut (strides multiply, extents add scaled by the
    cut's stride), and the latter follows exactly.
    """
    one = np.ones(2, int)
    geo = {start: Geometry(one, 0 * one, 0 * one)}
    begin = -1 if start == pre.input else next(s.index for s in pre.steps if s.output == start)
    if absolute is not None and start != pre.input:
        base = absolute[start]
        for s in pre.steps:
            g = absolute.get(s.output) if s.index > begin else None
            if g is not None:
                geo[s.output] = Geometry(g.stride // base.stride, (g.lo - base.lo) // base.stride,
                                         (g.hi - base.hi) // base.stride)
        return geo
    consts = _constants(pre.model.graph)
    for s in pre.steps:
        if s.index > begin:
            found = _step(pre.model.graph.node[s.index], geo, consts, pre.shapes)
            if found is not None:
                geo[s.output] = found[0]
    return geo


def segment(pre: Prefix, start: str, end: str | None) -> onnx.ModelProto:
    """The nodes from cut ``start`` to cut ``end`` (None: to the graph outputs) as a model.

    The segment's input keeps the channel count; batch, height and width are free, so it
    runs on crops. Initializers and Constant nodes are copied only where used.
    """
    g = pre.model.graph
    begin = -1 if start == pre.input else next(s.index for s in pre.steps if s.output == start)
    stop = len(g.node) if end is None else next(s.index for s in pre.steps if s.output == end) + 1
    body = [n for n in list(g.node)[begin + 1:stop] if n.op_type != "Constant"]
    used = {i for n in body for i in n.input if i}
    consts = [n for n in g.node if n.op_type == "Constant" and n.output[0] in used]
    inits = [i for i in g.initializer if i.name in used]
    c = pre.shapes[start][0]
    x = helper.make_tensor_value_info(start, onnx.TensorProto.FLOAT, ["n", c, "h", "w"])
    if end is None:
        outs = list(g.output)
    else:
        outs = [helper.make_tensor_value_info(end, onnx.TensorProto.FLOAT, ["n", pre.shapes[end][0], "oh", "ow"])]
    graph = helper.make_graph(consts + body, f"segment_{len(body)}", [x], outs, inits)
    out = helper.make_model(graph, opset_imports=list(pre.model.opset_import))
    out.ir_version = pre.model.ir_version
    return out


def with_cut_outputs(pre: Prefix, tensors: list[str]) -> onnx.ModelProto:
    """A copy of the whole model that also outputs the given cut tensors (for the cache)."""
    out = onnx.ModelProto()
    out.CopyFrom(pre.model)
    for t in tensors:
        if t != pre.input and t not in {o.name for o in out.graph.output}:
            out.graph.output.append(helper.make_tensor_value_info(t, onnx.TensorProto.FLOAT, None))
    return out

