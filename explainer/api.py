"""Loading models and classifying images: the entry points besides the methods."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from .model import Model, scores
from .backends.onnx_safety import DEFAULT_MAX_MODEL_BYTES
from .backends.onnxruntime import OnnxModel
from .errors import InputError, ModelError
from .methods.common import load_input
from .paths import bundled_model
from .validation import number

BUNDLED_MODEL = bundled_model()  # package data: found from any directory after a normal install


def default_model_path() -> Path:
    """The bundled EfficientNet-Lite0 (or $EXPLAINER_MODEL when set)."""
    return Path(os.environ.get("EXPLAINER_MODEL", BUNDLED_MODEL))


def load_model(source: str | Path | None = None, *, device: str = "auto",
               labels: Sequence[str] | None = None, size: Sequence[int] | None = None,
               layout: str | None = None, scale: float | None = None,
               mean: Sequence[float] | None = None, std: Sequence[float] | None = None,
               max_model_bytes: int = DEFAULT_MAX_MODEL_BYTES, isolate: bool = False,
               concurrency: int | None = None, timeout: float | None = None,
               headers: Mapping[str, str] | Sequence[str] | None = None, tls: Any = None,
               retry_seconds: float | None = None, gradient_model: str | None = None,
               layers_model: str | None = None) -> Model:
    """Open a classifier.

    Parameters
    ----------
    source : str or Path, optional
        An .onnx file; default the bundled EfficientNet-Lite0.
    device : {"auto", "cpu", "gpu"}
    labels : sequence of K str, optional
    size, layout, scale, mean, std : optional
        Override the preprocessing stored in the model's metadata.
    max_model_bytes : int
        Refuse larger model files (default 4 GiB).
    isolate : bool
        Load and run the model once in a child process first, so that a runtime
        crash on a hostile file is reported instead of ending this process.
    concurrency, timeout, headers, tls : optional
        Only for Triton endpoints (``grpc://HOST:PORT/MODEL[@VERSION]``, http://, https://,
        grpcs://, several separated by commas): requests in flight, seconds per request,
        extra headers ("KEY:VALUE" or a mapping; never logged or saved) and a
        :class:`explainer.backends.triton.transport.Tls`. See ``TritonModel``.
    retry_seconds : float, optional
        Triton only: how long a request is retried after a connection failure or
        UNAVAILABLE (default 30 s, enough to bridge a server restart).
    gradient_model : str, optional
        Triton only: the deployed gradient model to use (default: found by convention,
        ``MODEL_grad_RELU[__LAYER]``; see ``explainer.backends.triton.gradients``).
    layers_model : str, optional
        Triton only: the deployed layers model serving activations (default ``MODEL_layers``;
        see ``explainer.backends.triton.layers``).
    """
    if source is None:
        source = default_model_path()
    if isinstance(source, str) and "://" in source:
        from .backends.triton.model import TritonModel

        model = TritonModel(source, labels=labels, size=size, layout=layout, scale=scale, mean=mean,
                            std=std, concurrency=concurrency, timeout=60.0 if timeout is None else timeout, headers=headers,
                            tls=tls, **({} if retry_seconds is None else {"retry_seconds": retry_seconds}))
        if gradient_model is not None:
            if not isinstance(gradient_model, str) or not gradient_model.strip() or "/" in gradient_model:
                raise InputError(f"gradient_model must be a Triton model name, got {gradient_model!r}")
            model.gradient_model = gradient_model.strip()
        if layers_model is not None:
            if not isinstance(layers_model, str) or not layers_model.strip() or "/" in layers_model:
                raise InputError(f"layers_model must be a Triton model name, got {layers_model!r}")
            model.layers_model = layers_model.strip()
        return model
    if gradient_model is not None:
        raise InputError("gradient_model applies only to Triton endpoints; in-process models build their own")
    if layers_model is not None:
        raise InputError("layers_model applies only to Triton endpoints; in-process models build their own")
    if concurrency is not None or headers or tls is not None or retry_seconds is not None:
        raise InputError("concurrency, headers, tls and retry_seconds apply only to Triton endpoints "
                         "(grpc://, http://, ...)")
    return OnnxModel(source, device=device, labels=labels, size=size, layout=layout,
                     scale=scale, mean=mean, std=std, max_model_bytes=max_model_bytes,
                     isolate=isolate)


def model_from_description(description: dict[str, Any]) -> Model:
    """Rebuild a model from ``model.describe()`` (e.g. in a worker process).

    Parameters
    ----------
    description : dict
        ``{"backend": "onnxruntime" | "triton" | "function", "source": ..., "options": {...}}``
        as ``describe()`` returns it; picklable.
    """
    if not isinstance(description, dict) or "backend" not in description:
        raise InputError("a model description is a dict from model.describe()")
    backend, options = description["backend"], dict(description.get("options") or {})
    if backend == "onnxruntime":
        return OnnxModel(description["source"], **options)
    if backend == "triton":
        from .backends.triton.model import TritonModel

        model = TritonModel(description["source"], **options)
        model.gradient_model = description.get("gradient_model")
        model.layers_model = description.get("layers_model")
        return model
    if backend == "function":
        from .backends.function import from_function

        return from_function(description["function"], **options)
    raise InputError(f"unknown backend {backend!r} in the model description")


def classify(model: Model, image: Any, top: int = 5) -> list[dict[str, Any]]:
    """Top-``top`` classes of one image.

    Returns
    -------
    list of dict
        ``{"index": int, "label": str, "probability": float}``, best first.
    """
    number("top", top, low=1, integer=True)
    x = load_input(model, image).x
    out = model.predict(x)
    if not np.all(np.isfinite(out)):
        raise ModelError("the model returned NaN or Inf for a batch of 1 input")
    p = scores(out, model.spec, "probability")[0]
    best = np.argsort(-p, kind="stable")[:top]
    return [{"index": int(i), "label": model.spec.labels[i], "probability": float(p[i])} for i in best]
