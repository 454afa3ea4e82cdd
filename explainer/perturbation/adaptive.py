"""Adaptive sample counts for sampling methods (RISE, LIME): stop once the map has converged.

Samples are drawn for the cap (``--num-masks`` / ``--num-samples``) from the seed as
before, then evaluated in doubling rounds: n = first, 2 first, 4 first, ... up to the cap.
After each round the method makes two estimates from disjoint halves of the n samples
(the first n/2 and the last n/2) and the run stops when their Spearman rank correlation
reaches the quality preset's threshold. Two half-budget estimates agreeing at rho means
the full n-sample estimate agrees with the converged map at least as well (averaging
halves the noise), so the threshold is a conservative stand-in for "rank correlation
with the full-budget map". Rounds depend only on n, never on the batch size, so a seed
still fixes the result.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from ..errors import InputError

QUALITY = {"fast": 0.90, "balanced": 0.95, "best": None}
"""Split-half Spearman threshold of each preset; "best" evaluates every sample (no early stop)."""


def check_quality(quality: str) -> float | None:
    """The preset's threshold (None: evaluate all samples)."""
    if quality not in QUALITY:
        raise InputError(f"quality must be one of {tuple(QUALITY)}, got {quality!r}")
    return QUALITY[quality]


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman rank correlation of two equal-sized arrays (ties averaged); 0 when either is constant."""
    from scipy.stats import rankdata

    ra, rb = rankdata(np.ravel(a)), rankdata(np.ravel(b))
    ra, rb = ra - ra.mean(), rb - rb.mean()
    den = float(np.sqrt((ra * ra).sum() * (rb * rb).sum()))
    return float((ra * rb).sum() / den) if den > 0 else 0.0


def rounds(cap: int, first: int) -> list[int]:
    """Cumulative sample counts after each round: first, 2 first, ... and finally ``cap``."""
    out, n = [], max(2, first)
    while n < cap:
        out.append(n)
        n *= 2
    return out + [cap]


@dataclass
class Stopping:
    """Where an adaptive run stopped: ``used`` samples, and (n, rho) after each round."""

    quality: str
    threshold: float | None
    cap: int
    used: int = 0
    history: list[list[float]] = field(default_factory=list)

    def params(self) -> dict:
        return dict(quality=self.quality, threshold=self.threshold, cap=self.cap, used=self.used,
                    split_half_spearman=self.history)


def run_adaptive(cap: int, first: int, quality: str, evaluate: Callable[[int, int], None],
                 halves: Callable[[int], tuple[np.ndarray, np.ndarray]]) -> Stopping:
    """Evaluate samples in rounds until the split-half correlation reaches the threshold.

    Parameters
    ----------
    cap : int, the most samples to evaluate
    first : int, samples in the first round
    quality : a key of QUALITY
    evaluate : ``evaluate(start, stop)`` runs samples ``start..stop-1``
    halves : ``halves(n)`` -> the two estimates from samples [0, n/2) and [n/2, n)
    """
    threshold = check_quality(quality)
    stop = Stopping(quality, threshold, cap)
    done = 0
    for n in ([cap] if threshold is None else rounds(cap, first)):
        if done == 0 and threshold is not None:  # the first round as two halves
            evaluate(0, n // 2)
            done = n // 2
        evaluate(done, n)
        done = n
        if threshold is not None and n < cap:
            rho = spearman(*halves(n))
            stop.history.append([n, round(rho, 4)])
            if rho >= threshold:
                break
    stop.used = done
    return stop
