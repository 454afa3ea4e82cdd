"""Samplers that fill k x k windows of an image (prediction difference analysis).

Both samplers draw, for a batch of windows, ``S`` replacements each:

* :class:`MarginalSampler` copies the window's pixels from other images of a
  folder, at the same place (the empirical marginal distribution);
* :class:`ConditionalSampler` draws them from a Gaussian over l x l patches
  conditioned on the rest of the window's patch (see :mod:`.patch_gaussian`).

Windows are given by their top-left corners ``y0, x0`` ((B,) int arrays) and always
lie fully inside the image (see :func:`window_starts`). Arrays are NumPy or CuPy
(``xp``); random numbers come from a NumPy ``Generator`` so that results do not
depend on the device.
"""

from __future__ import annotations

from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from ..errors import InputError
from ..imaging import Preprocessing, preprocess, read_image
from . import patch_gaussian
from .folder import IMAGE_SUFFIXES, image_files, load_folder, load_folder_except  # noqa: F401  (re-exported)
from .patch_gaussian import PatchGaussian

def window_starts(length: int, window: int, stride: int) -> np.ndarray:
    """Start offsets of windows along one axis: 0, s, 2s, ... and the last fit.

    Windows lie fully inside ``[0, length)``; when ``length - window`` is not a
    multiple of the stride one more window, flush with the far edge, makes every
    pixel covered, so there are ``ceil((length - window) / stride) + 1`` of them.

    Returns
    -------
    starts : (n,) int64 ndarray
    """
    if window > length:
        raise InputError(f"window_size {window} is larger than the image side {length}")
    last = length - window
    starts = np.arange(0, last + 1, stride, dtype=np.int64)
    return starts if starts[-1] == last else np.append(starts, last)


def window_index(y0: Any, x0: Any, size: int, xp: ModuleType) -> tuple[Any, Any]:
    """Row and column indices of square windows, for advanced indexing.

    Returns
    -------
    rows, cols : (B, size) int arrays
    """
    r = xp.arange(size)
    return y0[:, None] + r[None, :], x0[:, None] + r[None, :]


def gather_windows(images: Any, which: Any, y0: Any, x0: Any, size: int, xp: ModuleType) -> Any:
    """Cut one square window per row of ``which`` out of a stack of images.

    Parameters
    ----------
    images : (n, C, H, W) array
    which : (B, S) int array, the image each sample is taken from
    y0, x0 : (B,) int arrays, window corners

    Returns
    -------
    windows : (B, S, C, size, size) array
    """
    rows, cols = window_index(y0, x0, size, xp)
    c = xp.arange(images.shape[1])
    return images[which[:, :, None, None, None], c[None, None, :, None, None],
                  rows[:, None, None, :, None], cols[:, None, None, None, :]]


def fill_windows(x: Any, samples: Any, y0: Any, x0: Any, xp: ModuleType, out: Any = None) -> Any:
    """Copies of ``x``, each with one window replaced by one sample.

    Parameters
    ----------
    x : (1, C, H, W) float32 array
    samples : (M, C, k, k) array
    y0, x0 : (M,) int arrays
    out : (M, C, H, W) float32 array to fill in place (a reused buffer: no fresh pages
        to fault in), or None for a new one

    Returns
    -------
    batch : (M, C, H, W) float32 array (``out`` when given)
    """
    m, c, k = samples.shape[0], samples.shape[1], samples.shape[2]
    if out is None:
        batch = xp.repeat(x.astype(xp.float32, copy=False), m, axis=0)
    else:
        batch = out
        batch[...] = x
    rows, cols = window_index(y0, x0, k, xp)
    batch[xp.arange(m)[:, None, None, None], xp.arange(c)[None, :, None, None],
          rows[:, None, :, None], cols[:, None, None, :]] = samples
    return batch


