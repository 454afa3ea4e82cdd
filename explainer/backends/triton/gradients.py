"""Gradients on Triton: a gradient model deployed next to the forward model.

The gradient model of forward model ``M`` (built by :mod:`explainer.graph.gradients`,
written to a repository by ``explainer export-gradients --triton-repo``) is found by
convention, ``M_grad_<relu>`` for input gradients and ``M_grad_<relu>__<layer>`` for the
gradients of a layer (:func:`gradient_model_name`), or named explicitly
(``TritonModel.gradient_model``, ``--gradient-model``). Its inputs are the image input,
``logit_weights`` and ``probability_weights``; its outputs the forward output,
``gradient`` and, for a layer, ``activations``; its config parameter
``explainer.gradient`` (JSON) records ``wrt``, ``layer``, ``relu`` and whether the layer
is the forward model's default feature layer. Requests go through the forward model's
replica pool (same endpoints, retries and in-flight limits).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import numpy as np

from ...errors import InputError
from ..base import batch_slices, to_layout
from .client import infer, model_config, model_ready, repository_index
from .naming import gradient_model_name
from .transport import request_step

GRAD_OUTPUT, ACTS_OUTPUT, WEIGHTS = "gradient", "activations", ("logit_weights", "probability_weights")


@dataclass(frozen=True)
class Deployed:
    """A gradient model found on the server: its name, batch limit and what it computes."""

    name: str
    max_batch_size: int
    wrt: str
    layer: str | None
    relu: str
    default_layer: bool


def _headers(model: Any) -> dict[str, str]:
    return dict(model._headers)


def _config(model: Any, name: str) -> dict:
    return model.pool.call(lambda rep: model_config(rep, name, _headers(model)))


def _missing(model: Any, name: str, layer: str | None, relu: str) -> InputError:
    forward = model.endpoints[0].model
    flags = (f" --relu {relu}" if relu != "standard" else "") + (f" --layer {layer}" if layer else "")
    return InputError(
        f"{model.endpoints[0]}: gradients need the gradient model {name!r} deployed next to {forward!r}, "
        f"and the server has none; export it into the model repository with `explainer export-gradients "
        f"--model {forward}.onnx --triton-repo REPO --name {forward}{flags}`, then load it on the server "
        f"(restart it, or `load` it with explicit model control), or name a deployed one with --gradient-model")


def _parse(name: str, config: dict) -> Deployed:
    params = {k: str(v.get("string_value", "")) for k, v in (config.get("parameters") or {}).items()}
    try:
        info = json.loads(params.get("explainer.gradient", ""))
    except ValueError:
        raise InputError(f"Triton model {name!r} is not a gradient model: its config has no "
                         "explainer.gradient parameter (write it with `explainer export-gradients "
                         "--triton-repo`)") from None
    return Deployed(name, int(config.get("max_batch_size", 0) or 0), str(info.get("wrt", "")),
                    info.get("layer"), str(info.get("relu", "standard")), bool(info.get("default_layer")))


def _check(model: Any, found: Deployed, config: dict, layer: str | None, relu: str) -> None:
    ins = {i.get("name") for i in config.get("input") or []}
    outs = {o.get("name") for o in config.get("output") or []}
    want_in = {model.spec.input_name, *WEIGHTS}
    want_out = {model.spec.output_name, GRAD_OUTPUT} | ({ACTS_OUTPUT} if layer else set())
    if not want_in <= ins or not want_out <= outs:
        raise InputError(f"Triton model {found.name!r} is not the gradient model of {model.endpoints[0].model!r}: "
                         f"expected inputs {sorted(want_in)} and outputs {sorted(want_out)}, "
                         f"found {sorted(ins)} and {sorted(outs)}")
    what = f"relu={found.relu!r}, layer={found.layer!r}"
    if found.relu != relu or (layer is None) != (found.layer is None) or \
            (layer is not None and layer not in (found.layer, found.wrt)):
        raise InputError(f"Triton gradient model {found.name!r} computes {what}, but "
                         f"relu={relu!r}, layer={layer!r} was asked for")


def deployed(model: Any, layer: str | None, relu: str) -> Deployed:
    """The gradient model for (``layer``, ``relu``), checked once and cached on ``model``.

    Raises
    ------
    InputError
        At once when it is not deployed (naming it and the commands to export and
        deploy it), or when it does not compute what was asked.
    """
    cache = model.__dict__.setdefault("_gradient_models", {})
    key = (layer, relu)
    if key not in cache:
        name = getattr(model, "gradient_model", None) or gradient_model_name(model.endpoints[0].model, layer, relu)
        ready = model.pool.call(lambda rep: model_ready(rep, name, _headers(model)))
        if not ready and layer is not None and not getattr(model, "gradient_model", None):
            # the layer named by its tensor instead of its node (or the other way round)
            name = next((m for m, d in _layer_models(model, relu) if layer in (d.layer, d.wrt)), name)
            ready = name != gradient_model_name(model.endpoints[0].model, layer, relu)
        if not ready:
            raise _missing(model, name, layer, relu)
        config = _config(model, name)
        found = _parse(name, config)
        _check(model, found, config, layer, relu)
        cache[key] = found
    return cache[key]


def ready_models(model: Any) -> list[str]:
    """The names of the ready models in the server's repository index, sorted."""
    def index(rep: Any) -> list[str]:
        got = repository_index(rep, _headers(model))
        return sorted({m["name"] for m in got if m.get("name") and m.get("state", "READY") == "READY"})

    return model.pool.call(index)


