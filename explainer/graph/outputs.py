"""Derived ONNX models whose outputs are intermediate tensors of a classifier."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper

from ..errors import InputError
from .pruning import prune  # noqa: F401  (re-exported)

MEANS_OUTPUT = "explainer_layer_means"


def resolve_tensor(model: onnx.ModelProto, name: str) -> str:
    """The tensor a layer name refers to.

    ``name`` is a tensor produced by a node (as ``explainer inspect`` lists in
    its "output" column) or a node's name, which stands for its first output.
    """
    produced = [out for node in model.graph.node for out in node.output if out]
    if name in produced:
        return name
    for node in model.graph.node:
        if node.name and node.name == name and node.output:
            return node.output[0]
    raise InputError(f"layer {name!r} is not a node or tensor of this model "
                     "(`explainer inspect` lists them)")


def tensor_rank(model: onnx.ModelProto, tensor: str) -> tuple[int | None, int]:
    """Rank (None when unknown) and element type of ``tensor``, by shape inference."""
    try:
        inferred = onnx.shape_inference.infer_shapes(model)
    except Exception:  # shape inference is best effort
        return None, onnx.TensorProto.FLOAT
    g = inferred.graph
    for vi in list(g.value_info) + list(g.output):
        if vi.name == tensor and vi.type.tensor_type.HasField("shape"):
            return len(vi.type.tensor_type.shape.dim), vi.type.tensor_type.elem_type
    return None, onnx.TensorProto.FLOAT


def layer_means_model(model: onnx.ModelProto, layer: str, channels_last: bool = False) -> onnx.ModelProto:
    """A model whose output is the spatial mean of one intermediate tensor.

    For a tensor of shape (N, C, H, W) (or any (N, C, ...)), the output
    ``explainer_layer_means`` is (N, C): GlobalAveragePool then Flatten, i.e.
    the mean of each feature map, the quantity the prediction difference analysis
    explains for hidden units (Zintgraf et al. 2017, section 3.3). A (N, C)
    tensor (a fully connected layer) is output as it is. The rest of the graph
    past the tensor is pruned; metadata (preprocessing) is kept.

    Parameters
    ----------
    model : onnx.ModelProto, the classifier (not modified)
    layer : str, a tensor name or a node name (its first output)

    Returns
    -------
    onnx.ModelProto
    """
    tensor = resolve_tensor(model, layer)
    rank, elem_type = tensor_rank(model, tensor)
    if rank is None or rank < 2:
        raise InputError(f"layer {layer!r}: cannot use tensor {tensor!r} of rank {rank}; "
                         "a hidden unit needs an (N, C) or (N, C, H, W) tensor")
    derived = onnx.ModelProto()
    derived.CopyFrom(model)
    g = derived.graph
    if rank == 2:
        g.node.append(helper.make_node("Identity", [tensor], [MEANS_OUTPUT], name="explainer_means"))
    elif channels_last:  # (N, ..., C): the mean over the axes between
        axes = list(range(1, rank - 1))
        opset = next((o.version for o in derived.opset_import if o.domain in ("", "ai.onnx")), 17)
        if opset >= 18:
            g.initializer.append(onnx.numpy_helper.from_array(np.asarray(axes, np.int64), MEANS_OUTPUT + "_axes"))
            g.node.append(helper.make_node("ReduceMean", [tensor, MEANS_OUTPUT + "_axes"], [MEANS_OUTPUT],
                                           name="explainer_means", keepdims=0))
        else:
            g.node.append(helper.make_node("ReduceMean", [tensor], [MEANS_OUTPUT], name="explainer_means",
                                           axes=axes, keepdims=0))
    else:
        pooled = MEANS_OUTPUT + "_pooled"
        g.node.append(helper.make_node("GlobalAveragePool", [tensor], [pooled], name="explainer_gap"))
        g.node.append(helper.make_node("Flatten", [pooled], [MEANS_OUTPUT], name="explainer_flatten", axis=1))
    del g.output[:]
    g.output.append(helper.make_tensor_value_info(MEANS_OUTPUT, elem_type, None))
    prune(g)
    try:  # (N, C) where inference knows C: a deployed gradient model of it needs the size
        inferred = onnx.shape_inference.infer_shapes(derived)
        known = next((v for v in list(inferred.graph.value_info) + list(inferred.graph.output)
                      if v.name == MEANS_OUTPUT and v.type.tensor_type.HasField("shape")), None)
        if known is not None:
            g.output[0].CopyFrom(known)
    except Exception:  # noqa: BLE001 - inference is optional here (e.g. a model over 2 GiB)
        pass
    kept = [p for p in derived.metadata_props if p.key not in ("explainer.labels", "explainer.output")]
    del derived.metadata_props[:]
    derived.metadata_props.extend(kept)
    return derived


def objective_gradient_model(forward: onnx.ModelProto, layer: str | None = None, relu: str = "standard",
                             dream_layer: str | None = None) -> onnx.ModelProto:
    """The gradient model of ``forward`` (w.r.t. ``layer``), or of ``dream_layer``'s channel means."""
    from .gradients import gradient_info, gradient_model

    if dream_layer is None:
        return gradient_model(forward, layer=layer, relu=relu)
    if layer is not None or relu != "standard":
        raise InputError("--dream-layer takes no --layer and no --relu")
    proto = gradient_model(layer_means_model(forward, dream_layer))
    gradient_info(proto, objective="layer_means", of=dream_layer)
    return proto