class MarginalSampler:
    """Window pixels drawn from other images at the same place.

    Each window gets ``S`` different images of the folder (drawn without
    replacement; with replacement when the folder has fewer than ``S`` images).

    Parameters
    ----------
    data : (n, C, H, W) float array, images preprocessed for the model
    window_size : int, k
    xp : numpy or cupy
    """

    name = "marginal"

    def __init__(self, data: Any, window_size: int, *, xp: ModuleType = np) -> None:
        if data.ndim != 4 or data.shape[0] < 1:
            raise InputError(f"marginal sampler needs (n, C, H, W) images, got shape {list(data.shape)}")
        self.data = xp.asarray(data, dtype=xp.float32)
        self.window_size = int(window_size)
        self.xp = xp

    @classmethod
    def from_folder(cls, folder: str | Path | None, preprocessing: Preprocessing, window_size: int,
                    *, xp: ModuleType = np) -> "MarginalSampler":
        return cls(load_folder(folder, preprocessing), window_size, xp=xp)

    def choose(self, count: int, num_samples: int, rng: np.random.Generator) -> np.ndarray:
        """(count, S) image indices: S distinct images per window when possible."""
        n = self.data.shape[0]
        if n < num_samples:
            return rng.integers(0, n, size=(count, num_samples))
        keys = rng.random((count, n))
        return np.argpartition(keys, num_samples - 1, axis=1)[:, :num_samples]

    def sample(self, image: Any, y0: Any, x0: Any, num_samples: int, rng: np.random.Generator) -> Any:
        """Replacements for B windows of ``image`` ((1, C, H, W), unused here).

        Returns
        -------
        samples : (B, S, C, k, k) float32 array
        """
        xp = self.xp
        which = xp.asarray(self.choose(len(y0), num_samples, rng))
        return gather_windows(self.data, which, xp.asarray(y0), xp.asarray(x0), self.window_size, xp)


