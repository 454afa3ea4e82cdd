"""The ``explainer`` command: parses options and calls the library; no logic of its own."""

from __future__ import annotations

import argparse
import json
import os
import sys
import warnings
from pathlib import Path
from typing import Any, Sequence

from tqdm import tqdm

from . import api
from .audit import commands as audit_commands
from .console import console, shown
from .cli_options import model_options as _model_options  # shared by every subcommand's parser
from .cluster import commands as cluster_commands
from .errors import ExplainerError, InputError
from .explanation import safe_stem
from .output_set import check_out_dir, explain_settings, is_complete, output_bytes, signals_as_interrupt
from .export_command import add_parser as add_export_gradients, cmd_export_gradients
from .cli_inspect import cmd_inspect
from .cli_methods import FLAGS, METHODS, add_method_options, chosen_method
from .methods.common import load_input
from .paths import bundled_examples, package_version
from .serving import commands as serving_commands
from .visualization.rules import PIXEL_METHODS, DisplayOptions


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit 2
        raise InputError(f"{self.prog}: {message}")


EPILOG = """examples:
  explainer classify photo.jpg
  explainer explain photo.jpg --method occlusion --out maps/
  explainer explain photo.jpg --method lime --num-samples 1000 --out maps/
  explainer explain photo.jpg --method grad-cam --model grpc://localhost:8001/resnet --out maps/
  explainer explain --method lime --help      (LIME's options only)
exit status: 0 done, 2 bad input, 3 the model or server failed, 1 internal error"""


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    parser = _Parser(prog="explainer", description="Explain deployed image classifiers.", epilog=EPILOG,
                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"explainer {package_version()}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    c = sub.add_parser("classify", help="top-K classes of images")
    c.add_argument("images", nargs="+", metavar="IMAGE")
    c.add_argument("--top", type=int, default=5)
    c.add_argument("--json", action="store_true")
    _model_options(c)
    x = sub.add_parser("examples", help="paths of the bundled example images (shipped with the package)")
    x.add_argument("name", nargs="?", help="print only this example's path (e.g. coffee)")
    i = sub.add_parser("inspect", help="inputs, outputs, preprocessing and layers of a model")
    i.add_argument("--json", action="store_true")
    _model_options(i)
    e = sub.add_parser("explain", help="explain images with a method, write maps to --out")
    e.add_argument("images", nargs="*", metavar="IMAGE")
    e.add_argument("--method", required=True, choices=sorted(METHODS),
                   help="; ".join(f"{m.name}: {m.help}" for m in METHODS.values()))
    e.add_argument("--target", help="class index or label (default: the top-1 class)")
    e.add_argument("--out", required=True, help="output folder")
    e.add_argument("--save-input", action="store_true", help="also write <stem>.input.npy")
    e.add_argument("--json", action="store_true", help="print a JSON summary")
    e.add_argument("--quiet", action="store_true", help="no progress bar")
    e.add_argument("--resume", action="store_true",
                   help="skip images whose outputs in --out are complete, intact and made with these settings")
    d = e.add_argument_group("how the PNG draws the map (the saved map is unchanged)")
    d.add_argument("--view", choices=["full", "crop"], default="full",
                   help="full: the whole original image, the model's crop dashed (default); crop: the model input")
    d.add_argument("--sign", choices=["absolute", "positive", "negative", "all"],
                   help="pixel attributions (gradient, guided-backprop, deconvnet, integrated-gradients): "
                        "which sign to draw (default absolute)")
    d.add_argument("--clip-percentile", type=float, default=99.0,
                   help="pixel attributions: saturate above this percentile of |value| (default 99)")
    d.add_argument("--smooth", type=float, default=0.0,
                   help="pixel attributions: Gaussian sigma in pixels before clipping (default 0)")
    _model_options(e)
    add_method_options(e, chosen_method(argv) if argv is not None else None)
    cluster_commands.add_options(e)
    s = sub.add_parser("triton-server", help="run a local Triton server (127.0.0.1) for a model repository")
    s.add_argument("--repo", type=Path, help="a Triton model repository with ONNX models (default: the "
                   "checkout's triton_repo, or one serving the bundled model)")
    s.add_argument("--setup", action="store_true",
                   help="only set up the server's own environment (once, about a minute) and exit")
    s.add_argument("--http-port", type=int, default=8000)
    s.add_argument("--grpc-port", type=int, default=8001)
    audit_commands.add_parsers(sub, _model_options)
    add_export_gradients(sub)
    serving_commands.add_parsers(sub, _model_options, e)
    return parser


def _method_options(args: argparse.Namespace, info: Any) -> dict[str, Any]:
    """The options the user gave, refusing those the chosen method does not take."""
    mine = {opt.dest for opt in info.options}
    every = {opt.dest: flag for flag, opt in FLAGS.items()}
    for dest, flag in every.items():
        if hasattr(args, dest) and dest not in mine:
            raise InputError(f"{flag} does not apply to --method {info.name}")
    return {dest: getattr(args, dest) for dest in mine if hasattr(args, dest)}


def _load(args: argparse.Namespace) -> Any:
    return api.load_model(args.model, device=args.device, size=args.size, layout=args.layout,
                          scale=args.scale, mean=args.mean, std=args.std,
                          max_model_bytes=args.max_model_bytes, isolate=True, **_triton_options(args))


def _triton_options(args: argparse.Namespace) -> dict[str, Any]:
    from .backends.triton.endpoints import Tls

    files = (args.tls_ca_cert, args.tls_client_cert, args.tls_client_key)
    tls = Tls(*files, insecure=args.tls_insecure) if any(files) or args.tls_insecure else None
    return dict(concurrency=args.concurrency, timeout=args.timeout, headers=args.header, tls=tls,
                retry_seconds=args.retry_seconds, gradient_model=args.gradient_model,
                layers_model=args.layers_model)


def cmd_triton_server(args: argparse.Namespace) -> None:
    from .backends.triton.server import ensure_venv, serve
    from .paths import default_triton_repo

    if args.setup:
        print(ensure_venv())
        return
    serve(args.repo or default_triton_repo(), http_port=args.http_port, grpc_port=args.grpc_port)


def cmd_classify(args: argparse.Namespace) -> None:
    model = _load(args)
    inputs = {path: load_input(model, path) for path in args.images}
    results = {path: api.classify(model, x, top=args.top) for path, x in inputs.items()}
    if args.json:
        print(json.dumps(results, indent=2, allow_nan=False))
        return
    for path, top in results.items():
        print(shown(path))
        for r in top:
            print(f"  {r['index']:5d}  {r['probability']:.4f}  {shown(r['label'])}")


def cmd_examples(args: argparse.Namespace) -> None:
    found = {p.stem: p for p in bundled_examples()}
    if args.name is not None and args.name not in found:
        raise InputError(f"no bundled example {args.name!r} (there are: {', '.join(found)})")
    for name, path in found.items():
        if args.name in (None, name):
            print(path)


def cmd_explain(args: argparse.Namespace) -> None:
    on_cluster = cluster_commands.requested(args)  # checks --workers / --scheduler before the model loads
    model = _load(args)
    info = METHODS[args.method]
    options = _method_options(args, info)
    if info.needs_image and not args.images:
        raise InputError(f"--method {info.name} needs at least one IMAGE")
    stems = [safe_stem(Path(p).stem) for p in args.images] if info.needs_image else [info.name]
    if len(set(stems)) != len(stems):
        raise InputError("two images share a file name; their outputs would overwrite each other")
    if args.sign is not None and info.name not in PIXEL_METHODS:
        raise InputError(f"--sign applies to {', '.join(PIXEL_METHODS)}, not to --method {info.name}")
    display = DisplayOptions(view=args.view, sign=args.sign, clip_percentile=args.clip_percentile,
                             smooth=args.smooth)
    out = check_out_dir(args.out, output_bytes(model.spec))  # before any computing: room for one set
    settings = {s: {**explain_settings(model, info.name, options, args.target, p if info.needs_image else None,
                                       args.save_input), "display": display.to_dict()}
                for p, s in zip(args.images or [info.name], stems)}  # a new --view redraws the PNG
    todo = [(p, s) for p, s in zip(args.images or [info.name], stems)
            if not (args.resume and is_complete(out / f"{s if s == info.name else s + '.' + info.name}.json",
                                                settings[s]))]
    progress = not args.quiet and sys.stderr.isatty()

    def write(result: Any, stem: str) -> list[Path]:
        # --save-input writes the (1, C, H, W) NCHW tensor whatever the model's layout: the layout of the
        # attributions, and of the .npy inputs `explain` reads back
        return result.save(out, stem, save_input=args.save_input and result.input is not None,
                           settings=settings[stem], display=display)

    if on_cluster:  # validates every image first too, without keeping them
        return cluster_commands.explain(args, model, info, options, todo, len(stems) - len(todo), progress, write)
    inputs = [(p, s, load_input(model, p) if info.needs_image else None) for p, s in todo]
    run = serving_commands.explainer_for(model, info, options, args.server_side)
    summary = []
    for path, stem, image in tqdm(inputs, desc="images", unit="image", disable=not progress or len(inputs) < 2):
        result = run(image, args.target, progress=progress)
        written = write(result, stem)
        summary.append({**result.to_dict(), "files": [str(f) for f in written]})
        if not args.json and not args.quiet:
            print(f"{shown(path)}: {shown(result.label)} ({result.score:.3f}) -> "
                  + ", ".join(shown(f) for f in written))
    if not args.json and not args.quiet and len(todo) < len(stems):
        print(f"{len(stems) - len(todo)} image(s) already explained in {shown(args.out)}: skipped (--resume)")
    if args.json:
        print(json.dumps(summary, indent=2, allow_nan=False))


COMMANDS = {"classify": cmd_classify, "examples": cmd_examples, "inspect": lambda a: cmd_inspect(a, _load), "explain": cmd_explain,
            "triton-server": cmd_triton_server}
COMMANDS.update(audit_commands.commands(_load))
COMMANDS["export-gradients"] = cmd_export_gradients
COMMANDS.update(serving_commands.commands(_load))


def _silence_stdout() -> None:
    """Point stdout at /dev/null so that the interpreter's final flush does not fail again."""
    try:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):
        pass


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command; errors print one line on stderr and return the error's exit status.

    2: bad input (``InputError``); 3: the model or server failed (``ModelError``,
    ``ServerError``); 1: an internal error; 130: interrupted; 0 when stdout's reader goes
    away early (``explainer inspect | head``): what was asked for was read.

    Python warnings from the libraries (Pillow on a corrupt EXIF block, scikit-learn,
    ...) are not shown: the user sees the result or one line that names the problem.
    """
    with console():  # everything printed is redacted, control characters escaped
        return _main(argv)


def _main(argv: Sequence[str] | None) -> int:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            args = build_parser(sys.argv[1:] if argv is None else argv).parse_args(argv)
            with signals_as_interrupt(getattr(args, "run_timeout", None)):  # SIGTERM/SIGHUP end it like Ctrl-C
                COMMANDS[args.command](args)
                sys.stdout.flush()  # a closed pipe shows here, not at exit
        return 0
    except BrokenPipeError:  # the reader went away (`explainer inspect | head`): stop quietly
        _silence_stdout()
        return 0
    except ExplainerError as e:
        print(f"explainer: error: {shown(e)}", file=sys.stderr)
        return e.exit_code
    except MemoryError:  # the estimates (validation.check_memory) missed: still one line, not a traceback
        print("explainer: error: out of memory; use smaller options or a larger machine", file=sys.stderr)
        return 2
    except KeyboardInterrupt as e:
        if hasattr(e, "exit_code"):  # the run's deadline (--run-timeout, $EXPLAINER_RUN_TIMEOUT)
            print(f"explainer: error: {e}", file=sys.stderr)
            return e.exit_code
        signum = getattr(e, "signum", 2)
        print("explainer: interrupted" + (f" ({e})" if signum != 2 else ""), file=sys.stderr)
        return 128 + signum
    except Exception as e:  # never a traceback for the user
        print(f"explainer: internal error: {type(e).__name__}: {shown(e)}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
