"""The explain command's method options: one help group per method, from the method registry."""

from __future__ import annotations

import argparse
import inspect
import sys
from typing import Any, Sequence

from .methods import default_of, discover, flag_registry

METHODS = discover()
FLAGS = flag_registry(METHODS)  # refuses conflicting declarations of a shared flag, at import

# What an option means when its declaration carries no help of its own (options shared by
# several methods are described once here, so every method's --help explains each flag).
COMMON_HELP = {
    "--score": "differentiate / score the class probability or its logit",
    "--seed": "random seed: the same seed gives the same map",
    "--mini-batch-size": "images per forward pass (the map does not depend on it)",
    "--output-upsampling": "how the map is resized to the input: bicubic, nearest or none",
    "--mask-clipping": "on: windows stay inside the image; off: windows may hang over the edge",
    "--integration": "quadrature rule along the path: riemann_right or trapezoid",
    "--replacement": "what hides a superpixel: its mean colour or a blurred copy",
    "--kernel-width": "width of LIME's exponential proximity kernel (cosine distance)",
    "--sampling": "how a window is replaced: marginal (from data) or conditional (from its border)",
    "--pyramid-levels": "octaves of the image pyramid (MATLAB 'PyramidLevels')",
    "--pyramid-scale": "size ratio between octaves (MATLAB 'PyramidScale')",
    "--step-size": "gradient ascent step per iteration (MATLAB 'StepSize')",
    "--output-scaling": "linear: stretch each dream image to [0, 1] for display; none: keep pixel values (MATLAB 'OutputScaling')",
}


def _method_help(info: Any, opt: Any) -> str:
    default = default_of(info, opt.dest)
    text = opt.kwargs.get("help") or COMMON_HELP.get(opt.flag, "")
    if default is not None and default is not inspect.Parameter.empty \
            and "default" not in text:
        text = f"{text} (default: {default})".strip()
    return text.replace("%", "%%").replace("%%%%", "%%")


def add_method_options(e: argparse.ArgumentParser, chosen: str | None) -> None:
    """One help group per method (only ``chosen``'s when given); every flag parses either way."""
    added: set[str] = set()
    for info in sorted(METHODS.values(), key=lambda m: (m.name != chosen, m.name)):
        if chosen is not None and info.name != chosen:
            continue
        group = e.add_argument_group(f"--method {info.name}", info.help)
        for opt in info.options:
            if opt.flag in added:
                continue
            added.add(opt.flag)
            kwargs = {**opt.kwargs, "help": _method_help(info, opt)}
            group.add_argument(opt.flag, dest=opt.dest, default=argparse.SUPPRESS, **kwargs)
    for flag, opt in FLAGS.items():
        if flag not in added:
            kwargs = {**opt.kwargs, "help": argparse.SUPPRESS if chosen else opt.kwargs.get("help")}
            e.add_argument(flag, dest=opt.dest, default=argparse.SUPPRESS, **kwargs)


def chosen_method(argv: Sequence[str] | None) -> str | None:
    """The --method value in ``argv`` when it names a method (to show its options only in --help)."""
    args = list(sys.argv[1:] if argv is None else argv)
    for i, a in enumerate(args):
        value = a.split("=", 1)[1] if a.startswith("--method=") else \
            (args[i + 1] if a == "--method" and i + 1 < len(args) else None)
        if value in METHODS:
            return value
    return None
