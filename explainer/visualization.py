"""Overlays of maps on images (jet for unsigned maps, red/blue for signed ones)."""

from __future__ import annotations

import io
from typing import TYPE_CHECKING

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

if TYPE_CHECKING:
    from .explanation import Explanation


def overlay_png(explanation: "Explanation", *, alpha: float = 0.5, dpi: int = 100) -> bytes:
    """Render the image with the map on top as PNG bytes (like the seeds' plotMaps).

    The map uses the jet colormap over its own range (``display="jet"``) or a
    red/blue diverging colormap centred on 0 (``display="diverging"``), with a
    colorbar and a title giving the class and its score.
    """
    m = explanation.map
    fig, ax = plt.subplots(figsize=(5, 4.4), dpi=dpi)
    try:
        if explanation.pixels is not None:
            ax.imshow(explanation.pixels)
        if explanation.display == "diverging":
            lim = float(np.nanmax(np.abs(m))) if np.isfinite(m).any() else 1.0
            lim = lim or 1.0
            im = ax.imshow(m, cmap="bwr", vmin=-lim, vmax=lim, alpha=alpha, interpolation="nearest")
        else:
            im = ax.imshow(m, cmap="jet", alpha=alpha, interpolation="nearest")
        hatch_unmeasured(ax, m)
        fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
        ax.set_axis_off()
        kind = explanation.params.get("score", "score")
        ax.set_title(f"{explanation.label} ({kind} {explanation.score:.3g})\n{explanation.method}",
                     fontsize=10)
        buf = io.BytesIO()
        fig.savefig(buf, format="png", bbox_inches="tight")
        return buf.getvalue()
    finally:
        plt.close(fig)


def hatch_unmeasured(ax: "plt.Axes", m: np.ndarray) -> None:
    """Hatch (grey "//") the NaN pixels of an (H, W) map: places nothing measured, not "no effect"."""
    missing = np.isnan(np.asarray(m, dtype=np.float64))
    if missing.any():
        ax.contourf(missing.astype(float), levels=[0.5, 1.5], colors="none", hatches=["///"])
        for c in ax.collections[-1:]:
            c.set_edgecolor("0.3")
            c.set_linewidth(0.0)
