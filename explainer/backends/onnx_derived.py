"""What an OnnxModel derives from its ONNX file: layer tensors, layer-mean gradients, hidden units, heads.

Every derived session lives in the model's one cache (``OnnxModel.derived``), keyed by
what it computes; the graph surgery is :mod:`explainer.graph` (proto in, proto out).
"""

from __future__ import annotations

import dataclasses
import tempfile
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import onnx

from ..errors import InputError
from ..graph.activations import with_outputs
from ..graph.heads import cam_weights
from ..graph.feature_default import Attention, attention as find_attention, default_feature
from ..graph.features import FeatureView, view_of
from ..graph.inspect import layers
from ..graph.outputs import MEANS_OUTPUT, layer_means_model, resolve_tensor
from .base import batch_slices
from .cpu_parallel import session_options
from .feed import feed_array
from .isolation import run_with_deadline
from .onnx_safety import in_memory_bytes, load_in_memory, read_onnx


def load_with_weights(path: Path) -> onnx.ModelProto:
    """The model with its external data read into memory from the checked model folder."""
    return load_in_memory(path)


def _new_session(proto: onnx.ModelProto, providers: Sequence[str], what: str) -> Any:
    import onnxruntime as ort

    try:
        data = in_memory_bytes(proto, what)
        return ort.InferenceSession(data, session_options(), providers=list(providers))
    except InputError:
        raise
    except Exception as e:
        raise InputError(f"ONNX Runtime cannot load the {what} ({str(e).splitlines()[0][:200]})") from None


def activations(model: Any, batch: np.ndarray, names: Sequence[str], *,
                mini_batch_size: int = 64) -> dict[str, np.ndarray]:
    """The named layers' tensors (N, ...) float32 for an NCHW batch, as the model computes them."""
    names = tuple(names)
    key = ("layers", names)
    if key not in model.derived:
        proto = load_in_memory(model.path)
        tensors = tuple(resolve_tensor(proto, name) for name in names)
        for old in [k for k in model.derived if k[0] == "layers"]:
            del model.derived[old]  # one layers model at a time
        model.derived[key] = (_new_session(with_outputs(proto, tensors), model.providers, "layers model"), tensors)
    session, tensors = model.derived[key]
    parts: dict[str, list[np.ndarray]] = {name: [] for name in names}
    for s in batch_slices(len(batch), mini_batch_size):
        outs = run_with_deadline(session, list(tensors), {model.spec.input_name: feed_array(model, batch[s])},
                                 str(model.path))
        for name, value in zip(names, outs):
            parts[name].append(np.asarray(value, dtype=np.float32))
    return {name: np.concatenate(v, axis=0) for name, v in parts.items()}


def layer_channels(model: Any, layer: str) -> int:
    """C, the channels of ``layer``'s tensor by shape inference (channels last for NHWC models)."""
    proto = load_with_weights(model.path)
    tensor = resolve_tensor(proto, layer)
    shape = next((lay.shape for lay in layers(proto) if lay.output == tensor), None)
    axis = len(shape) - 1 if shape is not None and _channels_last(model, layer) else 1
    if shape is None or len(shape) < 2 or not isinstance(shape[axis], int):
        raise InputError(f"layer {layer!r}: cannot tell its number of channels (shape {shape})")
    return int(shape[axis])


def _channels_last(model: Any, layer: str) -> bool:
    """Whether ``layer``'s channels are its last axis: an NHWC map, or (N, T, D) tokens on a grid."""
    proto = read_onnx(model.path)
    tensor = resolve_tensor(proto, layer)
    shape = next((lay.shape for lay in layers(proto) if lay.output == tensor), None)
    if shape is None or len(shape) not in (3, 4):
        return False
    try:
        return feature_view(model, layer).layout in ("NHWC", "tokens")
    except InputError:  # 3-D but not tokens on a grid
        return False


