"""Gradient models in standard ONNX: a classifier's outputs and the gradient of a weighted score.

``gradient_model(proto)`` returns a model with inputs ``<image input>``,
``logit_weights`` (N, K) and ``probability_weights`` (N, K), and outputs
``<original output>`` (N, K), ``gradient`` and, with ``layer``, ``activations``.
The gradient is that of ``sum(logit_weights * z + probability_weights * softmax(z))``
with respect to the image input or the named intermediate tensor, where ``z`` are the
logits (the input of a final Softmax when the model outputs probabilities). The reverse
pass is a table of per-operator rules (grad_rules*.py) emitting default-domain operators.
"""

from __future__ import annotations

import json

import numpy as np
import onnx
from onnx import TensorProto, helper

from ..errors import InputError
from . import RELU_RULES
from .grad_builder import Builder, is_float
from .grad_rules import RULES as ELEMENTWISE
from .grad_rules_nn import RULES as DENSE
from .grad_rules_pool import RULES as POOLING
from .grad_rules_index import RULES as INDEXING
from .grad_rules_math import RULES as MATH
from .grad_rules_shape import RULES as SHAPES
from .pruning import prune
from .shape_fill import infer_complete

MIN_OPSET = 17
RULES = {**ELEMENTWISE, **SHAPES, **DENSE, **POOLING, **INDEXING, **MATH}
NON_DIFFERENTIABLE = {
    "Shape", "Size", "NonZero", "ArgMax", "ArgMin", "Equal", "Greater", "Less", "GreaterOrEqual",
    "LessOrEqual", "Not", "And", "Or", "Xor", "IsNaN", "IsInf", "ConstantOfShape", "Range", "Sign",
    "Floor", "Ceil", "Round", "RandomNormalLike", "RandomUniformLike", "EyeLike", "Constant"}
NEW_NAMES = ("logit_weights", "probability_weights", "gradient", "activations")


def gradient_model(proto: onnx.ModelProto, *, layer: str | None = None,
                   relu: str = "standard") -> onnx.ModelProto:
    """Build the gradient model of an ONNX classifier.

    Parameters
    ----------
    proto : onnx.ModelProto
        A classifier with one image input and an (N, K) output (logits, or
        probabilities from a final Softmax), weights loaded.
    layer : str, optional
        Differentiate with respect to this intermediate tensor (a tensor name, or a
        node name meaning its first output) instead of the image input.
    relu : {"standard", "guided", "deconv"}
        The backward rule of Relu and Clip-as-ReLU nodes.

    Returns
    -------
    onnx.ModelProto
        Inputs: the image input as in ``proto``, ``logit_weights`` and
        ``probability_weights`` (N, K) float32. Outputs: the original output (N, K),
        ``gradient`` (shaped like the image input or the layer tensor) and, with
        ``layer``, ``activations`` (the layer tensor).

    Raises
    ------
    InputError
        Unknown ``relu`` or ``layer``, or an operator on the path from the
        differentiated tensor to the output that has no rule.
    """
    if relu not in RELU_RULES:
        raise InputError(f"relu must be one of {', '.join(RELU_RULES)}, got {relu!r}")
    model = _at_least_opset(proto)
    inferred = _inferred(model)
    g = model.graph
    image = _image_input(g)
    out = g.output[0]
    _check_names(g)
    wrt = _resolve(g, layer) if layer is not None else image.name
    b = Builder(inferred, relu)
    z, seed = _seed(b, g, out.name)
    b.path = _path(g, wrt, z, b)
    if z not in b.path:
        raise InputError(f"layer {layer!r} does not lead to the model's output {out.name!r}" if layer
                         else f"the output {out.name!r} does not depend on the input {image.name!r}")
    nodes = [_copy(n) for n in g.node]
    gradient = _reverse(b, nodes, wrt, z, seed)
    result = _assemble(model, b, nodes, image, out, gradient, wrt if layer is not None else None)
    meta = {p.key: p.value for p in model.metadata_props}
    meta["explainer.gradient"] = json.dumps({"wrt": wrt, "layer": layer, "relu": relu})
    helper.set_model_props(result, meta)
    return result


