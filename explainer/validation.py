"""The one check for every number a user or a model's metadata gives: finite, in range, the right kind.

Options (``--std``, ``--timeout``, ``--num-samples``...), preprocessing metadata and API
arguments all go through :func:`number`, so a NaN, an infinity, a denormal divisor, a
bool or a string where a number belongs is one clear :class:`InputError` (exit status 2)
instead of a silent default or an internal error later.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .errors import InputError

TINY = float(np.finfo(np.float32).tiny)  # below this a float32 divisor is denormal (or zero)


def number(name: str, value: Any, *, low: float | None = None, high: float | None = None,
           open_low: bool = False, integer: bool = False, normal: bool = False) -> Any:
    """``value`` as a float (or int with ``integer``), checked.

    Parameters
    ----------
    name : str
        What the error calls it (e.g. "--timeout").
    low, high : float, optional
        Inclusive bounds (``open_low``: ``value > low``).
    integer : bool
        Must be a whole number (an int, or an integral float).
    normal : bool
        Its magnitude must be at least the smallest normal float32 (a divisor).

    Raises
    ------
    InputError
        One line naming the option, the value and the range.
    """
    kind = "an integer" if integer else "a finite number"
    span = _span(low, high, open_low)
    bad = InputError(f"{name} must be {kind}{span}, got {value!r}"[:300])
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise bad
    v = float(value)
    if not math.isfinite(v) or (integer and v != int(v)):
        raise bad
    if (low is not None and (v <= low if open_low else v < low)) or (high is not None and v > high):
        raise bad
    if normal and abs(v) < TINY:
        raise InputError(f"{name} must not be zero or denormal, got {value!r}")
    return int(v) if integer else v


def _span(low: float | None, high: float | None, open_low: bool) -> str:
    if low is None and high is None:
        return ""
    if high is None:
        return f" {'>' if open_low else '>='} {low:g}"
    if low is None:
        return f" <= {high:g}"
    return f" in {'(' if open_low else '['}{low:g}, {high:g}]"


def env_seconds(variable: str, default: float | None, high: float) -> float | None:
    """Seconds from environment variable ``variable`` (``default`` when unset or empty): a
    number in (0, ``high``], else InputError naming the variable."""
    import os

    text = os.environ.get(variable, "").strip()
    if not text:
        return default
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    return number(f"${variable}", value, low=0.0, open_low=True, high=high)


def numbers(name: str, values: Any, **limits: Any) -> tuple[float, ...]:
    """:func:`number` for each of a sequence of values."""
    if isinstance(values, (str, bytes)) or not hasattr(values, "__iter__"):
        values = (values,)
    return tuple(number(name, v, **limits) for v in values)


def available_memory() -> int:
    """Bytes this process may still allocate: the smaller of the memory the system has
    available (/proc/meminfo MemAvailable, else free pages) and the address-space limit."""
    import os
    import resource

    avail = None
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    avail = int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    if avail is None:
        try:
            avail = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError, AttributeError):
            avail = 1 << 62
    soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    if soft != resource.RLIM_INFINITY:
        avail = min(avail, soft)
    return int(avail)


def check_memory(what: str, nbytes: float, *, fraction: float = 0.8) -> None:
    """Refuse, before allocating, a step estimated to need more than ``fraction`` of
    :func:`available_memory`; the message gives both numbers."""
    avail = available_memory()
    if nbytes > fraction * avail:
        raise InputError(f"{what} needs about {nbytes / 2**30:.1f} GiB of memory, more than the "
                         f"{fraction * avail / 2**30:.1f} GiB available; use a smaller value")
