"""A plain callable as a Model: ``f(batch) -> (N, K)`` scores, the lime / alibi convention.

Every black-box method (occlusion, LIME, RISE, prediction difference) runs on it, which
is the proof that methods are blind to the backend; layer and gradient methods refuse it
with one ``CapabilityError``.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np

from ..errors import InputError, ModelError
from ..imaging import Preprocessing
from .base import OUTPUT_KINDS, ModelBase, ModelSpec, batch_slices, check_batch, default_labels, to_layout


class FunctionModel(ModelBase):
    """A classifier given as a function of a float32 batch in ``preprocessing.layout``.

    See :func:`from_function`.
    """

    backend = "function"
    has_gradients = False

    def __init__(self, predict: Callable[[np.ndarray], Any], spec: ModelSpec, batch_size: int | None,
                 options: dict[str, Any]) -> None:
        self.function = predict
        self.spec = spec
        self.batch_size = batch_size
        self._options = options

    def predict(self, batch: np.ndarray) -> np.ndarray:
        """``f`` on ``batch`` (N, C, H, W) float32, in pieces of ``batch_size``; returns (N, K) float32."""
        n = check_batch(batch, self.spec).shape[0]
        parts = []
        for s in batch_slices(n, self.batch_size or n or 1):
            feed = to_layout(np.asarray(batch[s], dtype=np.float32), self.spec.preprocessing.layout)
            try:
                out = np.asarray(self.function(feed), dtype=np.float32)
            except InputError:
                raise
            except Exception as e:
                raise ModelError(f"the model function failed: {type(e).__name__}: "
                                 f"{str(e).splitlines()[0][:200] if str(e) else ''}") from None
            if out.ndim != 2 or out.shape != (s.stop - s.start, self.spec.num_classes):
                raise ModelError(f"the model function returned shape {list(out.shape)} for "
                                 f"{s.stop - s.start} inputs, expected ({s.stop - s.start}, {self.spec.num_classes})")
            parts.append(out)
        return np.concatenate(parts) if parts else np.zeros((0, self.spec.num_classes), np.float32)

    def describe(self) -> dict[str, Any]:
        """``{"backend": "function", "function": f, "options": {...}}``: picklable when ``f`` is
        (a module-level function, not a lambda)."""
        return {"backend": self.backend, "function": self.function, "options": dict(self._options)}


def from_function(predict: Callable[[np.ndarray], Any], *, input_shape: Sequence[int],
                  labels: Sequence[str] | None = None, preprocessing: Preprocessing | None = None,
                  output: str = "logits", num_classes: int | None = None, batch_size: int | None = None,
                  name: str = "function") -> FunctionModel:
    """Wrap ``predict(batch) -> (N, K)`` as a Model.

    Parameters
    ----------
    predict : callable
        Takes a float32 batch (N, C, H, W), or (N, H, W, C) when ``preprocessing.layout``
        is "NHWC", preprocessed as ``preprocessing`` says; returns (N, K) scores.
    input_shape : (C, H, W)
        One input in NCHW order.
    labels : sequence of K str, optional
    preprocessing : Preprocessing, optional
        How images become inputs (default: pixels / 255, no mean or std, NCHW).
    output : {"logits", "probabilities"}
        What ``predict`` returns.
    num_classes : int, optional
        K; default ``len(labels)``, else asked of ``predict`` on one zero input.
    batch_size : int, optional
        At most this many inputs per call.
    name : str
        Shown as the model's source.
    """
    shape = tuple(int(v) for v in input_shape)
    if len(shape) != 3 or shape[0] not in (1, 3) or min(shape) < 1:
        raise InputError(f"input_shape must be (C, H, W) with C 1 or 3, got {tuple(input_shape)}")
    if output not in OUTPUT_KINDS:
        raise InputError(f"output must be one of {OUTPUT_KINDS}, got {output!r}")
    if batch_size is not None and (isinstance(batch_size, bool) or int(batch_size) < 1):
        raise InputError(f"batch_size must be a positive integer, got {batch_size!r}")
    if not callable(predict):
        raise InputError("predict must be a function of a batch")
    c, h, w = shape
    pre = preprocessing or Preprocessing(size=(h, w), channels=c, mean=(0.0,) * c, std=(1.0,) * c)
    if (pre.channels, *pre.size) != shape:
        raise InputError(f"preprocessing is for ({pre.channels}, {pre.size[0]}, {pre.size[1]}), "
                         f"input_shape is {shape}")
    options = dict(input_shape=shape, labels=None if labels is None else list(labels), preprocessing=pre,
                   output=output, num_classes=num_classes, batch_size=batch_size, name=name)
    k = num_classes or (len(labels) if labels is not None else None)
    spec = ModelSpec(source=name, input_name="input", output_name="output", preprocessing=pre,
                     num_classes=k or 2, labels=(), output_kind=output, preprocessing_source="options")
    model = FunctionModel(predict, spec, batch_size, options)
    if k is None:
        k = int(np.asarray(predict(to_layout(np.zeros((1, c, h, w), np.float32), pre.layout))).reshape(1, -1).shape[1])
        if k < 2:
            raise InputError(f"predict returned {k} score(s) per input; a classifier returns K >= 2")
    model.spec = ModelSpec(source=name, input_name="input", output_name="output", preprocessing=pre,
                           num_classes=k, labels=default_labels(k, labels), output_kind=output,
                           preprocessing_source="options")
    return model
