"""The ``--incremental`` flag shared by occlusion and prediction difference."""

from __future__ import annotations

from . import Option

INCREMENTAL_OPTION = Option("--incremental", "incremental", dict(
    choices=["auto", "off"],
    help="auto: recompute only the layer regions a mask or window reaches, when it pays "
         "(same map to float32 rounding; the JSON's params.inference says which path ran)"))
