"""Views of a model: the same model seen through another output (a Softmax-ended model's logits)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np

from .errors import CapabilityError


class LogitView:
    """A model that outputs probabilities from a final Softmax, seen through its logits.

    ``predict`` returns the Softmax's input z (N, K) (``logits_tensor``, read through
    ``activations``) and ``spec.output_kind`` is "logits"; gradients are the model's own
    (their logit weights already address z). Everything else is the model's, but for
    incremental inference and ``describe`` (which would give back probabilities).
    """

    accepts_device_arrays = False

    def __init__(self, model: Any, tensor: str) -> None:
        self._model, self._tensor = model, tensor
        self.spec = replace(model.spec, output_kind="logits")

    def __getattr__(self, name: str) -> Any:
        return getattr(self._model, name)

    def predict(self, batch: np.ndarray) -> np.ndarray:
        """The logits (N, K) float32 of an (N, C, H, W) batch."""
        out = self._model.activations(batch, [self._tensor])[self._tensor]
        return np.asarray(out, np.float32).reshape(len(out), -1)

    def incremental(self, x: np.ndarray, box: tuple[int, int]) -> tuple[Any, dict[str, Any]]:
        return self, dict(path="full", reason="the logits of a Softmax-ended model are computed in full")

    def describe(self) -> dict[str, Any]:
        raise CapabilityError("a logit view of a model cannot be described; describe the model itself")


def logit_view(model: Any, score: str) -> Any:
    """``model``, or for score "logit" on a model ending in Softmax whose logits it can give, its LogitView."""
    if score != "logit" or model.spec.output_kind != "probabilities":
        return model
    tensor = model.logits_tensor()
    return LogitView(model, tensor) if tensor else model
