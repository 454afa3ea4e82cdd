"""Array-module selection: NumPy on CPU, CuPy on a GPU when one is present."""

from __future__ import annotations

from types import ModuleType
from typing import Any

import numpy as np

from .errors import InputError

ENVIRONMENTS = ("auto", "cpu", "gpu")


def _cupy() -> ModuleType | None:
    try:
        import cupy  # type: ignore[import-not-found]

        if cupy.cuda.runtime.getDeviceCount() > 0:
            return cupy
    except Exception:  # no cupy, no driver, no device: all mean "no GPU"
        return None
    return None


def array_module(execution_environment: str = "auto") -> ModuleType:
    """Return ``numpy`` or ``cupy`` for MATLAB's ExecutionEnvironment option.

    Parameters
    ----------
    execution_environment : {"auto", "cpu", "gpu"}
        "auto" takes CuPy when a CUDA device is usable, NumPy otherwise.
    """
    if execution_environment not in ENVIRONMENTS:
        raise InputError(
            f"execution_environment must be one of {ENVIRONMENTS}, got {execution_environment!r}"
        )
    if execution_environment == "cpu":
        return np
    cp = _cupy()
    if cp is None and execution_environment == "gpu":
        raise InputError("execution_environment='gpu' but no CUDA device with CuPy is available")
    return cp if cp is not None else np


def to_numpy(a: Any) -> np.ndarray:
    """Copy a NumPy or CuPy array to a host NumPy array (no copy for NumPy)."""
    return a.get() if hasattr(a, "get") else np.asarray(a)