def uncovered_operators(proto: onnx.ModelProto) -> list[str]:
    """Operators on the path from the image input to the output that have no gradient rule (sorted).

    Empty when every gradient method can run on the model (``explainer inspect`` reports it).
    """
    try:
        model = _at_least_opset(proto)
        inferred = _inferred(model)
        image = _image_input(model.graph)
    except InputError:
        return ["(the graph cannot be analysed)"]
    g = model.graph
    b = Builder(inferred, "standard")
    path = _path(g, image.name, g.output[0].name, b)
    return sorted({f"{n.domain}.{n.op_type}" if n.domain else n.op_type for n in g.node
                   if any(i in path for i in n.input) and any(o in path for o in n.output)
                   and (n.domain not in ("", "ai.onnx") or n.op_type not in RULES)})


def gradient_info(proto: onnx.ModelProto, **fields) -> dict:
    """The ``explainer.gradient`` record of a gradient model, after adding ``fields`` to it."""
    meta = {p.key: p.value for p in proto.metadata_props}
    info = json.loads(meta["explainer.gradient"])
    if fields:
        info.update(fields)
        meta["explainer.gradient"] = json.dumps(info)
        del proto.metadata_props[:]
        helper.set_model_props(proto, meta)
    return info


def _at_least_opset(proto: onnx.ModelProto) -> onnx.ModelProto:
    version = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), 0)
    if version >= MIN_OPSET:
        return proto
    if version >= 13:  # 13..16 -> 17 changes no operator this exporter's models use
        model = onnx.ModelProto()
        model.CopyFrom(proto)
        for o in model.opset_import:
            if o.domain in ("", "ai.onnx"):
                o.version = MIN_OPSET
        model.ir_version = max(model.ir_version, 8)
        return model
    try:
        from onnx import version_converter

        return version_converter.convert_version(proto, MIN_OPSET)
    except Exception as e:
        raise InputError(f"cannot convert the model from opset {version} to {MIN_OPSET} "
                         f"({type(e).__name__}: {str(e).splitlines()[0][:160] if str(e) else ''})") from None


def _inferred(model: onnx.ModelProto) -> onnx.ModelProto:
    try:
        return infer_complete(model)
    except Exception as e:
        raise InputError(f"ONNX shape inference fails on this model ({type(e).__name__})") from None


def _image_input(g: onnx.GraphProto) -> onnx.ValueInfoProto:
    weights = {t.name for t in g.initializer}
    inputs = [i for i in g.input if i.name not in weights]
    if len(inputs) != 1 or not g.output:
        raise InputError(f"expected a model with one input and an output, found inputs "
                         f"{[i.name for i in inputs]} and {len(g.output)} outputs")
    return inputs[0]


def _check_names(g: onnx.GraphProto) -> None:
    taken = {i.name for i in g.input} | {o for n in g.node for o in n.output} | {t.name for t in g.initializer}
    clash = [name for name in NEW_NAMES if name in taken]
    if clash:
        raise InputError(f"the model already has tensors named {clash}; the gradient model needs these names")


def _resolve(g: onnx.GraphProto, layer: str) -> str:
    for n in g.node:
        if n.name == layer and n.output:
            return n.output[0]
    tensors = {i.name for i in g.input} | {o for n in g.node for o in n.output}
    if layer in tensors:
        return layer
    raise InputError(f"layer {layer!r} is neither a node nor a tensor of this model "
                     "(`explainer inspect` lists the layers)")


def _seed(b: Builder, g: onnx.GraphProto, out: str) -> tuple[str, str]:
    """The logits tensor z and the gradient of the weighted score with respect to it."""
    producer = next((n for n in g.node if out in n.output), None)
    shape = b.shape(out)
    if producer is not None and producer.op_type == "Softmax" and shape is not None and len(shape) == 2:
        z, p = producer.input[0], out
    else:
        z, p = out, None
    dtype = b.dtype(z)
    wl, wp = ("logit_weights", "probability_weights")
    if dtype != TensorProto.FLOAT:
        wl, wp = (b.node("Cast", [w], to=dtype) for w in (wl, wp))
    zf = z if shape is not None and len(shape) == 2 else b.node("Flatten", [z], axis=1)
    p = p or b.node("Softmax", [zf], axis=1)
    # d sum(wp * p) / dz = p * (wp - sum_j p_j wp_j), written as p * ((wp - c) + sum_j p_j (c - wp_j))
    # with c = wp at the top class: exact for any c, and the top class's term (1 - p_top for a
    # one-hot wp) is summed from the small p_j instead of cancelling to 0 when p_top rounds to 1
    c = b.node("GatherElements", [wp, b.node("ArgMax", [zf], axis=1, keepdims=1)], axis=1)
    rest = b.node("ReduceSum", [b.node("Mul", [p, b.node("Sub", [c, wp])]), b.ints([1])], keepdims=1)
    gz = b.node("Add", [wl, b.node("Mul", [p, b.node("Add", [b.node("Sub", [wp, c]), rest])])])
    return z, (gz if zf == z else b.reshape_like(gz, z))


