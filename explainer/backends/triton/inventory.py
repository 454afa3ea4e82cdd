"""What a Triton endpoint offers beyond the forward model: its deployed companion models.

``explainer inspect`` on an endpoint has no graph to read; it lists, from the server's
model repository index, the ready models deployed next to forward model ``M`` by the
export commands (``M_grad_<relu>[__<layer>]``, ``M_dream__<layer>``, ``M_layers``), what
each computes (read from its ``explainer.gradient`` / ``explainer.layers`` parameter) and so
which layers the layer methods can use there.
"""

from __future__ import annotations

import json
from typing import Any

from .gradients import _config, ready_models
from .naming import companion_kind


def companions(model: Any) -> list[dict[str, Any]]:
    """The ready companion models of ``model``'s forward model, sorted by name.

    Returns
    -------
    list of dict
        ``model`` (its name), ``kind`` ("gradient", "dream" or "layers"), ``layers``
        (the layers it gives access to, possibly empty), and for gradient models ``relu``
        and ``default_layer`` (whether it holds Grad-CAM's default feature layer).
    """
    forward = model.endpoints[0].model
    found = []
    for name in ready_models(model):
        kind = companion_kind(forward, name)
        if kind is None:
            continue
        params = {k: str(v.get("string_value", "")) for k, v in
                  (_config(model, name).get("parameters") or {}).items()}
        try:
            info = json.loads(params.get("explainer.layers" if kind == "layers" else "explainer.gradient", ""))
        except ValueError:
            continue  # a model of that name that no export command wrote
        if not isinstance(info, dict):
            continue
        if kind == "layers":
            entry = {"layers": [str(r.get("layer") or r.get("tensor")) for r in info.get("layers", [])]}
        elif kind == "dream":
            entry = {"layers": [str(info.get("of"))]}
        else:
            entry = {"layers": [str(info["layer"])] if info.get("layer") else [],
                     "relu": str(info.get("relu", "standard")), "default_layer": bool(info.get("default_layer"))}
        found.append({"model": name, "kind": kind, **entry})
    return found
