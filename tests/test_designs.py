"""Balanced on/off designs (perturbation/designs.py) and RISE's orthogonal masks: balance by
count, rows distributed as independent draws, the same map expectation with less noise."""

from itertools import product

import numpy as np
import pytest

import explainer
from explainer.errors import InputError
from explainer.methods.rise import rise, rise_masks, rise_plan
from explainer.perturbation.designs import binary, block_size, hadamard_entries, orthogonal
from tiny import linear_classifier


@pytest.mark.parametrize("entries, size", [(1, 4), (3, 4), (4, 8), (49, 64), (63, 64), (64, 128)])
def test_block_size(entries, size):
    assert block_size(entries) == size


@pytest.mark.parametrize("entries", [3, 10, 49])
def test_blocks_are_balanced_pairs_and_singles(entries):
    b = block_size(entries)
    z = orthogonal(5 * b + 3, entries, np.random.default_rng(1))
    assert z.shape == (5 * b + 3, entries) and z.dtype == bool
    for k in range(5):
        blk = z[k * b:(k + 1) * b].astype(int)
        assert (blk.sum(axis=0) == b // 2).all()  # every entry on in half the rows
        together = blk.T @ blk
        off = ~np.eye(entries, dtype=bool)
        assert (together[off] == b // 4).all()  # every pair on together in a quarter


@pytest.mark.parametrize("b", [4, 64, 256])
def test_columns_are_scipys_hadamard_matrix(b):
    from scipy.linalg import hadamard

    cols = np.random.default_rng(b).permutation(b)[:min(b, 40)]
    rows = np.random.default_rng(b + 1).permutation(b)
    np.testing.assert_array_equal(hadamard_entries(rows, cols), hadamard(b)[rows][:, cols] > 0)


def test_large_designs_stay_small():
    # 5,000 entries -> blocks of 8,192 rows: only the rows asked for are computed, in chunks
    z = orthogonal(300, 5000, np.random.default_rng(0))
    assert z.shape == (300, 5000)
    np.testing.assert_allclose(z.mean(), 0.5, atol=0.01)


def test_rows_are_uniform_like_independent_draws():
    # F = 3, B = 4: one block holds 4 of the 8 patterns; over many blocks every pattern
    # must appear 1/8 of the time, and rows of different blocks are independent.
    z = orthogonal(4 * 4000, 3, np.random.default_rng(0))
    codes = z @ np.array([1, 2, 4])
    counts = np.bincount(codes, minlength=8) / len(codes)
    np.testing.assert_allclose(counts, 1 / 8, atol=0.01)
    # one row per block: no dependence on the block's other rows
    first = codes[::4]
    assert set(np.unique(first)) == set(range(8))


def test_seed_fixes_the_design_and_independent_is_the_old_draw():
    a = binary("orthogonal", 100, 7, np.random.default_rng(3))
    np.testing.assert_array_equal(a, binary("orthogonal", 100, 7, np.random.default_rng(3)))
    ind = binary("independent", 50, 7, np.random.default_rng(3))
    np.testing.assert_array_equal(ind, np.random.default_rng(3).random((50, 7)) < 0.5)


def test_orthogonal_masks_cover_every_pixel_equally_per_block():
    plan = rise_plan((30, 22), 128, 5, 0.5, 2, "orthogonal")  # 25 cells -> blocks of 32
    assert (plan.shifts[:32] == plan.shifts[0]).all()
    m = rise_masks((30, 22), 128, 5, 0.5, seed=2)  # the default design at p = 0.5
    for k in range(4):
        np.testing.assert_allclose(m[32 * k:32 * (k + 1)].sum(axis=0), 16.0, atol=1e-4)


def _model(tmp_path, rng):
    w = rng.normal(size=(2, 3, 16, 16)).astype(np.float32) * 0.3
    x = rng.normal(size=(1, 3, 16, 16)).astype(np.float32)
    return explainer.load_model(linear_classifier(tmp_path / "m.onnx", w)), x


def test_whole_blocks_give_the_papers_estimator(tmp_path, rng):
    # sum_i f_i M_i / (N p) by hand with the same masks; equal to the centred map because
    # every pixel's mask values add up to N p.
    model, x = _model(tmp_path, rng)
    n = 64 * 3
    e = rise(model, x, 1, num_masks=n, grid_size=4, score="logit", seed=5, mini_batch_size=50)
    assert e.params["design"] == "orthogonal"
    m = rise_masks((16, 16), n, 4, 0.5, seed=5).astype(np.float64)
    fill = x.mean(axis=(2, 3), keepdims=True)
    f = np.stack([model.predict((fill + mi[None, None] * (x - fill)).astype(np.float32))[0, 1] for mi in m])
    np.testing.assert_allclose(e.map, np.einsum("n,nhw->hw", f, m) / (n * 0.5), rtol=1e-4, atol=1e-5)


def test_same_expectation_less_noise(tmp_path, rng):
    # Against a 20,000-mask independent reference, 256 orthogonal masks must be far closer
    # than 256 independent ones (summed over 4 seeds), and their means must agree.
    model, x = _model(tmp_path, rng)
    kw = dict(grid_size=4, score="logit")
    ref = rise(model, x, 1, num_masks=20000, design="independent", seed=99, **kw).map
    err = {d: sum(np.abs(rise(model, x, 1, num_masks=256, design=d, seed=s, **kw).map - ref).mean()
                  for s in range(4)) for d in ("orthogonal", "independent")}
    assert err["orthogonal"] < 0.5 * err["independent"]


def test_design_option_is_checked(tmp_path, rng):
    model, x = _model(tmp_path, rng)
    with pytest.raises(InputError, match="keep_probability 0.5"):
        rise(model, x, 1, num_masks=8, grid_size=2, keep_probability=0.3, design="orthogonal")
    with pytest.raises(InputError, match="design must be"):
        rise(model, x, 1, num_masks=8, grid_size=2, design="sobol")
    e = rise(model, x, 1, num_masks=8, grid_size=2, keep_probability=0.3)
    assert e.params["design"] == "independent"

