"""Prediction difference analysis on tiny models whose answers are derived by hand."""

import numpy as np
import pytest
from PIL import Image

import explainer
from explainer.methods.prediction_difference import prediction_difference, prediction_difference_cost
from explainer.methods.prediction_difference_core import grid_windows, refine
from tiny import linear_classifier

N_TRAIN = 100000


def _folder(path, images):
    """Save (H, W, 3) uint8 arrays as PNGs in a new folder."""
    path.mkdir()
    for i, im in enumerate(images):
        Image.fromarray(np.asarray(im, np.uint8)).save(path / f"im{i:02d}.png")
    return path


def _model(tmp_path, weights, **kw):
    h, w = weights.shape[2:]
    return explainer.load_model(linear_classifier(tmp_path / "m.onnx", weights,
                                                  preprocessing={"size": [h, w]}, **kw))


def _logodds(p, k):
    q = (p * N_TRAIN + 1) / (N_TRAIN + k)
    return np.log2(q / (1 - q))


def _reference(w0, x, size, corners, values, score):
    """Brute-force map: one window, one constant replacement value at a time."""
    total, count = np.zeros(x.shape[1:]), np.zeros(x.shape[1:])
    base = float((w0 * x).sum())
    sig = lambda z: 1 / (1 + np.exp(-z))  # softmax of (z, 0)
    for y, x0 in corners:
        win = (slice(None), slice(y, y + size), slice(x0, x0 + size))
        zs = [base + float((w0[win] * (v - x[win])).sum()) for v in values]
        if score == "logit":
            we = base - np.mean(zs)
        else:
            we = _logodds(sig(base), 2) - _logodds(np.mean([sig(z) for z in zs]), 2)
        total[y:y + size, x0:x0 + size] += we
        count[y:y + size, x0:x0 + size] += 1
    return np.divide(total, count, out=np.zeros_like(total), where=count > 0)  # 0: uncovered


@pytest.mark.parametrize("stride", [1, 2, 3])
@pytest.mark.parametrize("score", ["probability", "logit"])
def test_hand_derived_weight_of_evidence(tmp_path, rng, stride, score):
    # logits (w0 . x, 0): p(class 0) = sigmoid(w0 . x). The folder holds S = 3 constant
    # images (0, 0.2, 1.0 after /255); with S = 3 every window gets each image once, so
    # p(c | x without window) = mean_j sigmoid(w0 . x_j) exactly.
    w = np.zeros((2, 3, 6, 7), np.float32)
    w[0] = rng.normal(size=(3, 6, 7)) * 0.3
    model = _model(tmp_path, w)
    values = [0, 51, 255]
    data = _folder(tmp_path / "data", [np.full((6, 7, 3), v) for v in values])
    x = rng.uniform(size=(1, 3, 6, 7)).astype(np.float32)
    e = prediction_difference(model, x, 0, window_size=2, stride=stride, num_samples=3, data=data,
                              score=score)
    corners = e.arrays["window_corners"]
    expected_rows = {1: 5, 2: 3, 3: 3}[stride]  # 0..4 / 0,2,4 / 0,3,4 (last flush with the edge)
    assert len(np.unique(corners[:, 0])) == expected_rows
    ref = _reference(w[0].astype(np.float64), x[0].astype(np.float64), 2, corners,
                     [v / 255 for v in values], score)
    np.testing.assert_allclose(e.map, ref, rtol=1e-4, atol=1e-5)
    assert e.display == "diverging" and e.params["num_classes"] == 2
    assert e.timings["forward_passes"] == len(corners) * 3 + 1


@pytest.mark.parametrize("sampling", ["marginal", "conditional"])
def test_evidence_only_where_the_model_looks(tmp_path, rng, sampling):
    # Class 0 depends only on rows 5-6, columns 1-2; windows that miss them change nothing.
    w = np.zeros((2, 3, 8, 8), np.float32)
    w[0, :, 5:7, 1:3] = 1.0
    model = _model(tmp_path, w)
    data = _folder(tmp_path / "data", rng.integers(0, 256, size=(6, 8, 8, 3)))
    x = rng.uniform(size=(1, 3, 8, 8)).astype(np.float32)
    e = prediction_difference(model, x, 0, window_size=3, num_samples=4, data=data, sampling=sampling,
                              cache_dir=tmp_path / "cache")
    y0, x0 = e.arrays["window_corners"].T
    touches = (y0 <= 6) & (y0 + 3 > 5) & (x0 <= 2) & (x0 + 3 > 1)
    we = e.arrays["window_evidence"]
    assert touches.sum() == 9 and len(we) == 36
    assert np.all(np.abs(we[~touches]) < 1e-5) and np.all(np.abs(we[touches]) > 1e-3)
    reach = np.zeros((8, 8), bool)
    reach[3:9, 0:5] = True  # pixels of windows that touch the region
    assert np.all(np.abs(e.map[~reach]) < 1e-5) and np.all(np.abs(e.map[5:7, 1:3]) > 1e-3)


