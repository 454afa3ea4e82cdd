"""Intermediate tensors of a classifier as extra ONNX outputs (proto in, proto out)."""

from __future__ import annotations

from typing import Sequence

import onnx
from onnx import helper

from ..errors import InputError
from .outputs import resolve_tensor, tensor_rank


def with_outputs(proto: onnx.ModelProto, names: Sequence[str]) -> onnx.ModelProto:
    """A copy of ``proto`` that also outputs the named layers' tensors.

    The original outputs stay first and unchanged, so the copy is still the same
    classifier; each name (a node or a tensor, as ``explainer inspect`` lists them)
    adds its tensor as an output of the same name, in the order given.
    """
    if not names:
        raise InputError("give at least one layer")
    out = onnx.ModelProto()
    out.CopyFrom(proto)
    present = {o.name for o in out.graph.output}
    known = _value_infos(proto)
    for name in names:
        tensor = resolve_tensor(out, name)
        if tensor in present:
            continue
        if tensor in known:
            out.graph.output.append(known[tensor])
        else:
            rank, elem = tensor_rank(proto, tensor)
            dims = [f"d{i}" for i in range(rank)] if rank is not None else None
            out.graph.output.append(helper.make_tensor_value_info(tensor, elem, dims))
        present.add(tensor)
    return out


def _value_infos(proto: onnx.ModelProto) -> dict[str, onnx.ValueInfoProto]:
    """Inferred type and shape of every intermediate tensor (empty when inference fails)."""
    try:
        inferred = onnx.shape_inference.infer_shapes(proto)
    except Exception:  # shape inference is best effort
        return {}
    return {vi.name: vi for vi in inferred.graph.value_info
            if vi.type.tensor_type.HasField("shape")}
