"""The window samplers of prediction difference analysis, against direct computation."""

import numpy as np
import pytest
from PIL import Image

from explainer.errors import InputError
from explainer.imaging import Preprocessing
from explainer.perturbation import patch_gaussian
from explainer.perturbation.patch_gaussian import PatchGaussian
from explainer.perturbation.sampling import (ConditionalSampler, MarginalSampler, fill_windows,
                                             window_starts)


def _gaussian(rng, c=3, l_=4, h=8, w=9):
    """A known Gaussian over l x l patches (random SPD covariance), no clipping."""
    d = l_ * l_
    a = rng.normal(size=(c, d, d))
    cov = a @ a.transpose(0, 2, 1) / d + 0.1 * np.eye(d)
    lo, hi = np.full((c, h, w), -np.inf, np.float32), np.full((c, h, w), np.inf, np.float32)
    return PatchGaussian(l_, rng.normal(size=(c, d)), cov, lo, hi, 0, 0.0)


def _naive(g, patch, oy, ox, k):
    """mu_1|2, S_1|2 of one window of one channel's flat patch, by explicit inverses."""
    l_ = g.patch_size
    idx = np.array([(oy + i) * l_ + ox + j for i in range(k) for j in range(k)])
    rest = np.array([i for i in range(l_ * l_) if i not in set(idx)])
    out = []
    for c in range(g.cov.shape[0]):
        s = g.cov[c]
        gain = s[np.ix_(idx, rest)] @ np.linalg.inv(s[np.ix_(rest, rest)])
        mu = g.mean[c][idx] + gain @ (patch[c][rest] - g.mean[c][rest])
        out.append((mu, s[np.ix_(idx, idx)] - gain @ s[np.ix_(rest, idx)], gain))
    return out


def test_window_starts_cover_every_pixel():
    assert window_starts(224, 10, 1).tolist() == list(range(215))
    assert window_starts(224, 10, 8)[-2:].tolist() == [208, 214] and len(window_starts(224, 10, 8)) == 28
    assert window_starts(10, 10, 3).tolist() == [0]
    with pytest.raises(InputError, match="larger than"):
        window_starts(8, 9, 1)


@pytest.mark.parametrize("corner", [(0, 0), (2, 3), (6, 7), (0, 7), (3, 1)])
def test_conditional_samples_match_the_schur_complement(rng, corner):
    # 2x2 windows in 4x4 patches on an 8x9 image: (4-2+1)^2 = 9 position classes.
    g = _gaussian(rng)
    sampler = ConditionalSampler(g, 2, clip=False)
    image = rng.normal(size=(1, 3, 8, 9))
    y0, x0 = np.array([corner[0]]), np.array([corner[1]])
    ty, tx = min(max(corner[0] - 1, 0), 4), min(max(corner[1] - 1, 0), 5)
    patch = image[0, :, ty:ty + 4, tx:tx + 4].reshape(3, 16)
    naive = _naive(g, patch, corner[0] - ty, corner[1] - tx, 2)
    mean = sampler.conditional_mean(image, y0, x0)[0]
    np.testing.assert_allclose(mean, [m for m, _, _ in naive], rtol=1e-10, atol=1e-10)
    n = 40000
    draws = sampler.sample(image, y0, x0, n, np.random.default_rng(1))[0].reshape(n, 3, 4)
    for c, (mu, cov, _) in enumerate(naive):
        se = np.sqrt(np.diag(cov) / n)
        assert np.all(np.abs(draws[:, c].mean(axis=0) - mu) < 5 * se)
        scale = np.sqrt(np.outer(np.diag(cov), np.diag(cov)))
        assert np.all(np.abs(np.cov(draws[:, c].T) - cov) < 6 * scale * np.sqrt(2 / n))


def test_position_class_matrices_are_computed_once_and_match_direct(rng):
    g = _gaussian(rng)
    sampler = ConditionalSampler(g, 2, clip=False)
    image = rng.normal(size=(1, 3, 8, 9))
    yy, xx = np.meshgrid(window_starts(8, 2, 1), window_starts(9, 2, 1), indexing="ij")
    sampler.sample(image, yy.ravel(), xx.ravel(), 2, np.random.default_rng(0))
    assert sorted(sampler._mats) == [(a, b) for a in range(3) for b in range(3)]
    first = sampler.matrices(1, 2)
    sampler.sample(image, yy.ravel(), xx.ravel(), 2, np.random.default_rng(0))
    assert sampler.matrices(1, 2) is first  # cached, not recomputed
    for (oy, ox), (a, chol, mu) in sampler._mats.items():
        naive = _naive(g, np.zeros((3, 16)), oy, ox, 2)
        inside = [(oy + i) * 4 + ox + j for i in range(2) for j in range(2)]
        for c, (_, cov, gain) in enumerate(naive):
            np.testing.assert_allclose(np.delete(a[c], inside, axis=1), gain, rtol=1e-9, atol=1e-12)
            assert np.all(a[c][:, inside] == 0)
            np.testing.assert_allclose(chol[c] @ chol[c].T, cov, rtol=1e-9, atol=1e-12)
            np.testing.assert_allclose(mu[c], g.mean[c][inside])


