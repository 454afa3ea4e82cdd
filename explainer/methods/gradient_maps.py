"""Saliency (gradient), guided backpropagation and deconvnet maps, each with a SmoothGrad option."""

from __future__ import annotations

from functools import partial
from typing import Any

import numpy as np

from ..model import Model, logit_view
from ..errors import InputError
from ..explanation import Explanation
from . import MethodInfo, Option
from .common import explanation, prepare
from .gradient_common import RELU_RULES, channel_map, check_positive_int, gradient_sum, require_gradients


def gradient_map(model: Model, image: Any, target: int | str | None = None, *, method: str = "gradient",
                 score: str = "probability", num_samples: int = 0, noise_level: float = 0.15,
                 seed: int | None = 0, mini_batch_size: int = 32, progress: bool = False) -> Explanation:
    """Gradient of the target's score with respect to the input pixels.

    Parameters
    ----------
    model : GradientModel
    image : str, Path or ndarray
        File, (H0, W0, 3) uint8 pixels or a (1, C, H, W) float32 input tensor.
    target : int, str or None
        Class index or label; None explains the top-1 class.
    method : {"gradient", "guided-backprop", "deconvnet"}
        The ReLU backward rule: standard, guided (Springenberg et al.) or deconvnet
        (Zeiler and Fergus).
    score : {"probability", "logit"}
    num_samples : int
        0: the plain gradient. n > 0: SmoothGrad, the mean gradient over n inputs
        x + e, e ~ N(0, sigma^2) per element, sigma = noise_level * (max(x) - min(x)).
    noise_level : float
        SmoothGrad's noise as a fraction of the input tensor's range.
    seed : int or None
        Seeds SmoothGrad's noise (a numpy Generator).
    mini_batch_size : int
        Noisy inputs per gradient evaluation.

    Returns
    -------
    Explanation
        ``map`` : (H, W) float32 sum over channels of |gradient| (unnormalised);
        ``arrays["attributions"]`` : (1, C, H, W) float32, the signed (mean) gradient.
    """
    if method not in RELU_RULES:
        raise InputError(f"method must be one of {', '.join(RELU_RULES)}, got {method!r}")
    require_gradients(model, method)
    model = logit_view(model, score)  # a Softmax-ended model: the logits before the Softmax
    num_samples = check_positive_int("num_samples", num_samples, minimum=0)
    if not np.isfinite(noise_level) or noise_level < 0:
        raise InputError(f"noise_level must be a number >= 0, got {noise_level!r}")
    prep = prepare(model, image, target, score)
    relu = RELU_RULES[method]
    params = dict(score=score, relu=relu, num_samples=num_samples, mini_batch_size=int(mini_batch_size))
    if num_samples == 0:
        grad, _ = gradient_sum(model, prep, 1, lambda a, b: prep.x, None, score=score, relu=relu,
                               mini_batch_size=mini_batch_size)
        return explanation(model, prep, method, channel_map(grad), params,
                           arrays={"attributions": grad.astype(np.float32)})
    sigma = float(noise_level) * float(prep.x.max() - prep.x.min())
    rng = np.random.default_rng(seed)

    def noisy(start: int, stop: int) -> np.ndarray:  # drawn in order: batch-size invariant
        e = rng.standard_normal((stop - start,) + prep.x.shape[1:], dtype=np.float32)
        return prep.x + np.float32(sigma) * e

    total, _ = gradient_sum(model, prep, num_samples, noisy, None, score=score, relu=relu,
                            mini_batch_size=mini_batch_size)
    mean = total / num_samples
    params.update(noise_level=float(noise_level), sigma=sigma, smoothgrad=True)
    return explanation(model, prep, method, channel_map(mean), params, seed=seed,
                       arrays={"attributions": mean.astype(np.float32)})


OPTIONS = (
    Option("--score", "score", dict(choices=["probability", "logit"])),
    Option("--num-samples", "num_samples",
           dict(type=int, help="samples per window / perturbed samples / SmoothGrad samples")),
    Option("--noise-level", "noise_level", dict(type=float, help="SmoothGrad noise: fraction of the "
                                                                 "input's range (with --num-samples > 0)")),
    Option("--seed", "seed", dict(type=int)),
    Option("--mini-batch-size", "mini_batch_size", dict(type=int)),
)


def _named(name: str) -> Any:
    function = partial(gradient_map, method=name)
    function.__doc__ = gradient_map.__doc__
    return function


gradient = _named("gradient")
guided_backprop = _named("guided-backprop")
deconvnet = _named("deconvnet")

METHODS = [
    MethodInfo("gradient", gradient, OPTIONS,
               help="saliency: |d score / d pixel| summed over channels (--num-samples N: SmoothGrad)"),
    MethodInfo("guided-backprop", guided_backprop, OPTIONS, help="guided backpropagation (SmoothGrad option)"),
    MethodInfo("deconvnet", deconvnet, OPTIONS, help="Zeiler-Fergus deconvnet (SmoothGrad option)"),
]
