"""The parts of prediction difference analysis: windows, sampling runs, evidence, maps."""

from __future__ import annotations

import math
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import numpy as np

from ..model import Model
from ..perturbation import masks
from ..perturbation.engine import RunStats, perturb
from ..perturbation.sampling import fill_windows, window_starts
from ..xp import to_numpy

CHUNK = 64  # windows per random stream: results do not depend on the batch size


@dataclass(frozen=True)
class Windows:
    """k x k windows by their top-left corners.

    Attributes
    ----------
    y0, x0 : (W,) int64 ndarrays
    size : int, k
    """

    y0: np.ndarray
    x0: np.ndarray
    size: int

    def __len__(self) -> int:
        return len(self.y0)

    def corners(self) -> np.ndarray:
        """(W, 2) int32 array of (y0, x0)."""
        return np.stack([self.y0, self.x0], axis=1).astype(np.int32)


def grid_windows(shape: tuple[int, int], size: int, stride: tuple[int, int]) -> Windows:
    """Every window on the grid (see ``window_starts``), in row-major order."""
    ys = window_starts(shape[0], size, stride[0])
    xs = window_starts(shape[1], size, stride[1])
    yy, xx = np.meshgrid(ys, xs, indexing="ij")
    return Windows(yy.ravel(), xx.ravel(), size)


def laplace(p: np.ndarray, n: int, k: int) -> np.ndarray:
    """Laplace-corrected probability p' = (p N + 1) / (N + K)."""
    return (np.asarray(p, dtype=np.float64) * n + 1.0) / (n + k)


def log_odds(p: np.ndarray) -> np.ndarray:
    """log2(p / (1 - p))."""
    return np.log2(p) - np.log2(1.0 - p)


def evidence(base: float, sampled: np.ndarray, score: str, n: int, k: int) -> np.ndarray:
    """Prediction difference of each window.

    Parameters
    ----------
    base : float, the target's score on the image
    sampled : (W, S) float ndarray, its score with the window replaced by each sample
    score : "probability" -> weight of evidence log2 odds(p'(c|x)) - log2 odds(p'(c|x\\w))
        with p(c|x\\w) the mean over samples and p' Laplace-corrected with N, K;
        "logit" -> activation difference base - mean.

    Returns
    -------
    (W,) float64 ndarray
    """
    mean = np.asarray(sampled, dtype=np.float64).mean(axis=1)
    if score == "logit":
        return base - mean
    return log_odds(laplace(base, n, k)) - log_odds(laplace(mean, n, k))


class ChunkedSamples:
    """Samples for windows in fixed chunks, each from its own seeded generator.

    Chunk ``j`` (windows ``j*CHUNK`` ...) draws from
    ``default_rng([seed, stage, j])``, so the samples of a window depend only on
    the seed, the stage and the window's index, never on the batch size.
    """

    def __init__(self, sampler: Any, image: Any, windows: Windows, num_samples: int, seed: int,
                 stage: int, xp: ModuleType) -> None:
        self.sampler, self.image, self.windows = sampler, image, windows
        self.num_samples, self.seed, self.stage, self.xp = num_samples, seed, stage, xp
        self._cache: dict[int, Any] = {}

    def chunk(self, j: int) -> Any:
        """(w, S, C, k, k) samples of the windows of chunk j."""
        if j not in self._cache:
            s = slice(j * CHUNK, min((j + 1) * CHUNK, len(self.windows)))
            rng = np.random.default_rng([self.seed, self.stage, j])
            y0 = self.xp.asarray(self.windows.y0[s])
            x0 = self.xp.asarray(self.windows.x0[s])
            self._cache = {k: v for k, v in self._cache.items() if k >= j - 1}
            self._cache[j] = self.sampler.sample(self.image, y0, x0, self.num_samples, rng)
        return self._cache[j]

    def batch(self, start: int, stop: int, out: Any = None) -> Any:
        """Perturbed inputs ``start..stop-1`` (input i = window i // S, sample i % S), written
        into ``out`` when given.

        Returns
        -------
        (stop - start, C, H, W) float32 array
        """
        xp, s = self.xp, self.num_samples
        first, last = start // s // CHUNK, (stop - 1) // s // CHUNK
        parts = [self.chunk(j) for j in range(first, last + 1)]
        samples = xp.concatenate(parts, axis=0) if len(parts) > 1 else parts[0]
        samples = samples.reshape((-1,) + tuple(samples.shape[2:]))
        offset = first * CHUNK * s
        window = np.arange(start, stop) // s
        y0, x0 = xp.asarray(self.windows.y0[window]), xp.asarray(self.windows.x0[window])
        return fill_windows(self.image, samples[start - offset:stop - offset], y0, x0, xp, out=out)


