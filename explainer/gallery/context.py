"""What the gallery's figures share: the models, the example images, cached explanations."""

from __future__ import annotations

from functools import cached_property
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..api import load_model
from ..model import Model, scores
from ..paths import bundled_examples

SHORTCUT = Path(__file__).resolve().parents[2] / "models" / "shortcut"


def shortcut_dir() -> Path:
    """The shortcut demo (``models/shortcut`` of a checkout: the model, test set and masks)."""
    from ..errors import InputError

    if not (SHORTCUT / "model.onnx").is_file():
        raise InputError(f"{SHORTCUT}: the shortcut demo model is not here (run from a checkout)")
    return SHORTCUT


class Context:
    """Lazily loaded models and a cache of results shared by several figures."""

    def __init__(self, settings: Any) -> None:
        self.settings = settings
        self._cache: dict[str, Any] = {}

    @cached_property
    def model(self) -> Model:
        return load_model()

    @cached_property
    def shortcut(self) -> Model:
        return load_model(shortcut_dir() / "model.onnx")

    @cached_property
    def examples(self) -> dict[str, Path]:
        return {p.stem: p for p in bundled_examples()}

    def once(self, key: str, make: Callable[[], Any]) -> Any:
        """``make()`` computed once per gallery run."""
        if key not in self._cache:
            self._cache[key] = make()
        return self._cache[key]

    def probabilities(self, model: Model, x: np.ndarray) -> np.ndarray:
        """(N, K) class probabilities of (N, C, H, W) inputs."""
        return scores(model.predict(np.ascontiguousarray(x, np.float32)), model.spec, "probability")

    def layer_at(self, model: Model, stride: int) -> str:
        """The last ReLU-like layer whose 4-D output is the input size / ``stride`` (an early
        or a middle layer, as the seed page picks them)."""
        h = model.spec.input_shape[1]
        found = [lay.name for lay in model.layers() if lay.shape is not None and len(lay.shape) == 4
                 and lay.op_type in ("Relu", "Clip", "LeakyRelu") and lay.shape[2] == h // stride]
        return found[-1] if found else model.default_feature_layer()
