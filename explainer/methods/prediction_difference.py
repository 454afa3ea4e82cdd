"""Prediction difference analysis (Zintgraf, Cohen, Adel, Welling, ICLR 2017)."""

from __future__ import annotations

import logging
import math
import sys
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..model import Model, logit_view
from ..errors import InputError
from ..explanation import Explanation
from ..perturbation.engine import check_batch_size
from ..perturbation.sampling import ConditionalSampler, MarginalSampler, load_folder_except
from ..xp import array_module
from . import MethodInfo, Option
from .shared_options import INCREMENTAL_OPTION, check_incremental, incremental_runner
from .common import Prepared, auto_or_numbers, explanation, load_input, prepare
from .prediction_difference_core import (Windows, aggregate, evidence, grid_windows, hidden_unit_model,
                                         refine, window_scores)

SAMPLINGS = ("marginal", "conditional")
log = logging.getLogger("explainer")


def _positive(name: str, value: Any, *, number: type = int) -> Any:
    ok = isinstance(value, (int, np.integer) if number is int else (int, float, np.number))
    if isinstance(value, bool) or not ok or not value > 0 or not math.isfinite(value):
        raise InputError(f"{name} must be a positive {'integer' if number is int else 'number'}, "
                         f"got {value!r}")
    return number(value)


def _stride(value: Any) -> tuple[int, int]:
    if isinstance(value, str) and value == "auto":
        return (1, 1)
    pair = list(value) if isinstance(value, (list, tuple)) else [value, value]
    if len(pair) != 2:
        raise InputError(f"stride must be an integer or a pair of integers, got {value!r}")
    return _positive("stride", pair[0]), _positive("stride", pair[1])


def prediction_difference_cost(shape: Sequence[int] = (224, 224), *, window_size: int = 10,
                               stride: int | Sequence[int] = 1, num_samples: int = 10,
                               coarse_to_fine: float | None = None) -> dict[str, int]:
    """Forward passes a run costs, before running it.

    Returns
    -------
    dict
        ``windows`` and ``forward_passes`` (windows x S, plus 1 for the base
        prediction). With ``coarse_to_fine``: ``coarse_windows`` (stride = k)
        and ``fine_windows_max``, an upper bound on the windows refined;
        ``forward_passes`` then counts the coarse pass plus that bound.
    """
    h, w = int(shape[0]), int(shape[1])
    k, step = int(window_size), _stride(stride)
    full = len(grid_windows((h, w), k, step))
    if coarse_to_fine is None:
        return {"windows": full, "forward_passes": full * num_samples + 1}
    coarse = len(grid_windows((h, w), k, (k, k)))
    chosen = math.ceil(coarse_to_fine * coarse)
    per = (math.ceil(k / step[0]) + 1) * (math.ceil(k / step[1]) + 1)
    fine = min(full, chosen * per)
    return {"coarse_windows": coarse, "fine_windows_max": fine, "windows": coarse + fine,
            "forward_passes": (coarse + fine) * num_samples + 1}


def _announce(message: str, progress: bool) -> None:
    log.info(message)
    if progress:
        print(message, file=sys.stderr, flush=True)


def _sampler(sampling: str, data: Any, model: Model, window_size: int, patch_size: Any,
             cache_dir: Any, xp: Any, x: np.ndarray, num_samples: int) -> tuple[Any, int, dict[str, int]]:
    """The sampler over ``data`` without the image explained (``x``, by content), and the counts."""
    pre = model.spec.preprocessing
    images, files, excluded = load_folder_except(data, pre, x)
    counts = dict(data_images=len(files), data_images_excluded=excluded)
    besides = " besides the image being explained" if excluded else ""
    if sampling == "marginal" and len(files) < num_samples:
        raise InputError(f"data folder {data}: {len(files)} image(s){besides}; marginal sampling draws "
                         f"num_samples={num_samples} different images per window: give at least "
                         f"{num_samples} images or fewer samples")
    if not files:
        raise InputError(f"data folder {data}: no image{besides} to fit the patch Gaussian on")
    if sampling == "marginal":
        return MarginalSampler(images, window_size, xp=xp), 0, counts
    l_ = window_size + 4 if isinstance(patch_size, str) and patch_size == "auto" \
        else _positive("patch_size", patch_size)
    if l_ < window_size or l_ > min(pre.size):
        raise InputError(f"patch_size must be between window_size {window_size} and the input side "
                         f"{min(pre.size)}, got {l_}")
    return ConditionalSampler.from_folder(data, pre, window_size, l_, cache_dir=cache_dir, xp=xp,
                                          files=files), l_, counts


