"""The command line's served-explanation parts: ``export-explainer``, ``serve`` and ``--server-side``."""

from __future__ import annotations

import argparse
from typing import Any, Callable

from ..backends.triton.explain_export import add_parser as add_export_explainer, cmd_export_explainer
from .serve_command import add_parser as add_serve, cmd_serve


def add_parsers(sub: Any, model_options: Callable[[argparse.ArgumentParser], None],
                explain: argparse.ArgumentParser) -> None:
    """Add ``export-explainer`` and ``serve`` to the subcommands, ``--server-side`` to ``explain``."""
    explain.add_argument("--server-side", choices=["auto", "on", "off"], default="auto",
                         help="run the method in the Triton explainer model MODEL_explain (auto: when deployed)")
    add_export_explainer(sub)
    add_serve(sub, model_options)


def commands(load: Callable[[argparse.Namespace], Any]) -> dict[str, Callable[[argparse.Namespace], None]]:
    """The commands of :func:`add_parsers`, by name."""
    return {"export-explainer": cmd_export_explainer, "serve": lambda args: cmd_serve(args, load)}


def explainer_for(model: Any, info: Any, options: dict[str, Any], server_side: str) -> Callable[..., Any]:
    """``run(image, target, progress=...)`` -> Explanation: in ``M_explain`` when
    ``server_side`` picks it (``backends.triton.explain_client``), else the method in-process."""
    from ..backends.triton.explain_client import deployed_explainer, explain_served

    served = deployed_explainer(model, info.name, options, server_side) if info.needs_image else None
    if served:
        return lambda image, target, progress=False: explain_served(model, served, info.name, image, target, options)
    return lambda image, target, progress=False: info.function(model, image, target, progress=progress, **options)
