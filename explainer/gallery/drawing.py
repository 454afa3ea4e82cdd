"""Figure building blocks for the gallery: explanation panels, pictures, prediction bars."""

from __future__ import annotations

import io
from typing import Any, Callable, Sequence

import numpy as np

from ..explanation import Explanation
from ..visualization.overlay import colorbar, draw
from ..visualization.rules import DisplayOptions

Panel = Callable[[Any, Any], None]


def figure(panels: Sequence[Panel], *, title: str = "", width: float = 3.6, height: float = 3.4,
           columns: int | None = None) -> bytes:
    """PNG bytes of a row (or grid) of panels, each ``panel(fig, ax)``."""
    import matplotlib.pyplot as plt

    n = len(panels)
    cols = columns or n
    rows = -(-n // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(width * cols, height * rows + (0.5 if title else 0)),
                             dpi=100, squeeze=False)
    try:
        for i, ax in enumerate(axes.ravel()):
            if i < n:
                panels[i](fig, ax)
            else:
                ax.set_axis_off()
        if title:
            fig.suptitle(title, fontsize=13)
        fig.tight_layout()
        buf = io.BytesIO()
        fig.savefig(buf, format="png", bbox_inches="tight", metadata={"Software": None})
        return buf.getvalue()
    finally:
        plt.close(fig)


def explained(e: Explanation, title: str, options: DisplayOptions | None = None) -> Panel:
    """A panel drawing an explanation by its display rule, with its colour bar."""
    def panel(fig: Any, ax: Any) -> None:
        s = draw(ax, e, options)
        colorbar(fig, ax, s)
        ax.set_title(title, fontsize=10)
    return panel


def picture(pixels: np.ndarray, title: str, *, cmap: str | None = None) -> Panel:
    """A panel showing an image (uint8 RGB or grey)."""
    def panel(fig: Any, ax: Any) -> None:
        ax.imshow(pixels, cmap=cmap, interpolation="nearest" if pixels.shape[0] < 128 else "antialiased")
        ax.set_axis_off()
        ax.set_title(title, fontsize=10)
    return panel


def bars(labels: Sequence[str], values: Sequence[float], title: str, *,
         highlight: int | None = 0) -> Panel:
    """A panel of horizontal probability bars, the first on top, values written at the bars."""
    def panel(fig: Any, ax: Any) -> None:
        y = np.arange(len(labels))[::-1]
        colours = ["#c0392b" if i == highlight else "#7f8c8d" for i in range(len(labels))]
        ax.barh(y, values, color=colours)
        ax.set_yticks(y, [lab[:22] for lab in labels], fontsize=9)
        ax.set_xlim(0, 1.18)
        ax.set_xlabel("probability", fontsize=9)
        for yy, v in zip(y, values):
            ax.text(min(v, 1.0) + 0.02, yy, f"{v:.3f}", va="center", fontsize=9)
        ax.spines[["top", "right"]].set_visible(False)
        ax.set_title(title, fontsize=10)
    return panel


def top_k(probs: np.ndarray, labels: Sequence[str], k: int = 3) -> tuple[list[str], list[float]]:
    """The k most probable classes and their probabilities, best first."""
    idx = np.argsort(-probs, kind="stable")[:k]
    return [labels[i] for i in idx], [float(probs[i]) for i in idx]
