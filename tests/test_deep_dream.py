"""Deep dream: the resize adjoint, layer-mean gradients vs finite differences, seeds, objective ascent."""

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import explainer
from explainer.errors import InputError
from explainer.methods.deep_dream import deep_dream, pyramid_sizes, resize, resize_matrix
from explainer.methods.dream_ascent import ascend, smooth_step
from explainer.model import scores
from explainer.methods.dream_objective import layer_objective

N = helper.make_node


@pytest.fixture
def conv_model(tmp_path, rng):
    """(N, 3, 8, 8) -> Conv 3x3 (4 ch) -> Relu 'act' -> Conv 3x3 stride 2 (5 ch) -> Relu -> GAP -> Gemm (3)."""
    nodes = [N("Conv", ["input", "k1"], ["c1"], pads=[1, 1, 1, 1]), N("Relu", ["c1"], ["a1"], name="act"),
             N("Conv", ["a1", "k2"], ["c2"], strides=[2, 2]), N("Relu", ["c2"], ["a2"], name="act2"),
             N("GlobalAveragePool", ["a2"], ["g"]), N("Flatten", ["g"], ["f"], axis=1),
             N("Gemm", ["f", "w"], ["logits"], transB=1)]
    inits = {"k1": rng.normal(size=(4, 3, 3, 3)), "k2": rng.normal(size=(5, 4, 3, 3)), "w": rng.normal(size=(3, 5))}
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, 8, 8])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 3])],
                              [numpy_helper.from_array(np.asarray(v, np.float32), n) for n, v in inits.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(tmp_path / "conv.onnx"))
    return explainer.load_model(tmp_path / "conv.onnx")


def test_resize_is_linear_and_its_adjoint_is_the_transpose(rng):
    m = resize_matrix(7, 3)
    np.testing.assert_allclose(m.sum(axis=1), 1)
    np.testing.assert_allclose(resize_matrix(4, 4), np.eye(4))
    np.testing.assert_allclose(resize(np.ones((1, 2, 3, 4)), (5, 6)), np.ones((1, 2, 5, 6)))
    small, big = rng.normal(size=(1, 2, 3, 4)), rng.normal(size=(1, 2, 5, 6))
    rh, rw = resize_matrix(5, 3), resize_matrix(6, 4)
    up = resize(small, (5, 6))
    back = np.einsum("Hh,ncHW,Ww->nchw", rh, big, rw)
    assert (up * big).sum() == pytest.approx((small * back).sum(), rel=1e-12)
    assert pyramid_sizes((224, 224), 3, 1.4) == [(114, 114), (160, 160), (224, 224)]


def test_layer_mean_gradient_matches_finite_differences(conv_model, rng):
    stats = {"evaluations": 0, "model_s": 0.0}
    channels = [0, 3]
    objective = layer_objective(conv_model, "act2", channels, stats)
    x = rng.normal(size=(2, 3, 8, 8)).astype(np.float32)
    values, grads = objective(x)
    assert grads.shape == x.shape and stats["evaluations"] == 2
    means = conv_model.activations(x, ["act2"])["act2"].mean(axis=(2, 3))
    np.testing.assert_allclose(values, means[[0, 1], channels], rtol=1e-5)
    for _ in range(2):
        v = rng.normal(size=x.shape).astype(np.float32)
        h = 1e-3  # small enough that no ReLU changes state, large enough for float32
        fd = (objective(x + h * v)[0] - objective(x - h * v)[0]) / (2 * h)
        np.testing.assert_allclose((grads * v).sum(axis=(1, 2, 3)), fd, rtol=1e-3, atol=3e-4)
    assert not np.allclose(values[0], objective(x[::-1])[0][1])  # channel 0 and 3 differ: selection matters


def test_same_seed_same_dream_and_the_objective_rises(conv_model):
    kw = dict(layer="act", channels=[1, 2], num_iterations=4, pyramid_levels=2, pyramid_scale=2.0)
    a, b = deep_dream(conv_model, None, **kw, seed=5), deep_dream(conv_model, None, **kw, seed=5)
    np.testing.assert_array_equal(a.arrays["dreams"], b.arrays["dreams"])
    assert a.images["channel_1"].tobytes() == b.images["channel_1"].tobytes()
    c = deep_dream(conv_model, None, **kw, seed=6)
    assert not np.array_equal(c.arrays["dreams"], a.arrays["dreams"])
    assert set(a.images) == {"channel_1", "channel_2"} and a.images["channel_1"].shape == (8, 8, 3)
    assert all(e > s for s, e in zip(a.params["objective_start"], a.params["objective_end"]))
    assert a.params["pyramid_sizes"] == [[4, 4], [8, 8]] and a.timings["forward_passes"] == 2 * (8 + 2)
    # one channel alone gives the same image as in the batch of two
    alone = deep_dream(conv_model, None, **{**kw, "channels": [2]}, seed=5)
    np.testing.assert_allclose(alone.arrays["dreams"][0], a.arrays["dreams"][1], rtol=1e-4, atol=1e-5)


