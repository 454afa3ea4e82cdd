"""The spurious-region finding: does one class's relevance sit in the same place, off the object?

Criterion, per method and per predicted class with at least ``min_images`` images:

1. Each map minus its median, clipped at 0, is normalised to a distribution p over pixels
   (maps with nothing above the median are left out). Subtracting the median removes the
   constant offset some methods have (RISE's map is a mean score, positive everywhere). When object masks are given, pixels of the object
   are removed first, so only relevance *off the object* is counted.
2. The image is cut into a 3x3 grid of regions ("upper-left", "top", ..., "lower-right").
   Each image's top region is the one with the largest mass of p; the class's region is
   the most frequent top region (ties: raster order).
3. The class is flagged when that region is not the centre, at least ``consistency``
   (default 0.75) of its images have it as their top region, and the mean mass of p
   in it is at least ``concentration`` (default 0.3, 2.7 times a uniform map's 1/9).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

REGIONS = ("upper-left", "top", "upper-right", "left", "centre", "right",
           "lower-left", "bottom", "lower-right")


@dataclass(frozen=True)
class Finding:
    """The criterion's numbers for one (method, predicted class)."""

    method: str
    label: str
    images: int
    region: str
    consistency: float
    concentration: float
    flagged: bool


def above_median(maps: np.ndarray) -> np.ndarray:
    """(N, H, W): each map minus its own median, clipped at 0."""
    m = np.asarray(maps, dtype=np.float64)
    return np.clip(m - np.median(m.reshape(len(m), -1), axis=1)[:, None, None], 0, None)


def region_masses(maps: np.ndarray, objects: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Mass of each map's normalised part above its median in the 3x3 regions.

    Parameters
    ----------
    maps : (N, H, W) float ndarray
    objects : (N, H, W) bool ndarray, optional; these pixels are removed first

    Returns
    -------
    masses : (N, 9) float ndarray, rows sum to 1 (or 0)
    valid : (N,) bool ndarray, maps with positive relevance left
    """
    p = above_median(maps)
    if objects is not None:
        p = np.where(objects, 0.0, p)
    n, h, w = p.shape
    rows = np.minimum(np.arange(h) * 3 // h, 2)
    cols = np.minimum(np.arange(w) * 3 // w, 2)
    cell = (rows[:, None] * 3 + cols[None, :]).ravel()
    masses = np.zeros((n, 9))
    np.add.at(masses, (slice(None), cell), p.reshape(n, -1))
    total = masses.sum(axis=1, keepdims=True)
    valid = total[:, 0] > 0
    return np.divide(masses, total, out=np.zeros_like(masses), where=total > 0), valid


def spurious_region(method: str, label: str, maps: np.ndarray, objects: np.ndarray | None = None, *,
                    min_images: int = 3, consistency: float = 0.75,
                    concentration: float = 0.3) -> Finding:
    """Apply the criterion of this module to the maps of one predicted class."""
    masses, valid = region_masses(maps, objects)
    masses = masses[valid]
    if len(masses) == 0:
        return Finding(method, label, 0, "", 0.0, 0.0, False)
    tops = masses.argmax(axis=1)
    counts = np.bincount(tops, minlength=9)
    region = int(np.argmax(counts))
    share = float(counts[region] / len(masses))
    mass = float(masses[:, region].mean())
    flagged = (len(masses) >= min_images and REGIONS[region] != "centre"
               and share >= consistency and mass >= concentration)
    return Finding(method, label, len(masses), REGIONS[region], share, mass, bool(flagged))


def mean_map(maps: np.ndarray) -> np.ndarray:
    """(H, W) average of the maps' parts above their medians, each normalised to sum 1."""
    p = above_median(maps)
    total = p.reshape(len(p), -1).sum(axis=1)[:, None, None]
    p = np.divide(p, total, out=np.zeros_like(p), where=total > 0)
    return p.mean(axis=0)