def _path(g: onnx.GraphProto, wrt: str, z: str, b: Builder) -> set[str]:
    """Float tensors that depend on ``wrt`` and that ``z`` depends on."""
    forward = {wrt}
    for n in g.node:
        if n.op_type not in NON_DIFFERENTIABLE and any(i in forward for i in n.input if i):
            forward.update(o for o in n.output if o and is_float(b.dtype(o)))
    live = {z}
    for n in reversed(g.node):
        if any(o in live for o in n.output):
            live.update(i for i in n.input if i)
    return forward & live


def _copy(n: onnx.NodeProto) -> onnx.NodeProto:
    c = onnx.NodeProto()
    c.CopyFrom(n)
    return c


def _reverse(b: Builder, nodes: list[onnx.NodeProto], wrt: str, z: str, seed: str) -> str:
    """Run the rules from the output back to ``wrt``; return the name of d score / d wrt."""
    grads: dict[str, list[str]] = {z: [seed]}
    for node in reversed(nodes):
        if not any(i in b.path for i in node.input) or not any(o in grads for o in node.output):
            continue
        rule = RULES.get(node.op_type) if node.domain in ("", "ai.onnx") else None
        if rule is None:
            op = f"{node.domain}.{node.op_type}" if node.domain else node.op_type
            raise InputError(f"unsupported operator {op} (node {node.name!r}) on the path from "
                             f"{wrt!r} to the output: no gradient rule")
        gys = [_total(b, grads.pop(o)) if o in grads else None for o in node.output]
        for name, grad in zip(node.input, rule(b, node, gys)):
            if grad is not None and b.needs(name):
                grads.setdefault(name, []).append(grad)
    return _total(b, grads[wrt])


def _total(b: Builder, parts: list[str]) -> str:
    return parts[0] if len(parts) == 1 else b.node("Sum", parts)


def _assemble(model: onnx.ModelProto, b: Builder, nodes: list[onnx.NodeProto],
              image: onnx.ValueInfoProto, out: onnx.ValueInfoProto, gradient: str,
              layer: str | None) -> onnx.ModelProto:
    g = model.graph
    batch = image.type.tensor_type.shape.dim[0]
    rest = [d.dim_value for d in out.type.tensor_type.shape.dim[1:]]
    k = int(np.prod(rest)) if rest and all(rest) else "K"
    dims = [batch.dim_value or batch.dim_param or "N", k]
    weights = [helper.make_tensor_value_info(n, TensorProto.FLOAT, dims)
               for n in ("logit_weights", "probability_weights")]
    tail = [helper.make_node("Identity", [gradient], ["gradient"], name="grad/gradient")]
    outputs = [out, helper.make_empty_tensor_value_info("gradient")]
    wrt = layer if layer is not None else image.name
    if layer is not None:
        tail.append(helper.make_node("Identity", [layer], ["activations"], name="grad/activations"))
        outputs.append(helper.make_empty_tensor_value_info("activations"))
    outputs[1] = helper.make_tensor_value_info("gradient", b.dtype(wrt), b.shape(wrt))
    if layer is not None:
        outputs[2] = helper.make_tensor_value_info("activations", b.dtype(wrt), b.shape(wrt))
    graph = helper.make_graph(nodes + b.nodes + tail, f"{g.name}_gradient", [image] + weights, outputs,
                              list(g.initializer) + b.initializers)
    prune(graph)  # rules may leave a helper tensor unused
    result = helper.make_model(graph, opset_imports=list(model.opset_import),
                               producer_name="explainer.graph.gradients")
    result.ir_version = max(model.ir_version, 8)
    return result