def _layer_models(model: Any, relu: str) -> list[tuple[str, Deployed]]:
    """The ready ``M_grad_<relu>__*`` models on the server (repository index) and what they compute."""
    prefix = gradient_model_name(model.endpoints[0].model, None, relu) + "__"
    return [(name, _parse(name, _config(model, name))) for name in ready_models(model) if name.startswith(prefix)]


def default_feature_layer(model: Any, relu: str = "standard") -> str:
    """Grad-CAM's "auto" layer on Triton: that of the deployed layer-gradient model flagged default.

    Raises
    ------
    InputError
        When no deployed ``M_grad_<relu>__*`` model holds the default feature layer.
    """
    found = _layer_models(model, relu)
    for _, d in found:
        if d.default_layer and d.layer:
            return d.layer
    deployed_layers = ", ".join(name for name, _ in found) or "none"
    raise InputError(f"{model.endpoints[0]}: the default feature layer needs the ONNX file or a deployed "
                     f"gradient model of it (`explainer export-gradients --triton-repo REPO --layer auto`); "
                     f"name the layer explicitly (grad-cam: --feature-layer; deployed layer gradient models: "
                     f"{deployed_layers})")


def _weights(w: np.ndarray, n: int, k: int, name: str) -> np.ndarray:
    w = np.asarray(w, dtype=np.float32)
    if w.shape != (n, k):
        raise InputError(f"{name} must have shape ({n}, {k}) (batch, classes), got {w.shape}")
    return np.ascontiguousarray(w)


def gradients(model: Any, batch: np.ndarray, logit_weights: np.ndarray, probability_weights: np.ndarray,
              *, layer: str | None = None,
              relu: str = "standard") -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Outputs and the gradient of sum(logit_weights * z + probability_weights * softmax(z)), on Triton.

    The batch is split by the gradient model's ``max_batch_size`` and a 32 MiB request
    size; the parts run concurrently through the forward model's replica pool.

    Parameters
    ----------
    model : TritonModel
    batch : (N, C, H, W) float32 ndarray (NCHW whatever the model's layout)
    logit_weights, probability_weights : (N, K) float32 ndarray
    layer : str, optional
        Differentiate with respect to this layer (its gradient model must be deployed).
    relu : {"standard", "guided", "deconv"}

    Returns
    -------
    outputs : (N, K) float32 ndarray
    gradient : float32 ndarray
        (N, C, H, W) for the input; the layer tensor's shape (as served) with ``layer``.
    activations : float32 ndarray or None
        The layer tensor (None without ``layer``).
    """
    batch = np.asarray(batch)
    if batch.ndim != 4 or tuple(batch.shape[1:]) != model.spec.input_shape:
        raise InputError(f"batch must be (N, {', '.join(map(str, model.spec.input_shape))}), got {batch.shape}")
    n, k = batch.shape[0], model.spec.num_classes
    wl = _weights(logit_weights, n, k, "logit_weights")
    wp = _weights(probability_weights, n, k, "probability_weights")
    if n == 0:
        raise InputError("batch is empty")
    outputs, gradient, *acts = request(model, deployed(model, layer, relu), batch, wl, wp)
    if layer is None and model.spec.preprocessing.layout == "NHWC":
        gradient = np.ascontiguousarray(gradient.transpose(0, 3, 1, 2))
    return outputs, gradient, (acts[0] if acts else None)


def request(model: Any, found: Deployed, batch: np.ndarray, wl: np.ndarray, wp: np.ndarray,
            first: str | None = None) -> list[np.ndarray]:
    """Run a deployed gradient model on an (N, C, H, W) batch, split by its ``max_batch_size``
    and a 32 MiB request size, the parts concurrently through the replica pool.

    Returns its outputs, concatenated in order: ``first`` (default the forward output),
    ``gradient`` (as served) and, for a layer model, ``activations``.
    """
    data = to_layout(np.asarray(batch, dtype=model._dtype), model.spec.preprocessing.layout)
    step = request_step(len(data), data[:1].nbytes * 2, found.max_batch_size, model.spec.fixed_batch_size)
    results = model.run_parts(lambda s: _send(model, found, data[s], wl[s], wp[s], first),
                              batch_slices(len(data), step))
    return [np.concatenate([r[i] for r in results]) for i in range(len(results[0]))]


def _send(model: Any, found: Deployed, part: np.ndarray, wl: np.ndarray, wp: np.ndarray,
          first: str | None = None) -> tuple[np.ndarray, ...]:
    """One request: ``first`` (default the forward output; K values per input), gradient[, activations]."""
    n, fixed = part.shape[0], model.spec.fixed_batch_size
    if fixed and n < fixed:
        pad = [(0, fixed - n)]
        part = np.pad(part, pad + [(0, 0)] * 3)
        wl, wp = np.pad(wl, pad + [(0, 0)]), np.pad(wp, pad + [(0, 0)])
    names = [first or model.spec.output_name, GRAD_OUTPUT] + ([ACTS_OUTPUT] if found.layer is not None else [])
    feeds = [(model.spec.input_name, model._datatype, part), (WEIGHTS[0], "FP32", wl), (WEIGHTS[1], "FP32", wp)]
    got = model.pool.call(lambda rep: infer(rep, found.name, feeds, names, _headers(model), model.timeout))
    rows = part.shape[0]
    for name, array in zip(names, got):
        k_ok = name != names[0] or array.size == rows * wl.shape[1]
        if array.ndim < 1 or array.shape[0] != rows or not k_ok:
            raise InputError(f"{model.endpoints[0]}: gradient model {found.name!r} returned {name!r} of shape "
                             f"{tuple(array.shape)} for {rows} inputs")
    out = got[0].astype(np.float32).reshape(rows, -1)[:n]
    return (out,) + tuple(np.asarray(a, np.float32)[:n] for a in got[1:])
