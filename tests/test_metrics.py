"""Explanation metrics on maps with known orderings, tiny linear models and the shortcut model."""

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

import explainer
from explainer import metrics
from explainer.errors import InputError
from tiny import linear_classifier

SHORTCUT = Path(__file__).resolve().parent.parent / "models" / "shortcut"
PRE = {"size": [2, 2], "mean": [0], "std": [1]}


@pytest.fixture
def linear4(tmp_path):
    # logit_0 = 4 x00 + 3 x01 + 2 x10 + 1 x11; class 1 always 0.
    w = np.zeros((2, 1, 2, 2), np.float32)
    w[0, 0] = [[4, 3], [2, 1]]
    return explainer.load_model(linear_classifier(tmp_path / "m.onnx", w, preprocessing=PRE))


ONES = np.ones((1, 1, 2, 2), np.float32)
TRUE_ORDER = np.array([[4.0, 3.0], [2.0, 1.0]])


def test_deletion_hand_derived(linear4):
    # Deleting 4, 3, 2, 1 in turn: logits 10, 6, 3, 1, 0 at fractions 0, .25, ..., 1;
    # trapezoid = .25 * (8 + 4.5 + 2 + .5) = 3.75.
    c = metrics.deletion_insertion(linear4, ONES, TRUE_ORDER, 0, steps=4, score="logit")
    np.testing.assert_allclose(c.scores, [10, 6, 3, 1, 0], rtol=1e-6)
    np.testing.assert_allclose(c.fractions, [0, .25, .5, .75, 1])
    assert c.auc == pytest.approx(3.75)


def test_insertion_hand_derived(linear4):
    # Inserting into zeros: 0, 4, 7, 9, 10 -> .25 * (2 + 5.5 + 8 + 9.5) = 6.25.
    c = metrics.deletion_insertion(linear4, ONES, TRUE_ORDER, 0, kind="insertion", steps=4,
                                   substrate=0.0, score="logit")
    np.testing.assert_allclose(c.scores, [0, 4, 7, 9, 10], rtol=1e-6)
    assert c.auc == pytest.approx(6.25)


def test_reversed_order_is_worse(linear4):
    # The reversed map deletes 1, 2, 3, 4: 10, 9, 7, 4, 0 -> .25 * (9.5 + 8 + 5.5 + 2) = 6.25.
    good = metrics.deletion_insertion(linear4, ONES, TRUE_ORDER, 0, steps=4, score="logit")
    bad = metrics.deletion_insertion(linear4, ONES, -TRUE_ORDER, 0, steps=4, score="logit")
    assert bad.auc == pytest.approx(6.25) and good.auc < bad.auc


@pytest.mark.parametrize("kind", ["deletion", "insertion"])
def test_curves_do_not_depend_on_batch_size(tmp_path, rng, kind):
    w = rng.normal(size=(3, 3, 9, 7)).astype(np.float32)
    model = explainer.load_model(linear_classifier(tmp_path / "m.onnx", w))
    x = rng.normal(size=(1, 3, 9, 7)).astype(np.float32)
    m = rng.normal(size=(9, 7))
    ref = metrics.deletion_insertion(model, x, m, 1, kind=kind, steps=13, mini_batch_size=128)
    for b in (1, 2, 3, 5):
        c = metrics.deletion_insertion(model, x, m, 1, kind=kind, steps=13, mini_batch_size=b)
        np.testing.assert_array_equal(c.scores, ref.scores)
    assert len(ref.scores) == 14 and ref.fractions[-1] == 1.0


def test_blur_insertion_starts_from_blurred_image(tmp_path, rng):
    w = rng.normal(size=(2, 3, 8, 8)).astype(np.float32)
    model = explainer.load_model(linear_classifier(tmp_path / "m.onnx", w))
    x = rng.normal(size=(1, 3, 8, 8)).astype(np.float32)
    c = metrics.deletion_insertion(model, x, rng.normal(size=(8, 8)), 0, kind="insertion", steps=4,
                                   score="logit", blur_sigma=2.0)
    from scipy import ndimage
    blurred = ndimage.gaussian_filter(x, sigma=(0, 0, 2, 2), mode="nearest")
    assert c.scores[0] == pytest.approx(float((w[0] * blurred[0]).sum()), rel=1e-4)
    assert c.scores[-1] == pytest.approx(float((w[0] * x[0]).sum()), rel=1e-4)


