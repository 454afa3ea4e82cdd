"""Adaptive sample counts for sampling methods (RISE, LIME): stop once the map has converged.

Samples are drawn for the cap (``--num-masks`` / ``--num-samples``) from the seed as
before, then evaluated in doubling rounds: n = first, 2 first, 4 first, ... up to the cap.
After each round the method makes two estimates from disjoint halves of the n samples
(the first n/2 and the last n/2); their Spearman rank correlation r is the split-half
agreement. The run stops when the agreement the n-sample map is predicted to have with
the cap's map (what a full-budget run would return) reaches the quality preset's
threshold. The prediction treats the map as signal plus sampling noise whose variance
falls as 1/n (a mean over samples): split halves agreeing at r put the n-sample map's
noise-to-signal variance ratio at q = (1 - r) / (2 r), and the cap's map contains these
n samples, so corr(map_n, map_cap) = sqrt((1 + q n / cap) / (1 + q)) (Spearman-Brown for
nested means; 1 at r = 1 or n = cap). Rounds depend only on n, never on the batch size,
so a seed still fixes the result.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from ..errors import InputError

QUALITY = {"fast": 0.90, "balanced": 0.95, "best": None}
"""Each preset's threshold on the predicted agreement with the full-budget map; "best"
evaluates every sample (no early stop)."""


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


def predicted_agreement(rho: float, n: int, cap: int) -> float:
    """Predicted correlation of the n-sample map with the cap-sample map, from the split-half
    agreement ``rho`` of two n/2-sample maps (module docstring); 0 when ``rho`` <= 0."""
    if rho <= 0:
        return 0.0
    if rho >= 1 or n >= cap:
        return 1.0
    q = (1.0 - rho) / (2.0 * rho)
    return float(np.sqrt((1.0 + q * n / cap) / (1.0 + q)))


def rounds(cap: int, first: int) -> list[int]:
    """Cumulative sample counts after each round: first, 2 first, ... and finally ``cap``."""
    out, n = [], max(2, first)
    while n < cap:
        out.append(n)
        n *= 2
    return out + [cap]


@dataclass
class Stopping:
    """Where an adaptive run stopped: ``used`` samples, and after each round (n, the split-half
    Spearman rho, the predicted agreement with the full-budget map)."""

    quality: str
    threshold: float | None
    cap: int
    used: int = 0
    history: list[list[float]] = field(default_factory=list)

    def params(self) -> dict:
        return dict(quality=self.quality, threshold=self.threshold, cap=self.cap, used=self.used,
                    rounds=["n", "split_half_spearman", "predicted_agreement"], history=self.history)


def run_adaptive(cap: int, first: int, quality: str, evaluate: Callable[[int, int], None],
                 halves: Callable[[int], tuple[np.ndarray, np.ndarray]]) -> Stopping:
    """Evaluate samples in rounds until the predicted agreement reaches the threshold.

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
            agreement = predicted_agreement(rho, n, cap)
            stop.history.append([n, round(rho, 4), round(agreement, 4)])
            if agreement >= threshold:
                break
    stop.used = done
    return stop
