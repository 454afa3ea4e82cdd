"""LIME on tiny linear models whose surrogate answers are derived by hand."""

import json
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage

import explainer
from explainer.cli import main
from explainer.methods.lime import grid_shape, kernel_weights, lime
from tiny import linear_classifier

COFFEE = str(Path(__file__).resolve().parent.parent / "models" / "efficientnet_lite0" / "examples" / "coffee.png")


def _model(tmp_path, weights, **kw):
    return explainer.load_model(linear_classifier(tmp_path / "m.onnx", weights, **kw))


def _segment_sums(a: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """sum over the pixels of each segment of a (H, W) array, by explicit loop."""
    return np.array([a[labels == j].sum() for j in range(labels.max() + 1)])


def test_linear_surrogate_recovers_segment_weights(tmp_path, rng):
    # logit_t(sample) = sum w_t * (fill + z[labels] * (x - fill)) = const + sum_j z_j c_j with
    # c_j = sum over segment j's pixels (and channels) of w_t * (x - fill): exactly linear in z,
    # so weighted least squares recovers c_j whatever the kernel weights.
    w = rng.normal(size=(3, 3, 12, 12)).astype(np.float32)
    x = rng.normal(size=(1, 3, 12, 12)).astype(np.float32)
    e = lime(_model(tmp_path, w), x, 2, num_features=9, num_samples=300, model_type="linear",
             segmentation="grid", output_upsampling="none", score="logit")
    labels = e.arrays["feature_map"]
    expected_labels = (np.arange(12)[:, None] // 4) * 3 + np.arange(12)[None, :] // 4
    np.testing.assert_array_equal(labels, expected_labels)
    fill = x.mean(axis=(2, 3), keepdims=True)
    c = _segment_sums((w[2] * (x[0] - fill[0])).sum(axis=0), labels)
    np.testing.assert_allclose(e.arrays["feature_importance"], c, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(e.map, c[labels], rtol=1e-4, atol=1e-4)
    assert e.display == "diverging" and e.params["grid"] == [3, 3] and e.params["num_features"] == 9
    assert e.timings["forward_passes"] == 300  # 299 samples + the base prediction (sample 0)


def test_label_matrix_and_blur(tmp_path, rng):
    w = rng.normal(size=(2, 3, 10, 8)).astype(np.float32)
    x = rng.normal(size=(1, 3, 10, 8)).astype(np.float32)
    user = rng.integers(0, 5, size=(10, 8)) * 7 + 3  # irregular, non-contiguous labels
    e = lime(_model(tmp_path, w), x, 0, segmentation=user, replacement="blur", num_samples=200,
             model_type="linear", score="logit", output_upsampling="bicubic")
    labels = e.arrays["feature_map"]
    np.testing.assert_array_equal(np.unique(user, return_inverse=True)[1].reshape(10, 8), labels)
    sigma = 0.5 * np.sqrt(80 / 5)  # documented: half the typical feature size
    blur = ndimage.gaussian_filter(x.astype(np.float64), (0, 0, sigma, sigma), mode="nearest")
    c = _segment_sums((w[0] * (x[0] - blur[0])).sum(axis=0), labels)
    np.testing.assert_allclose(e.arrays["feature_importance"], c, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(e.map, c[labels], rtol=1e-4, atol=1e-4)  # not a grid: no smoothing


@pytest.mark.parametrize("score", ["probability", "logit"])
def test_tree_finds_the_only_region_the_model_sees(tmp_path, rng, score):
    # The model looks at grid cell 4 (rows 5..9, cols 5..9 of 15x15) only, so the score depends
    # on z_4 alone: the tree splits on feature 4 only -> importance 1 there, 0 elsewhere.
    w = np.zeros((2, 3, 15, 15), np.float32)
    w[0, :, 5:10, 5:10] = rng.normal(size=(3, 5, 5))
    x = rng.normal(size=(1, 3, 15, 15)).astype(np.float32)
    model = _model(tmp_path, w)
    e = lime(model, x, 0, num_features=9, segmentation="grid", output_upsampling="none",
             num_samples=200, score=score, model_type="tree")
    expected = np.zeros(9)
    expected[4] = 1.0
    # (float32 rounding in the model can leave ~1e-13 of the variance to split elsewhere)
    np.testing.assert_allclose(e.arrays["feature_importance"], expected, atol=1e-9)
    inside = np.zeros((15, 15), bool)
    inside[5:10, 5:10] = True
    np.testing.assert_allclose(e.map[inside], 1, atol=1e-9)
    np.testing.assert_allclose(e.map[~inside], 0, atol=1e-9)
    smooth = lime(model, x, 0, num_features=9, segmentation="grid", num_samples=200, score=score,
                  model_type="tree").map
    centres = np.ix_([2, 7, 12], [2, 7, 12])  # bicubic passes through the cell values at the centres
    np.testing.assert_allclose(smooth[centres], expected.reshape(3, 3), atol=1e-6)
    assert np.unravel_index(np.argmax(smooth), smooth.shape) == (7, 7)


@pytest.mark.parametrize("model_type", ["tree", "linear"])
def test_seed_reproduces_and_changes(tmp_path, rng, model_type):
    w = rng.normal(size=(3, 3, 32, 32)).astype(np.float32)
    # a smooth image: SLIC merges pure noise into one segment
    x = ndimage.gaussian_filter(rng.normal(size=(1, 3, 32, 32)), (0, 0, 3, 3)).astype(np.float32)
    model = _model(tmp_path, w)
    run = lambda seed: lime(model, x, 1, num_features=12, num_samples=64, model_type=model_type,
                            seed=seed)  # probability: not linear in z, so samples matter
    a, b, c = run(3), run(3), run(4)
    np.testing.assert_array_equal(a.map, b.map)
    np.testing.assert_array_equal(a.arrays["feature_importance"], b.arrays["feature_importance"])
    np.testing.assert_array_equal(a.arrays["feature_map"], c.arrays["feature_map"])  # SLIC is seedless
    assert np.abs(a.arrays["feature_importance"] - c.arrays["feature_importance"]).max() > 1e-3
    assert a.seed == 3 and a.params["segmentation"] == "superpixels" and a.params["num_features"] > 4


@pytest.mark.parametrize("model_type", ["tree", "linear"])
def test_same_result_for_every_batch_size(tmp_path, rng, model_type):
    w = rng.normal(size=(4, 3, 16, 16)).astype(np.float32)
    x = rng.normal(size=(1, 3, 16, 16)).astype(np.float32)
    model = _model(tmp_path, w)
    runs = [lime(model, x, 3, num_features=16, segmentation="grid", num_samples=50,
                 model_type=model_type, mini_batch_size=b) for b in (1, 3, 7, 10_000)]
    for r in runs[1:]:
        np.testing.assert_allclose(r.arrays["feature_importance"], runs[0].arrays["feature_importance"],
                                   rtol=1e-6, atol=1e-7)
        np.testing.assert_allclose(r.map, runs[0].map, rtol=1e-6, atol=1e-7)


def test_kernel_weights_match_cosine_distance():
    z = np.array([[1, 1, 1, 1], [1, 0, 0, 0], [0, 0, 0, 0], [1, 1, 0, 0]], bool)
    d = np.array([0.0, 1 - 1 / 2, 1.0, 1 - np.sqrt(2) / 2])  # 1 - z.1 / (|z| |1|)
    np.testing.assert_allclose(kernel_weights(z, 0.25), np.sqrt(np.exp(-d ** 2 / 0.25 ** 2)))


@pytest.mark.parametrize("shape, n, cells", [((224, 224), 49, (7, 7)), ((100, 200), 50, (5, 10)),
                                             ((3, 3), 100, (3, 3))])
def test_grid_shape(shape, n, cells):
    assert grid_shape(shape, n) == cells


def test_cli_end_to_end(tmp_path, capsys):
    code = main(["explain", COFFEE, "--method", "lime", "--out", str(tmp_path), "--num-samples", "64",
                 "--segmentation", "grid", "--surrogate", "linear", "--seed", "5", "--quiet", "--json"])
    assert code == 0
    rec = json.loads(capsys.readouterr().out)[0]
    assert rec["target"] == 967 and rec["seed"] == 5 and rec["params"]["grid"] == [7, 7]
    assert rec["timings"]["forward_passes"] == 64
    fmap = np.load(tmp_path / "coffee.lime.feature_map.npy")
    imp = np.load(tmp_path / "coffee.lime.feature_importance.npy")
    assert fmap.shape == (224, 224) and fmap.dtype == np.int32 and imp.shape == (49,)
    assert np.load(tmp_path / "coffee.lime.npy").shape == (224, 224)
    assert main(["explain", COFFEE, "--method", "lime", "--out", str(tmp_path), "--num-masks", "5"]) == 2
    assert main(["explain", COFFEE, "--method", "lime", "--out", str(tmp_path), "--num-samples", "1"]) == 2
    assert "num_samples" in capsys.readouterr().err


@pytest.mark.parametrize("opts, message", [
    (dict(num_features=0), "num_features"),
    (dict(num_samples=1), "num_samples"),
    (dict(num_samples=2.5), "num_samples"),
    (dict(model_type="forest"), "model_type"),
    (dict(segmentation="slic"), "segmentation"),
    (dict(segmentation=np.zeros((5, 5), int)), "label matrix"),
    (dict(segmentation=np.zeros((8, 8))), "label matrix"),
    (dict(segmentation="missing.npy"), "cannot read"),
    (dict(output_upsampling="linear"), "output_upsampling"),
    (dict(replacement="zero"), "replacement"),
    (dict(kernel_width=0), "kernel_width"),
    (dict(mini_batch_size=0), "mini_batch_size"),
    (dict(score="odds"), "score"),
    (dict(seed=-1), "seed"),
])
def test_bad_options(tmp_path, rng, opts, message):
    model = _model(tmp_path, rng.normal(size=(2, 3, 8, 8)).astype(np.float32))
    x = rng.normal(size=(1, 3, 8, 8)).astype(np.float32)
    with pytest.raises(explainer.InputError, match=message):
        lime(model, x, **{"num_samples": 8, **opts})
