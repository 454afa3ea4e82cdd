"""The one feed helper: an NCHW float32 batch padded to a fixed batch size, in the model's layout and dtype."""

from __future__ import annotations

from typing import Any

import numpy as np

from .base import to_layout


def pad_rows(part: np.ndarray, fixed: int | None) -> np.ndarray:
    """``part`` (n, ...) with zero rows appended up to ``fixed`` rows (unchanged without ``fixed``)."""
    n = part.shape[0]
    if not fixed or n >= fixed:
        return part
    return np.concatenate([part, np.zeros((fixed - n,) + part.shape[1:], part.dtype)])


def feed_array(model: Any, batch: np.ndarray) -> np.ndarray:
    """``batch`` (N, C, H, W) cast to the model's input dtype and converted to its layout."""
    return to_layout(np.asarray(batch, dtype=model._dtype), model.spec.preprocessing.layout)