def test_conditional_samples_are_clipped_to_the_data_range(rng):
    g = _gaussian(rng)
    lo, hi = np.full_like(g.lo, -0.5), np.full_like(g.hi, 0.25)
    lo[:, 0, 0] = 0.1
    g = PatchGaussian(g.patch_size, g.mean, g.cov * 25, lo, hi, 0, 0.0)
    s = ConditionalSampler(g, 2).sample(np.zeros((1, 3, 8, 9)), np.array([0, 3]), np.array([0, 5]), 500,
                                        np.random.default_rng(0))
    assert s.dtype == np.float32 and s.shape == (2, 500, 3, 2, 2)
    assert s.min() >= -0.5 and s.max() <= 0.25 and s[0, :, :, 0, 0].min() >= np.float32(0.1)
    assert np.any(s == np.float32(0.25)) and np.any(s == np.float32(-0.5))


def test_fit_on_constant_images_is_exact(rng):
    # Every patch of image i is constant c_i, and each image gives the same number of patches:
    # mean = mean(c), cov = sum (c_i - mean)^2 * per / (n * per - 1) on every entry (+ ridge).
    values = rng.uniform(-1, 1, size=5)
    data = np.broadcast_to(values[:, None, None, None], (5, 2, 7, 6)).astype(np.float32).copy()
    g = PatchGaussian.fit(data, 3, num_patches=100, ridge=1e-4)
    per = 20
    mean = values.astype(np.float32).astype(np.float64).mean()
    var = ((values.astype(np.float32) - mean) ** 2).sum() * per / (5 * per - 1)
    np.testing.assert_allclose(g.mean, mean, rtol=1e-12)
    np.testing.assert_allclose(g.cov, var * np.ones((2, 9, 9)) + g.ridge * np.eye(9)[None], rtol=1e-10)
    np.testing.assert_allclose(g.ridge, 1e-4 * var, rtol=1e-10)
    assert g.num_patches == 100 and g.lo.shape == (2, 7, 6) and np.all(g.lo == values.min().astype(np.float32))


def test_marginal_sampler_takes_distinct_images_at_the_same_place(rng):
    data = rng.normal(size=(6, 3, 5, 5)).astype(np.float32)
    s = MarginalSampler(data, 2)
    image = np.zeros((1, 3, 5, 5), np.float32)
    out = s.sample(image, np.array([0, 3]), np.array([1, 2]), 6, np.random.default_rng(0))
    assert out.shape == (2, 6, 3, 2, 2)
    for w, (y, x) in enumerate([(0, 1), (3, 2)]):
        found = sorted(int(np.flatnonzero((data[:, :, y:y + 2, x:x + 2] == out[w, j]).all(axis=(1, 2, 3)))[0])
                       for j in range(6))
        assert found == list(range(6))  # each image exactly once
    few = s.sample(image, np.array([0]), np.array([0]), 9, np.random.default_rng(0))
    assert few.shape == (1, 9, 3, 2, 2)  # more samples than images: with replacement


def test_fill_windows_replaces_only_the_window(rng):
    x = rng.normal(size=(1, 2, 5, 6)).astype(np.float32)
    samples = rng.normal(size=(3, 2, 2, 2)).astype(np.float32)
    batch = fill_windows(x, samples, np.array([0, 3, 1]), np.array([4, 0, 2]), np)
    dirty = rng.normal(size=(3, 2, 5, 6)).astype(np.float32)  # a reused buffer's old content
    into = fill_windows(x, samples, np.array([0, 3, 1]), np.array([4, 0, 2]), np, out=dirty)
    assert into is dirty
    for m, (y, x0) in enumerate([(0, 4), (3, 0), (1, 2)]):
        expected = x[0].copy()
        expected[:, y:y + 2, x0:x0 + 2] = samples[m]
        np.testing.assert_array_equal(batch[m], expected)
        np.testing.assert_array_equal(into[m], expected)


def test_gaussian_cache_is_keyed_by_content_and_written_atomically(tmp_path, rng):
    folder = tmp_path / "data"
    folder.mkdir()
    for i in range(3):
        Image.fromarray(rng.integers(0, 256, size=(10, 10, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    pre = Preprocessing(size=(10, 10))
    cache = tmp_path / "cache"
    a = ConditionalSampler.from_folder(folder, pre, 2, 6, cache_dir=cache, num_patches=300)
    files = sorted(cache.iterdir())
    assert len(files) == 1 and files[0].suffix == ".npz"
    b = ConditionalSampler.from_folder(folder, pre, 2, 6, cache_dir=cache, num_patches=300)
    np.testing.assert_array_equal(a.gaussian.cov, b.gaussian.cov)
    ConditionalSampler.from_folder(folder, pre, 2, 4, cache_dir=cache, num_patches=300)
    ConditionalSampler.from_folder(folder, pre.updated(mean=(0.5,)), 2, 6, cache_dir=cache, num_patches=300)
    Image.fromarray(np.zeros((10, 10, 3), np.uint8)).save(folder / "1.png")
    c = ConditionalSampler.from_folder(folder, pre, 2, 6, cache_dir=cache, num_patches=300)
    assert not np.array_equal(a.gaussian.cov, c.gaussian.cov)
    assert len(list(cache.glob("*.npz"))) == 4 and not list(cache.glob("*.tmp"))
    for f in cache.glob("*.npz"):  # a damaged cache file is refitted, not trusted
        f.write_bytes(b"truncated")
    assert patch_gaussian.load(files[0]) is None
    d = ConditionalSampler.from_folder(folder, pre, 2, 6, cache_dir=cache, num_patches=300)
    np.testing.assert_array_equal(d.gaussian.cov, c.gaussian.cov)
