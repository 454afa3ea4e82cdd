"""Deep dream on a hidden layer over Triton: a layer-means gradient model deployed next to the forward model.

``explainer export-gradients --triton-repo REPO --dream-layer LAYER`` writes
``M_dream__<layer>``: the gradient model (:mod:`explainer.graph.gradients`) of the model
whose output is LAYER's per-channel spatial mean (``graph.outputs.layer_means_model``).
Its inputs are the image input, ``logit_weights`` and ``probability_weights`` (N, C), C
the layer's channels; its outputs the means (N, C) and ``gradient``. Its config parameter
``explainer.gradient`` records ``objective: "layer_means"`` and the layer. Requests go
through the forward model's replica pool.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from ...errors import InputError
from ...graph.outputs import MEANS_OUTPUT
from .gradients import GRAD_OUTPUT, WEIGHTS, Deployed, _config, _headers, _parse, request
from .client import model_ready
from .naming import dream_model_name


def _missing(model: Any, name: str, layer: str) -> InputError:
    forward = model.endpoints[0].model
    return InputError(
        f"{model.endpoints[0]}: deep-dream on layer {layer!r} needs the model {name!r} deployed next to "
        f"{forward!r}, and the server has none; export it with `explainer export-gradients --model "
        f"{forward}.onnx --triton-repo REPO --name {forward} --dream-layer {layer}`, then load it on the "
        f"server, or run the ONNX file in-process")


def deployed_dream(model: Any, layer: str) -> tuple[Deployed, int]:
    """The deployed layer-means gradient model of ``layer`` and the layer's channel count (cached).

    Raises
    ------
    InputError
        At once when it is not deployed (naming it and the command that makes it), or
        when the deployed model is not a layer-means gradient model of ``layer``.
    """
    cache = model.__dict__.setdefault("_dream_models", {})
    if layer not in cache:
        name = dream_model_name(model.endpoints[0].model, layer)
        if not model.pool.call(lambda rep: model_ready(rep, name, _headers(model))):
            raise _missing(model, name, layer)
        config = _config(model, name)
        found = _parse(name, config)
        info = json.loads(config["parameters"]["explainer.gradient"]["string_value"])  # _parse read it
        ins = {i.get("name"): i for i in config.get("input") or []}
        outs = {o.get("name") for o in config.get("output") or []}
        if info.get("objective") != "layer_means" or not {MEANS_OUTPUT, GRAD_OUTPUT} <= outs \
                or not {model.spec.input_name, *WEIGHTS} <= set(ins):
            raise InputError(f"Triton model {name!r} is not a layer-means gradient model (expected inputs "
                             f"{sorted({model.spec.input_name, *WEIGHTS})}, outputs {[MEANS_OUTPUT, GRAD_OUTPUT]})")
        dims = [int(d) for d in ins[WEIGHTS[0]].get("dims", [])]
        if len(dims) != 1 or dims[0] < 1:
            raise InputError(f"Triton model {name!r}: logit_weights dims {dims}, expected [channels]")
        cache[layer] = (found, dims[0])
    return cache[layer]


def layer_mean_gradients(model: Any, batch: np.ndarray, weights: np.ndarray,
                         layer: str) -> tuple[np.ndarray, np.ndarray]:
    """Channel means of ``layer`` and the gradient of sum(weights * means) w.r.t. the input.

    Parameters
    ----------
    model : TritonModel
    batch : (N, C, H, W) float32 ndarray (NCHW whatever the model's layout)
    weights : (N, K) float32 ndarray, K the layer's channels

    Returns
    -------
    means : (N, K) float32 ndarray
    gradient : (N, C, H, W) float32 ndarray
    """
    found, count = deployed_dream(model, layer)
    n = batch.shape[0]
    if weights.shape != (n, count):
        raise InputError(f"channel weights must have shape ({n}, {count}), got {weights.shape}")
    wl = np.ascontiguousarray(weights, dtype=np.float32)
    means, gradient = request(model, found, batch, wl, np.zeros_like(wl), first=MEANS_OUTPUT)
    if model.spec.preprocessing.layout == "NHWC":
        gradient = np.ascontiguousarray(gradient.transpose(0, 3, 1, 2))
    return means, gradient
