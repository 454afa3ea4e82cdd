"""Shape inference that also gets through run-time reshape targets.

ONNX shape inference gives up on a Reshape or Expand whose target
shape is computed from ``Shape`` of a tensor with a symbolic size (a dynamic batch), and
every tensor after it loses its rank. Such a target is a short integer vector; evaluating
its subgraph twice, with each symbolic size replaced by two different numbers, tells its
length (the output's rank) and which of its entries are fixed (equal in both runs). That
partial shape is written into the graph's ``value_info`` and inference is run again.
"""

from __future__ import annotations

import onnx
from onnx import helper

from .grad_fold import fold

TARGETS = {"Reshape": 1, "Expand": 1}
SUBSTITUTES = (7, 11)
ROUNDS = 4


def infer_complete(model: onnx.ModelProto) -> onnx.ModelProto:
    """``onnx.shape_inference.infer_shapes(model, data_prop=True)``, completed as the module says."""
    inferred = onnx.shape_inference.infer_shapes(model, data_prop=True)
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 17)
    for _ in range(ROUNDS):
        known = _known(inferred)
        added = _partial_shapes(inferred, known, opset)
        if not added:
            break
        trial = onnx.ModelProto()
        trial.CopyFrom(inferred)
        names = {vi.name for vi in added}
        kept = [vi for vi in trial.graph.value_info if vi.name not in names]
        del trial.graph.value_info[:]
        trial.graph.value_info.extend(kept + added)
        try:
            inferred = onnx.shape_inference.infer_shapes(trial, data_prop=True)
        except Exception:  # noqa: BLE001 - a partial shape inference rejects: keep what was inferred
            break
    return inferred


def _known(model: onnx.ModelProto) -> dict[str, tuple]:
    g = model.graph
    out = {}
    for vi in list(g.input) + list(g.value_info) + list(g.output):
        tt = vi.type.tensor_type
        if tt.HasField("shape"):
            out[vi.name] = tuple(d.dim_value if d.HasField("dim_value") else None for d in tt.shape.dim)
    for t in g.initializer:
        out[t.name] = tuple(t.dims)
    return out


def _partial_shapes(model: onnx.ModelProto, known: dict[str, tuple], opset: int) -> list[onnx.ValueInfoProto]:
    g = model.graph
    producers = {o: n for n in g.node for o in n.output if o}
    values = {t.name: onnx.numpy_helper.to_array(t) for t in g.initializer}
    for n in g.node:
        if n.op_type == "Constant" and n.output and n.attribute and n.attribute[0].name == "value":
            values[n.output[0]] = onnx.numpy_helper.to_array(n.attribute[0].t)
    added = []
    outputs = {o.name for o in g.output}
    types = {vi.name: vi.type.tensor_type.elem_type for vi in list(g.input) + list(g.value_info)}
    types.update({t.name: t.data_type for t in g.initializer})
    for n in g.node:
        index = TARGETS.get(n.op_type)
        if index is None or len(n.input) <= index or not n.output or n.output[0] in outputs:
            continue
        before = known.get(n.output[0])
        if before is not None and all(before):
            continue
        runs = []
        for s in SUBSTITUTES:
            def static(name: str, s: int = s) -> tuple | None:
                shape = known.get(name)
                return None if shape is None else tuple(d if d else s for d in shape)
            runs.append(fold(n.input[index], producers, values.get, static, opset))
        if any(r is None or r.ndim != 1 for r in runs) or len(runs[0]) != len(runs[1]):
            continue
        dims = [int(a) if a == b and a > 0 else None for a, b in zip(runs[0].tolist(), runs[1].tolist())]
        if n.op_type == "Reshape":  # 0 copies the input's size, -1 is inferred: sizes not known here
            dims = [d if d not in (0, -1) else None for d in dims]
        else:  # Expand broadcasts its input (right-aligned) with the target
            shape = known.get(n.input[0])
            if shape is None:
                continue
            lead = max(len(dims), len(shape))
            dims = [None] * (lead - len(dims)) + dims
            shape = (1,) * (lead - len(shape)) + tuple(shape)
            dims = [s if isinstance(s, int) and s > 1 else (d if s == 1 else None) for d, s in zip(dims, shape)]
        elem = types.get(n.input[0], 0)
        if not elem:
            continue
        if before is not None and (len(before) != len(dims) or sum(map(bool, dims)) <= sum(map(bool, before))):
            continue  # nothing new (or a disagreement: inference's word stands)
        names = [d if d is not None else f"{n.output[0]}_d{i}" for i, d in enumerate(dims)]
        added.append(helper.make_tensor_value_info(n.output[0], elem, names))
    return added
