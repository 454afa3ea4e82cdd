"""The gallery (docs/gallery/): the seed pages' figures regenerated from the bundled models.

``python -m explainer.gallery OUT [--small]`` writes every figure of :data:`FIGURES` and
``index.md`` into OUT. ``--small`` uses tiny settings (for the test: every figure drawn,
in seconds, not a faithful picture).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from ..explanation import atomic_write_all


@dataclass(frozen=True)
class Settings:
    """Method settings for one gallery run (defaults: the full gallery)."""

    lime_samples: int = 2048
    occlusion_stride: Any = "auto"
    ig_steps: int = 25
    dream_iterations: int = 30
    dream_levels: int = 4
    pd_window: int = 10
    pd_stride: int = 8
    pd_samples: int = 4
    pd_unit_stride: int = 8
    small: bool = False


SMALL = Settings(lime_samples=32, occlusion_stride=112, ig_steps=2, dream_iterations=1,
                 dream_levels=1, pd_window=10, pd_stride=71, pd_samples=1, pd_unit_stride=71, small=True)


@dataclass(frozen=True)
class Figure:
    """One gallery figure: its file, the seed page it mirrors, its caption, how to draw it."""

    name: str
    page: str
    caption: str
    make: Callable[[Any], bytes]


def figures() -> list[Figure]:
    """Every figure, in the order of index.md."""
    from . import attribution, explore, shortcut

    return [*explore.FIGURES, *attribution.FIGURES, *shortcut.FIGURES]


def generate(out: str | Path, settings: Settings = Settings(), *,
             log: Callable[[str], None] = lambda s: None) -> list[Path]:
    """Draw every figure into ``out`` (PNG files and ``index.md``); returns the files written.

    Each figure is written as soon as it is drawn; ``index.md`` last, with the time each took.
    """
    from .context import Context
    from .index import index_markdown

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    ctx = Context(settings)
    written, took = [], {}
    started = time.perf_counter()
    for fig in figures():
        t = time.perf_counter()
        png = fig.make(ctx)
        path = out / f"{fig.name}.png"
        atomic_write_all({path: png})
        took[fig.name] = time.perf_counter() - t
        written.append(path)
        log(f"{path} ({took[fig.name]:.1f} s)")
    index = out / "index.md"
    atomic_write_all({index: index_markdown(figures(), took, time.perf_counter() - started,
                                            settings).encode()})
    return [*written, index]
