"""Deep dream (MATLAB deepDreamImage): images that strongly activate channels of a layer or classes."""

from __future__ import annotations

import time
from dataclasses import asdict
from typing import Any, Callable, Sequence

import numpy as np

from ..model import Model, resolve_target
from ..errors import InputError
from ..explanation import Explanation
from . import MethodInfo, Option
from .common import auto_or_numbers, describe_backend, load_input
from .dream_objective import channel_count, layer_objective, output_objective
from .gradient_common import check_positive_int, require_gradients

SCALINGS = ("linear", "none")
Objective = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]


def resize_matrix(n_out: int, n_in: int) -> np.ndarray:
    """(n_out, n_in) linear interpolation aligning pixel centres (edges held constant)."""
    src = np.clip((np.arange(n_out) + 0.5) * n_in / n_out - 0.5, 0, n_in - 1)
    lo = np.floor(src).astype(int)
    hi = np.minimum(lo + 1, n_in - 1)
    frac = src - lo
    m = np.zeros((n_out, n_in))
    np.add.at(m, (np.arange(n_out), lo), 1 - frac)
    np.add.at(m, (np.arange(n_out), hi), frac)
    return m


def resize(images: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Linear resize of (N, C, h, w) images to (N, C, size[0], size[1])."""
    rh, rw = resize_matrix(size[0], images.shape[2]), resize_matrix(size[1], images.shape[3])
    return rh @ images @ rw.T


def pyramid_sizes(size: tuple[int, int], levels: int, scale: float) -> list[tuple[int, int]]:
    """Image sizes from the coarsest level to the input size."""
    return [(max(1, round(size[0] / scale ** k)), max(1, round(size[1] / scale ** k)))
            for k in range(levels - 1, -1, -1)]


def ascend(objective: Objective, start: np.ndarray, *, sizes: Sequence[tuple[int, int]],
           num_iterations: int, step: float) -> tuple[np.ndarray, int]:
    """Multi-resolution gradient ascent on ``objective`` (one value per image).

    At each level the image lives at that level's size and is linearly upsampled to
    the input size for the model; its gradient is the adjoint (the transposed
    resize) of the input gradient. Steps are g / mean|g| per image, times ``step``.

    Returns
    -------
    images : (N, C, H, W) float64 ndarray
    evaluations : int, gradient evaluations made (each of N images)
    """
    full = start.shape[2:]
    img = resize(start, sizes[0])
    evaluations = 0
    for size in sizes:
        img = resize(img, size)
        rh, rw = resize_matrix(full[0], size[0]), resize_matrix(full[1], size[1])
        for _ in range(num_iterations):
            x = rh @ img @ rw.T
            _, grad = objective(x.astype(np.float32))
            g = rh.T @ grad.astype(np.float64) @ rw  # the adjoint of the upsampling
            norm = np.abs(g).mean(axis=(1, 2, 3), keepdims=True) + 1e-12
            img = img + step * g / norm
            evaluations += 1
    return img, evaluations


def _pixel_affine(model: Model) -> tuple[np.ndarray, np.ndarray]:
    """a, b (C, 1, 1) with tensor = a * pixel + b."""
    pre = model.spec.preprocessing
    c = pre.channels
    std = np.broadcast_to(np.asarray(pre.std, np.float64), (c,))
    mean = np.broadcast_to(np.asarray(pre.mean, np.float64), (c,))
    return (pre.scale / std)[:, None, None], (-mean / std)[:, None, None]


def _start(model: Model, n: int, initial_image: Any, rng: np.random.Generator) -> np.ndarray:
    if isinstance(initial_image, str) and initial_image == "random":
        a, b = _pixel_affine(model)
        pixels = 127.5 + 20.0 * rng.standard_normal((1,) + model.spec.input_shape)
        x = a * pixels + b
    else:
        x = load_input(model, initial_image).x.astype(np.float64)
    return np.repeat(x, n, axis=0)


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


def _channels(channels: Any, target: Any, model: Model, layer: str | None, count: int) -> list[int]:
    if isinstance(channels, str) and channels == "auto":
        if target is None:
            raise InputError("deep-dream needs channels (--channels) or, for output classes, a --target")
        return [resolve_target(target, model.spec, 0)] if layer is None else [int(target)]
    chosen = [channels] if isinstance(channels, (int, np.integer)) else list(channels)
    if not chosen or any(isinstance(c, bool) or not isinstance(c, (int, np.integer)) or not 0 <= c < count
                         for c in chosen):
        raise InputError(f"channels must be integers in 0..{count - 1}, got {channels!r}")
    return [int(c) for c in chosen]


def deep_dream(model: Model, image: Any = None, target: int | str | None = None, *, layer: str = "output",
               channels: int | Sequence[int] | str = "auto", pyramid_levels: int = 3,
               pyramid_scale: float = 1.4, num_iterations: int = 10, step_size: float = 0.01,
               output_scaling: str = "linear", initial_image: Any = "random", seed: int | None = 0,
               progress: bool = False) -> Explanation:
    """Images that maximise the mean activation of channels of a layer (or classes' logits).

    Parameters
    ----------
    model : GradientModel (on Triton, a hidden layer needs its deployed `M_dream__<layer>`)
    image : ignored (a global method; the CLI passes None)
    target : int, str or None
        With ``layer="output"`` and ``channels="auto"``: the class to dream.
    layer : str
        "output" (the class logits) or a node or tensor name: the objective is the
        spatial mean of each chosen channel.
    channels : int, sequence of int or "auto"
        Channels (or classes); one image each, computed as one batch.
    pyramid_levels, pyramid_scale, num_iterations
        MATLAB's PyramidLevels, PyramidScale and NumIterations (per level).
    step_size : float
        Step of the normalised gradient ascent, a fraction of the pixel range (255 pixels)
        in input tensor units.
    output_scaling : {"linear", "none"}
    initial_image : "random" or an image (file, pixels or (1, C, H, W) tensor)
        "random": 127.5 + 20 N(0, 1) pixels, seeded by ``seed``.

    Returns
    -------
    Explanation
        ``images["<layer-or-class>_<c>"]`` : (H, W, 3) uint8 per channel;
        ``arrays["dreams"]`` : (n, C, H, W) float32 tensors; ``map`` : (H, W) grey
        level of the first image; ``params["objective_start"/"objective_end"]``.
    """
    started = time.perf_counter()
    require_gradients(model, "deep-dream")
    levels = check_positive_int("pyramid_levels", pyramid_levels)
    iters = check_positive_int("num_iterations", num_iterations)
    if not pyramid_scale >= 1 or not np.isfinite(step_size) or step_size <= 0:
        raise InputError(f"pyramid_scale must be >= 1 and step_size > 0, got {pyramid_scale!r}, {step_size!r}")
    if output_scaling not in SCALINGS:
        raise InputError(f"output_scaling must be one of {SCALINGS}, got {output_scaling!r}")
    hidden = None if layer in ("output", None) else layer
    count = model.spec.num_classes if hidden is None else channel_count(model, hidden)
    chosen = _channels(channels, target, model, hidden, count)
    stats = {"evaluations": 0, "model_s": 0.0}
    objective = output_objective(model, chosen, stats) if hidden is None \
        else layer_objective(model, hidden, chosen, stats)
    x0 = _start(model, len(chosen), initial_image, np.random.default_rng(seed))
    a, _ = _pixel_affine(model)
    step = float(step_size) * 255.0 * float(np.abs(a).mean())
    sizes = pyramid_sizes(model.spec.preprocessing.size, levels, float(pyramid_scale))
    first, _ = objective(x0.astype(np.float32))
    dreams, _ = ascend(objective, x0, sizes=sizes, num_iterations=iters, step=step)
    last, _ = objective(dreams.astype(np.float32))
    params = dict(layer=hidden or "output", channels=chosen, pyramid_levels=levels,
                  pyramid_scale=float(pyramid_scale), num_iterations=iters, step_size=float(step_size),
                  output_scaling=output_scaling, pyramid_sizes=[list(s) for s in sizes],
                  initial_image="random" if isinstance(initial_image, str) else "given",
                  objective_start=first.tolist(), objective_end=last.tolist())
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
        arrays={"dreams": dreams.astype(np.float32)}, images=images,
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
    Option("--output-scaling", "output_scaling", dict(choices=list(SCALINGS))),
    Option("--initial-image", "initial_image", dict(help="deep-dream: 'random' (default) or an image file")),
    Option("--seed", "seed", dict(type=int)),
), help="deep dream (MATLAB deepDreamImage): images maximising channels or classes", needs_image=False)]
