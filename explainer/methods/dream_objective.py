"""Deep dream objectives: class logits, or spatial means of a layer's channels, with input gradients.

A hidden layer's objective is ``model.layer_mean_gradients``: the (N, C) per-channel
spatial means of the layer and, with a one-hot weight row per image, d mean(channel c) /
d input. ONNX Runtime derives it from the file; Triton serves it as ``M_dream__<layer>``.
"""

from __future__ import annotations

import time
from typing import Callable, Sequence

import numpy as np

from ..model import Model

Objective = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]


def channel_count(model: Model, layer: str) -> int:
    """C, the channels of ``layer`` (``model.layer_channels``)."""
    return model.layer_channels(layer)


def layer_objective(model: Model, layer: str, channels: Sequence[int], stats: dict) -> Objective:
    """Objective of image i = spatial mean of channel ``channels[i]`` of ``layer``."""
    count = channel_count(model, layer)
    picked = np.asarray(channels)

    def run(batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        weights = np.zeros((len(batch), count), np.float32)
        weights[np.arange(len(batch)), picked] = 1.0
        started = time.perf_counter()
        means, grad = model.layer_mean_gradients(batch, weights, layer)
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