def _units(model: Model, target: Any, score: str, layer: str | None,
           unit: int | None) -> tuple[Model, Any, str]:
    """Swap in the hidden-unit model when ``layer`` is given; resolve "auto" score."""
    if layer is None:
        if unit is not None:
            raise InputError("unit= needs layer=, the layer whose feature map it is")
        return model, target, "probability" if score == "auto" else score
    if score == "probability":
        raise InputError("a hidden unit has no probability: use score='logit' (activation difference)")
    if unit is not None and target is not None and str(target) != str(unit):
        raise InputError(f"give the unit once: target={target!r} and unit={unit!r} differ")
    return hidden_unit_model(model, str(layer)), unit if unit is not None else target, "logit"


def prediction_difference(model: Model, image: Any, target: int | str | None = None, *,
                          window_size: int = 10, stride: int | Sequence[int] | str = 1,
                          num_samples: int = 10, sampling: str = "marginal",
                          data: str | Path | None = None, patch_size: int | str = "auto",
                          training_size: int = 100000, num_classes: int | str = "auto",
                          score: str = "auto", layer: str | None = None, unit: int | None = None,
                          coarse_to_fine: float | None = None, mini_batch_size: int = 128,
                          seed: int = 0, cache_dir: str | Path | None = None,
                          execution_environment: str = "auto", incremental: str = "auto",
                          progress: bool = False) -> Explanation:
    """Weight of evidence of every k x k window for the target (Zintgraf et al. 2017).

    Each window is replaced by ``num_samples`` samples; p(c | x without window)
    is the mean target probability over them, and the window's weight of
    evidence is WE = log2 odds(p'(c|x)) - log2 odds(p'(c|x without window)), with
    the Laplace correction p' = (p N + 1) / (N + K). Each pixel gets the mean WE
    of the windows covering it: positive = evidence for the target, negative =
    against. Windows lie inside the image at 0, s, 2s, ... and one more flush
    with the far edge: ceil((224 - k) / s) + 1 per axis (215 for k = 10, s = 1).

    Parameters
    ----------
    model : Model
    image : str, Path or ndarray
        File, (H0, W0, 3) uint8 pixels, or a (1, C, H, W) float32 input tensor.
    target : int, str or None
        Class index or label (None: the top-1 class); the unit with ``layer``.
    window_size : int, k
    stride : int, (int, int) or "auto" (= 1, the paper's setting)
    num_samples : int, S samples per window
    sampling : {"marginal", "conditional"}
        "marginal": the window's pixels from S other images of ``data`` at the
        same place. "conditional": from a Gaussian over l x l patches fitted on
        ``data`` (cached in ``cache_dir``), conditioned on the rest of the patch.
    data : folder of images (required), preprocessed as the model's inputs; an image equal to
        the one explained (same input tensor) is left out, and marginal sampling needs at
        least ``num_samples`` images besides it (``params["data_images"]``,
        ``params["data_images_excluded"]``)
    patch_size : int or "auto" (= k + 4), l for conditional sampling
    training_size, num_classes : N and K of the Laplace correction ("auto" K =
        the model's number of classes)
    score : {"auto", "probability", "logit"}
        "probability": weight of evidence; "logit": activation difference
        base - mean over samples. "auto": probability, or logit for a layer.
    layer, unit : str, int
        Explain the mean of feature map ``unit`` of tensor/node ``layer``
        (activation difference) instead of a class.
    coarse_to_fine : float in (0, 1] or None
        First evaluate windows at stride k (tiles); then, at ``stride``, only the
        windows whose centre lies in the ``coarse_to_fine`` fraction of tiles with
        the largest |evidence|. The map averages both passes.
    mini_batch_size : int, forward passes per batch (does not change the result)
    seed : int
    cache_dir : folder for fitted Gaussians (default $EXPLAINER_CACHE_DIR, else the platform's user cache folder)
    execution_environment : {"auto", "cpu", "gpu"}, where samples are built (NumPy or CuPy)
    incremental : {"auto", "off"}, recompute only what a window reaches (as occlusion;
        ``params["inference"]`` says which path ran)
    progress : bool, print the cost and show a progress bar with an ETA

    Returns
    -------
    Explanation
        ``map`` : (H, W) float32, signed, ``display="diverging"``; ``arrays``:
        ``window_corners`` (W, 2) int32 and ``window_evidence`` (W,) float32.
    """
    k, s = _positive("window_size", window_size), _positive("num_samples", num_samples)
    step, n_train = _stride(stride), _positive("training_size", training_size)
    if sampling not in SAMPLINGS:
        raise InputError(f"sampling must be one of {SAMPLINGS}, got {sampling!r}")
    if score not in ("auto", "probability", "logit"):
        raise InputError(f"score must be 'auto', 'probability' or 'logit', got {score!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise InputError(f"seed must be a non-negative integer, got {seed!r}")
    if coarse_to_fine is not None:
        coarse_to_fine = _positive("coarse_to_fine", coarse_to_fine, number=float)
        if coarse_to_fine > 1 or max(step) >= k:
            raise InputError(f"coarse_to_fine must be in (0, 1] with stride < window_size, "
                             f"got {coarse_to_fine} with stride {list(step)}")
    check_batch_size(mini_batch_size)
    check_incremental(incremental)
    xp = array_module(execution_environment)
    model, target, score = _units(model, target, score, layer, unit)
    shape = tuple(model.spec.preprocessing.size)
    if k > min(shape):
        raise InputError(f"window_size {k} is larger than the {shape[0]}x{shape[1]} input")
    model = logit_view(model, score)  # a Softmax-ended ONNX model: the logits before the Softmax
    n_cls = model.spec.num_classes if num_classes == "auto" else _positive("num_classes", num_classes)
    inp = load_input(model, image)
    sampler, l_, counts = _sampler(sampling, data, model, k, patch_size, cache_dir, xp, inp.x, s)
    prep = prepare(model, inp, target, score)
    cost = prediction_difference_cost(shape, window_size=k, stride=step, num_samples=s,
                                      coarse_to_fine=coarse_to_fine)
    runner, inference = incremental_runner(model, prep.x, (k, k), incremental)
    run = dict(model=runner, prep=prep, sampler=sampler, s=s, score=score, batch=mini_batch_size,
               seed=int(seed), xp=xp, progress=progress, n=n_train, k=n_cls)
    if coarse_to_fine is None:
        _announce(f"prediction-difference: {cost['windows']} windows x {s} samples = "
                  f"{cost['forward_passes'] - 1} forward passes", progress)
        windows = grid_windows(shape, k, step)
        values = _evaluate(windows, stage=0, **run)
    else:
        windows, values = _coarse_to_fine(shape, k, step, coarse_to_fine, cost, run)
    relevance = aggregate(windows, values, shape, xp)
    params = dict(window_size=k, stride=list(step), num_samples=s, sampling=sampling,
                  data=str(data), patch_size=l_ or None, training_size=n_train, num_classes=n_cls,
                  score=score, layer=layer, unit=None if layer is None else prep.target,
                  coarse_to_fine=coarse_to_fine, mini_batch_size=int(mini_batch_size),
                  num_windows=len(windows), execution_environment=xp.__name__, inference=inference,
                  **counts)
    arrays = {"window_corners": windows.corners(), "window_evidence": values.astype(np.float32)}
    return explanation(model, prep, "prediction-difference", relevance, params, seed=int(seed),
                       arrays=arrays, display="diverging")


def _evaluate(windows: Windows, *, stage: int, model: Model, prep: Prepared, sampler: Any, s: int,
              score: str, batch: int, seed: int, xp: Any, progress: bool, n: int, k: int) -> np.ndarray:
    """Evidence (W,) of each window."""
    sampled = window_scores(model, xp.asarray(prep.x), windows, sampler, num_samples=s,
                            target=prep.target, score=score, mini_batch_size=batch, stats=prep.stats,
                            seed=seed, stage=stage, xp=xp, progress=progress,
                            desc=f"prediction-difference{' (fine)' if stage else ''}")
    return evidence(prep.score, sampled, score, n, k)


def _coarse_to_fine(shape: tuple[int, int], k: int, step: tuple[int, int], fraction: float,
                    cost: dict[str, int], run: dict[str, Any]) -> tuple[Windows, np.ndarray]:
    """The coarse pass at stride k, then the fine windows in the top tiles."""
    s = run["s"]
    _announce(f"prediction-difference (coarse to fine): {cost['coarse_windows']} coarse windows x {s} "
              f"samples, then at most {cost['fine_windows_max']} fine windows x {s}: at most "
              f"{cost['forward_passes'] - 1} forward passes", run["progress"])
    coarse = grid_windows(shape, k, (k, k))
    coarse_values = _evaluate(coarse, stage=0, **run)
    fine = refine(coarse, coarse_values, fraction, grid_windows(shape, k, step), shape)
    _announce(f"prediction-difference: refining {len(fine)} windows x {s} samples = "
              f"{len(fine) * s} forward passes", run["progress"])
    fine_values = _evaluate(fine, stage=1, **run) if len(fine) else np.zeros(0)
    both = Windows(np.concatenate([coarse.y0, fine.y0]), np.concatenate([coarse.x0, fine.x0]), k)
    return both, np.concatenate([coarse_values, fine_values])


METHODS = [MethodInfo("prediction-difference", prediction_difference, (
    Option("--window-size", "window_size", dict(type=int, help="k, the side of the windows (default 10)")),
    Option("--stride", "stride", dict(type=auto_or_numbers(int),
                                      help="'auto' (10%% of the input), N or 'H,W'")),
    Option("--num-samples", "num_samples", dict(type=int, help="samples per window / perturbed samples")),
    Option("--sampling", "sampling", dict(choices=list(SAMPLINGS))),
    Option("--data", "data", dict(help="folder of images to sample windows from")),
    Option("--patch-size", "patch_size", dict(type=auto_or_numbers(int),
                                              help="'auto' (window + 4) or l, conditional sampling")),
    Option("--training-size", "training_size", dict(type=int, help="N of the Laplace correction")),
    Option("--layer", "layer", dict(help="explain a hidden layer's feature-map mean (tensor or node)")),
    Option("--unit", "unit", dict(type=int, help="the feature map (channel) of --layer")),
    Option("--coarse-to-fine", "coarse_to_fine", dict(type=float,
                                                      help="fraction of stride-k tiles to refine")),
    Option("--seed", "seed", dict(type=int)),
    Option("--cache-dir", "cache_dir", dict(help="where fitted patch Gaussians are cached")),
    Option("--mini-batch-size", "mini_batch_size", dict(type=int)),
    Option("--score", "score", dict(choices=["probability", "logit"])),
    INCREMENTAL_OPTION,
), help="prediction difference analysis (Zintgraf et al. 2017), signed weight of evidence")]
