"""Pictures of explanations: display rules per kind of map (``rules``) and the overlay PNG
(``overlay``). ``from explainer.visualization import overlay_png`` keeps working; matplotlib
is imported only when a drawing function is first used (the CLI starts without it)."""

from __future__ import annotations

from typing import Any

from .rules import SIGNS, VIEWS, DisplayOptions, Shown, blend, kind_of, shown

__all__ = ["DisplayOptions", "SIGNS", "Shown", "VIEWS", "blend", "colorbar", "draw", "kind_of",
           "overlay_png", "shown"]


def __getattr__(name: str) -> Any:
    if name in ("overlay_png", "draw", "colorbar", "map_rgba", "greyed"):
        from . import overlay

        return getattr(overlay, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
