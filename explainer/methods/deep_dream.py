"""Deep dream (MATLAB deepDreamImage): images that strongly activate channels of a layer or classes."""

from __future__ import annotations

import time
from dataclasses import asdict
from typing import Any, Sequence

import numpy as np

from ..model import Model, resolve_target, scores
from ..errors import InputError
from ..explanation import Explanation
from . import MethodInfo, Option
from .common import auto_or_numbers, describe_backend, load_input
from .dream_ascent import ascend, pyramid_sizes, resize, resize_matrix  # noqa: F401  (re-exported)
from .dream_objective import channel_count, layer_objective, output_objective
from .gradient_common import check_positive_int, require_gradients

SCALINGS = ("linear", "none")
TOP = 3


def _pixel_affine(model: Model) -> tuple[np.ndarray, np.ndarray]:
    """a, b (C, 1, 1) with tensor = a * pixel + b."""
    pre = model.spec.preprocessing
    c = pre.channels
    std = np.broadcast_to(np.asarray(pre.std, np.float64), (c,))
    mean = np.broadcast_to(np.asarray(pre.mean, np.float64), (c,))
    return (pre.scale / std)[:, None, None], (-mean / std)[:, None, None]


def _start(model: Model, initial_image: Any, rng: np.random.Generator) -> np.ndarray:
    """(1, C, H, W) float64: grey 127.5 + 5 N(0, 1) pixels for "random", else the image."""
    if isinstance(initial_image, str) and initial_image == "random":
        a, b = _pixel_affine(model)
        pixels = 127.5 + 5.0 * rng.standard_normal((1,) + model.spec.input_shape)
        return a * pixels + b
    return load_input(model, initial_image).x.astype(np.float64)


def _bounds(model: Model) -> tuple[np.ndarray, np.ndarray]:
    """The valid pixel range 0..255 in tensor units, (C, 1, 1) each."""
    a, b = _pixel_affine(model)
    return np.minimum(b, a * 255 + b), np.maximum(b, a * 255 + b)


def to_pixels(model: Model, images: np.ndarray, scaling: str) -> np.ndarray:
    """(N, C, H, W) tensors to (N, H, W, 3) or (N, H, W) uint8 images.

    "linear": each image scaled by its own min and max; "none": the preprocessing
    inverted, clipped to 0..255.
    """
    if scaling == "linear":
        lo = images.min(axis=(1, 2, 3), keepdims=True)
        span = images.max(axis=(1, 2, 3), keepdims=True) - lo
        v = np.divide(images - lo, span, out=np.zeros_like(images), where=span > 0) * 255
    else:
        a, b = _pixel_affine(model)
        v = (images - b) / a
    out = np.clip(np.round(v), 0, 255).astype(np.uint8).transpose(0, 2, 3, 1)
    return out[..., 0] if out.shape[-1] == 1 else out


def _channels(channels: Any, target: Any, model: Model, layer: str | None, count: int,
              x0: np.ndarray) -> list[int]:
    """The channels to dream; "auto" without a target: the output's top-3 classes for the
    starting image (hidden layers need ``--channels``)."""
    if isinstance(channels, str) and channels == "auto":
        if target is None and layer is not None:
            raise InputError(f"deep-dream of layer {layer!r} needs --channels (0..{count - 1}), "
                             "e.g. --channels 0,1,2")
        if target is None:
            s = model.predict(x0.astype(np.float32))[0]
            return [int(c) for c in np.argsort(-np.asarray(s), kind="stable")[:min(TOP, count)]]
        return [resolve_target(target, model.spec, 0)] if layer is None else [int(target)]
    chosen = [channels] if isinstance(channels, (int, np.integer)) else list(channels)
    if not chosen or any(isinstance(c, bool) or not isinstance(c, (int, np.integer)) or not 0 <= c < count
                         for c in chosen):
        raise InputError(f"channels must be integers in 0..{count - 1}, got {channels!r}")
    return [int(c) for c in chosen]


