"""One module per explanation method, each a thin layer over the shared engine.

A method module registers itself by defining ``METHODS``, a list of
:class:`MethodInfo`; the command line finds every such module in this package, so
adding a method never touches ``cli.py``.
"""

from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass, field
from typing import Any, Callable


@dataclass(frozen=True)
class Option:
    """One command-line option of a method.

    ``flag`` is the option ("--mask-size"), ``dest`` the keyword argument of the
    method's function, ``kwargs`` what ``argparse.add_argument`` gets (no default:
    an option the user does not give leaves the function's own default).
    """

    flag: str
    dest: str
    kwargs: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class MethodInfo:
    """A method as the command line sees it.

    ``function(model, image, target, *, progress, **options) -> Explanation``;
    ``needs_image`` is False for global methods (e.g. deep dream).
    """

    name: str
    function: Callable[..., Any]
    options: tuple[Option, ...]
    help: str = ""
    needs_image: bool = True


def discover() -> dict[str, MethodInfo]:
    """Every method registered by a module of this package, by name."""
    found: dict[str, MethodInfo] = {}
    for mod in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        module = importlib.import_module(f"{__name__}.{mod.name}")
        for info in getattr(module, "METHODS", []):
            found[info.name] = info
    return found
