"""Deep dream objectives: class logits, or spatial means of a layer's channels, with input gradients.

A hidden layer's objective comes from a derived model whose output is the (N, C)
per-channel spatial mean of the layer (``graph.outputs.layer_means_model``); its
gradient model, with a one-hot ``logit_weights`` row per image, gives
d mean(channel c) / d input. In-process it is built from the ONNX file; on Triton it is
the deployed ``M_dream__<layer>`` (``backends.triton_dream``).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from ..backends.base import Model, batch_slices, to_layout
from ..errors import InputError
from ..graph.outputs import MEANS_OUTPUT, layer_means_model, resolve_tensor

Objective = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]


def _proto(model: Model) -> Any:
    path = getattr(model, "path", None)
    if path is None or not Path(path).is_file():
        raise InputError(f"deep-dream on a hidden layer needs the ONNX file in-process, not "
                         f"{model.spec.source!r}; use --layer output, or run the ONNX file")
    from ..backends.onnx_gradients import load_with_weights

    return load_with_weights(Path(path))


def _served(model: Model) -> bool:
    """A Triton endpoint (no ONNX file): its layer-means gradient models are deployed."""
    return callable(getattr(model, "default_feature_layer", None))


def channel_count(model: Model, layer: str) -> int:
    """C, the channels of ``layer``'s tensor (N, C, ...) by shape inference (or the deployed model)."""
    from ..graph.inspect import layers

    if _served(model):
        from ..backends.triton_dream import deployed_dream

        return deployed_dream(model, layer)[1]
    proto = _proto(model)
    tensor = resolve_tensor(proto, layer)
    shape = next((lay.shape for lay in layers(proto) if lay.output == tensor), None)
    axis = 3 if model.spec.preprocessing.layout == "NHWC" and shape is not None and len(shape) == 4 else 1
    if shape is None or len(shape) < 2 or not isinstance(shape[axis], int):
        raise InputError(f"layer {layer!r}: cannot tell its number of channels (shape {shape})")
    return int(shape[axis])


def _session(model: Model, layer: str) -> Any:
    import onnxruntime as ort

    from ..graph.gradients import gradient_model

    cache = model.__dict__.setdefault("_dream_sessions", {})
    if layer not in cache:
        derived = layer_means_model(_proto(model), layer)
        proto = gradient_model(derived)
        try:
            cache[layer] = ort.InferenceSession(proto.SerializeToString(), providers=model.providers)
        except Exception as e:
            raise InputError(f"ONNX Runtime cannot load the layer-mean gradient model "
                             f"({str(e).splitlines()[0][:200]})") from None
    return cache[layer]


def layer_objective(model: Model, layer: str, channels: Sequence[int], stats: dict) -> Objective:
    """Objective of image i = spatial mean of channel ``channels[i]`` of ``layer``."""
    count = channel_count(model, layer)
    if _served(model):
        return _served_objective(model, layer, channels, count, stats)
    session = _session(model, layer)
    spec = model.spec
    step = spec.fixed_batch_size or len(channels)

    def run(batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        values, grads = [], []
        for s in batch_slices(len(batch), step):
            part, n = batch[s], s.stop - s.start
            pad = (spec.fixed_batch_size or n) - n
            wl = np.zeros((n + pad, count), np.float32)
            wl[np.arange(n), np.asarray(channels[s])] = 1.0
            feed = {spec.input_name: to_layout(np.pad(part, [(0, pad)] + [(0, 0)] * 3), spec.preprocessing.layout)
                    .astype(model._dtype), "logit_weights": wl, "probability_weights": np.zeros_like(wl)}
            started = time.perf_counter()
            means, grad = session.run([MEANS_OUTPUT, "gradient"], feed)
            stats["model_s"] += time.perf_counter() - started
            grad = np.asarray(grad, np.float32)[:n]
            grads.append(grad.transpose(0, 3, 1, 2) if spec.preprocessing.layout == "NHWC" else grad)
            values.append(np.asarray(means, np.float64).reshape(n + pad, -1)[np.arange(n), channels[s]])
        stats["evaluations"] += len(batch)
        return np.concatenate(values), np.concatenate(grads)

    return run


def _served_objective(model: Model, layer: str, channels: Sequence[int], count: int, stats: dict) -> Objective:
    """As :func:`layer_objective`, through the layer-means gradient model deployed on Triton."""
    from ..backends.triton_dream import layer_mean_gradients

    picked = np.asarray(channels)

    def run(batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        weights = np.zeros((len(batch), count), np.float32)
        weights[np.arange(len(batch)), picked] = 1.0
        started = time.perf_counter()
        means, grad = layer_mean_gradients(model, batch, weights, layer)
        stats["model_s"] += time.perf_counter() - started
        stats["evaluations"] += len(batch)
        return np.asarray(means, np.float64)[np.arange(len(batch)), picked], grad

    return run


def output_objective(model: Model, classes: Sequence[int], stats: dict) -> Objective:
    """Objective of image i = the logit of class ``classes[i]`` (through ``model.gradients``)."""
    k = model.spec.num_classes

    def run(batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        wl = np.zeros((len(batch), k), np.float32)
        wl[np.arange(len(batch)), np.asarray(classes)] = 1.0
        started = time.perf_counter()
        out, grad, _ = model.gradients(batch, wl, np.zeros_like(wl))
        stats["model_s"] += time.perf_counter() - started
        stats["evaluations"] += len(batch)
        return out.astype(np.float64)[np.arange(len(batch)), np.asarray(classes)], grad

    return run

