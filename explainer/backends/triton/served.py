"""The served model as a ``Model``, seen from inside Triton (business-logic scripting).

:class:`ServedModel` is what the Triton explainer model (``M_explain``) hands to the
methods: ``predict`` splits a batch by the served model's ``max_batch_size`` and sends
the parts with ``infer`` (a BLS call, see ``explain_model.py``), several at once.
Its spec is built from the ``explainer.served`` JSON that ``export-explainer`` wrote
(input/output names, layout, preprocessing, labels) and one probe, exactly as the
client's Triton backend builds its own, so scores and labels agree with client-side runs.
"""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import Any, Callable, Mapping

import numpy as np

from ...errors import InputError
from ...imaging import parse_preprocessing
from ...model import OUTPUT_KINDS, ModelBase, ModelSpec, batch_slices, default_labels
from ...xp import to_numpy
from .naming import gradient_model_name

GRAD_OUTPUT, WEIGHTS = "gradient", ("logit_weights", "probability_weights")  # as gradients.py (no client here)


def output_kind(probe: np.ndarray, declared: str) -> str:
    """"logits" or "probabilities": the declared kind, else what a probe's rows look like."""
    if declared in OUTPUT_KINDS:
        return declared
    sums = probe.sum(axis=1)
    return "probabilities" if probe.min() >= 0 and np.allclose(sums, 1, atol=1e-4) else "logits"


class ServedModel(ModelBase):
    """The served classifier ``M``, called in-server.

    Parameters
    ----------
    served : mapping
        ``explainer.served``: ``model``, ``input``, ``output``, ``preprocessing`` (JSON text),
        ``labels`` (list or None), ``output_kind`` ("" when unknown), ``max_batch_size``.
    infer : callable
        ``infer(model_name, feeds, outputs)`` -> the named outputs (host arrays) of one request;
        ``feeds`` maps input names to arrays of at most ``max_batch_size`` inputs in the
        model's layout, NumPy or (on a GPU) CuPy.
    in_flight : int
        Requests in flight at once (the served model's queue is never empty).
    part_bytes : int
        A batch is sent in requests of at most this size (and ``max_batch_size``), so
        moving one part to the served model overlaps computing the one before.
    """

    backend = "triton-bls"
    has_gradients = True  # through the deployed M_grad_<relu> (an error names it when it is missing)

    def __init__(self, served: Mapping[str, Any], infer: Callable[[str, dict, list], list], *,
                 in_flight: int = 2, device_arrays: bool = False, part_bytes: int = 16 * 2**20) -> None:
        self.infer = infer
        self.in_flight = max(1, int(in_flight))
        self.accepts_device_arrays = bool(device_arrays)
        self.max_batch_size = int(served.get("max_batch_size") or 0) or None
        self.part_bytes = int(part_bytes)
        pre = parse_preprocessing(str(served["preprocessing"]))
        self.providers = [f"in-server {served['model']}"]
        self._pool = ThreadPoolExecutor(max_workers=self.in_flight, thread_name_prefix="bls")
        self.spec = ModelSpec(source=str(served["model"]), input_name=str(served["input"]),
                              output_name=str(served["output"]), preprocessing=pre, num_classes=2,
                              labels=("class 0", "class 1"), max_batch_size=self.max_batch_size)
        probe = self.predict(np.zeros((1,) + self.spec.input_shape, np.float32))
        k = probe.shape[1]
        labels = served.get("labels")
        self.spec = replace(self.spec, num_classes=k, labels=default_labels(k, labels),
                            output_kind=output_kind(probe, str(served.get("output_kind") or "")))

    def predict(self, batch: Any) -> np.ndarray:
        """(N, C, H, W) float32 (NCHW; NumPy, or CuPy when ``accepts_device_arrays``) -> (N, K) float32."""
        n = batch.shape[0]
        if self.spec.preprocessing.layout == "NHWC":
            batch = batch.transpose(0, 2, 3, 1).copy()
        step = max(1, min(self.max_batch_size or n, self.part_bytes // max(1, batch[:1].nbytes)))
        parts = batch_slices(n, step) if n else []
        outs = list(self._pool.map(lambda s: self._one(batch[s]), parts)) if len(parts) > 1 \
            else [self._one(batch[s]) for s in parts]
        return np.concatenate(outs, axis=0) if outs else np.zeros((0, self.spec.num_classes), np.float32)

    def _one(self, part: Any) -> np.ndarray:
        out = np.asarray(self.infer(self.spec.source, {self.spec.input_name: part}, [self.spec.output_name])[0],
                         dtype=np.float32)
        if out.ndim != 2 or out.shape[0] != part.shape[0]:
            raise InputError(f"{self.spec.source}: returned an output of shape {list(out.shape)} "
                             f"for {part.shape[0]} inputs")
        return out

    def gradients(self, batch: np.ndarray, logit_weights: np.ndarray, probability_weights: np.ndarray,
                  *, layer: str | None = None,
                  relu: str = "standard") -> tuple[np.ndarray, np.ndarray, None]:
        """Outputs (N, K) and d score / d input (N, C, H, W) from the deployed gradient model
        ``M_grad_<relu>`` (``export-gradients``), in parts of at most ``max_batch_size``."""
        if layer is not None:
            raise InputError("gradients of a layer (grad-cam, cam) do not run server-side")
        name = gradient_model_name(self.spec.source, None, relu)
        data = to_numpy(batch).astype(np.float32, copy=False)
        if self.spec.preprocessing.layout == "NHWC":
            data = np.ascontiguousarray(data.transpose(0, 2, 3, 1))
        wl, wp = (np.ascontiguousarray(w, np.float32) for w in (logit_weights, probability_weights))
        outs, grads = [], []
        for s in batch_slices(len(data), self.max_batch_size or len(data)):
            feeds = {self.spec.input_name: data[s], WEIGHTS[0]: wl[s], WEIGHTS[1]: wp[s]}
            out, grad = self.infer(name, feeds, [self.spec.output_name, GRAD_OUTPUT])
            outs.append(np.asarray(out, np.float32))
            grads.append(np.asarray(grad, np.float32))
        gradient = np.concatenate(grads)
        if self.spec.preprocessing.layout == "NHWC":
            gradient = np.ascontiguousarray(gradient.transpose(0, 3, 1, 2))
        return np.concatenate(outs), gradient, None


def served_description(config: Mapping[str, Any], name: str, preprocessing_json: str,
                       labels: list[str] | None, kind: str) -> str:
    """The ``explainer.served`` parameter for model ``name`` with this (JSON) Triton config."""
    inputs, outputs = config.get("input") or [], config.get("output") or []
    if len(inputs) != 1 or not outputs:
        raise InputError(f"{name}: expected one image input and an output in its config")
    return json.dumps({"model": name, "input": inputs[0]["name"], "output": outputs[0]["name"],
                       "datatype": str(inputs[0].get("data_type", "TYPE_FP32")),
                       "preprocessing": preprocessing_json, "labels": labels, "output_kind": kind,
                       "max_batch_size": int(config.get("max_batch_size", 0) or 0)})