class ConditionalSampler:
    """Window pixels drawn from a patch Gaussian, conditioned on the patch's rest.

    The window's l x l patch is centred on it where the image allows, else pushed
    inside the image: the window sits at offset (oy, ox) in its patch, one of
    (l - k + 1)^2 "position classes". The conditioning matrices of a class
    (``PatchGaussian.conditioning``) are computed once and cached; one batch of
    windows then costs one matrix product per class present in it.

    Parameters
    ----------
    gaussian : PatchGaussian, fitted on patches of side l
    window_size : int, k <= l
    clip : bool
        Clip samples to the data's per-pixel range (as the reference code does).
    xp : numpy or cupy
    """

    name = "conditional"

    def __init__(self, gaussian: PatchGaussian, window_size: int, *, clip: bool = True,
                 xp: ModuleType = np) -> None:
        k, l_ = int(window_size), gaussian.patch_size
        if not 1 <= k <= l_:
            raise InputError(f"patch_size {l_} must be at least window_size {k}")
        self.gaussian, self.window_size, self.clip, self.xp = gaussian, k, clip, xp
        self.pad = (l_ - k) // 2
        self.lo = xp.asarray(gaussian.lo)
        self.hi = xp.asarray(gaussian.hi)
        self._mats: dict[tuple[int, int], tuple[Any, Any, Any]] = {}

    def matrices(self, oy: int, ox: int) -> tuple[Any, Any, Any]:
        """(A, L, mu) of position class (oy, ox) on ``xp``, computed once (see PatchGaussian)."""
        key = (int(oy), int(ox))
        if key not in self._mats:
            a, chol, mu = self.gaussian.conditioning(key[0], key[1], self.window_size)
            self._mats[key] = (self.xp.asarray(a), self.xp.asarray(chol), self.xp.asarray(mu))
        return self._mats[key]

    def patch_corners(self, y0: Any, x0: Any) -> tuple[Any, Any]:
        """Top-left corners (B,) of each window's l x l patch, inside the image."""
        xp, l_ = self.xp, self.gaussian.patch_size
        h, w = self.lo.shape[1:]
        return xp.clip(y0 - self.pad, 0, h - l_), xp.clip(x0 - self.pad, 0, w - l_)

    @classmethod
    def from_folder(cls, folder: str | Path | None, preprocessing: Preprocessing, window_size: int,
                    patch_size: int, *, cache_dir: str | Path | None = None, num_patches: int = 20000,
                    xp: ModuleType = np, files: list[Path] | None = None) -> "ConditionalSampler":
        """Fit (or load from the cache) the patch Gaussian of a folder of images.

        The cache file is keyed by the folder's content hash, the preprocessing,
        l and the fit settings, and written atomically. ``files``: use only these
        images of the folder (default: all).
        """
        if files is None:
            files = image_files(folder)
        key = patch_gaussian.cache_key(patch_gaussian.folder_digest(files), preprocessing, patch_size,
                                       num_patches)
        folder = cache_dir or patch_gaussian.default_cache_dir()  # None: the cache is off
        path = None if folder is None else Path(folder) / f"patch-gaussian-{key[:32]}.npz"
        gaussian = None if path is None else patch_gaussian.load(path)
        if gaussian is None:
            data = np.concatenate([preprocess(read_image(f), preprocessing) for f in files], axis=0)
            gaussian = PatchGaussian.fit(data, patch_size, num_patches=num_patches)
            if path is not None:
                patch_gaussian.save(gaussian, path)
        return cls(gaussian, window_size, xp=xp)

    def _by_class(self, image: Any, y0: Any, x0: Any, z: Any | None) -> Any:
        """Conditional means (z None) or samples (z given) of B windows, class by class."""
        xp, l_, k = self.xp, self.gaussian.patch_size, self.window_size
        ty, tx = self.patch_corners(y0, x0)
        which = xp.zeros((len(y0), 1), dtype=xp.int64)
        patches = gather_windows(image, which, ty, tx, l_, xp)[:, 0]
        patches = patches.reshape(len(y0), patches.shape[1], l_ * l_).astype(xp.float64)
        patches -= xp.asarray(self.gaussian.mean)[None]
        oy, ox = y0 - ty, x0 - tx
        out = xp.empty((len(y0), patches.shape[1], k * k) if z is None else z.shape, dtype=xp.float64)
        for cy, cx in sorted(set(zip(_host(oy).tolist(), _host(ox).tolist()))):
            sel = xp.nonzero((oy == cy) & (ox == cx))[0]
            a, chol, mu = self.matrices(cy, cx)
            mean = mu[None] + _per_channel(a, patches[sel], xp)
            out[sel] = mean if z is None else mean[:, None] + _per_channel(chol, z[sel], xp)
        return out

    def conditional_mean(self, image: Any, y0: Any, x0: Any) -> Any:
        """mu_1|2 of each window given the rest of its patch in ``image`` (1, C, H, W).

        Returns
        -------
        mean : (B, C, k*k) float64 array
        """
        xp = self.xp
        return self._by_class(image, xp.asarray(y0), xp.asarray(x0), None)

    def sample(self, image: Any, y0: Any, x0: Any, num_samples: int, rng: np.random.Generator) -> Any:
        """S conditional samples for each of B windows of ``image`` (1, C, H, W).

        Returns
        -------
        samples : (B, S, C, k, k) float32 array
        """
        xp, k = self.xp, self.window_size
        y0, x0 = xp.asarray(y0), xp.asarray(x0)
        c = self.lo.shape[0]
        z = xp.asarray(rng.standard_normal((len(y0), num_samples, c, k * k)))
        out = self._by_class(image, y0, x0, z).reshape(len(y0), num_samples, c, k, k)
        if self.clip:
            which = xp.zeros((len(y0), 1), dtype=xp.int64)
            out = xp.clip(out, gather_windows(self.lo[None], which, y0, x0, k, xp),
                          gather_windows(self.hi[None], which, y0, x0, k, xp))
        return out.astype(xp.float32)


def _per_channel(mats: Any, vectors: Any, xp: ModuleType) -> Any:
    """``mats[c] @ v`` for every vector: one batched GEMM per channel stack.

    Parameters
    ----------
    mats : (C, m, n) array
    vectors : (..., C, n) array

    Returns
    -------
    (..., C, m) array
    """
    lead, (c, n) = vectors.shape[:-2], vectors.shape[-2:]
    flat = xp.moveaxis(vectors.reshape(-1, c, n), 1, 0)
    out = flat @ xp.swapaxes(mats, 1, 2)
    return xp.moveaxis(out, 0, 1).reshape(lead + (c, mats.shape[1]))


def _host(a: Any) -> np.ndarray:
    return a.get() if hasattr(a, "get") else np.asarray(a)