def test_same_seed_same_map_and_batch_size_does_not_matter(tmp_path, rng):
    w = np.zeros((3, 3, 9, 9), np.float32)
    w[:2] = rng.normal(size=(2, 3, 9, 9))
    model = _model(tmp_path, w)
    data = _folder(tmp_path / "data", rng.integers(0, 256, size=(12, 9, 9, 3)))
    x = rng.uniform(size=(1, 3, 9, 9)).astype(np.float32)
    for sampling in ("marginal", "conditional"):
        run = lambda **kw: prediction_difference(model, x, 1, window_size=3, num_samples=5, data=data,
                                                 sampling=sampling, cache_dir=tmp_path / "c", **kw).map
        first = run(seed=3)
        np.testing.assert_array_equal(first, run(seed=3))
        assert not np.allclose(first, run(seed=4))
        for size in (1, 7, 49, 1000):
            np.testing.assert_allclose(run(seed=3, mini_batch_size=size), first, rtol=1e-5, atol=1e-6)


def test_coarse_to_fine_refines_only_the_top_tiles(tmp_path, rng):
    w = np.zeros((2, 3, 16, 16), np.float32)
    w[0, :, 10:12, 1:3] = 2.0
    model = _model(tmp_path, w)
    data = _folder(tmp_path / "data", rng.integers(0, 256, size=(4, 16, 16, 3)))
    x = rng.uniform(size=(1, 3, 16, 16)).astype(np.float32)
    e = prediction_difference(model, x, 0, window_size=4, stride=1, num_samples=2, data=data,
                              coarse_to_fine=1 / 16)
    corners = e.arrays["window_corners"]
    coarse, rest = corners[:16], corners[16:]
    assert set(map(tuple, coarse)) == {(y, x) for y in (0, 4, 8, 12) for x in (0, 4, 8, 12)}
    # the one tile with evidence is (8, 0); fine windows have their centre (+1) in rows 8-11,
    # cols 0-3 and are not tiles: 4 x 4 - 1 = 15 of them.
    expected = {(y, x) for y in range(7, 11) for x in range(-1, 3)} - {(8, 0)}
    expected = {(y, x) for y, x in expected if 0 <= y <= 12 and 0 <= x <= 12}
    assert set(map(tuple, rest)) == expected
    assert e.timings["forward_passes"] == (16 + len(expected)) * 2 + 1
    cost = prediction_difference_cost((16, 16), window_size=4, stride=1, num_samples=2, coarse_to_fine=1 / 16)
    assert cost["coarse_windows"] == 16 and cost["fine_windows_max"] >= len(expected)


def test_refine_keeps_centres_inside_the_region():
    coarse = grid_windows((20, 20), 5, (5, 5))
    fine = grid_windows((20, 20), 5, (2, 2))
    values = np.zeros(len(coarse))
    values[5] = -3.0  # tile (5, 5): the largest |evidence|, though negative
    kept = refine(coarse, values, 0.01, fine, (20, 20))
    cy, cx = kept.y0 + 2, kept.x0 + 2
    assert len(kept) > 0 and np.all((cy >= 5) & (cy < 10) & (cx >= 5) & (cx < 10))
    assert not np.any((kept.y0 == 5) & (kept.x0 == 5))


def test_costs_before_running():
    assert prediction_difference_cost()["forward_passes"] == 215 * 215 * 10 + 1
    assert prediction_difference_cost(stride=2)["windows"] == 108 ** 2
    assert prediction_difference_cost(stride=4)["windows"] == 55 ** 2
    assert prediction_difference_cost(stride=8)["windows"] == 28 ** 2
    assert prediction_difference_cost(stride=8, num_samples=20)["forward_passes"] == 28 ** 2 * 20 + 1
