"""Issue 20 (6): LIME's default surrogate is stable across seeds and the JSON reports a stability figure."""

from pathlib import Path

import numpy as np
import pytest

import explainer
from explainer.methods.lime import lime, split_half_stability

ROOT = Path(__file__).resolve().parents[1]


def test_split_half_stability_by_hand():
    a = np.arange(12.0)
    assert split_half_stability(a, a) == {"split_half_spearman": pytest.approx(1.0), "split_half_top10": 1.0}
    b = a.copy()
    b[[0, 11]] = b[[11, 0]]  # the largest feature drops to the bottom: 9 of the top 10 shared
    assert split_half_stability(a, b)["split_half_top10"] == 0.9
    assert split_half_stability(a, np.zeros(12))["split_half_spearman"] is None  # undefined, not 0


def test_default_surrogate_is_linear_and_agrees_across_seeds():
    """The shortcut model's watermarked images: the top segment is the same for seeds 0 and 1
    (MATLAB's tree default agreed on 7 of 8 test-set images sampled), and the JSON carries the
    stability figure."""
    model = explainer.load_model(ROOT / "models" / "shortcut" / "model.onnx")
    folder = ROOT / "models" / "shortcut" / "testset"
    for image in [folder / "circle" / "circle_00_wm.png", folder / "square" / "square_09_wm.png",
                  folder / "triangle" / "triangle_03.png"]:
        a, b = (lime(model, image, seed=s, num_samples=1024) for s in (0, 1))
        assert a.params["model_type"] == "linear" and a.display == "diverging"
        assert np.argmax(a.arrays["feature_importance"]) == np.argmax(b.arrays["feature_importance"])
        st = a.params["stability"]
        assert st["samples_per_half"] == 512 and 0 <= st["split_half_top10"] <= 1
        assert st["split_half_spearman"] is not None and -1 <= st["split_half_spearman"] <= 1


@pytest.mark.slow
def test_default_is_stable_on_chelsea():
    """Bundled model, chelsea, defaults (2048 samples): split-half Spearman 0.92 (tree: 0.58)."""
    e = lime(explainer.load_model(), ROOT / "models" / "efficientnet_lite0" / "examples" / "chelsea.png")
    assert e.params["stability"]["split_half_spearman"] >= 0.85
    assert e.params["stability"]["split_half_top10"] >= 0.7
