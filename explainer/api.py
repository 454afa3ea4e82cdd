"""Loading models and classifying images: the entry points besides the methods."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .backends.base import Model, scores
from .backends.onnx_safety import DEFAULT_MAX_MODEL_BYTES
from .backends.onnxruntime import OnnxModel
from .errors import InputError
from .methods.common import load_input

BUNDLED_MODEL = Path(__file__).resolve().parent.parent / "models" / "efficientnet_lite0" / "model.onnx"


def default_model_path() -> Path:
    """The bundled EfficientNet-Lite0 (or $EXPLAINER_MODEL when set)."""
    return Path(os.environ.get("EXPLAINER_MODEL", BUNDLED_MODEL))


def load_model(source: str | Path | None = None, *, device: str = "auto",
               labels: Sequence[str] | None = None, size: Sequence[int] | None = None,
               layout: str | None = None, scale: float | None = None,
               mean: Sequence[float] | None = None, std: Sequence[float] | None = None,
               max_model_bytes: int = DEFAULT_MAX_MODEL_BYTES) -> Model:
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
    """
    if source is None:
        source = default_model_path()
    if isinstance(source, str) and "://" in source:
        raise InputError(f"{source}: remote models (Triton) are not supported by this version")
    return OnnxModel(source, device=device, labels=labels, size=size, layout=layout,
                     scale=scale, mean=mean, std=std, max_model_bytes=max_model_bytes)


def classify(model: Model, image: Any, top: int = 5) -> list[dict[str, Any]]:
    """Top-``top`` classes of one image.

    Returns
    -------
    list of dict
        ``{"index": int, "label": str, "probability": float}``, best first.
    """
    if top < 1:
        raise InputError(f"top must be a positive integer, got {top}")
    x = load_input(model, image).x
    p = scores(model.predict(x), model.spec, "probability")[0]
    best = np.argsort(-p, kind="stable")[:top]
    return [{"index": int(i), "label": model.spec.labels[i], "probability": float(p[i])} for i in best]
