"""Flags shared by several methods: --incremental (occlusion, prediction difference), --quality (RISE, LIME)."""

from __future__ import annotations

from . import Option

INCREMENTAL_OPTION = Option("--incremental", "incremental", dict(
    choices=["auto", "off"],
    help="auto: recompute only the layer regions a mask or window reaches, when it pays "
         "(same map to float32 rounding; the JSON's params.inference says which path ran)"))

QUALITY_OPTION = Option("--quality", "quality", dict(
    choices=["fast", "balanced", "best"],
    help="best (default): every mask/sample; balanced / fast: stop early once two halves of the "
         "samples give maps with Spearman rho >= 0.95 / 0.90 (--num-masks / --num-samples is the cap)"))
