"""Display rules per kind of map: which colours, which alpha, which colour-bar label.

Three kinds (see README, "How maps are drawn"):

- ``heat`` (occlusion, LIME tree, RISE, Grad-CAM, CAM, activations): jet over the map's
  range at a constant alpha, as MATLAB's ``imagesc(map, 'AlphaData', 0.5)``.
- ``signed`` (prediction difference, LIME linear): a diverging map centred on 0 with
  alpha proportional to |value|, so neutral pixels show the photo.
- ``pixel`` (gradient, guided backprop, deconvnet, SmoothGrad, integrated gradients):
  Captum's ``visualize_image_attr`` conventions: the signed attributions are summed over
  channels after the ``sign`` choice, optionally smoothed, clipped at a percentile of
  their magnitude (default 99) and drawn with alpha proportional to the clipped value.

NaN pixels (e.g. no occlusion window covered them) stay NaN: the drawing code leaves
them transparent and hatches them.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import InputError

if TYPE_CHECKING:
    from ..explanation import Explanation

VIEWS = ("full", "crop")
SIGNS = ("absolute", "positive", "negative", "all")
PIXEL_METHODS = ("gradient", "guided-backprop", "deconvnet", "integrated-gradients")
SIGN_CMAPS = {"absolute": "inferno_r", "positive": "Greens", "negative": "Reds", "all": "RdBu_r"}
UNITS = {
    "occlusion": "drop in {score} when occluded",
    "lime": "LIME importance ({score})",
    "rise": "RISE saliency (mean {score})",
    "grad-cam": "Grad-CAM relevance (a.u.)",
    "cam": "CAM relevance (a.u.)",
    "activations": "activation of channel {channel}",
    "prediction-difference": "evidence, log2 odds (red: for)",
    "prediction-difference/logit": "activation difference (red: for)",
    "gradient": "d {score} / d input",
    "guided-backprop": "guided backprop ({score})",
    "deconvnet": "deconvnet ({score})",
    "integrated-gradients": "IG attribution ({score})",
}


@dataclass(frozen=True)
class DisplayOptions:
    """How a map is drawn (never changes the saved map).

    Attributes
    ----------
    view : {"full", "crop"}
        "full": the original picture with the map placed back over the model's crop
        (drawn as a box); "crop": only what the model saw.
    sign : {"absolute", "positive", "negative", "all"} or None
        Pixel attributions only; None: "absolute".
    clip_percentile : float in (0, 100]
        Pixel attributions: values above this percentile of |value| saturate.
    smooth : float >= 0
        Gaussian sigma in model pixels applied before clipping (pixel attributions).
    alpha : float in [0, 1]
        Heat maps' constant opacity, the most opacity of the others.
    """

    view: str = "full"
    sign: str | None = None
    clip_percentile: float = 99.0
    smooth: float = 0.0
    alpha: float = 0.5

    def __post_init__(self) -> None:
        if self.view not in VIEWS:
            raise InputError(f"view must be one of {VIEWS}, got {self.view!r}")
        if self.sign is not None and self.sign not in SIGNS:
            raise InputError(f"sign must be one of {SIGNS}, got {self.sign!r}")
        if not 0 < float(self.clip_percentile) <= 100:
            raise InputError(f"clip percentile must be in (0, 100], got {self.clip_percentile!r}")
        if not float(self.smooth) >= 0:
            raise InputError(f"smooth must be a number >= 0, got {self.smooth!r}")
        if not 0 <= float(self.alpha) <= 1:
            raise InputError(f"alpha must be in [0, 1], got {self.alpha!r}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Shown:
    """A map ready to draw.

    Attributes
    ----------
    values : (H, W) float64 ndarray, NaN where the map has no value
    cmap : str, a matplotlib colormap name
    vmin, vmax : float, the colour range
    alpha : (H, W) float64 ndarray in [0, 1] (0 where NaN)
    label : str, the colour-bar label (with the unit)
    kind : {"heat", "signed", "pixel"}
    """

    values: np.ndarray
    cmap: str
    vmin: float
    vmax: float
    alpha: np.ndarray
    label: str
    kind: str


def kind_of(explanation: "Explanation") -> str:
    """"pixel" for gradient attributions, "signed" for diverging maps, else "heat"."""
    if explanation.display == "pixel" or (explanation.method in PIXEL_METHODS
                                          and "attributions" in explanation.arrays):
        return "pixel"
    return "signed" if explanation.display == "diverging" else "heat"


def unit_label(explanation: "Explanation", suffix: str = "") -> str:
    """The colour-bar label: what the value means, in which unit."""
    score = explanation.params.get("score", "probability")
    text = UNITS.get(f"{explanation.method}/{score}", UNITS.get(explanation.method, "relevance ({score})"))
    return text.format(score=score, channel=explanation.params.get("channel", "?")) + suffix


def smooth_nan(values: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian smoothing that ignores NaN pixels (and keeps them NaN)."""
    if sigma <= 0:
        return values
    from scipy import ndimage

    bad = ~np.isfinite(values)
    filled = ndimage.gaussian_filter(np.where(bad, 0.0, values), sigma, mode="nearest")
    weight = ndimage.gaussian_filter((~bad).astype(np.float64), sigma, mode="nearest")
    out = np.divide(filled, weight, out=np.zeros_like(filled), where=weight > 1e-9)
    out[bad] = np.nan
    return out


