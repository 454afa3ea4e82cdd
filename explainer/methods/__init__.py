"""One module per explanation method, each a thin layer over the shared engine.

A method module registers itself by defining ``METHODS``, a list of
:class:`MethodInfo`; the command line finds every such module in this package, so
adding a method never touches ``cli.py``. A flag several methods take is declared by
each of them; :func:`flag_registry` refuses, at import, two declarations of one flag that
disagree on anything but the help text (each method's help group shows its own).
"""

from __future__ import annotations

import importlib
import inspect
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


def _same_kind(a: Any, b: Any) -> bool:
    """Two argparse ``type`` callables that parse alike (closures: same function, same cells)."""
    if a is b or a == b:
        return True
    cells = [tuple(c.cell_contents for c in (getattr(f, "__closure__", None) or ())) for f in (a, b)]
    return getattr(a, "__qualname__", None) == getattr(b, "__qualname__", None) and cells[0] == cells[1]


def flag_registry(methods: dict[str, MethodInfo]) -> dict[str, Option]:
    """Every method flag once, by flag.

    Raises
    ------
    ValueError
        When two methods declare one flag with different ``dest`` or argparse
        settings (other than ``help``): a conflict is a bug, never silently dropped.
    """
    found: dict[str, tuple[str, Option]] = {}
    for info in methods.values():
        for opt in info.options:
            if opt.flag not in found:
                found[opt.flag] = (info.name, opt)
                continue
            first, prev = found[opt.flag]
            a = {k: v for k, v in prev.kwargs.items() if k != "help"}
            b = {k: v for k, v in opt.kwargs.items() if k != "help"}
            if prev.dest != opt.dest or a.keys() != b.keys() or not all(_same_kind(a[k], b[k]) for k in a):
                raise ValueError(f"option {opt.flag} is declared differently by methods {first!r} and "
                                 f"{info.name!r}: {prev.dest} {a} vs {opt.dest} {b}")
    return {flag: opt for flag, (_, opt) in found.items()}


def default_of(info: MethodInfo, dest: str) -> Any:
    """The default of the method function's keyword ``dest`` (inspect.Parameter.empty when none)."""
    param = inspect.signature(info.function).parameters.get(dest)
    return inspect.Parameter.empty if param is None else param.default
