"""Integrated gradients (Sundararajan et al. 2017) along the straight path from a baseline."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..model import Model, scores
from ..errors import InputError
from ..validation import check_memory
from ..explanation import Explanation
from ..imaging import preprocess
from ..perturbation.engine import timed_predict
from . import MethodInfo, Option
from .common import explanation, prepare
from .gradient_common import channel_map, check_positive_int, gradient_sum, require_gradients

RULES = ("riemann_right", "trapezoid")


def baseline_tensor(model: Model, x: np.ndarray, baseline: str | float) -> np.ndarray:
    """The baseline input (1, C, H, W) float32.

    "black": the preprocessed image of all-zero pixels; "zeros": a tensor of zeros;
    a number: a tensor filled with it (input tensor units).
    """
    if isinstance(baseline, str) and baseline not in ("black", "zeros"):
        try:
            baseline = float(baseline)
        except ValueError:
            raise InputError(f"baseline must be 'black', 'zeros' or a number, got {baseline!r}") from None
    if baseline == "black":
        h, w = model.spec.preprocessing.size
        return preprocess(np.zeros((h, w, 3), np.uint8), model.spec.preprocessing)
    value = 0.0 if baseline == "zeros" else float(baseline)
    if not np.isfinite(value):
        raise InputError(f"baseline must be finite, got {baseline!r}")
    return np.full(x.shape, value, np.float32)


def path_points(num_steps: int, rule: str) -> tuple[np.ndarray, np.ndarray]:
    """Points alpha in [0, 1] and quadrature weights summing to 1.

    "riemann_right": alpha = k / m, k = 1..m, weights 1/m; "trapezoid": alpha = k / m,
    k = 0..m, weights 1/m with the two ends halved (m + 1 gradient evaluations).
    """
    if rule not in RULES:
        raise InputError(f"method must be one of {', '.join(RULES)}, got {rule!r}")
    m = num_steps
    if rule == "riemann_right":
        return np.arange(1, m + 1) / m, np.full(m, 1.0 / m)
    w = np.full(m + 1, 1.0 / m)
    w[0] = w[-1] = 0.5 / m
    return np.arange(m + 1) / m, w


def integrated_gradients(model: Model, image: Any, target: int | str | None = None, *,
                         baseline: str | float = "black", num_steps: int = 25,
                         integration: str = "riemann_right", score: str = "probability",
                         mini_batch_size: int = 32, progress: bool = False) -> Explanation:
    """Attributions (x - b) * integral_0^1 d score / d input (b + a (x - b)) da.

    Parameters
    ----------
    model : GradientModel
    image : str, Path or ndarray
        File, (H0, W0, 3) uint8 pixels or a (1, C, H, W) float32 input tensor.
    target : int, str or None
        Class index or label; None explains the top-1 class.
    baseline : "black", "zeros" or float
        See :func:`baseline_tensor`.
    num_steps : int
        m, the number of intervals of the path.
    integration : {"riemann_right", "trapezoid"}
        The quadrature rule (see :func:`path_points`).
    score : {"probability", "logit"}
    mini_batch_size : int
        Path points per gradient evaluation (the result does not depend on it).

    Returns
    -------
    Explanation
        ``map`` : (H, W) float32, sum over channels of |attributions|;
        ``arrays["attributions"]`` : (1, C, H, W) float32, signed;
        ``params["completeness_gap"]`` : |sum(attributions) - (f(x) - f(b))| / |f(x) - f(b)|
        (with ``params["score_difference"]`` = f(x) - f(b)).
    """
    require_gradients(model, "integrated-gradients")
    num_steps = check_positive_int("num_steps", num_steps)
    check_memory(f"integrated-gradients with num_steps={num_steps}", num_steps * 64.0)
    alphas, weights = path_points(num_steps, integration)
    prep = prepare(model, image, target, score)
    b = baseline_tensor(model, prep.x, baseline)
    delta = prep.x.astype(np.float64) - b

    def points(start: int, stop: int) -> np.ndarray:
        a = alphas[start:stop, None, None, None]
        return (b + a * delta).astype(np.float32)

    total, _ = gradient_sum(model, prep, len(alphas), points, weights, score=score,
                            mini_batch_size=mini_batch_size)
    attributions = delta * total
    f_b = scores(timed_predict(model, b, prep.stats), model.spec, score)[0, prep.target]
    difference = prep.score - float(f_b)
    gap = abs(float(attributions.sum()) - difference) / abs(difference) if difference else float("inf")
    params = dict(baseline=baseline if isinstance(baseline, str) else float(baseline),
                  num_steps=num_steps, integration=integration, score=score,
                  mini_batch_size=int(mini_batch_size), baseline_score=float(f_b),
                  score_difference=difference, attribution_sum=float(attributions.sum()),
                  completeness_gap=gap if np.isfinite(gap) else None)
    return explanation(model, prep, "integrated-gradients", channel_map(attributions), params,
                       arrays={"attributions": attributions.astype(np.float32)})


METHODS = [MethodInfo("integrated-gradients", integrated_gradients, (
    Option("--baseline", "baseline", dict(help="'black' (all-zero pixels, default), 'zeros' (tensor) or a number")),
    Option("--num-steps", "num_steps", dict(type=int, help="path intervals (default 25)")),
    Option("--integration", "integration", dict(choices=list(RULES))),
    Option("--score", "score", dict(choices=["probability", "logit"])),
    Option("--mini-batch-size", "mini_batch_size", dict(type=int)),
), help="integrated gradients (baseline, num_steps, Riemann or trapezoid rule; reports the completeness gap)")]
