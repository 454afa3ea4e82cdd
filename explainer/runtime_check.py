"""Exactly one ONNX Runtime must be installed: the start-up check.

``onnxruntime`` (CPU) and ``onnxruntime-gpu`` (CUDA) install the same ``onnxruntime``
package folder, so with both installed one silently shadows the other (and
uninstalling one breaks the other). The package depends on ``onnxruntime``; the GPU path
(README) removes it before installing ``onnxruntime-gpu``. This check names the clash
(or the missing runtime) and the fix before a model is opened.
"""

from __future__ import annotations

import functools
import re
from importlib import metadata
from typing import Sequence

from .errors import InputError


def _provides_onnxruntime(dist: metadata.Distribution) -> bool:
    return any(f.parts == ("onnxruntime", "__init__.py") for f in dist.files or ())


def onnxruntime_distributions(path: Sequence[str] | None = None) -> list[str]:
    """Names of the installed distributions that provide the ``onnxruntime`` package.

    Parameters
    ----------
    path : sequence of str, optional
        Folders to search (site-packages); default ``sys.path``.

    Returns
    -------
    names : sorted list of str, e.g. ["onnxruntime"] or ["onnxruntime", "onnxruntime-gpu"]
    """
    dists = metadata.distributions(path=list(path)) if path is not None else metadata.distributions()
    found = {d.metadata["Name"] for d in dists
             if re.match(r"(onnxruntime|ort)([-_.]|$)", (d.metadata["Name"] or "").lower())
             and _provides_onnxruntime(d)}
    return sorted(found)


def runtime_problem(path: Sequence[str] | None = None) -> str | None:
    """One line naming a missing or doubly installed ONNX Runtime and the fix; None when fine."""
    names = onnxruntime_distributions(path)
    if not names:
        return ("no ONNX Runtime is installed: pip install onnxruntime "
                "(or onnxruntime-gpu on a machine with CUDA)")
    if len(names) > 1:
        gpu = [n for n in names if "gpu" in n.lower()] or names[-1:]
        return (f"{' and '.join(names)} are installed together and shadow each other: "
                f"pip uninstall -y {' '.join(names)} && pip install {gpu[0]}   "
                f"(or the CPU one alone: pip install onnxruntime)")
    return None


@functools.lru_cache(maxsize=1)
def check_onnxruntime() -> str:
    """The one installed ONNX Runtime distribution's name; InputError naming the fix otherwise."""
    problem = runtime_problem()
    if problem:
        raise InputError(problem)
    return onnxruntime_distributions()[0]
