"""Deep dream's image optimiser: an octave pyramid with upscaling, random jitter, normalised
gradient steps and a smoothness term (Mordvintsev et al. 2015, Yosinski et al. 2015; MATLAB
deepDreamImage's PyramidLevels / PyramidScale / NumIterations)."""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

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
    """Image sizes from the coarsest level (octave) to the input size."""
    return [(max(1, round(size[0] / scale ** k)), max(1, round(size[1] / scale ** k)))
            for k in range(levels - 1, -1, -1)]


def smooth_step(images: np.ndarray, smoothness: float, sigma: float = 1.0) -> np.ndarray:
    """One step of the smoothness term: ``(1 - s) x + s G_sigma(x)``.

    ``G_sigma(x) - x`` is (to first order) ``sigma^2 / 2`` times the Laplacian of x, the
    descent direction of the quadratic smoothness energy sum |grad x|^2: a step of size s
    on it. Borders wrap, like the jitter.
    """
    if smoothness <= 0:
        return images
    from scipy import ndimage
    blurred = ndimage.gaussian_filter(images, (0, 0, sigma, sigma), mode="wrap")
    return (1.0 - smoothness) * images + smoothness * blurred


def ascend(objective: Objective, start: np.ndarray, *, sizes: Sequence[tuple[int, int]],
           num_iterations: int, step: float, jitter: int = 0, smoothness: float = 0.0,
           bounds: tuple[np.ndarray, np.ndarray] | None = None,
           rng: np.random.Generator | None = None) -> tuple[np.ndarray, int]:
    """Multi-resolution gradient ascent on ``objective`` (one value per image).

    At each octave the image lives at that octave's size and is linearly upsampled to
    the input size for the model; the next octave starts from it upscaled. Each
    iteration: the model sees the image circularly shifted by a random offset in
    ``[-jitter, jitter]`` pixels (per axis, the same for the batch) and the gradient is
    shifted back; the gradient is mapped through the adjoint of the upsampling,
    normalised by its mean absolute value per image and scaled by ``step``; the
    smoothness term (:func:`smooth_step`) follows, then the image is clipped to
    ``bounds`` (the valid pixel range in tensor units).

    Parameters
    ----------
    objective : callable, (N, C, H, W) float32 -> ((N,) values, (N, C, H, W) gradients)
    start : (N, C, H, W) float64 ndarray
    sizes : octave sizes, coarsest first, the last the input size
    rng : the jitter's random generator (None: no jitter)

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
            dy, dx = (rng.integers(-jitter, jitter + 1, 2) if jitter > 0 and rng is not None else (0, 0))
            _, grad = objective(np.roll(x, (dy, dx), axis=(2, 3)).astype(np.float32))
            grad = np.roll(np.asarray(grad, np.float64), (-dy, -dx), axis=(2, 3))
            g = rh.T @ grad @ rw  # the adjoint of the upsampling
            norm = np.abs(g).mean(axis=(1, 2, 3), keepdims=True) + 1e-12
            img = smooth_step(img + step * g / norm, smoothness)
            if bounds is not None:
                img = np.clip(img, bounds[0], bounds[1])
            evaluations += 1
    return img, evaluations
