"""Adaptive sample counts (RISE, LIME): the stopping rule by hand, and on tiny linear models."""

from __future__ import annotations

import numpy as np
import pytest

import explainer
from explainer.errors import InputError
from explainer.methods.lime import lime
from explainer.methods.rise import rise
from explainer.perturbation.adaptive import predicted_agreement, rounds, run_adaptive, spearman
from tiny import linear_classifier


def test_spearman_and_rounds_by_hand() -> None:
    assert spearman(np.array([1.0, 5.0, 2.0]), np.array([10.0, 30.0, 20.0])) == pytest.approx(1.0)
    assert spearman(np.array([1.0, 2.0, 3.0]), np.array([3.0, 2.0, 1.0])) == pytest.approx(-1.0)
    # ranks (1, 2, 3, 4) vs (2, 1, 4, 3): 1 - 6 * 4 / (4 * 15) = 0.6
    assert spearman(np.array([1, 2, 3, 4.0]), np.array([2, 1, 4, 3.0])) == pytest.approx(0.6)
    assert spearman(np.ones(4), np.arange(4.0)) == 0.0
    assert rounds(4000, 250) == [250, 500, 1000, 2000, 4000]
    assert rounds(300, 250) == [250, 300] and rounds(100, 250) == [100]


def test_predicted_agreement_by_hand_and_by_simulation() -> None:
    # r = 0.8: q = 0.2 / 1.6 = 0.125; n = cap / 4: sqrt((1 + 0.03125) / 1.125) = 0.95743
    assert predicted_agreement(0.8, 1000, 4000) == pytest.approx(np.sqrt(1.03125 / 1.125))
    assert predicted_agreement(0.5, 1000, 4000) == pytest.approx(np.sqrt(0.75))
    assert predicted_agreement(1.0, 10, 4000) == 1.0 and predicted_agreement(0.3, 4000, 4000) == 1.0
    assert predicted_agreement(0.0, 10, 4000) == 0.0 and predicted_agreement(-0.2, 10, 4000) == 0.0
    # a map estimated as a mean of noisy samples: predicted vs actual agreement with the cap's map
    rng = np.random.default_rng(3)
    signal = rng.normal(size=4000)
    samples = signal + rng.normal(scale=12.0, size=(800, 4000))
    for n in (50, 100, 200):
        r = np.corrcoef(samples[: n // 2].mean(0), samples[n // 2:n].mean(0))[0, 1]
        actual = np.corrcoef(samples[:n].mean(0), samples.mean(0))[0, 1]
        assert predicted_agreement(r, n, 800) == pytest.approx(actual, abs=0.03)


def test_stops_at_the_first_round_predicted_to_agree() -> None:
    calls: list[tuple[int, int]] = []
    signal = np.arange(50.0)

    def halves(n: int) -> tuple[np.ndarray, np.ndarray]:
        noise = np.random.default_rng(n).normal(size=(2, 50)) * (400.0 / n)  # agrees better with n
        return signal + noise[0], signal + noise[1]

    stop = run_adaptive(4000, 250, "balanced", lambda a, b: calls.append((a, b)), halves)
    predicted = [h[2] for h in stop.history]
    assert [h[2] for h in stop.history] == [round(predicted_agreement(h[1], h[0], 4000), 4) for h in stop.history]
    assert calls[:2] == [(0, 125), (125, 250)]  # the first round in two halves
    assert all(p < 0.95 for p in predicted[:-1]) and predicted[-1] >= 0.95 and stop.used < 4000
    assert calls[-1][1] == stop.used and [b for _, b in calls[1:]] == [h[0] for h in stop.history]
    calls.clear()
    best = run_adaptive(4000, 250, "best", lambda a, b: calls.append((a, b)), halves)
    assert calls == [(0, 4000)] and best.used == 4000 and best.history == []
    with pytest.raises(InputError, match="quality"):
        run_adaptive(10, 2, "quick", lambda a, b: None, halves)


@pytest.fixture
def linear(tmp_path, rng):
    w = np.zeros((2, 3, 16, 16), np.float32)
    w[0] = rng.uniform(-1.0, 1.0, size=(3, 16, 16))  # every feature matters: no tied importances
    return explainer.load_model(linear_classifier(tmp_path / "m.onnx", w)), \
        rng.uniform(size=(1, 3, 16, 16)).astype(np.float32)


def test_lime_on_a_linear_model_stops_after_the_first_round(linear) -> None:
    model, x = linear
    opts = dict(num_features=8, segmentation="grid", model_type="linear", score="logit", num_samples=2048)
    full = lime(model, x, 0, **opts)
    fast = lime(model, x, 0, quality="balanced", **opts)
    # a linear surrogate of a linear model is exact from any samples: both halves agree
    assert fast.params["stopping"]["used"] == 128 and fast.timings["forward_passes"] == 128
    assert fast.params["stopping"]["history"][0][1:] == [pytest.approx(1.0)] * 2
    np.testing.assert_allclose(fast.arrays["feature_importance"], full.arrays["feature_importance"], atol=1e-4)
    assert full.params["stopping"]["used"] == 2048 and full.timings["forward_passes"] == 2048


def test_rise_adaptive_is_reproducible_and_batch_independent(tmp_path, rng) -> None:
    w = np.zeros((2, 3, 16, 16), np.float32)
    w[0, :, 2:8, 3:9] = 1.0  # the class looks at one block
    model = explainer.load_model(linear_classifier(tmp_path / "m.onnx", w))
    x = rng.uniform(0.5, 1.0, size=(1, 3, 16, 16)).astype(np.float32)
    opts = dict(num_masks=4000, grid_size=4, score="logit", mask_value=0.0, seed=5)
    a = rise(model, x, 0, mini_batch_size=64, quality="balanced", **opts)
    b = rise(model, x, 0, mini_batch_size=7, quality="balanced", **opts)
    used = a.params["stopping"]["used"]
    assert used < 4000 and a.timings["forward_passes"] == used + 1
    assert a.params["stopping"] == b.params["stopping"]
    np.testing.assert_array_equal(a.map, b.map)
    full = rise(model, x, 0, **opts)
    assert full.params["stopping"]["used"] == 4000
    assert spearman(a.map, full.map) > 0.9
    inside = a.map[2:8, 3:9].mean()
    assert inside > a.map[10:, 10:].mean() + 0.5 * (inside - a.map.mean())  # the block stands out
