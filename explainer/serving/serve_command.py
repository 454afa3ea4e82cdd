"""``explainer serve``: the KServe explanation server for an ONNX file or a Triton endpoint."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, Callable

from ..errors import InputError
from .requests import DEFAULT_MAX_PASSES


def add_parser(sub: Any, model_options: Callable[[argparse.ArgumentParser], None]) -> None:
    """The ``serve`` command's options (plus the usual model options)."""
    p = sub.add_parser("serve", help="serve :predict and :explain over KServe's V1 protocol")
    p.add_argument("--name", help="the model's name in URLs (default: the file stem or Triton model name)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8080)
    p.add_argument("--max-body-bytes", type=int, default=16 * 2**20, help="larger requests get 413")
    p.add_argument("--max-instances", type=int, default=4, help="images per request")
    p.add_argument("--max-concurrency", type=int, default=1, help="explanations computed at once")
    p.add_argument("--max-queue", type=int, default=8, help="explanations waiting; more get 503")
    p.add_argument("--max-forward-passes", type=int, default=DEFAULT_MAX_PASSES,
                   help="refuse requests that need more forward passes")
    p.add_argument("--data", metavar="FOLDER", help="images prediction difference draws its samples from")
    model_options(p)


def _name(args: argparse.Namespace, model: Any) -> str:
    if args.name:
        return args.name
    source = str(model.spec.source)
    if "://" in source:
        return source.rsplit("/", 1)[-1].split("@")[0]
    path = Path(source)
    named = [p.name for p in (path.parent, path.parent.parent) if not p.name.isdigit()]
    return named[0] if path.stem == "model" and named and named[0] else path.stem  # models/NAME/[1/]model.onnx


def cmd_serve(args: argparse.Namespace, load: Callable[[argparse.Namespace], Any]) -> None:
    if str(args.model or "").startswith("grpc"):
        raise InputError("explainer serve reaches Triton over http:// or https:// (the KServe SDK and "
                         "Triton's gRPC client cannot be loaded in one process)")
    numbers = {k: getattr(args, k) for k in ("max_body_bytes", "max_instances", "max_concurrency",
                                             "max_queue", "max_forward_passes")}
    for key, value in numbers.items():
        if value < (0 if key == "max_queue" else 1):
            raise InputError(f"--{key.replace('_', '-')} must be a positive integer, got {value}")
    if not 0 < args.port < 65536:
        raise InputError(f"--port must be 1-65535, got {args.port}")
    argv, sys.argv = sys.argv, sys.argv[:1]  # kserve parses sys.argv when imported
    try:
        from . import kserve_server
    except ImportError:
        raise InputError("explainer serve needs the KServe SDK: pip install 'explainer[serve]'") from None
    finally:
        sys.argv = argv
    model = load(args)
    name = _name(args, model)
    print(f"serving {name} on http://{args.host}:{args.port}/v1/models/{name}:explain", flush=True)
    limits = kserve_server.Limits(**numbers, data=args.data)
    kserve_server.run(model, name, host=args.host, port=args.port, limits=limits)
