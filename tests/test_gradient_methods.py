"""Gradient, guided backprop, deconvnet, SmoothGrad and integrated gradients on hand-derivable models."""

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import explainer
from explainer.errors import InputError
from explainer.methods.gradient_maps import deconvnet, gradient, guided_backprop
from explainer.methods.integrated_gradients import integrated_gradients, path_points
from tiny import linear_classifier


@pytest.fixture
def linear(tmp_path, rng):
    w = rng.normal(size=(3, 3, 4, 5)).astype(np.float32)
    return explainer.load_model(linear_classifier(tmp_path / "lin.onnx", w)), w.astype(np.float64)


def _softmax(z):
    e = np.exp(z - z.max())
    return e / e.sum()


def test_saliency_of_linear_model_is_weights(linear, rng):
    model, w = linear
    x = rng.normal(size=(1, 3, 4, 5)).astype(np.float32)
    e = gradient(model, x, 1, score="logit")
    np.testing.assert_allclose(e.arrays["attributions"], w[1:2], rtol=1e-5)
    np.testing.assert_allclose(e.map, np.abs(w[1]).sum(axis=0), rtol=1e-5)
    assert e.arrays["attributions"].shape == (1, 3, 4, 5) and e.method == "gradient"
    # probability: d p_t / d x = p_t (w_t - sum_k p_k w_k)
    p = _softmax(np.einsum("kchw,chw->k", w, x[0].astype(np.float64)))
    expected = p[2] * (w[2] - np.einsum("k,kchw->chw", p, w))
    e = gradient(model, x, 2)
    np.testing.assert_allclose(e.arrays["attributions"][0], expected, rtol=1e-4, atol=1e-7)
    assert e.params["score"] == "probability" and e.score == pytest.approx(p[2], rel=1e-5)


