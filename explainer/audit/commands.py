"""The ``explainer export-layers`` and ``explainer audit`` subcommands (parsers and handlers)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Callable

from ..backends.triton.export import add_repo_options
from ..cluster import commands as cluster_commands


def _names(text: str) -> list[str]:
    names = [p.strip() for p in text.split(",") if p.strip()]
    if not names:
        raise argparse.ArgumentTypeError("expected comma-separated names")
    return names


def add_parsers(sub: Any, model_options: Callable[[argparse.ArgumentParser], None]) -> None:
    """Add the subcommands to the ``explainer`` parser's subparsers."""
    x = sub.add_parser("export-layers", help="write a copy of an ONNX model that also outputs layers")
    x.add_argument("--model", required=True, type=Path, help="the ONNX classifier")
    x.add_argument("--layers", required=True, type=_names, help="comma-separated node or tensor names")
    x.add_argument("--out", type=Path, help="the new .onnx file (or give --triton-repo)")
    add_repo_options(x, "layers", "NAME_layers")
    a = sub.add_parser("audit", help="classify and explain a folder; HTML report in --out")
    a.add_argument("folder", type=Path, metavar="DIR", help="images; sub-folders = true classes")
    a.add_argument("--out", required=True, type=Path, help="report folder (index.html)")
    a.add_argument("--methods", type=_names, default=["occlusion"],
                   help="comma-separated methods (default: occlusion)")
    a.add_argument("--masks", type=Path, help="ground-truth masks mirroring DIR (nonzero = object)")
    a.add_argument("--layer", default="auto", help="layer for t-SNE and max/min activating images")
    a.add_argument("--top-k", type=int, default=4, help="images per class in the max/min grids")
    a.add_argument("--steps", type=int, default=32, help="deletion/insertion steps")
    a.add_argument("--seed", type=int, default=0)
    a.add_argument("--data", type=Path, help="images to sample from, for prediction-difference")
    a.add_argument("--pointing-tolerance", type=int, help="pixels (default: 15 at 224, scaled to the input)")
    a.add_argument("--sanity-layers", type=int, default=5,
                   help="randomise the top N layers per method (model-parameter randomisation; 0: skip)")
    a.add_argument("--sanity-images", type=int, default=1, help="images the randomisation check averages over")
    a.add_argument("--quiet", action="store_true", help="no progress bar")
    a.add_argument("--json", action="store_true", help="print the result as JSON instead of the verdict")
    model_options(a)
    cluster_commands.add_options(a)


def cmd_export_layers(args: argparse.Namespace) -> None:
    from ..errors import InputError
    from ..export_command import export_layers

    if (args.out is None) == (args.triton_repo is None):
        raise InputError("give exactly one of --out FILE and --triton-repo REPO")
    if args.triton_repo is None:
        if args.name or args.max_batch_size is not None:
            raise InputError("--name and --max-batch-size apply only with --triton-repo")
        print(export_layers(args.model, args.layers, args.out))
        return
    from ..backends.triton.export import export_layers_to_repo

    if args.max_batch_size is not None and args.max_batch_size < 1:
        raise InputError(f"--max-batch-size must be a positive integer, got {args.max_batch_size}")
    print(json.dumps(export_layers_to_repo(args.model, args.triton_repo, args.layers, name=args.name,
                                           max_batch_size=args.max_batch_size)))


def commands(load: Callable[[argparse.Namespace], Any]) -> dict[str, Callable[[argparse.Namespace], None]]:
    """Handlers by subcommand; ``load(args)`` opens the model as the CLI does."""
    def cmd_audit(args: argparse.Namespace) -> None:
        from ..output_set import check_out_dir
        from .run import _methods, audit

        _methods(args.methods)  # refuse unknown methods before loading the model
        check_out_dir(args.out)  # and an unusable --out before computing
        progress = not args.quiet and sys.stderr.isatty()
        prefill = cluster_commands.audit_prefill(args, progress)  # None without --workers / --scheduler
        result = audit(load(args), args.folder, args.out, methods=args.methods, masks=args.masks,
                       layer=args.layer, top_k=args.top_k, steps=args.steps, seed=args.seed,
                       progress=progress and prefill is None, prefill=prefill, data=args.data,
                       sanity_layers=args.sanity_layers, sanity_images=args.sanity_images,
                       pointing_tolerance="auto" if args.pointing_tolerance is None else args.pointing_tolerance)
        if args.json:
            print(json.dumps({"report": str(result.report), "accuracy": result.accuracy,
                              "headlines": result.headlines, "flags": result.flags, "sanity": result.sanity},
                             indent=2, allow_nan=False))
            return
        from .verdict import verdict_text

        images = (result.computed + result.reused) // max(1, len(args.methods))
        print(verdict_text(result.headlines, result.accuracy, images, str(result.report)))

    return {"export-layers": cmd_export_layers, "audit": cmd_audit}
