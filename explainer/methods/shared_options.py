"""Flags shared by several methods: --incremental (occlusion, prediction difference), --quality (RISE,
LIME), --design (RISE)."""

from __future__ import annotations

from typing import Any

from ..errors import InputError
from . import Option

INCREMENTAL_MODES = ("auto", "off")


def check_incremental(mode: str) -> str:
    """Validate the ``incremental`` option."""
    if mode not in INCREMENTAL_MODES:
        raise InputError(f"incremental must be 'auto' or 'off', got {mode!r}")
    return mode


def incremental_runner(model: Any, x: Any, box: tuple[int, int], mode: str) -> tuple[Any, dict[str, Any]]:
    """The model to stream masked inputs through, and ``params["inference"]``."""
    if mode == "off":
        return model, dict(path="full", reason="incremental inference turned off")
    return model.incremental(x, box)

INCREMENTAL_OPTION = Option("--incremental", "incremental", dict(
    choices=["auto", "off"],
    help="auto: recompute only the layer regions a mask or window reaches, when it pays "
         "(same map to float32 rounding; the JSON's params.inference says which path ran)"))

QUALITY_OPTION = Option("--quality", "quality", dict(
    choices=["fast", "balanced", "best"],
    help="best (default): every mask/sample; balanced / fast: stop early once the map's agreement "
         "with the full-budget map, predicted from two halves of the samples, reaches Spearman "
         "0.95 / 0.90 (--num-masks / --num-samples is the cap)"))

DESIGN_OPTION = Option("--design", "design", dict(
    choices=["auto", "orthogonal", "independent"],
    help="RISE: how the random grids are drawn: orthogonal (balanced blocks, each mask distributed "
         "as an independent one; needs --keep-probability 0.5), independent (the paper's); "
         "auto: orthogonal when p = 0.5"))
