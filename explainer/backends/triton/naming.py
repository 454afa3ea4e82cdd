"""The one naming convention of companion models deployed next to forward model ``M``.

==========  ==================================  ===========================================
kind        name                                written by
==========  ==================================  ===========================================
gradient    ``M_grad_<relu>``                   ``export-gradients --triton-repo``
gradient    ``M_grad_<relu>__<layer>``          ``export-gradients --layer LAYER``
dream       ``M_dream__<layer>``                ``export-gradients --dream-layer LAYER``
layers      ``M_layers``                        ``export-layers --triton-repo``
==========  ==================================  ===========================================

``<layer>`` is :func:`sanitise_layer` of the layer's name. Every module that names or
recognises a companion model calls :func:`companion_name` or :func:`companion_kind`.
"""

from __future__ import annotations

import hashlib
import re

KINDS = ("gradient", "dream", "layers")
_NAME_LIMIT = 120


def sanitise_layer(layer: str) -> str:
    """A layer name as a Triton model-name suffix: runs of other than [A-Za-z0-9_-] -> "_".

    Names longer than 120 characters are cut and end in 8 hex digits of their SHA-1.
    """
    text = re.sub(r"[^A-Za-z0-9_-]+", "_", str(layer)).strip("_") or "layer"
    if len(text) > _NAME_LIMIT:
        text = text[:_NAME_LIMIT - 9] + "_" + hashlib.sha1(str(layer).encode()).hexdigest()[:8]
    return text


def companion_name(forward: str, kind: str, *, layer: str | None = None, relu: str = "standard") -> str:
    """The deployed name of ``forward``'s companion model of ``kind`` ("gradient", "dream", "layers").

    ``layer`` is required for "dream", optional for "gradient" (input gradients without it)
    and ignored for "layers"; ``relu`` applies to "gradient" only.
    """
    if kind == "gradient":
        base = f"{forward}_grad_{relu}"
        return base if layer is None else f"{base}__{sanitise_layer(layer)}"
    if kind == "dream":
        if layer is None:
            raise ValueError("a dream companion model needs a layer")
        return f"{forward}_dream__{sanitise_layer(layer)}"
    if kind == "layers":
        return f"{forward}_layers"
    raise ValueError(f"companion kind must be one of {KINDS}, got {kind!r}")


def companion_kind(forward: str, name: str) -> str | None:
    """Which kind of ``forward``'s companion model ``name`` is by its name (None: not one)."""
    if name == companion_name(forward, "layers"):
        return "layers"
    if name.startswith(f"{forward}_grad_"):
        return "gradient"
    if name.startswith(f"{forward}_dream__"):
        return "dream"
    return None


def gradient_model_name(forward: str, layer: str | None = None, relu: str = "standard") -> str:
    """``companion_name(forward, "gradient", layer=layer, relu=relu)``."""
    return companion_name(forward, "gradient", layer=layer, relu=relu)


def dream_model_name(forward: str, layer: str) -> str:
    """``companion_name(forward, "dream", layer=layer)``."""
    return companion_name(forward, "dream", layer=layer)


def layers_model_name(forward: str) -> str:
    """``companion_name(forward, "layers")``."""
    return companion_name(forward, "layers")