def test_bad_arguments(linear4):
    with pytest.raises(InputError, match="shape"):
        metrics.deletion_insertion(linear4, ONES, np.ones((3, 3)), 0)
    with pytest.raises(InputError, match="kind"):
        metrics.deletion_insertion(linear4, ONES, TRUE_ORDER, 0, kind="both")
    with pytest.raises(InputError, match="steps"):
        metrics.deletion_insertion(linear4, ONES, TRUE_ORDER, 0, steps=0)
    with pytest.raises(InputError, match="NaN"):
        metrics.deletion_insertion(linear4, ONES, np.full((2, 2), np.nan), 0)


def test_pointing_game():
    m = np.zeros((5, 5))
    m[1, 3] = 2.0
    mask = np.zeros((5, 5), bool)
    mask[1, 3] = True
    assert metrics.pointing_game(m, mask)
    assert not metrics.pointing_game(m, np.roll(mask, 2, axis=0))
    assert metrics.pointing_game(m, np.roll(mask, 2, axis=0), tolerance=2)
    assert not metrics.pointing_game(np.ones((5, 5)), mask)  # ties everywhere: no luck
    with pytest.raises(InputError, match="mask"):
        metrics.pointing_game(m, mask[:4])


def test_relevance_mass():
    m = np.array([[3.0, -5.0], [1.0, 0.0]])
    mask = np.array([[True, True], [False, False]])
    assert metrics.relevance_mass(m, mask) == pytest.approx(0.75)  # negatives ignored
    assert metrics.relevance_mass(-np.abs(m), mask) == 0.0


def test_parameter_layers_of_shortcut_model():
    proto = onnx.load(str(SHORTCUT / "model.onnx"))
    found = metrics.parameter_layers(proto)
    assert [n for n, _ in found] and len(found) == 5  # 4 Conv + Gemm
    assert all(len(p) == 2 for _, p in found)  # weight + bias
    rand = metrics.randomised(proto, found[-1][1], np.random.default_rng(0))
    before = {i.name: numpy_helper.to_array(i) for i in proto.graph.initializer}
    after = {i.name: numpy_helper.to_array(i) for i in rand.graph.initializer}
    changed = {k for k in before if not np.array_equal(before[k], after[k])}
    assert changed == set(found[-1][1])


def _occlusion_map(image):
    def explain(model):
        return explainer.occlusion_sensitivity(model, image, 0, mask_size=8, stride=4,
                                               output_upsampling="none").map
    return explain


def test_randomisation_decorrelates_occlusion():
    model = explainer.load_model(SHORTCUT / "model.onnx")
    image = SHORTCUT / "testset" / "circle" / "circle_00_wm.png"
    r = metrics.randomisation_check(model, _occlusion_map(image), seed=0)
    assert len(r.layers) == 5 and r.maps.shape == (5, 64, 64)
    assert r.correlations[-1] < 0.5
    again = metrics.randomisation_check(model, _occlusion_map(image), seed=0)
    np.testing.assert_array_equal(again.correlations, r.correlations)


def test_randomisation_flags_a_model_independent_map():
    # An "explanation" that is an edge map of the image ignores the model: rho stays 1.
    model = explainer.load_model(SHORTCUT / "model.onnx")
    pixels = explainer.read_image(SHORTCUT / "testset" / "square" / "square_00.png").astype(float)
    edges = np.hypot(*np.gradient(pixels.sum(axis=2)))
    r = metrics.randomisation_check(model, lambda m: edges, max_layers=2)
    np.testing.assert_allclose(r.correlations, 1.0)
    assert len(r.layers) == 2