def deep_dream(model: Model, image: Any = None, target: int | str | None = None, *, layer: str = "output",
               channels: int | Sequence[int] | str = "auto", pyramid_levels: int = 4,
               pyramid_scale: float = 1.4, num_iterations: int = 30, step_size: float = 0.01,
               jitter: int = 32, smoothness: float = 0.15,
               output_scaling: str = "linear", initial_image: Any = "random", seed: int | None = 0,
               progress: bool = False) -> Explanation:
    """Images that maximise the mean activation of channels of a layer (or classes' logits).

    Parameters
    ----------
    model : GradientModel (on Triton, a hidden layer needs its deployed `M_dream__<layer>`)
    image : ignored (a global method; the CLI passes None)
    target : int, str or None
        With ``layer="output"`` and ``channels="auto"``: the class to dream. Neither a
        target nor channels: the output's top-3 classes for the starting image (a hidden
        layer needs ``channels``: the error says so).
    layer : str
        "output" (the class logits) or a node or tensor name: the objective is the
        spatial mean of each chosen channel.
    channels : int, sequence of int or "auto"
        Channels (or classes); one image each, computed as one batch.
    pyramid_levels, pyramid_scale, num_iterations
        MATLAB's PyramidLevels, PyramidScale and NumIterations (per level; defaults 4,
        1.4, 30: MATLAB's 3 and 10 give adversarial texture on small models).
    step_size : float
        Step of the normalised gradient ascent, a fraction of the pixel range (255 pixels)
        in input tensor units.
    jitter : int
        Each step sees the image circularly shifted by up to this many pixels (random,
        seeded): the dream cannot rely on pixel-exact patterns.
    smoothness : float in [0, 1)
        Weight of the smoothness step after each gradient step (``dream_ascent.smooth_step``).
    output_scaling : {"linear", "none"}
    initial_image : "random" or an image (file, pixels or (1, C, H, W) tensor)
        "random": 127.5 + 5 N(0, 1) pixels, seeded by ``seed``.

    Returns
    -------
    Explanation
        ``images["<layer-or-class>_<c>"]`` : (H, W, 3) uint8 per channel;
        ``arrays["dreams"]`` : (n, C, H, W) float32 tensors; ``map`` : (H, W) grey
        level of the first image; ``display="none"`` (no map files: the CLI writes
        ``deep-dream.<class|channel>_<c>.png``, ``deep-dream.dreams.npy`` and
        ``deep-dream.json``); ``params["objective_start"/"objective_end"]`` and, for
        classes, ``params["probability_end"]``.
    """
    started = time.perf_counter()
    require_gradients(model, "deep-dream")
    levels = check_positive_int("pyramid_levels", pyramid_levels)
    iters = check_positive_int("num_iterations", num_iterations)
    if not pyramid_scale >= 1 or not np.isfinite(step_size) or step_size <= 0:
        raise InputError(f"pyramid_scale must be >= 1 and step_size > 0, got {pyramid_scale!r}, {step_size!r}")
    if isinstance(jitter, bool) or not isinstance(jitter, (int, np.integer)) or jitter < 0 \
            or not 0 <= smoothness < 1:
        raise InputError(f"jitter must be an integer >= 0 and smoothness in [0, 1), got {jitter!r}, {smoothness!r}")
    if output_scaling not in SCALINGS:
        raise InputError(f"output_scaling must be one of {SCALINGS}, got {output_scaling!r}")
    hidden = None if layer in ("output", None) else layer
    count = model.spec.num_classes if hidden is None else channel_count(model, hidden)
    rng = np.random.default_rng(seed)
    start = _start(model, initial_image, rng)
    chosen = _channels(channels, target, model, hidden, count, start)
    stats = {"evaluations": 0, "model_s": 0.0}
    objective = output_objective(model, chosen, stats) if hidden is None \
        else layer_objective(model, hidden, chosen, stats)
    x0 = np.repeat(start, len(chosen), axis=0)
    a, _ = _pixel_affine(model)
    step = float(step_size) * 255.0 * float(np.abs(a).mean())
    sizes = pyramid_sizes(model.spec.preprocessing.size, levels, float(pyramid_scale))
    first, _ = objective(x0.astype(np.float32))
    dreams, _ = ascend(objective, x0, sizes=sizes, num_iterations=iters, step=step, jitter=int(jitter),
                       smoothness=float(smoothness), bounds=_bounds(model), rng=rng)
    last, _ = objective(dreams.astype(np.float32))
    params = dict(layer=hidden or "output", channels=chosen, pyramid_levels=levels,
                  pyramid_scale=float(pyramid_scale), num_iterations=iters, step_size=float(step_size),
                  jitter=int(jitter), smoothness=float(smoothness),
                  output_scaling=output_scaling, pyramid_sizes=[list(s) for s in sizes],
                  initial_image="random" if isinstance(initial_image, str) else "given",
                  objective_start=first.tolist(), objective_end=last.tolist())
    if hidden is None:
        probs = scores(model.predict(dreams.astype(np.float32)), model.spec, "probability")
        params["probability_end"] = [float(probs[i, c]) for i, c in enumerate(chosen)]
    timings = {"wall_s": time.perf_counter() - started, "forward_passes": stats["evaluations"],
               "model_s": stats["model_s"]}
    return _result(model, hidden, dreams, params, timings, seed)