def layer_mean_gradients(model: Any, batch: np.ndarray, weights: np.ndarray,
                         layer: str) -> tuple[np.ndarray, np.ndarray]:
    """Channel means of ``layer`` (N, C') and d sum(weights * means) / d input (N, C, H, W)."""
    key = ("layer_means", layer)
    if key not in model.derived:
        from ..graph.gradients import gradient_model  # the builder, imported when used

        derived = gradient_model(layer_means_model(load_with_weights(model.path), layer,
                                                   channels_last=_channels_last(model, layer)))
        model.derived[key] = _new_session(derived, model.providers, "layer-mean gradient model")
    session, spec = model.derived[key], model.spec
    n, count = len(batch), weights.shape[1]
    means, grads = [], []
    for s in batch_slices(n, spec.fixed_batch_size or n or 1):
        m = s.stop - s.start
        pad = (spec.fixed_batch_size or m) - m
        wl = np.zeros((m + pad, count), np.float32)
        wl[:m] = weights[s]
        feed = {spec.input_name: feed_array(model, np.pad(batch[s], [(0, pad)] + [(0, 0)] * 3)),
                "logit_weights": wl, "probability_weights": np.zeros_like(wl)}
        got_means, grad = run_with_deadline(session, [MEANS_OUTPUT, "gradient"], feed, str(model.path))
        grad = np.asarray(grad, np.float32)[:m]
        grads.append(grad.transpose(0, 3, 1, 2) if spec.preprocessing.layout == "NHWC" else grad)
        means.append(np.asarray(got_means, np.float32).reshape(m + pad, -1)[:m])
    return np.concatenate(means), np.concatenate(grads)


def feature_layer(model: Any) -> str:
    """The default feature layer of the ONNX file (graph/features.py states the rule)."""
    found = default_feature(read_onnx(model.path), model.spec.preprocessing.layout)
    if found is None:
        raise InputError("this model has no default feature layer; name one with --feature-layer "
                         "(grad-cam) or --layer (activations, deep-dream); `explainer inspect` lists the layers")
    return found[0].name


def attention(model: Any) -> Attention:
    """The attention Softmax tensors and the token grid of the ONNX file (kept for the model)."""
    key = ("attention",)
    if key not in model.derived:
        model.derived[key] = find_attention(read_onnx(model.path), model.spec.preprocessing.layout)
    return model.derived[key]


def logits_tensor(model: Any) -> str | None:
    """The input z of a final Softmax over the class axis (the logits), else None."""
    proto = read_onnx(model.path)
    node = next((n for n in proto.graph.node if model.spec.output_name in n.output), None)
    if node is None or node.op_type != "Softmax":
        return None
    rank = len(proto.graph.output[0].type.tensor_type.shape.dim) or 2
    opset = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), 13)
    axis = next((a.i for a in node.attribute if a.name == "axis"), -1 if opset >= 13 else 1)
    return node.input[0] if axis % rank == rank - 1 else None


def feature_view(model: Any, layer: str) -> FeatureView:
    """How ``layer`` maps to (N, C, h, w) maps (its graph layout, or its token grid)."""
    key = ("feature_view", layer)
    if key not in model.derived:
        proto = read_onnx(model.path)
        try:
            model.derived[key] = view_of(proto, resolve_tensor(proto, layer), model.spec.preprocessing.layout)
        except ValueError as e:
            if isinstance(e, InputError):
                raise
            raise InputError(f"layer {layer!r}: {e}") from None
    return model.derived[key]


def linear_head(model: Any) -> tuple[str, np.ndarray]:
    """The feature tensor before global average pooling and the FC weights (K, C)."""
    return cam_weights(load_in_memory(model.path))


def hidden_unit_model(model: Any, layer: str) -> Any:
    """An OnnxModel whose outputs are the feature-map means of ``layer`` (N, C), same device and preprocessing."""
    derived = layer_means_model(load_in_memory(model.path), layer, channels_last=_channels_last(model, layer))
    pre = model.spec.preprocessing
    device = "gpu" if model.providers[0] == "CUDAExecutionProvider" else "cpu"
    with tempfile.TemporaryDirectory(prefix="explainer-") as tmp:
        path = Path(tmp) / "layer_means.onnx"
        onnx.save(derived, str(path))
        units = type(model)(path, device=device, size=pre.size, layout=pre.layout, scale=pre.scale,
                            mean=pre.mean, std=pre.std)
    k = units.spec.num_classes
    units.spec = dataclasses.replace(units.spec, source=f"{model.spec.source}#{layer}",
                                     labels=tuple(f"{layer} unit {i}" for i in range(k)))
    if hasattr(model, "in_flight"):
        units.in_flight = model.in_flight
    return units
