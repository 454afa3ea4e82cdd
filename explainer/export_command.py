"""The ``explainer export-gradients`` subcommand: write a model's gradient model to a file."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any, Sequence

import onnx

from .errors import InputError
from .backends.onnx_derived import load_with_weights
from .graph import RELU_RULES
from .graph.outputs import objective_gradient_model
from .backends.triton.export import add_repo_options


def add_parser(sub: Any) -> None:
    """Add ``export-gradients`` to the ``explainer`` parser's subparsers."""
    p = sub.add_parser("export-gradients", help="write the standard-ONNX gradient model of a classifier")
    p.add_argument("--model", type=Path, help="ONNX file (default: the bundled EfficientNet-Lite0)")
    p.add_argument("--out", type=Path, help="the new .onnx file (or give --triton-repo)")
    p.add_argument("--layer", help="differentiate with respect to this node or tensor (see `explainer inspect`); "
                                   "with --triton-repo also 'auto': Grad-CAM's default feature layer")
    p.add_argument("--relu", choices=RELU_RULES, default="standard", help="backward rule of ReLU layers")
    p.add_argument("--dream-layer", metavar="LAYER",
                   help="instead: the gradient of LAYER's per-channel spatial means (deep-dream on a hidden "
                        "layer; with --triton-repo written as NAME_dream__LAYER)")
    add_repo_options(p, "gradient", "NAME_grad_RELU[__LAYER] or NAME_dream__LAYER")


def build(model: Path, layer: str | None, relu: str, dream_layer: str | None) -> onnx.ModelProto:
    """The gradient model of the file ``model`` (w.r.t. ``layer``), or of ``dream_layer``'s channel means."""
    return objective_gradient_model(load_with_weights(Path(model)), layer, relu, dream_layer)


def export_gradients(model: Path, out: Path, *, layer: str | None = None, relu: str = "standard",
                     dream_layer: str | None = None) -> dict:
    """Build the gradient model of ``model`` (see :func:`build`) and write it to ``out`` atomically.

    Returns
    -------
    dict
        ``out``, ``wrt`` (the differentiated tensor), ``relu`` and ``nodes``.
    """
    from .explanation import atomic_write_all

    out = Path(out)
    if out.is_dir():
        raise InputError(f"--out {out} is a folder; give a file name")
    if not out.parent.is_dir():
        raise InputError(f"--out {out}: folder {out.parent} does not exist")
    if out.exists() and out.resolve() == Path(model).resolve():
        raise InputError(f"--out {out} is the model itself; choose another file")
    from .graph.gradients import gradient_info  # the gradient builder, imported when used

    proto = build(model, layer, relu, dream_layer)
    try:
        data = proto.SerializeToString()
    except ValueError as e:  # protobuf's 2 GiB limit
        raise InputError(f"the gradient model cannot be serialised ({e})") from None
    atomic_write_all({out: data})
    return {"out": str(out), "wrt": gradient_info(proto)["wrt"], "relu": relu, "nodes": len(proto.graph.node)}


def cmd_export_gradients(args: argparse.Namespace) -> None:
    from .api import default_model_path

    model = args.model or default_model_path()
    if (args.out is None) == (args.triton_repo is None):
        raise InputError("give exactly one of --out FILE and --triton-repo REPO")
    if args.triton_repo is None:
        if args.name or args.max_batch_size is not None:
            raise InputError("--name and --max-batch-size apply only with --triton-repo")
        info = export_gradients(model, args.out, layer=args.layer, relu=args.relu, dream_layer=args.dream_layer)
    else:
        from .backends.triton.export import export_to_repo

        if args.max_batch_size is not None and args.max_batch_size < 1:
            raise InputError(f"--max-batch-size must be a positive integer, got {args.max_batch_size}")
        info = export_to_repo(model, args.triton_repo, name=args.name, layer=args.layer, relu=args.relu,
                              max_batch_size=args.max_batch_size, dream_layer=args.dream_layer)
    print(json.dumps(info))


def export_layers(source: str | Path, layers: Sequence[str], out: str | Path) -> Path:
    """Write a copy of an ONNX classifier that also outputs ``layers`` (for serving).

    Raises InputError when ``out`` is the source file itself.
    """
    from .backends.onnx_safety import read_onnx
    from .graph.activations import with_outputs

    src, dst = Path(source), Path(out)
    if dst.resolve() == src.resolve():
        raise InputError(f"--out {dst} would overwrite the model itself")
    proto = read_onnx(src)
    if any(i.data_location == onnx.TensorProto.EXTERNAL for i in proto.graph.initializer):
        raise InputError(f"{src}: models with external data are not supported by export-layers")
    derived = with_outputs(proto, layers)
    onnx.checker.check_model(derived)
    dst.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(derived, str(dst))
    return dst
