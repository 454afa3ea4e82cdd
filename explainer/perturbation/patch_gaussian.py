"""A Gaussian over l x l image patches, one per colour channel, fitted and cached.

As in Zintgraf et al. (2017): channels are independent, the model is the same at
every image location, and it is fitted with the plain mean and covariance of
random patches of a folder of images preprocessed for the model. A window of
k x k pixels at offset (oy, ox) inside its patch is then sampled from the
conditional Gaussian given the other l*l - k*k pixels (Schur complement)::

    mu_1|2 = mu_1 + S12 S22^-1 (x_2 - mu_2),   S_1|2 = S11 - S12 S22^-1 S21.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..imaging import Preprocessing
from ..paths import cache_dir

CACHE_VERSION = 1
FIT_SEED = 0


@dataclass(frozen=True)
class PatchGaussian:
    """Per-channel Gaussians over flattened (row-major) l x l patches.

    Attributes
    ----------
    patch_size : int, l
    mean : (C, l*l) float64 ndarray
    cov : (C, l*l, l*l) float64 ndarray, with ``ridge`` added to the diagonal
    lo, hi : (C, H, W) float32 ndarrays, the data's per-pixel range (for clipping)
    num_patches : int, patches the fit used
    ridge : float, what was added to the covariance's diagonal
    """

    patch_size: int
    mean: np.ndarray
    cov: np.ndarray
    lo: np.ndarray
    hi: np.ndarray
    num_patches: int
    ridge: float

    @classmethod
    def fit(cls, data: np.ndarray, patch_size: int, *, num_patches: int = 20000,
            seed: int = FIT_SEED, ridge: float = 1e-4) -> "PatchGaussian":
        """Fit on random patches of ``data`` : (n, C, H, W) float images.

        Every image gives ``ceil(num_patches / n)`` patches at uniformly random
        places. ``ridge`` times the mean variance is added to the diagonal so that
        the conditioning blocks stay invertible (flat image regions otherwise make
        the covariance singular).
        """
        n, c, h, w = data.shape
        l_ = int(patch_size)
        if l_ > min(h, w):
            raise InputError(f"patch_size {l_} is larger than the {h}x{w} images")
        rng = np.random.default_rng(seed)
        per = -(-int(num_patches) // n)
        ty = rng.integers(0, h - l_ + 1, size=(n, per))
        tx = rng.integers(0, w - l_ + 1, size=(n, per))
        r = np.arange(l_)
        patches = data[np.arange(n)[:, None, None, None, None], np.arange(c)[None, None, :, None, None],
                       (ty[:, :, None, None, None] + r[:, None]), (tx[:, :, None, None, None] + r)]
        x = patches.reshape(n * per, c, l_ * l_).astype(np.float64).transpose(1, 0, 2)
        mean = x.mean(axis=1)
        centred = x - mean[:, None, :]
        cov = centred.transpose(0, 2, 1) @ centred / max(n * per - 1, 1)
        eps = ridge * max(float(np.mean(np.diagonal(cov, axis1=1, axis2=2))), 1e-12)
        cov = cov + eps * np.eye(l_ * l_)[None]
        return cls(l_, mean, cov, data.min(axis=0).astype(np.float32),
                   data.max(axis=0).astype(np.float32), n * per, eps)

    def window_indices(self, oy: int, ox: int, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Flat patch indices of the window at offset (oy, ox) and of the rest.

        Returns
        -------
        inside : (k*k,) int ndarray, row-major
        outside : (l*l - k*k,) int ndarray, increasing
        """
        l_ = self.patch_size
        if not (0 <= oy <= l_ - k and 0 <= ox <= l_ - k):
            raise InputError(f"window offset ({oy}, {ox}) does not fit a {k}x{k} window in a {l_}x{l_} patch")
        inside = ((oy + np.arange(k))[:, None] * l_ + (ox + np.arange(k))[None, :]).ravel()
        return inside, np.setdiff1d(np.arange(l_ * l_), inside)

    def conditioning(self, oy: int, ox: int, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The matrices that sample a k x k window at (oy, ox) given its patch.

        Returns
        -------
        a : (C, k*k, l*l) float64 ndarray
            S12 S22^-1 spread over the whole patch (zero on the window's own
            pixels), so that mu_1|2 = mu + a @ (patch - patch_mean).
        chol : (C, k*k, k*k) float64 ndarray, lower Cholesky factor of S_1|2
        mu : (C, k*k) float64 ndarray, mu_1 (the window's part of the mean)
        """
        inside, outside = self.window_indices(oy, ox, k)
        cov = self.cov
        s11 = cov[:, inside][:, :, inside]
        s12 = cov[:, inside][:, :, outside]
        s22 = cov[:, outside][:, :, outside]
        gain = np.linalg.solve(s22, s12.transpose(0, 2, 1)).transpose(0, 2, 1) if len(outside) \
            else np.zeros((cov.shape[0], k * k, 0))
        cond = s11 - gain @ s12.transpose(0, 2, 1)
        cond = (cond + cond.transpose(0, 2, 1)) / 2
        a = np.zeros((cov.shape[0], k * k, self.patch_size ** 2))
        a[:, :, outside] = gain
        return a, np.linalg.cholesky(cond), self.mean[:, inside]


def folder_digest(files: list[Path]) -> str:
    """sha256 over the files' names and contents (what the fit depends on)."""
    h = hashlib.sha256()
    for f in files:
        h.update(f.name.encode("utf-8") + b"\0")
        with open(f, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
        h.update(b"\0")
    return h.hexdigest()


def cache_key(digest: str, preprocessing: Preprocessing, patch_size: int, num_patches: int) -> str:
    """Hex key of a fitted Gaussian: data, preprocessing, l and fit settings."""
    text = json.dumps({"version": CACHE_VERSION, "data": digest, "preprocessing": preprocessing.to_json(),
                       "patch_size": int(patch_size), "num_patches": int(num_patches), "seed": FIT_SEED},
                      sort_keys=True)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def default_cache_dir() -> Path | None:
    """$EXPLAINER_CACHE_DIR, else the platform's per-user cache folder (:func:`explainer.paths.cache_dir`)."""
    return cache_dir()


def save(gaussian: PatchGaussian, path: Path) -> None:
    """Write ``gaussian`` to ``path`` (.npz) atomically: temp file, then rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, patch_size=gaussian.patch_size, mean=gaussian.mean, cov=gaussian.cov,
                     lo=gaussian.lo, hi=gaussian.hi, num_patches=gaussian.num_patches, ridge=gaussian.ridge)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load(path: Path) -> PatchGaussian | None:
    """A cached Gaussian, or None when the file is missing or unreadable."""
    try:
        with np.load(path) as z:
            return PatchGaussian(int(z["patch_size"]), z["mean"], z["cov"], z["lo"], z["hi"],
                                 int(z["num_patches"]), float(z["ridge"]))
    except (OSError, KeyError, ValueError):
        return None