def _result(model: Model, hidden: str | None, dreams: np.ndarray, params: dict[str, Any],
            timings: dict[str, float], seed: int | None) -> Explanation:
    """One image per channel; the map is the first image's grey level in [0, 1]."""
    chosen = params["channels"]
    pictures = to_pixels(model, dreams, params["output_scaling"])
    prefix = "class" if hidden is None else "channel"
    images = {f"{prefix}_{c}": p for c, p in zip(chosen, pictures)}
    grey = pictures[0].astype(np.float32) / 255
    labels = [model.spec.labels[c] if hidden is None else f"{hidden}[{c}]" for c in chosen]
    params["labels"] = labels
    return Explanation(
        map=grey.mean(axis=2) if grey.ndim == 3 else grey, target=chosen[0], label=labels[0],
        score=float(params["objective_end"][0]), method="deep-dream", params=params, seed=seed,
        backend=describe_backend(model), model_sha256=model.spec.sha256, timings=timings,
        arrays={"dreams": dreams.astype(np.float32)}, images=images, display="none",
        preprocessing=asdict(model.spec.preprocessing))

METHODS = [MethodInfo("deep-dream", deep_dream, (
    Option("--layer", "layer", dict(help="a layer: node or tensor name (see `explainer inspect`); "
                                         "deep-dream: 'output' (default) for classes")),
    Option("--channels", "channels", dict(type=auto_or_numbers(int),
                                          help="deep-dream: channels (or classes), e.g. '3,7'")),
    Option("--pyramid-levels", "pyramid_levels", dict(type=int)),
    Option("--pyramid-scale", "pyramid_scale", dict(type=float)),
    Option("--num-iterations", "num_iterations", dict(type=int, help="deep-dream: iterations per level")),
    Option("--step-size", "step_size", dict(type=float)),
    Option("--jitter", "jitter", dict(type=int, help="deep-dream: random shift in pixels per step")),
    Option("--smoothness", "smoothness", dict(type=float, help="deep-dream: smoothness step weight in [0, 1)")),
    Option("--output-scaling", "output_scaling", dict(choices=list(SCALINGS))),
    Option("--initial-image", "initial_image", dict(help="deep-dream: 'random' (default) or an image file")),
    Option("--seed", "seed", dict(type=int)),
), help="deep dream (MATLAB deepDreamImage): images maximising channels or classes", needs_image=False)]
