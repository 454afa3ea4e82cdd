"""The closed ``Model`` protocol: every capability a method uses, and the helpers around it.

Methods see only this module (never a backend): ``predict`` for black-box methods,
``gradients`` for gradient methods, and ``activations``, ``layer_mean_gradients``,
``layer_channels``, ``default_feature_layer``, ``linear_head``, ``layers``,
``hidden_unit_model`` for the layer-aware ones. :class:`ModelBase` gives every
capability a default that raises :class:`CapabilityError` naming the fix, so a backend
implements what it can and says what it cannot. ``describe()`` returns a small
picklable dict from which :func:`explainer.api.model_from_description` rebuilds the
model in another process.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol, Sequence, runtime_checkable

import numpy as np

from .errors import CapabilityError, InputError
from .graph.features import FeatureView
from .graph.inspect import Layer
from .model_views import LogitView, logit_view  # noqa: F401  (methods import them from here)
from .imaging import Preprocessing

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


@runtime_checkable
class Model(Protocol):
    """A classifier: NCHW float32 batches in, (N, K) float32 outputs out, plus capabilities.

    Every array crossing this boundary is NCHW float32 whatever the model's own layout;
    a layer tensor is returned as the model computes it (channels last for NHWC models).
    """

    spec: ModelSpec
    backend: str

    def predict(self, batch: np.ndarray) -> np.ndarray:
        """Run the model on ``batch`` : (N, C, H, W) float32, return (N, K) float32."""
        ...

    def gradients(self, batch: np.ndarray, logit_weights: np.ndarray, probability_weights: np.ndarray,
                  *, layer: str | None = None,
                  relu: str = "standard") -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """Outputs (N, K) float32, d score / d input (N, C, H, W) or d score / d ``layer``, and
        the layer's activations (None without ``layer``), where score = sum(logit_weights * z
        + probability_weights * softmax(z)), both weights (N, K); ``relu`` is "standard",
        "guided" or "deconv"."""
        ...

    def activations(self, batch: np.ndarray, layers: Sequence[str]) -> dict[str, np.ndarray]:
        """The named layers' tensors for an (N, C, H, W) batch: {layer: (N, ...) float32}."""
        ...

    def layer_mean_gradients(self, batch: np.ndarray, weights: np.ndarray,
                             layer: str) -> tuple[np.ndarray, np.ndarray]:
        """Per-channel spatial means of ``layer`` (N, C') and d sum(weights * means) / d input
        (N, C, H, W), ``weights`` (N, C')."""
        ...

    def layer_channels(self, layer: str) -> int:
        """C', the number of channels of ``layer``."""
        ...

    def default_feature_layer(self) -> str:
        """The layer Grad-CAM and activations use for "auto" (MATLAB's choice)."""
        ...

    def linear_head(self) -> tuple[str, np.ndarray]:
        """CAM's head: the feature tensor before global average pooling and the FC weights (K, C)."""
        ...

    def feature_view(self, layer: str) -> FeatureView:
        """How ``layer``'s tensor maps to (N, C, h, w) feature maps (its layout, or its token grid)."""
        ...

    def attention(self) -> Any:
        """The attention Softmax tensors (N, heads, T, T) and the token grid (graph/feature_default.Attention)."""
        ...

    def layers(self) -> list[Layer]:
        """The layers a method may name."""
        ...

    def hidden_unit_model(self, layer: str) -> "Model":
        """A Model whose outputs are the (N, C') feature-map means of ``layer``."""
        ...

    def incremental(self, x: np.ndarray, box: tuple[int, int]) -> tuple["Model", dict[str, Any]]:
        """A Model with the same outputs (to float32 rounding) for inputs that differ from
        ``x`` (1, C, H, W) only inside one box of at most ``box`` (h, w) pixels, computed
        incrementally; or this model itself. The dict says which ("path": "incremental" or
        "full", with the "reason")."""
        ...

    def describe(self) -> dict[str, Any]:
        """A small picklable dict from which ``explainer.model_from_description`` rebuilds the model."""
        ...

    def deployed(self) -> list[dict[str, Any]]:
        """The companion models served next to this model (``model``, ``kind``, ``layers``, ...);
        empty for a model run in-process."""
        ...

    def logits_tensor(self) -> str | None:
        """The tensor holding the logits of a model whose output is a final Softmax (None when
        there is none, or the backend cannot see its graph)."""
        ...


