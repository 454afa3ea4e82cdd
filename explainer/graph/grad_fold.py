"""Export-time values of small integer subgraphs (Shape -> Gather -> Unsqueeze -> Concat chains).

Exporters compute pads, slice starts, reshape targets and resize scales in the graph. A
rule that needs such a value at export time asks :func:`fold`: the subgraph producing it
is evaluated by onnx's reference evaluator when it reads only constants and the shapes of
tensors whose shape inference found fixed sizes. Anything else stays a run-time value.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import onnx
from onnx import helper, numpy_helper

MAX_NODES = 64
MAX_ELEMENTS = 4096


def fold(name: str, producers: dict[str, onnx.NodeProto], constant: Callable[[str], np.ndarray | None],
         static_shape: Callable[[str], tuple | None], opset: int = 17) -> np.ndarray | None:
    """The value of tensor ``name`` when it is computable at export time, else None.

    Parameters
    ----------
    producers : tensor name -> the node producing it
    constant : the value of an initializer or Constant output (None when not one)
    static_shape : the fully known shape of a tensor (None when a size is not fixed)
    opset : the model's default-domain opset
    """
    nodes: list[onnx.NodeProto] = []
    feeds: dict[str, np.ndarray] = {}
    seen: set[str] = set()
    stack = [name]
    while stack:
        t = stack.pop()
        if not t or t in seen:
            continue
        seen.add(t)
        value = constant(t)
        if value is not None:
            if value.size > MAX_ELEMENTS:
                return None
            feeds[t] = value
            continue
        node = producers.get(t)
        if node is None or node.domain not in ("", "ai.onnx") or len(nodes) >= MAX_NODES:
            return None
        if node.op_type == "Shape":
            shape = static_shape(node.input[0])
            if shape is None:
                return None
            full = np.asarray(shape, np.int64)
            start = next((a.i for a in node.attribute if a.name == "start"), 0)
            end = next((a.i for a in node.attribute if a.name == "end"), len(full))
            feeds[t] = full[start:end]
            continue
        if node.op_type in ("Size",):
            shape = static_shape(node.input[0])
            if shape is None:
                return None
            feeds[t] = np.asarray(int(np.prod(shape)), np.int64)
            continue
        if any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for a in node.attribute):
            return None
        nodes.append(node)
        stack.extend(node.input)
    if not nodes:
        return feeds.get(name)
    return _evaluate(list(reversed(nodes)), feeds, name, opset)


def _evaluate(nodes: list[onnx.NodeProto], feeds: dict[str, np.ndarray], name: str,
              opset: int) -> np.ndarray | None:
    from onnx.reference import ReferenceEvaluator

    order = _topological(nodes, set(feeds))
    if order is None:
        return None
    inits = [numpy_helper.from_array(np.asarray(v), k) for k, v in feeds.items()]
    graph = helper.make_graph(order, "fold", [], [helper.make_empty_tensor_value_info(name)], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    try:
        out = ReferenceEvaluator(model).run(None, {})[0]
    except Exception:  # noqa: BLE001 - an unfoldable subgraph stays a run-time value
        return None
    out = np.asarray(out)
    return out if out.size <= MAX_ELEMENTS else None


def _topological(nodes: list[onnx.NodeProto], ready: set[str]) -> list[onnx.NodeProto] | None:
    done, order, todo = set(ready), [], list(nodes)
    while todo:
        progress = [n for n in todo if all(not i or i in done for i in n.input)]
        if not progress:
            return None
        for n in progress:
            order.append(n)
            done.update(n.output)
            todo.remove(n)
    return order
