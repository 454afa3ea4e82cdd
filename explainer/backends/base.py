"""The backends' side of the closed ``Model`` protocol (defined in :mod:`explainer.model`)."""

from ..model import (OUTPUT_KINDS, SCORES, CapabilityError, GradientModel, Layer, Model, ModelBase, ModelSpec,
                     batch_slices, check_batch, default_labels, resolve_target, scores, to_layout)

__all__ = ["OUTPUT_KINDS", "SCORES", "CapabilityError", "GradientModel", "Layer", "Model", "ModelBase",
           "ModelSpec", "batch_slices", "check_batch", "default_labels", "resolve_target", "scores", "to_layout"]