class ModelBase:
    """Defaults for every capability beyond ``predict``: each raises :class:`CapabilityError`."""

    spec: ModelSpec
    backend = "model"

    def _lacks(self, what: str, fix: str) -> CapabilityError:
        return CapabilityError(f"{what} needs {fix}, which this {self.backend} model ({self.spec.source}) "
                               "does not provide")

    def gradients(self, batch: np.ndarray, logit_weights: np.ndarray, probability_weights: np.ndarray,
                  *, layer: str | None = None,
                  relu: str = "standard") -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        raise self._lacks("this method", "gradients")

    def activations(self, batch: np.ndarray, layers: Sequence[str]) -> dict[str, np.ndarray]:
        raise self._lacks("activations", "an ONNX file or a deployed layers model")

    def layer_mean_gradients(self, batch: np.ndarray, weights: np.ndarray,
                             layer: str) -> tuple[np.ndarray, np.ndarray]:
        raise self._lacks(f"deep-dream on layer {layer!r}", "an ONNX file or a deployed layer-means gradient model")

    def layer_channels(self, layer: str) -> int:
        raise self._lacks(f"layer {layer!r}", "an ONNX file or a deployed companion model")

    def default_feature_layer(self) -> str:
        raise self._lacks("layer 'auto'", "an ONNX file (else name a layer: --feature-layer for grad-cam, "
                                          "--layer otherwise)")

    def linear_head(self) -> tuple[str, np.ndarray]:
        raise self._lacks("cam", "the fully connected weights of an ONNX file")

    def feature_view(self, layer: str) -> FeatureView:
        """How ``layer``'s tensor maps to (N, C, h, w) maps; without a graph: the input's layout."""
        return FeatureView(layer, self.spec.preprocessing.layout)

    def attention(self) -> Any:
        raise self._lacks("attention-rollout", "the graph of an ONNX file")

    def layers(self) -> list[Layer]:
        return []

    def hidden_unit_model(self, layer: str) -> Model:
        raise CapabilityError("layer= needs a model run in-process by ONNX Runtime (an .onnx file)")

    def incremental(self, x: np.ndarray, box: tuple[int, int]) -> tuple[Model, dict[str, Any]]:
        # the same words for every remote backend: a served explanation records what a client-side one does
        return self, dict(path="full", reason="incremental inference needs an in-process ONNX Runtime model")

    def describe(self) -> dict[str, Any]:
        raise self._lacks("describe()", "a model that can be rebuilt from a description")

    def deployed(self) -> list[dict[str, Any]]:
        return []

    def logits_tensor(self) -> str | None:
        return None


GradientModel = Model  # the protocol is closed: every Model has gradients (or says it lacks them)


def to_layout(batch: np.ndarray, layout: str) -> np.ndarray:
    """Convert an (N, C, H, W) batch to the model's layout."""
    return batch if layout == "NCHW" else np.ascontiguousarray(batch.transpose(0, 2, 3, 1))


def check_batch(batch: Any, spec: ModelSpec) -> np.ndarray:
    """``batch`` when it is an (N, C, H, W) array of the model's input shape; InputError otherwise."""
    shape = getattr(batch, "shape", None)
    if shape is None or len(shape) != 4 or tuple(shape[1:]) != tuple(spec.input_shape):
        got = list(shape) if shape is not None else type(batch).__name__
        raise InputError(f"a batch for this model must have shape [N, {', '.join(map(str, spec.input_shape))}] "
                         f"(NCHW), got {got}")
    return batch


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
            raise InputError("score='logit' needs a model that outputs logits; this one outputs probabilities "
                             "and its logits are not in reach (on an ONNX file ending in Softmax they are)")
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
    if isinstance(target, bool):
        raise InputError(f"target must be a class index or label, got {target!r}")
    if isinstance(target, (int, np.integer)) or (isinstance(target, str) and target.strip().isascii()
                                                 and target.strip().isdigit()):
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
