"""Intermediate tensors of a classifier as extra ONNX outputs, and running them."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np
import onnx
from onnx import helper

from ..backends.base import Model, batch_slices, to_layout
from ..errors import InputError
from .outputs import resolve_tensor, tensor_rank

_SESSIONS: dict[tuple[str, str, tuple[str, ...]], tuple[Any, tuple[str, ...]]] = {}


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


def _session(model: Model, layers: tuple[str, ...]) -> tuple[Any, tuple[str, ...]]:
    """A cached in-process session of the model with the layers as outputs, and their tensors."""
    import onnxruntime as ort

    from ..backends.onnx_safety import read_onnx

    path = Path(model.spec.source)
    key = (str(path), model.spec.sha256, layers)
    if key not in _SESSIONS:
        proto = read_onnx(path)
        if any(i.data_location == onnx.TensorProto.EXTERNAL for i in proto.graph.initializer):
            raise InputError(f"{path}: activations of a model with external data need "
                             "`explainer export-layers` first")
        tensors = tuple(resolve_tensor(proto, name) for name in layers)
        providers = getattr(model, "providers", None) or ["CPUExecutionProvider"]
        derived = with_outputs(proto, tensors).SerializeToString()
        _SESSIONS.clear()  # one derived model at a time
        _SESSIONS[key] = (ort.InferenceSession(derived, providers=list(providers)), tensors)
    return _SESSIONS[key]


def layer_activations(model: Model, batch: np.ndarray, layers: Sequence[str], *,
                      mini_batch_size: int = 64) -> dict[str, np.ndarray]:
    """The named layers' tensors for a batch.

    A backend that serves activations itself (a ``layer_activations(batch, layers)``
    method, e.g. Triton with a model exported by ``explainer export-layers``) is
    asked directly; an ONNX Runtime model gets a derived in-process session.

    Parameters
    ----------
    model : Model
    batch : (N, C, H, W) float32 ndarray, NCHW
    layers : node or tensor names

    Returns
    -------
    dict of layer name to (N, ...) float32 ndarray, as the model computes it (a
    4-D tensor is (N, C, h, w) for NCHW models).
    """
    if hasattr(model, "layer_activations"):
        return model.layer_activations(batch, list(layers))
    path = Path(model.spec.source)
    if not path.is_file():
        raise InputError(f"activations need an ONNX file or a backend that serves them, "
                         f"not {model.spec.source!r}")
    session, tensors = _session(model, tuple(layers))
    feed_type = session.get_inputs()[0].type
    dtype = np.float16 if "float16" in feed_type else np.float64 if "double" in feed_type else np.float32
    parts: dict[str, list[np.ndarray]] = {name: [] for name in layers}
    for s in batch_slices(len(batch), mini_batch_size):
        feed = to_layout(np.asarray(batch[s], dtype=np.float32), model.spec.preprocessing.layout)
        outs = session.run(list(tensors), {model.spec.input_name: feed.astype(dtype)})
        for name, value in zip(layers, outs):
            parts[name].append(np.asarray(value, dtype=np.float32))
    return {name: np.concatenate(v, axis=0) for name, v in parts.items()}


def export_layers(source: str | Path, layers: Sequence[str], out: str | Path) -> Path:
    """Write a copy of an ONNX classifier that also outputs ``layers`` (for serving).

    Raises InputError when ``out`` is the source file itself.
    """
    from ..backends.onnx_safety import read_onnx

    src, dst = Path(source), Path(out)
    if dst.resolve() == src.resolve():
        raise InputError(f"--out {dst} would overwrite the model itself")
    proto = read_onnx(src)
    if any(i.data_location == onnx.TensorProto.EXTERNAL for i in proto.graph.initializer):
        raise InputError(f"{src}: models with external data are not supported by export-layers")
    derived = with_outputs(proto, layers)
    onnx.checker.check_model(derived)
    dst.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(derived, str(dst))
    return dst