def pixel_values(explanation: "Explanation", sign: str) -> np.ndarray:
    """(H, W) channel-summed attributions after the sign choice (the map itself when the
    signed attributions are not at hand and ``sign`` is "absolute")."""
    a = explanation.arrays.get("attributions")
    if a is None or np.ndim(a) != 4:
        if sign != "absolute":
            raise InputError(f"--sign {sign} needs signed attributions; {explanation.method} has none")
        return np.asarray(explanation.map, np.float64)
    a = np.asarray(a, np.float64)[0]
    if sign == "absolute":
        return np.abs(a).sum(axis=0)
    if sign == "positive":
        return np.maximum(a, 0).sum(axis=0)
    if sign == "negative":
        return np.maximum(-a, 0).sum(axis=0)
    return a.sum(axis=0)


def _finite_abs_max(v: np.ndarray) -> float:
    finite = np.abs(v[np.isfinite(v)])
    return float(finite.max()) if finite.size and finite.max() > 0 else 1.0


def shown(explanation: "Explanation", options: DisplayOptions | None = None) -> Shown:
    """Apply the display rule of the explanation's kind (module docstring)."""
    o = options or DisplayOptions()
    kind = kind_of(explanation)
    nan = ~np.isfinite(np.asarray(explanation.map, np.float64))
    if kind == "pixel":
        sign = o.sign or "absolute"
        v = smooth_nan(pixel_values(explanation, sign), float(o.smooth))
        v[nan] = np.nan
        finite = np.abs(v[np.isfinite(v)])
        lim = float(np.percentile(finite, o.clip_percentile)) if finite.size else 1.0
        lim = lim if lim > 0 else _finite_abs_max(v)
        v = np.clip(v, -lim, lim)
        alpha = np.clip(np.abs(v) / lim, 0, 1) * o.alpha * 1.8
        lo = -lim if sign == "all" else 0.0
        label = unit_label(explanation, f" [{sign}, p{o.clip_percentile:g}]")
        return Shown(v, SIGN_CMAPS[sign], lo, lim, _alpha(alpha, v), label, kind)
    if o.sign is not None:
        raise InputError(f"--sign applies to pixel attributions ({', '.join(PIXEL_METHODS)}), "
                         f"not to {explanation.method}")
    v = np.asarray(explanation.map, np.float64).copy()
    if kind == "signed":
        lim = _finite_abs_max(v)
        alpha = np.clip(np.abs(v) / lim, 0, 1) * min(1.0, o.alpha * 1.8)
        return Shown(v, "bwr", -lim, lim, _alpha(alpha, v), unit_label(explanation), kind)
    finite = v[np.isfinite(v)]
    lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    hi = hi if hi > lo else lo + 1.0
    return Shown(v, "jet", lo, hi, _alpha(np.full(v.shape, float(o.alpha)), v),
                 unit_label(explanation), kind)


def _alpha(alpha: np.ndarray, values: np.ndarray) -> np.ndarray:
    out = np.where(np.isfinite(values), np.nan_to_num(alpha), 0.0)
    return np.clip(out, 0.0, 1.0)


def blend(pixels: np.ndarray, s: Shown) -> np.ndarray:
    """The map painted over pixels as an (H, W, 3) uint8 array (pixel maps over a grey photo;
    NaN pixels hatched in grey). ``pixels`` and ``s.values`` share (H, W)."""
    import matplotlib

    base = pixels.astype(np.float64)
    if s.kind == "pixel":
        grey = base @ np.array([0.299, 0.587, 0.114])
        base = np.repeat((0.35 * grey + 0.65 * 255)[..., None], 3, axis=2)
    span = s.vmax - s.vmin or 1.0
    colours = matplotlib.colormaps[s.cmap](np.clip((np.nan_to_num(s.values) - s.vmin) / span, 0, 1))
    a = s.alpha[..., None]
    rgb = (1 - a) * base + a * colours[..., :3] * 255
    nan = ~np.isfinite(s.values)
    if nan.any():
        yy, xx = np.indices(nan.shape)
        stripes = ((yy + xx) // 3) % 3 == 0
        rgb[nan & stripes] = (96, 96, 96)
    return np.clip(np.round(rgb), 0, 255).astype(np.uint8)
