"""Integrated gradients (Sundararajan et al. 2017) along the straight path from a baseline."""

from __future__ import annotations

import sys
from typing import Any

import numpy as np

from ..model import Model, logit_view, scores
from ..errors import InputError
from ..validation import check_memory
from ..explanation import Explanation
from ..imaging import preprocess
from ..perturbation.engine import timed_predict
from . import MethodInfo, Option
from .common import explanation, prepare
from .gradient_common import channel_map, check_positive_int, gradient_sum, require_gradients

RULES = ("riemann_right", "trapezoid")
DEFAULT_TOLERANCE = 0.01  # completeness gap at which the adaptive step count stops
FIRST_STEPS = 25


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


def step_schedule(num_steps: int, tolerance: float) -> list[int]:
    """The m of each round: 25, 50, 100, ... (each round adds the odd points k / m, reusing the
    previous round's gradients) and ``num_steps`` last; only ``num_steps`` when ``tolerance`` is 0."""
    if tolerance == 0 or num_steps <= FIRST_STEPS:
        return [num_steps]
    steps = [FIRST_STEPS]
    while steps[-1] * 2 <= num_steps:
        steps.append(steps[-1] * 2)
    return steps if steps[-1] == num_steps else steps + [num_steps]


def _round_points(m: int, previous: int, rule: str) -> tuple[np.ndarray, np.ndarray, bool]:
    """Path points a round evaluates, their weights (times m) and whether the sum starts afresh."""
    if previous and m == 2 * previous:
        return np.arange(1, m, 2) / m, np.ones(m // 2), False
    alphas, weights = path_points(m, rule)
    return alphas, weights * m, True


def integrated_gradients(model: Model, image: Any, target: int | str | None = None, *,
                         baseline: str | float = "black", num_steps: int = 800,
                         completeness_tolerance: float = DEFAULT_TOLERANCE,
                         integration: str = "riemann_right", score: str = "probability",
                         mini_batch_size: int = 32, progress: bool = False) -> Explanation:
    """Attributions (x - b) * integral_0^1 d score / d input (b + a (x - b)) da.

    The number of steps is chosen adaptively: m = 25, 50, 100, ... (each round reuses the
    gradients of the previous one) until the completeness gap is at most
    ``completeness_tolerance``, ``num_steps`` being the cap; a gap still larger at the cap is
    warned about on stderr and recorded in ``params["warnings"]``.

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
        The most intervals m of the path (exactly m when ``completeness_tolerance`` is 0).
    completeness_tolerance : float >= 0
        Stop refining once the completeness gap is at most this (default 0.01, 1%).
    integration : {"riemann_right", "trapezoid"}
        The quadrature rule (see :func:`path_points`).
    score : {"probability", "logit"}
    mini_batch_size : int
        Path points per gradient evaluation (the result does not depend on it, byte for byte).

    Returns
    -------
    Explanation
        ``map`` : (H, W) float32, sum over channels of |attributions|;
        ``arrays["attributions"]`` : (1, C, H, W) float32, signed;
        ``params["completeness_gap"]`` : |sum(attributions) - (f(x) - f(b))| / |f(x) - f(b)|
        (with ``params["score_difference"]`` = f(x) - f(b)); ``params["num_steps_used"]`` and
        ``params["completeness_history"]`` ([m, gap] per round).
    """
    require_gradients(model, "integrated-gradients")
    model = logit_view(model, score)  # a Softmax-ended model: the logits before the Softmax
    num_steps = check_positive_int("num_steps", num_steps)
    tolerance = _tolerance(completeness_tolerance)
    check_memory(f"integrated-gradients with num_steps={num_steps}", num_steps * 64.0)
    path_points(1, integration)  # checks the rule before any inference
    prep = prepare(model, image, target, score)
    b = baseline_tensor(model, prep.x, baseline)
    delta = prep.x.astype(np.float64) - b
    f_b = scores(timed_predict(model, b, prep.stats), model.spec, score)[0, prep.target]
    difference = prep.score - float(f_b)
    total, m, history = np.zeros_like(delta), 0, []
    for m_next in step_schedule(num_steps, tolerance):
        alphas, weights, fresh = _round_points(m_next, m, integration)

        def points(start: int, stop: int) -> np.ndarray:
            a = alphas[start:stop, None, None, None]
            return (b + a * delta).astype(np.float32)

        part, _ = gradient_sum(model, prep, len(alphas), points, weights, score=score,
                               mini_batch_size=mini_batch_size)
        total, m = (part if fresh else total + part), m_next
        attributions = delta * (total / m)
        gap = abs(float(attributions.sum()) - difference) / abs(difference) if difference else None
        history.append([m, gap])
        if gap is None or gap <= tolerance:
            break
    params = dict(baseline=baseline if isinstance(baseline, str) else float(baseline),
                  num_steps=num_steps, num_steps_used=m, completeness_tolerance=tolerance,
                  completeness_history=history, integration=integration, score=score,
                  mini_batch_size=int(mini_batch_size), baseline_score=float(f_b),
                  score_difference=difference, attribution_sum=float(attributions.sum()),
                  completeness_gap=gap)
    if tolerance and gap is not None and gap > tolerance:
        text = (f"integrated-gradients: completeness gap {100 * gap:.3g}% > {100 * tolerance:.3g}% at the cap of "
                f"{m} steps: the attributions do not add up to f(x) - f(baseline) (raise --num-steps)")
        print(f"explainer: warning: {text}", file=sys.stderr, flush=True)
        params["warnings"] = [text]
    return explanation(model, prep, "integrated-gradients", channel_map(attributions), params,
                       arrays={"attributions": attributions.astype(np.float32)})


def _tolerance(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.number)) or not 0 <= value < np.inf:
        raise InputError(f"completeness_tolerance must be a number >= 0, got {value!r}")
    return float(value)


METHODS = [MethodInfo("integrated-gradients", integrated_gradients, (
    Option("--baseline", "baseline", dict(help="'black' (all-zero pixels, default), 'zeros' (tensor) or a number")),
    Option("--num-steps", "num_steps", dict(type=int, help="the most path intervals (default 800; exactly "
                                                           "this many with --completeness-tolerance 0)")),
    Option("--completeness-tolerance", "completeness_tolerance",
           dict(type=float, help="add steps (25, 50, 100, ...) until the completeness gap is at most "
                                 "this (default 0.01)")),
    Option("--integration", "integration", dict(choices=list(RULES))),
    Option("--score", "score", dict(choices=["probability", "logit"])),
    Option("--mini-batch-size", "mini_batch_size", dict(type=int)),
), help="integrated gradients (baseline, num_steps, Riemann or trapezoid rule; reports the completeness gap)")]
