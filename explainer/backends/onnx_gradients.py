"""In-process gradients for OnnxModel: the gradient model built in memory and run by ONNX Runtime."""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from . import graph_cache
from ..errors import InputError
from .cpu_parallel import SessionSet, cpu_cores, plan, sample_bytes
from .feed import feed_array
from .onnx_derived import load_with_weights
from .isolation import run_with_deadline
from .onnx_safety import in_memory_bytes


def gradient_session(model: Any, layer: str | None, relu: str) -> SessionSet:
    """The sessions of ``model``'s gradient model for (layer, relu), kept for the process.

    The serialized gradient model comes from the on-disk cache (graph_cache.py) when it
    holds a verified entry for this model, rule and layer; else it is built and stored.
    Sessions are created on first use, only those a run needs.
    """
    cache = model.derived
    key = ("gradients", layer, relu)
    if key not in cache:
        data, per_sample = gradient_bytes(model, layer, relu)
        cache[key] = SessionSet(data, model.providers, per_sample)
    return cache[key]


def gradient_bytes(model: Any, layer: str | None, relu: str) -> tuple[bytes, int]:
    """The serialized gradient model and its ``sample_bytes``, from the cache or built (then cached)."""
    identity = model.spec.sha256 + json.dumps(model.spec.extra.get("external_data_sha256", {}), sort_keys=True)
    key = graph_cache.cache_key(identity, "gradient", layer=layer, relu=relu)
    hit = graph_cache.load(key)
    if hit is not None and isinstance(hit[1].get("sample_bytes"), int):
        return hit[0], hit[1]["sample_bytes"]
    from ..graph.gradients import gradient_model  # the builder: only on a cache miss

    proto = load_with_weights(model.path)
    data = in_memory_bytes(gradient_model(proto, layer=layer, relu=relu), "gradient model")
    per_sample = sample_bytes(proto)
    graph_cache.store(key, data, {"kind": "gradient", "layer": layer, "relu": relu,
                                  "model_sha256": model.spec.sha256, "sample_bytes": per_sample})
    return data, per_sample


def _sessions(model: Any, sessions: SessionSet, threads: int, workers: int) -> None:
    """Create the sessions a run needs; a model ONNX Runtime cannot load is an InputError."""
    try:
        sessions.get(threads, workers)
    except Exception as e:
        reason = str(e).splitlines()[0][:200]
        raise InputError(f"{model.path}: ONNX Runtime cannot load the gradient model ({reason})") from None


def _weights(w: np.ndarray, n: int, k: int, name: str) -> np.ndarray:
    w = np.asarray(w, dtype=np.float32)
    if w.shape != (n, k):
        raise InputError(f"{name} must have shape ({n}, {k}) (batch, classes), got {w.shape}")
    return w


def gradients(model: Any, batch: np.ndarray, logit_weights: np.ndarray, probability_weights: np.ndarray,
              *, layer: str | None = None,
              relu: str = "standard") -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Outputs and the gradient of sum(logit_weights * z + probability_weights * softmax(z)).

    Parameters
    ----------
    model : OnnxModel
    batch : (N, C, H, W) float32 ndarray (NCHW whatever the model's layout)
    logit_weights, probability_weights : (N, K) float32 ndarray
    layer : str, optional
        Differentiate with respect to this tensor or node output instead of the input.
    relu : {"standard", "guided", "deconv"}

    Returns
    -------
    outputs : (N, K) float32 ndarray
    gradient : float32 ndarray
        (N, C, H, W) for the input; the layer tensor's own shape with ``layer``.
    activations : float32 ndarray or None
        The layer tensor (None without ``layer``).
    """
    batch = np.asarray(batch)
    if batch.ndim != 4:
        raise InputError(f"batch must be (N, C, H, W), got shape {batch.shape}")
    n, k = batch.shape[0], model.spec.num_classes
    wl = _weights(logit_weights, n, k, "logit_weights")
    wp = _weights(probability_weights, n, k, "probability_weights")
    sessions = gradient_session(model, layer, relu)
    fixed = model.spec.fixed_batch_size
    if model.providers[0] == "CPUExecutionProvider":
        chunk, workers, threads = plan(n, sessions.sample_bytes, cpu_cores(), fixed)
    else:
        chunk, workers, threads = fixed or n or 1, 1, 0
    _sessions(model, sessions, threads, workers)
    parts = sessions.run_pieces(n, lambda session, s: _run(model, session, batch[s], wl[s], wp[s], layer),
                                chunk, workers, threads)
    if not parts:
        raise InputError("batch is empty")
    outputs = np.concatenate([p[0] for p in parts])
    gradient = np.concatenate([p[1] for p in parts])
    activations = np.concatenate([p[2] for p in parts]) if layer is not None else None
    return outputs, gradient, activations


def _run(model: Any, session: Any, part: np.ndarray, wl: np.ndarray, wp: np.ndarray,
         layer: str | None) -> tuple[np.ndarray, ...]:
    n, fixed = part.shape[0], model.spec.fixed_batch_size
    if fixed and n < fixed:
        pad = [(0, fixed - n)]
        part = np.pad(part, pad + [(0, 0)] * 3)
        wl, wp = np.pad(wl, pad + [(0, 0)]), np.pad(wp, pad + [(0, 0)])
    layout = model.spec.preprocessing.layout
    feed = {model.spec.input_name: feed_array(model, part),
            "logit_weights": wl, "probability_weights": wp}
    names = [model.spec.output_name, "gradient"] + (["activations"] if layer is not None else [])
    got = run_with_deadline(session, names, feed, "the gradient model")
    out = np.asarray(got[0], dtype=np.float32).reshape(got[0].shape[0], -1)[:n]
    grad = np.asarray(got[1], dtype=np.float32)[:n]
    if layer is None and layout == "NHWC":
        grad = np.ascontiguousarray(grad.transpose(0, 3, 1, 2))
    acts = np.asarray(got[2], dtype=np.float32)[:n] if layer is not None else None
    return out, grad, acts
