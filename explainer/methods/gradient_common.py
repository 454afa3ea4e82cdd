"""What the gradient methods share: the gradient check, target weights and batched gradients."""

from __future__ import annotations

import time
from typing import Callable

import numpy as np

from ..model import Model, ModelBase, batch_slices
from ..errors import InputError
from ..perturbation.engine import check_batch_size
from .common import Prepared, require_model

RELU_RULES = {"gradient": "standard", "guided-backprop": "guided", "deconvnet": "deconv"}


def has_gradients(model: Model) -> bool:
    """Whether ``model`` computes gradients (``has_gradients``; a duck-typed model: a ``gradients`` method)."""
    if isinstance(model, ModelBase):
        return bool(getattr(model, "has_gradients", False))
    return callable(getattr(model, "gradients", None))


def require_gradients(model: Model, method: str) -> None:
    """Refuse, at once, a model that cannot compute gradients.

    Raises
    ------
    InputError
        Naming the backend and how to export and deploy a gradient model.
    """
    if has_gradients(require_model(model)):
        return
    backend = getattr(model, "backend", type(model).__name__)
    raise InputError(
        f"{method} needs gradients, which this {backend} model does not provide: export a gradient "
        f"model with `explainer export-gradients --model MODEL.onnx --out MODEL_grad.onnx [--relu "
        f"standard|guided|deconv] [--layer NAME]` and deploy it next to the forward model, or run "
        f"the ONNX file in-process")


def target_weights(model: Model, n: int, target: int, score: str) -> tuple[np.ndarray, np.ndarray]:
    """Logit and probability weights (N, K) float32 selecting ``target``'s ``score``.

    ``score="logit"`` puts a one-hot on the logit weights, "probability" on the
    probability weights.
    """
    k = model.spec.num_classes
    one_hot = np.zeros((n, k), np.float32)
    one_hot[:, target] = 1.0
    zeros = np.zeros((n, k), np.float32)
    return (one_hot, zeros) if score == "logit" else (zeros, one_hot)


def channel_map(attributions: np.ndarray) -> np.ndarray:
    """The seeds' gradientAttribution map: sum over channels of |attributions|.

    Parameters
    ----------
    attributions : (1, C, H, W) ndarray

    Returns
    -------
    (H, W) float32 ndarray, unnormalised
    """
    return np.abs(np.asarray(attributions, np.float64)).sum(axis=(0, 1)).astype(np.float32)


def gradient_sum(model: Model, prep: Prepared, count: int, make_batch: Callable[[int, int], np.ndarray],
                 weights: np.ndarray | None, *, score: str, relu: str = "standard",
                 mini_batch_size: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """Weighted sum of input gradients over ``count`` inputs, built and run in batches.

    Parameters
    ----------
    make_batch : callable (start, stop) -> (stop - start, C, H, W) float32 ndarray
        The inputs number start..stop-1 (generated in order, so the result does not
        depend on the batch size).
    weights : (count,) ndarray or None
        Weight of each input's gradient (None: all 1).

    Returns
    -------
    total : (1, C, H, W) float64 ndarray
        sum_i weights[i] * d score_target / d input at input i, accumulated in the order
        i = 0, 1, ...: byte-identical for every ``mini_batch_size``.
    outputs : (count, K) float32 ndarray
        The model's outputs at each input.
    """
    check_batch_size(mini_batch_size)
    total = np.zeros(prep.x.shape, np.float64)
    outputs = []
    w = np.ones(count) if weights is None else np.asarray(weights, np.float64)
    for s in batch_slices(count, int(mini_batch_size)):
        batch = make_batch(s.start, s.stop)
        wl, wp = target_weights(model, len(batch), prep.target, score)
        started = time.perf_counter()
        out, grad, _ = model.gradients(batch, wl, wp, relu=relu)
        prep.stats.model_s += time.perf_counter() - started
        prep.stats.forward_passes += len(batch)
        for weight, g in zip(w[s], grad):  # one input at a time, in order: the float64 sum is the
            total[0] += weight * g.astype(np.float64)  # same, bit for bit, whatever the batch split
        outputs.append(out)
    return total, np.concatenate(outputs)


def check_positive_int(name: str, value: object, *, minimum: int = 1) -> int:
    """``value`` as an int >= ``minimum``, else an InputError naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise InputError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)
