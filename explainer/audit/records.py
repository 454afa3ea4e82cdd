"""What an audit holds: per-image method results, the whole audit, and what it returns."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..model import Model
from .findings import Finding


@dataclass
class Explained:
    """One method's results for one image (what the cache holds)."""

    map: np.ndarray
    display: str
    metrics: dict[str, Any]
    deletion: list[float]
    insertion: list[float]


@dataclass
class Audit:
    """Everything the report shows.

    Attributes
    ----------
    paths : list of Path, N images; truth : list of str or None
    probs : (N, K) float64; predicted : (N,) int
    pixels : (N, H, W, 3) uint8
    results : dict method -> list of N Explained
    objects : (N, H, W) bool or None, ground-truth masks (all images have one)
    findings : list of Finding
    """

    model: Model
    paths: list[Path]
    truth: list[str | None]
    probs: np.ndarray
    predicted: np.ndarray
    pixels: np.ndarray
    x: np.ndarray
    methods: list[str]
    results: dict[str, list[Explained]] = field(default_factory=dict)
    objects: np.ndarray | None = None
    findings: list[Finding] = field(default_factory=list)
    computed: int = 0
    reused: int = 0
    tolerance: int = 0
    data: str | None = None


@dataclass(frozen=True)
class AuditResult:
    """Where the report is, the accuracy (None without true classes), flags, cache use and sanity checks."""

    report: Path
    accuracy: float | None
    flags: list[dict[str, Any]]
    findings: list[Finding]
    computed: int
    reused: int
    headlines: list[str] = field(default_factory=list)
    sanity: dict[str, Any] | None = None  # {"mprt": per method, "pointing_game": per method, "pointing_tolerance"}