def test_output_classes_and_scaling(conv_model):
    e = deep_dream(conv_model, None, 2, num_iterations=3, output_scaling="none")
    assert e.params["channels"] == [2] and e.label == "class 2" and set(e.images) == {"class_2"}
    assert e.params["objective_end"][0] > e.params["objective_start"][0]
    lin = deep_dream(conv_model, None, 2, num_iterations=3)
    assert lin.images["class_2"].min() == 0 and lin.images["class_2"].max() == 255


def test_errors(conv_model):
    with pytest.raises(InputError, match="layer 'act' needs --channels"):
        deep_dream(conv_model, None, layer="act")
    with pytest.raises(InputError, match="jitter"):
        deep_dream(conv_model, None, 0, jitter=-1)
    with pytest.raises(InputError, match="smoothness"):
        deep_dream(conv_model, None, 0, smoothness=1.0)
    with pytest.raises(InputError, match="channels must be integers in 0..3"):
        deep_dream(conv_model, None, layer="act", channels=[4])
    with pytest.raises(InputError, match="output_scaling"):
        deep_dream(conv_model, None, 0, output_scaling="log")
    with pytest.raises(InputError, match="num_iterations"):
        deep_dream(conv_model, None, 0, num_iterations=0)
    with pytest.raises(InputError, match="not a node or tensor"):
        deep_dream(conv_model, None, layer="nope", channels=[0])


def test_bare_output_dream_takes_the_top_classes_of_the_start(conv_model):
    e = deep_dream(conv_model, None, num_iterations=1, pyramid_levels=1, initial_image=np.full((8, 8, 3), 90, np.uint8))
    start = conv_model.predict(np.full((1, 3, 8, 8), 90 / 255, np.float32))[0]
    assert e.params["channels"] == [int(c) for c in np.argsort(-start)] and len(e.images) == 3
    assert e.display == "none" and len(e.params["probability_end"]) == 3


def test_jitter_shifts_the_input_and_shifts_the_gradient_back(rng):
    w = rng.normal(size=(1, 2, 6, 7))

    def linear(x):  # f(x) = <w, x>: the gradient of x -> f(roll(x, d)) is roll(w, -d)
        return (w * x).sum(axis=(1, 2, 3)), np.broadcast_to(w, x.shape).astype(np.float32)

    x0 = rng.normal(size=(1, 2, 6, 7))
    got, n = ascend(linear, x0, sizes=[(6, 7)], num_iterations=1, step=0.5, jitter=3, rng=np.random.default_rng(4))
    dy, dx = np.random.default_rng(4).integers(-3, 4, 2)
    expect = np.roll(w, (-dy, -dx), axis=(2, 3))
    np.testing.assert_allclose(got, x0 + 0.5 * expect / np.abs(expect).mean(), rtol=1e-5)
    assert n == 1 and (dy, dx) != (0, 0)


def test_smoothness_step_keeps_constants_and_lowers_the_roughness(rng):
    flat = np.full((1, 3, 9, 9), 0.3)
    np.testing.assert_allclose(smooth_step(flat, 0.5), flat)
    x = rng.normal(size=(1, 3, 9, 9))
    rough = lambda v: (np.diff(v, axis=2) ** 2).sum() + (np.diff(v, axis=3) ** 2).sum()  # noqa: E731
    assert rough(smooth_step(x, 0.2)) < rough(x) and smooth_step(x, 0.0) is x
    np.testing.assert_allclose(smooth_step(x, 0.2).mean(), x.mean())   # wrap borders: the mean is kept


@pytest.mark.slow
def test_espresso_dream_is_structure_not_adversarial_noise():
    """Issue #16's acceptance: at default settings the dream keeps p(espresso) >= 0.5 after a
    1.5 px Gaussian blur and after circular shifts by a few dozen pixels."""
    from scipy import ndimage

    model = explainer.load_model()
    e = deep_dream(model, target="espresso")
    x = e.arrays["dreams"][:1]
    k = model.spec.labels.index("espresso")

    def p(v):
        return float(scores(model.predict(np.ascontiguousarray(v, np.float32)), model.spec, "probability")[0, k])

    assert p(x) >= 0.9 and e.params["probability_end"][0] == pytest.approx(p(x), abs=1e-4)
    assert p(ndimage.gaussian_filter(x, (0, 0, 1.5, 1.5))) >= 0.5
    for shift in [(32, 32), (40, -24), (-48, 8)]:
        assert p(np.roll(x, shift, axis=(2, 3))) >= 0.5, shift