def _two_layer_relu(path):
    """x (1, 1, 2, 2) -> Flatten -> MatMul(I) -> Relu -> MatMul(W2) -> 2 logits."""
    w2 = np.array([[1, 0], [1, 0], [-1, 0], [2, 0]], np.float32)
    nodes = [helper.make_node("Flatten", ["input"], ["f"], axis=1),
             helper.make_node("MatMul", ["f", "w1"], ["h"]), helper.make_node("Relu", ["h"], ["r"]),
             helper.make_node("MatMul", ["r", "w2"], ["logits"])]
    graph = helper.make_graph(nodes, "two", [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 1, 2, 2])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 2])],
                              [numpy_helper.from_array(np.eye(4, dtype=np.float32), "w1"),
                               numpy_helper.from_array(w2, "w2")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return explainer.load_model(path)


@pytest.mark.parametrize("method, expected", [(gradient, [1, 0, -1, 0]), (guided_backprop, [1, 0, 0, 0]),
                                              (deconvnet, [1, 1, 0, 2])])
def test_relu_rules_through_the_methods(tmp_path, method, expected):
    # h = x = [2, -1, 3, -0.5]; d y0 / d r = [1, 1, -1, 2]. standard: keep h > 0 -> [1, 0, -1, 0];
    # guided: also drop negative gradients -> [1, 0, 0, 0]; deconv: drop only negative gradients -> [1, 1, 0, 2].
    model = _two_layer_relu(tmp_path / "two.onnx")
    x = np.array([2, -1, 3, -0.5], np.float32).reshape(1, 1, 2, 2)
    e = method(model, x, 0, score="logit")
    np.testing.assert_array_equal(e.arrays["attributions"].ravel(), expected)
    np.testing.assert_array_equal(e.map.ravel(), np.abs(expected))


def test_smoothgrad_is_seeded_batch_invariant_and_averages(tmp_path, linear, rng):
    model = _two_layer_relu(tmp_path / "two.onnx")
    x = np.array([2, -1, 3, -0.5], np.float32).reshape(1, 1, 2, 2)
    runs = [guided_backprop(model, x, 0, score="logit", num_samples=10, noise_level=0.5, seed=3,
                            mini_batch_size=b).arrays["attributions"] for b in (1, 3, 10)]
    for r in runs[1:]:
        np.testing.assert_array_equal(r, runs[0])
    other = guided_backprop(model, x, 0, score="logit", num_samples=10, noise_level=0.5, seed=4)
    assert not np.array_equal(other.arrays["attributions"], runs[0])
    # the mean of per-sample 0/1-masked gradients: each entry is a multiple of 1/10 of the weight
    assert set(np.round(runs[0].ravel() * 10, 6)) <= set(np.arange(0, 11) * 1.0) | set(np.arange(0, 21, 2) * 1.0)
    lin, w = linear  # a linear model's gradient does not depend on the noise
    e = gradient(lin, rng.normal(size=(1, 3, 4, 5)).astype(np.float32), 0, score="logit", num_samples=4)
    np.testing.assert_allclose(e.arrays["attributions"][0], w[0], rtol=1e-5)
    assert e.params["smoothgrad"] and e.seed == 0


@pytest.mark.parametrize("baseline", ["zeros", 0.25, "black"])
def test_integrated_gradients_on_linear_model_is_exact(linear, rng, baseline):
    model, w = linear
    x = rng.normal(size=(1, 3, 4, 5)).astype(np.float32)
    e = integrated_gradients(model, x, 1, baseline=baseline, num_steps=3, score="logit")
    from explainer.methods.integrated_gradients import baseline_tensor
    b = baseline_tensor(model, x, baseline).astype(np.float64)
    if baseline == "black":  # all-zero pixels, default preprocessing (scale 1/255, mean 0, std 1): zeros
        np.testing.assert_array_equal(b, 0)
    np.testing.assert_allclose(e.arrays["attributions"][0], (x[0] - b[0]) * w[1], rtol=1e-4, atol=1e-6)
    assert e.params["completeness_gap"] <= 1e-5


def test_integrated_gradients_batch_invariance_and_rules(tmp_path, rng):
    model = _two_layer_relu(tmp_path / "two.onnx")
    x = np.array([2, -1, 3, -0.5], np.float32).reshape(1, 1, 2, 2)
    runs = [integrated_gradients(model, x, 0, baseline=-1.0, num_steps=7, integration=rule,
                                 mini_batch_size=b, score="logit").arrays["attributions"]
            for rule in ("riemann_right", "trapezoid") for b in (1, 3, 8)]
    for r in runs[1:3]:
        np.testing.assert_allclose(r, runs[0], rtol=1e-6)
    for r in runs[4:]:
        np.testing.assert_allclose(r, runs[3], rtol=1e-6)
    # by hand: delta = x + 1 = [3, 0, 4, 0.5]; along the path h = -1 + a * delta; only h_0 (from a = 1/3)
    # and h_2 (from a = 1/4) turn on. Right Riemann, m = 7, points k/7: h_0 active for k >= 3 (5 of 7),
    # h_2 active for k >= 2 (6 of 7). Trapezoid: same points plus a = 0, ends halved.
    np.testing.assert_allclose(runs[0].ravel(), [3 * 5 / 7, 0, -4 * 6 / 7, 0], rtol=1e-6)
    np.testing.assert_allclose(runs[3].ravel(), [3 * 4.5 / 7, 0, -4 * 5.5 / 7, 0], rtol=1e-6)
    alphas, weights = path_points(4, "trapezoid")
    np.testing.assert_allclose(alphas, [0, .25, .5, .75, 1])
    np.testing.assert_allclose(weights, [.125, .25, .25, .25, .125])


def test_integrated_gradients_completeness_on_a_real_model():
    """The 64x64 shortcut CNN (Conv/ReLU/GAP/Gemm): gap <= 1% at 200 steps."""
    model = explainer.load_model("models/shortcut/model.onnx")
    image = "models/shortcut/testset/circle/" + sorted(__import__("os").listdir(
        "models/shortcut/testset/circle"))[0]
    e = integrated_gradients(model, image, num_steps=200, mini_batch_size=100)
    assert e.params["completeness_gap"] <= 0.01
    coarse = integrated_gradients(model, image, num_steps=5, mini_batch_size=100)
    assert coarse.params["completeness_gap"] > e.params["completeness_gap"]  # the check can fail


class _NoGradients:
    """A model without ``gradients`` (as a Triton endpoint without a gradient model)."""

    backend = "triton"

    def __init__(self, spec):
        self.spec = spec

    def predict(self, batch):
        raise AssertionError("must refuse before any inference")


def test_errors(linear, rng):
    model, _ = linear
    x = rng.normal(size=(1, 3, 4, 5)).astype(np.float32)
    for method in (gradient, guided_backprop, integrated_gradients):
        with pytest.raises(InputError, match="explainer export-gradients"):
            method(_NoGradients(model.spec), x)
    with pytest.raises(InputError, match="num_steps"):
        integrated_gradients(model, x, num_steps=0)
    with pytest.raises(InputError, match="riemann_right, trapezoid"):
        integrated_gradients(model, x, integration="simpson")
    with pytest.raises(InputError, match="baseline must be"):
        integrated_gradients(model, x, baseline="white")
    with pytest.raises(InputError, match="noise_level"):
        gradient(model, x, num_samples=2, noise_level=-1.0)
    with pytest.raises(InputError, match="num_samples"):
        gradient(model, x, num_samples=-1)
    with pytest.raises(InputError, match="mini_batch_size"):
        gradient(model, x, mini_batch_size=0)
    with pytest.raises(InputError, match="score must be"):
        gradient(model, x, score="softmax")


@pytest.fixture(scope="module")
def own_bundled():
    """The bundled model, its own instance: the shared fixture's gradient sessions stay untouched."""
    return explainer.load_model()


def test_integrated_gradients_completeness_on_the_bundled_model(own_bundled):
    """25 steps (fast) with a looser bound; at 200 steps rocket.png's gap is about 0.2% (see RESULTS.md)."""
    e = integrated_gradients(own_bundled, "models/efficientnet_lite0/examples/rocket.png", num_steps=25,
                             integration="trapezoid", mini_batch_size=26)
    assert e.arrays["attributions"].shape == (1, 3, 224, 224)
    assert e.params["completeness_gap"] <= 0.05
    assert e.params["attribution_sum"] == pytest.approx(float(e.arrays["attributions"].astype(np.float64).sum()),
                                                        rel=1e-5)
    assert e.timings["forward_passes"] == 1 + 26 + 1


def test_integrated_gradients_completeness_gap_at_200_steps_on_the_bundled_model(own_bundled):
    """Completeness gap <= 1% at 200 (trapezoid) steps. coffee.png measures 0.78%
    (rocket.png 0.17%; chelsea.png 3.1%, its logit jumps near the black baseline). 201 gradients."""
    e = integrated_gradients(own_bundled, "models/efficientnet_lite0/examples/coffee.png", num_steps=200,
                             integration="trapezoid", mini_batch_size=67)
    assert e.params["completeness_gap"] <= 0.01
    assert abs(e.params["score_difference"]) > 0.1  # a real difference to complete, not a near-zero one
    assert e.timings["forward_passes"] == 1 + 201 + 1


def test_nhwc_and_fixed_batch_models_give_nchw_attributions(tmp_path, rng):
    w = rng.normal(size=(3, 3, 4, 5)).astype(np.float32)
    model = explainer.load_model(linear_classifier(tmp_path / "nhwc.onnx", w, layout="NHWC", batch=1))
    x = rng.normal(size=(1, 3, 4, 5)).astype(np.float32)
    e = integrated_gradients(model, x, 2, baseline="zeros", num_steps=5, mini_batch_size=3, score="logit")
    np.testing.assert_allclose(e.arrays["attributions"], x * w[2:3], rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(gradient(model, x, 2, score="logit").map, np.abs(w[2]).sum(axis=0), rtol=1e-5)
