"""Exactly one ONNX Runtime must be installed: the start-up check.

``onnxruntime`` (CPU) and ``onnxruntime-gpu`` (CUDA) install the same ``onnxruntime``
package folder, so with both installed one silently shadows the other (and
uninstalling one breaks the other). The package depends on ``onnxruntime``; the GPU path
(README) removes it before installing ``onnxruntime-gpu``. This check names the clash
(or the missing runtime) and the fix before a model is opened.
"""

from __future__ import annotations

import functools
import os
import pathlib
import re
import sys
from importlib import metadata
from typing import Iterator, Sequence

from .errors import InputError


def _provides_onnxruntime(dist: metadata.Distribution) -> bool:
    return any(f.parts == ("onnxruntime", "__init__.py") for f in dist.files or ())


# An ONNX Runtime's distribution name: onnxruntime, onnxruntime-gpu, -openvino, -directml, -training,
# ort-nightly, ort-nightly-gpu, ... (an add-on such as onnxruntime-extensions matches too: it is
# then told apart by the files it installs).
_NAME = re.compile(r"(onnxruntime|ort)([-_.]|$)")


def _candidates(path: Sequence[str]) -> Iterator[metadata.Distribution]:
    """The installed distributions in ``path`` whose metadata folder is named like an ONNX Runtime.

    Lists each folder once and reads only those few distributions (not every installed one,
    nor their file lists): the check runs at every start of the command line.
    """
    for folder in path:
        try:
            entries = os.listdir(folder or ".")
        except OSError:  # a zip file or a missing folder on sys.path: no dist-info folders there
            continue
        for entry in entries:
            low = entry.lower()
            if low.endswith((".dist-info", ".egg-info")) and _NAME.match(low):
                yield metadata.PathDistribution(pathlib.Path(folder or ".", entry))


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
    found = {d.metadata["Name"] for d in _candidates(list(sys.path if path is None else path))
             if _NAME.match((d.metadata["Name"] or "").lower()) and _provides_onnxruntime(d)}
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
