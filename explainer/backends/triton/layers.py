"""Layer activations on Triton: a layers model deployed next to the forward model.

The layers model of forward model ``M`` is a copy of ``M`` that also outputs some of its
intermediate tensors (:func:`explainer.graph.activations.with_outputs`), written to a
repository by ``explainer export-layers --triton-repo``. It is found by convention,
``M_layers`` (:func:`layers_model_name`), or named explicitly (``TritonModel.layers_model``,
``--layers-model``). Its outputs are the forward output and the layer tensors, each under
its tensor's name; its config parameter ``explainer.layers`` (JSON) records, for every
exposed layer, the name it was exported as, its tensor and the node that produces it, so
that a layer may be asked for by node or tensor name as in-process. Requests go through
the forward model's replica pool (same endpoints, retries and in-flight limits).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from ...errors import InputError
from ..base import batch_slices, to_layout
from .client import infer, model_ready
from .gradients import _config, _headers
from .naming import layers_model_name
from .transport import request_step

LAYERS_PARAMETER = "explainer.layers"


@dataclass(frozen=True)
class DeployedLayers:
    """A layers model found on the server: its name, batch limit and exposed layers.

    ``outputs`` maps every accepted layer name (as exported, its tensor, its node) to the
    served output; ``exposed`` lists the layers as exported.
    """

    name: str
    max_batch_size: int
    outputs: dict[str, str]
    exposed: tuple[str, ...]


def _command(forward: str, layers: Sequence[str]) -> str:
    return (f"`explainer export-layers --model {forward}.onnx --layers {','.join(layers)} "
            f"--triton-repo REPO --name {forward}`")


def _missing(model: Any, name: str, layers: Sequence[str]) -> InputError:
    forward = model.endpoints[0].model
    return InputError(
        f"{model.endpoints[0]}: activations need the layers model {name!r} deployed next to {forward!r}, "
        f"and the server has none; export it into the model repository with {_command(forward, layers)}, "
        f"then load it on the server (restart it, or `load` it with explicit model control), "
        f"or name a deployed one with --layers-model")


def _parse(model: Any, name: str, config: dict) -> DeployedLayers:
    params = {k: str(v.get("string_value", "")) for k, v in (config.get("parameters") or {}).items()}
    try:
        records = json.loads(params.get(LAYERS_PARAMETER, ""))["layers"]
    except (ValueError, KeyError, TypeError):
        raise InputError(f"Triton model {name!r} is not a layers model: its config has no "
                         f"{LAYERS_PARAMETER} parameter (write it with `explainer export-layers "
                         "--triton-repo`)") from None
    outs = {o.get("name") for o in config.get("output") or []}
    ins = {i.get("name") for i in config.get("input") or []}
    tensors = [str(r.get("tensor")) for r in records]
    if model.spec.input_name not in ins or not {model.spec.output_name, *tensors} <= outs:
        raise InputError(f"Triton model {name!r} is not the layers model of {model.endpoints[0].model!r}: "
                         f"expected input {model.spec.input_name!r} and outputs "
                         f"{sorted({model.spec.output_name, *tensors})}, found {sorted(ins)} and {sorted(outs)}")
    outputs: dict[str, str] = {}
    for r, tensor in zip(records, tensors):
        for alias in (r.get("node"), r.get("layer"), tensor):
            if alias:
                outputs.setdefault(str(alias), tensor)
    exposed = tuple(str(r.get("layer") or r.get("tensor")) for r in records)
    return DeployedLayers(name, int(config.get("max_batch_size", 0) or 0), outputs, exposed)


def deployed_layers(model: Any, layers: Sequence[str]) -> DeployedLayers:
    """The layers model of ``model``, checked once and cached; ``layers`` name it in errors.

    Raises
    ------
    InputError
        When it is not deployed (naming it and the commands to export and deploy it).
    """
    found = model.__dict__.get("_layers_deployed")
    if found is None:
        name = getattr(model, "layers_model", None) or layers_model_name(model.endpoints[0].model)
        ready = model.pool.call(lambda rep: model_ready(rep, name, _headers(model)))
        if not ready:
            raise _missing(model, name, layers)
        found = model.__dict__["_layers_deployed"] = _parse(model, name, _config(model, name))
    return found


def _check_exposed(model: Any, found: DeployedLayers, layers: Sequence[str]) -> None:
    absent = [layer for layer in layers if layer not in found.outputs]
    if absent:
        forward = model.endpoints[0].model
        wanted = list(dict.fromkeys(list(found.exposed) + absent))
        raise InputError(f"{model.endpoints[0]}: layer {absent[0]!r} is not exposed by the layers model "
                         f"{found.name!r} (it exposes {', '.join(found.exposed)}); re-export it with "
                         f"{_command(forward, wanted)} and reload it on the server")


def layer_activations(model: Any, batch: np.ndarray, layers: Sequence[str]) -> dict[str, np.ndarray]:
    """The named layers' tensors for a batch, from the deployed layers model.

    The batch is split by the layers model's ``max_batch_size`` and a 32 MiB request
    size; the parts run concurrently through the forward model's replica pool.

    Parameters
    ----------
    model : TritonModel
    batch : (N, C, H, W) float32 ndarray (NCHW whatever the model's layout)
    layers : node or tensor names exposed by the layers model

    Returns
    -------
    dict of layer name to (N, ...) float32 ndarray, as the model computes it (as
    :func:`explainer.graph.activations.layer_activations` returns in-process).
    """
    layers = [str(layer) for layer in layers]
    if not layers:
        raise InputError("give at least one layer")
    batch = np.asarray(batch)
    if batch.ndim != 4 or tuple(batch.shape[1:]) != model.spec.input_shape:
        raise InputError(f"batch must be (N, {', '.join(map(str, model.spec.input_shape))}), got {batch.shape}")
    if batch.shape[0] == 0:
        raise InputError("batch is empty")
    found = deployed_layers(model, layers)
    _check_exposed(model, found, layers)
    outputs = list(dict.fromkeys(found.outputs[layer] for layer in layers))
    data = to_layout(np.asarray(batch, dtype=model._dtype), model.spec.preprocessing.layout)
    step = request_step(len(data), data[:1].nbytes, found.max_batch_size, model.spec.fixed_batch_size)
    parts = batch_slices(len(data), step)
    send = lambda s: _send(model, found, data[s], outputs)  # noqa: E731
    results = model.run_parts(send, parts)
    joined = {o: np.concatenate([r[i] for r in results]) for i, o in enumerate(outputs)}
    return {layer: joined[found.outputs[layer]] for layer in layers}


def _send(model: Any, found: DeployedLayers, part: np.ndarray, outputs: list[str]) -> list[np.ndarray]:
    n, fixed = part.shape[0], model.spec.fixed_batch_size
    if fixed and n < fixed:
        part = np.pad(part, [(0, fixed - n)] + [(0, 0)] * 3)
    feeds = [(model.spec.input_name, model._datatype, part)]
    got = model.pool.call(lambda rep: infer(rep, found.name, feeds, outputs, _headers(model), model.timeout))
    for name, array in zip(outputs, got):
        if array.ndim < 1 or array.shape[0] != part.shape[0]:
            raise InputError(f"{model.endpoints[0]}: layers model {found.name!r} returned {name!r} of shape "
                             f"{tuple(array.shape)} for {part.shape[0]} inputs")
    return [np.asarray(a, np.float32)[:n] for a in got]
