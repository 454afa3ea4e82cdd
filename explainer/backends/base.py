"""What every backend provides: a ModelSpec and ``predict`` on NCHW batches."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, Sequence

import numpy as np

from ..errors import InputError
from ..imaging import Preprocessing

OUTPUT_KINDS = ("logits", "probabilities")
SCORES = ("probability", "logit")


@dataclass(frozen=True)
class ModelSpec:
    """Everything the methods need to know about a classifier.

    Attributes
    ----------
    source : str
        Where the model came from (file path or endpoint URL).
    input_name, output_name : str
    preprocessing : Preprocessing
        Input size, layout, scale, mean and std.
    num_classes : int
        K, the length of the output vector.
    labels : tuple of str, length K
    output_kind : {"logits", "probabilities"}
    max_batch_size : int or None
        The largest batch the model accepts (None: no limit).
    fixed_batch_size : int or None
        Set when the model accepts exactly this batch size (e.g. 1).
    sha256 : str
        Of the model file ("" when unknown, e.g. a remote model).
    preprocessing_source : str
        "metadata", "options" or "default".
    """

    source: str
    input_name: str
    output_name: str
    preprocessing: Preprocessing
    num_classes: int
    labels: tuple[str, ...]
    output_kind: str = "logits"
    max_batch_size: int | None = None
    fixed_batch_size: int | None = None
    sha256: str = ""
    preprocessing_source: str = "metadata"
    extra: dict = field(default_factory=dict)

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of one input in NCHW order."""
        h, w = self.preprocessing.size
        return (self.preprocessing.channels, h, w)


class Model(Protocol):
    """A classifier: NCHW float32 batches in, (N, K) float32 outputs out."""

    spec: ModelSpec
    backend: str

    def predict(self, batch: np.ndarray) -> np.ndarray:
        """Run the model on ``batch`` : (N, C, H, W) float32, return (N, K) float32."""
        ...


class GradientModel(Model, Protocol):
    """A classifier that also returns gradients of a weighted score (see graph/gradients.py)."""

    def gradients(self, batch: np.ndarray, logit_weights: np.ndarray, probability_weights: np.ndarray,
                  *, layer: str | None = None,
                  relu: str = "standard") -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """Outputs (N, K) float32, d score / d input (N, C, H, W) or d score / d ``layer``, and
        the layer's activations (None without ``layer``), where score = sum(logit_weights * z
        + probability_weights * softmax(z)), both weights (N, K); ``relu`` is "standard",
        "guided" or "deconv"."""
        ...


def to_layout(batch: np.ndarray, layout: str) -> np.ndarray:
    """Convert an (N, C, H, W) batch to the model's layout."""
    return batch if layout == "NCHW" else np.ascontiguousarray(batch.transpose(0, 2, 3, 1))


def batch_slices(n: int, size: int) -> list[slice]:
    """Split ``range(n)`` into consecutive slices of at most ``size`` items."""
    if size < 1:
        raise InputError(f"batch size must be a positive integer, got {size}")
    return [slice(i, min(i + size, n)) for i in range(0, n, size)]


def scores(outputs: np.ndarray, spec: ModelSpec, score: str) -> np.ndarray:
    """Turn raw model outputs (N, K) into the scores methods explain (N, K) float64.

    ``score="probability"`` applies a softmax unless the model already outputs
    probabilities; ``score="logit"`` takes the raw output of a logit model.
    """
    if score not in SCORES:
        raise InputError(f"score must be 'probability' or 'logit', got {score!r}")
    out = np.asarray(outputs, dtype=np.float64)
    if spec.output_kind == "probabilities":
        if score == "logit":
            raise InputError("score='logit' needs a model that outputs logits; this one outputs probabilities")
        return out
    if score == "logit":
        return out
    shifted = out - out.max(axis=1, keepdims=True)
    e = np.exp(shifted)
    return e / e.sum(axis=1, keepdims=True)


def resolve_target(target: int | str | None, spec: ModelSpec, top1: int) -> int:
    """Class index from an index, a label name or None (the top-1 class)."""
    if target is None:
        return int(top1)
    if isinstance(target, (int, np.integer)) or (isinstance(target, str) and target.strip().isdigit()):
        idx = int(target)
        if not 0 <= idx < spec.num_classes:
            raise InputError(f"target {idx} is not a class: the model has classes 0..{spec.num_classes - 1}")
        return idx
    wanted = str(target).strip().lower()
    matches = [i for i, name in enumerate(spec.labels) if name.lower() == wanted]
    if not matches:
        raise InputError(f"target {target!r} is not a class label of this model")
    return matches[0]


def default_labels(k: int, given: Sequence[str] | None) -> tuple[str, ...]:
    """The model's labels when there are exactly K of them, else "class i"."""
    if given is not None and len(given) == k:
        return tuple(given)
    return tuple(f"class {i}" for i in range(k))
