"""The ``Model`` protocol's capabilities for a Triton endpoint, each mapped to a deployed companion model.

Names follow :mod:`.naming`; a capability whose companion model is not deployed raises an
``InputError`` naming the export command that makes it.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from ..base import CapabilityError, Layer, ModelBase


class TritonCapabilities(ModelBase):
    """Gradients, layer tensors, layer-mean gradients and the default layer of a TritonModel."""

    def gradients(self, batch: np.ndarray, logit_weights: np.ndarray, probability_weights: np.ndarray,
                  *, layer: str | None = None,
                  relu: str = "standard") -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """Outputs, gradient and activations from the deployed gradient model (see .gradients)."""
        from .gradients import gradients

        return gradients(self, batch, logit_weights, probability_weights, layer=layer, relu=relu)

    def activations(self, batch: np.ndarray, layers: Sequence[str]) -> dict[str, np.ndarray]:
        """The named layers' (N, ...) float32 tensors from the deployed layers model (see .layers)."""
        from .layers import layer_activations

        return layer_activations(self, batch, layers)

    layer_activations = activations  # the name before the protocol was closed

    def layer_mean_gradients(self, batch: np.ndarray, weights: np.ndarray,
                             layer: str) -> tuple[np.ndarray, np.ndarray]:
        """Channel means of ``layer`` and their weighted gradient, from ``M_dream__<layer>`` (see .dream)."""
        from .dream import layer_mean_gradients

        return layer_mean_gradients(self, batch, weights, layer)

    def layer_channels(self, layer: str) -> int:
        """The channels of ``layer``, read from its deployed ``M_dream__<layer>``."""
        from .dream import deployed_dream

        return deployed_dream(self, layer)[1]

    def default_feature_layer(self) -> str:
        """Grad-CAM's default layer, read from the deployed layer-gradient models (see .gradients)."""
        from .gradients import default_feature_layer

        return default_feature_layer(self)

    def linear_head(self) -> tuple[str, np.ndarray]:
        """Not served: CAM on an endpoint derives the target's FC row from layer gradients."""
        raise CapabilityError(f"{self.endpoints[0]}: the fully connected weights are not served; "
                              "cam derives them from the deployed gradient model of the default layer")

    def deployed(self) -> list[dict[str, Any]]:
        """The ready companion models of this served model (``inventory.companions``)."""
        from .inventory import companions

        return companions(self)

    def layers(self) -> list[Layer]:
        """The layers the deployed companion models give access to (names only)."""
        named = dict.fromkeys(layer for c in self.deployed() for layer in c["layers"])
        return [Layer(name=n, op_type=None, output=None, shape=None) for n in named]

    def describe(self) -> dict[str, Any]:
        """``{"backend": "triton", "source": URLs, "options": {...}}``, picklable; the options hold
        the request headers (credentials): never print or log a description."""
        return {"backend": self.backend, "source": self._source, "options": dict(self._options),
                "gradient_model": self.gradient_model, "layers_model": self.layers_model}
