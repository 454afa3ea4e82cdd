"""The overlay PNG of an explanation: the picture, the map drawn by its kind's rule, a colour bar
with the unit, and (``view="full"``) the model's crop boxed on the whole original picture."""

from __future__ import annotations

import io
from typing import TYPE_CHECKING, Any

import matplotlib

matplotlib.use("Agg")  # for callers drawing with pyplot (dataset.tsne_png, the gallery); not imported here
import numpy as np  # noqa: E402
from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: E402
from matplotlib.cm import ScalarMappable  # noqa: E402
from matplotlib.colors import Normalize  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.patches import Patch, Rectangle  # noqa: E402

from .rules import DisplayOptions, Shown, shown  # noqa: E402

if TYPE_CHECKING:
    from ..explanation import Explanation


def map_rgba(s: Shown) -> np.ndarray:
    """(H, W, 4) float RGBA of a shown map: its colours with its per-pixel alpha."""
    span = s.vmax - s.vmin or 1.0
    rgba = matplotlib.colormaps[s.cmap](np.clip((np.nan_to_num(s.values) - s.vmin) / span, 0, 1))
    rgba[..., 3] = s.alpha
    return rgba


def greyed(pixels: np.ndarray) -> np.ndarray:
    """A light grey version of (H, W, 3) uint8 pixels, under pixel attributions."""
    grey = pixels.astype(np.float64) @ np.array([0.299, 0.587, 0.114])
    return np.repeat((0.35 * grey + 0.65 * 255)[..., None], 3, axis=2).astype(np.uint8)


def _base(e: "Explanation", view: str) -> tuple[np.ndarray | None, tuple[float, float, float, float],
                                              tuple[float, float, float, float] | None]:
    """The picture to draw on, its extent (left, right, bottom, top), and the map's extent
    when it differs (the crop box on the full picture)."""
    h, w = e.map.shape
    if view == "full" and e.original is not None and e.crop_box is not None and e.image_size:
        h0, w0 = e.image_size
        left, top, right, bottom = e.crop_box
        return e.original, (0.0, float(w0), float(h0), 0.0), (left, right, bottom, top)
    return e.pixels, (0.0, float(w), float(h), 0.0), None


def draw(ax: Any, e: "Explanation", options: DisplayOptions | None = None) -> Shown:
    """Draw the explanation on ``ax`` (no colour bar); returns what was drawn."""
    o = options or DisplayOptions()
    s = shown(e, o)
    picture, extent, box = _base(e, o.view)
    if picture is not None:
        ax.imshow(greyed(picture) if s.kind == "pixel" else picture, extent=extent,
                  interpolation="antialiased")
    where = box or extent
    ax.imshow(map_rgba(s), extent=where, interpolation="nearest")
    nan = ~np.isfinite(s.values)
    if nan.any():
        h, w = nan.shape
        xs = where[0] + (np.arange(w) + 0.5) * (where[1] - where[0]) / w
        ys = where[3] + (np.arange(h) + 0.5) * (where[2] - where[3]) / h
        with matplotlib.rc_context({"hatch.color": "#444444", "hatch.linewidth": 0.8}):
            ax.contourf(xs, ys, nan.astype(float), levels=[0.5, 1.5], colors="none", hatches=["////"])
        ax.legend(handles=[Patch(facecolor="white", edgecolor="#444444", hatch="////",
                                 label="no value (NaN)")], loc="lower right", fontsize=7)
    if box is not None and (box[0] > 0.5 or box[3] > 0.5 or box[1] < extent[1] - 0.5
                            or box[2] < extent[2] - 0.5):
        for colour, width in (("black", 2.6), ("white", 1.2)):
            ax.add_patch(Rectangle((box[0], box[3]), box[1] - box[0], box[2] - box[3], fill=False,
                                   edgecolor=colour, linewidth=width, linestyle="--"))
    ax.set_xlim(extent[0], extent[1])
    ax.set_ylim(extent[2], extent[3])
    ax.set_axis_off()
    return s


def colorbar(fig: Any, ax: Any, s: Shown) -> None:
    """A colour bar of the shown map, labelled with its unit."""
    from mpl_toolkits.axes_grid1 import make_axes_locatable

    cax = make_axes_locatable(ax).append_axes("right", size="4%", pad=0.08)
    bar = fig.colorbar(ScalarMappable(Normalize(s.vmin, s.vmax), s.cmap), cax=cax)
    bar.set_label(s.label, fontsize=8)
    bar.ax.tick_params(labelsize=7)


def overlay_png(explanation: "Explanation", options: DisplayOptions | None = None, *,
                alpha: float | None = None, dpi: int = 100) -> bytes:
    """Render the picture with the map on top as PNG bytes (like the seeds' plotMaps).

    Parameters
    ----------
    explanation : Explanation
    options : DisplayOptions or None
        View, sign, clipping, smoothing (defaults: ``DisplayOptions()``).
    alpha : float or None
        Overrides ``options.alpha``.
    """
    o = options or DisplayOptions()
    if alpha is not None:
        o = DisplayOptions(o.view, o.sign, o.clip_percentile, o.smooth, alpha)
    picture, extent, _ = _base(explanation, o.view)
    ratio = abs(extent[2] - extent[3]) / max(abs(extent[1] - extent[0]), 1e-9)
    # a Figure on an Agg canvas, not pyplot: the same picture without pyplot's import and figure manager
    fig = Figure(figsize=(5.6, float(np.clip(4.6 * ratio, 2.4, 7.5)) + 0.6), dpi=dpi)
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    s = draw(ax, explanation, o)
    colorbar(fig, ax, s)
    kind = explanation.params.get("score", "score")
    view = "whole image, model crop dashed" if o.view == "full" and picture is explanation.original \
        and explanation.original is not None else "model input"
    what = explanation.method
    if "layer" in explanation.params and "channel" in explanation.params:
        what = f"{what} of {explanation.params['layer']}, channel {explanation.params['channel']} (strongest)"
    ax.set_title(f"{explanation.label} ({kind} {explanation.score:.3g})\n{what} - {view}", fontsize=10)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight")
    return buf.getvalue()