def window_scores(model: Model, image: Any, windows: Windows, sampler: Any, *, num_samples: int,
                  target: int, score: str, mini_batch_size: int, stats: RunStats, seed: int,
                  stage: int, xp: ModuleType, progress: bool, desc: str) -> np.ndarray:
    """The target's score with each window replaced by each of its S samples.

    Returns
    -------
    (W, S) float64 ndarray
    """
    gen = ChunkedSamples(sampler, image, windows, num_samples, seed, stage, xp)
    y = perturb(model, image, len(windows) * num_samples, lambda out, start, stop: gen.batch(start, stop, out),
                mini_batch_size, stats, xp, score=score, target=target, progress=progress, desc=desc)
    return y.reshape(len(windows), num_samples)


def aggregate(windows: Windows, values: np.ndarray, shape: tuple[int, int], xp: ModuleType) -> np.ndarray:
    """Each pixel: mean of ``values`` (W,) over the windows covering it (0 if none).

    Returns
    -------
    (H, W) float64 ndarray
    """
    rows, cols = masks.box_axes(xp.asarray(windows.y0), xp.asarray(windows.x0),
                                (windows.size, windows.size), shape, xp)
    w = xp.asarray(values, dtype=xp.float64)
    total = to_numpy(masks.box_coverage_sum(w, rows, cols))
    count = to_numpy(masks.box_coverage_sum(xp.ones_like(w), rows, cols))
    return np.divide(total, count, out=np.zeros_like(total), where=count > 0)


def refine(coarse: Windows, values: np.ndarray, fraction: float, fine: Windows,
           shape: tuple[int, int]) -> Windows:
    """The fine windows worth evaluating after a coarse pass.

    The ``ceil(fraction * len(coarse))`` coarse windows with the largest
    |evidence| make the region; a fine window is kept when its centre pixel
    (y0 + (k-1)//2, x0 + (k-1)//2) lies in that region and it is not a coarse
    window already.
    """
    top = np.argsort(-np.abs(values), kind="stable")[:math.ceil(fraction * len(coarse))]
    rows, cols = masks.box_axes(coarse.y0[top], coarse.x0[top], (coarse.size, coarse.size), shape, np)
    region = masks.box_coverage_sum(np.ones(len(top)), rows, cols) > 0
    c = (fine.size - 1) // 2
    done = np.zeros(shape, dtype=bool)
    done[coarse.y0, coarse.x0] = True
    keep = region[fine.y0 + c, fine.x0 + c] & ~done[fine.y0, fine.x0]
    return Windows(fine.y0[keep], fine.x0[keep], fine.size)


def hidden_unit_model(model: Model, layer: str) -> Model:
    """A Model whose outputs are the feature-map means of ``layer`` (N, C): ``model.hidden_unit_model``.

    Unit ``c`` is then output (class) ``c``; the backend builds it (ONNX Runtime: graph
    surgery by :func:`explainer.graph.outputs.layer_means_model`, same device and preprocessing).
    """
    return model.hidden_unit_model(layer)  # ModelBase: CapabilityError naming the fix
