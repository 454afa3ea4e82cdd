"""The audit's sanity section: cascading model-parameter randomisation (MPRT, Adebayo et al. 2018)
per method, and the pointing game summary."""

from __future__ import annotations

import contextlib
import html
import io
from typing import Any, Callable

import numpy as np

from .. import metrics
from ..errors import InputError
from ..methods import MethodInfo
from ..methods.common import ImageInput
from .records import Audit

STILL_SIMILAR = 0.5  # Spearman at the last step above which a map still resembles the original
DECORRELATED = 0.2  # ... and below which it no longer does


def mprt(a: Audit, infos: dict[str, MethodInfo], kwargs: Callable[[MethodInfo], dict[str, Any]], *,
         layers: int = 5, images: int = 1, seed: int = 0) -> dict[str, dict[str, Any]]:
    """Per method: Spearman of |map| with the original after randomising the top 1..``layers``
    layers cumulatively, averaged over the first ``images`` images (target: the predicted class).

    Returns
    -------
    dict method -> {"layers": names randomised (top first), "spearman": (L,) list (None where
    undefined: a constant map), "undefined": reasons, "images": count} or {"error": why}
    """
    out: dict[str, dict[str, Any]] = {}
    if layers < 1 or images < 1:
        return out
    for name, info in infos.items():
        rows, why, names = [], [], []
        try:
            for i in range(min(images, len(a.paths))):
                image = ImageInput(a.x[i:i + 1], a.pixels[i], str(a.paths[i]))
                target = int(a.predicted[i])
                with contextlib.redirect_stderr(io.StringIO()):  # warnings about randomised models' maps
                    r = metrics.randomisation_check(
                        a.model, lambda m: info.function(m, image, target, progress=False, **kwargs(info)).map,
                        seed=seed, max_layers=layers)
                rows.append(r.correlations)
                why.append(r.undefined or [None] * len(r.layers))
                names = r.layers
        except InputError as e:
            out[name] = {"error": str(e)}
            continue
        rho = np.nanmean(np.array(rows, float), axis=0) if np.isfinite(rows).any() else np.full(len(names), np.nan)
        out[name] = {"layers": names, "images": len(rows),
                     "spearman": [None if not np.isfinite(v) else round(float(v), 4) for v in rho],
                     "undefined": [next((w[j] for w in why if w[j]), None) for j in range(len(names))]}
    return out


def sanity_html(result: dict[str, dict[str, Any]]) -> str:
    """The report's table: one row per method, one column per randomisation step."""
    if not result:
        return "<p>Not run (no layers or images requested).</p>"
    steps = max((len(r.get("layers", [])) for r in result.values()), default=0)
    head = "<tr><th>method</th>" + "".join(f"<th>top {j + 1}</th>" for j in range(steps)) + "<th>reading</th></tr>"
    rows = []
    for name, r in result.items():
        if "error" in r:
            rows.append(f"<tr><td>{html.escape(name)}</td><td colspan=\"{steps + 1}\">not available: "
                        f"{html.escape(r['error'])}</td></tr>")
            continue
        cells = "".join(f"<td>{'undefined' if v is None else f'{v:.2f}'}</td>" for v in r["spearman"])
        rows.append(f"<tr><td>{html.escape(name)}</td>{cells}<td>{html.escape(_reading(r))}</td></tr>")
    layers = next((r["layers"] for r in result.values() if "layers" in r), [])
    text = ("<p>Model-parameter randomisation (Adebayo et al. 2018): the layers with learned parameters "
            "are re-drawn at random from the top, cumulatively (top 1 = " + html.escape(", ".join(layers[:1]))
            + "; then " + html.escape(", ".join(layers[1:])) + "), and each method's map of the first "
            "image(s) is compared with the original (Spearman rank correlation of |map|). A map that "
            "does not change explains the image more than the model. Gradient and integrated-gradient "
            "maps are known to keep 0.4-0.7 (they follow the input's edges): a property of these "
            "methods, reported here, not a bug. A constant map gives no correlation: undefined.</p>")
    return text + f"<table>{head}{''.join(rows)}</table>"


def _reading(r: dict[str, Any]) -> str:
    last = next((v for v in reversed(r["spearman"]) if v is not None), None)
    if last is None:
        return "undefined (constant maps)"
    n = len(r["layers"])
    if last >= STILL_SIMILAR:
        return f"still resembles the original after randomising {n} layers (rho {last:.2f})"
    if last >= DECORRELATED:
        return f"partly decorrelates: rho {last:.2f} after randomising {n} layers"
    return f"decorrelates: rho {last:.2f} after randomising {n} layers"


def pointing_summary(a: Audit) -> dict[str, dict[str, Any]]:
    """Per method: the pointing game's hit rate over the images where it is defined."""
    out = {}
    for name in a.methods:
        values = [r.metrics.get("pointing_game") for r in a.results[name]]
        defined = [bool(v) for v in values if v is not None]
        out[name] = {"hit_rate": float(np.mean(defined)) if defined else None, "images": len(defined),
                     "hits": int(sum(defined))}
    return out


def sanity_section(checks: dict[str, Any] | None) -> str:
    """The report's "Sanity checks" section: pointing game per method, then MPRT."""
    if checks is None:
        return "<p>Not run.</p>"
    parts = []
    pg = checks.get("pointing_game")
    if pg:
        rows = "".join(f"<tr><td>{html.escape(m)}</td><td>{_rate(r['hit_rate'])}</td>"
                       f"<td>{r['hits']}/{r['images']}</td></tr>" for m, r in pg.items())
        parts.append(f"<p>Pointing game (Zhang et al. 2018): the map's maximum lies within "
                     f"{checks['pointing_tolerance']} px of the mask, over the images whose mask is not empty "
                     f"and whose map is not constant.</p><table><tr><th>method</th><th>hit rate</th>"
                     f"<th>hits</th></tr>{rows}</table>")
    parts.append(sanity_html(checks.get("mprt") or {}))
    return "".join(parts)


def _rate(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"
