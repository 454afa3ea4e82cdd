"""``python -m explainer.gallery OUT [--small]``: regenerate the gallery into OUT."""

from __future__ import annotations

import argparse
import sys
import warnings

from ..errors import ExplainerError
from . import SMALL, Settings, generate


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m explainer.gallery", description=__doc__)
    p.add_argument("out", help="output folder (docs/gallery in the repository)")
    p.add_argument("--small", action="store_true", help="tiny settings: every figure, quickly (for tests)")
    args = p.parse_args(argv)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            generate(args.out, SMALL if args.small else Settings(), log=print)
    except ExplainerError as e:
        print(f"explainer.gallery: error: {e}", file=sys.stderr)
        return e.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())
