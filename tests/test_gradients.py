"""Gradient models end to end: the bundled model, layers, ReLU rules, the backend and the CLI."""

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import helper

import explainer
from explainer.api import BUNDLED_MODEL
from explainer.cli import main
from explainer.errors import InputError
from explainer.graph.gradients import gradient_model
from grad_check import build, reference, rel_err, run_ort, score, to_double, weights
from tiny import linear_classifier

N = helper.make_node


@pytest.fixture(scope="module")
def small_bundled():
    """The bundled EfficientNet-Lite0 graph and weights at a 32x32 input, float64 and float32."""
    proto = onnx.load(str(BUNDLED_MODEL))
    return to_double(proto, 32), to_double(proto, 32, dtype=np.float32)


def test_bundled_model_gradient_matches_finite_differences(small_bundled, rng):
    """float64 (reference evaluator) gradient vs directional central differences; ORT float32 vs it."""
    m64, m32 = small_bundled
    x = rng.uniform(-1, 1, size=(2, 3, 32, 32))
    wl, wp = weights(rng, 2, 1000)
    wp *= 20
    fwd = reference(m64)
    g64 = reference(gradient_model(m64)).run(["gradient"], {"input": x, "logit_weights": wl,
                                                             "probability_weights": wp})[0]
    for _ in range(3):
        v = rng.normal(size=x.shape)
        h = 1e-6
        fd = (score(fwd.run(None, {"input": x + h * v})[0], wl, wp)
              - score(fwd.run(None, {"input": x - h * v})[0], wl, wp)) / (2 * h)
        assert abs((g64 * v).sum() - fd) <= 1e-5 * abs(fd)
    sess = ort.InferenceSession(gradient_model(m32).SerializeToString(), providers=["CPUExecutionProvider"])
    g32 = sess.run(["gradient"], {"input": x.astype(np.float32), "logit_weights": wl, "probability_weights": wp})[0]
    assert rel_err(g32, g64) <= 1e-4


def test_bundled_layer_gradient_matches_tail_finite_differences(small_bundled, rng):
    """Gradient wrt an intermediate tensor vs perturbing that tensor in the tail subgraph."""
    m64, _ = small_bundled
    layer = "/_blocks.12/Add"  # a node name (its first output is the tensor) that cuts the graph
    tensor = "/_blocks.12/Add_output_0"
    x = rng.uniform(-1, 1, size=(1, 3, 32, 32))
    wl, wp = weights(rng, 1, 1000)
    grad_model = gradient_model(m64, layer=layer)
    meta = json.loads({p.key: p.value for p in grad_model.metadata_props}["explainer.gradient"])
    assert meta == {"wrt": tensor, "layer": layer, "relu": "standard"}
    out, g, acts = reference(grad_model).run(["logits", "gradient", "activations"],
                                            {"input": x, "logit_weights": wl, "probability_weights": wp})
    inferred = onnx.shape_inference.infer_shapes(m64)
    tail = reference(onnx.utils.Extractor(inferred).extract_model([tensor], ["logits"]))
    np.testing.assert_allclose(tail.run(None, {tensor: acts})[0], out, rtol=1e-10)
    assert g.shape == acts.shape
    for _ in range(3):
        v = rng.normal(size=acts.shape)
        h = 1e-6
        fd = (score(tail.run(None, {tensor: acts + h * v})[0], wl, wp)
              - score(tail.run(None, {tensor: acts - h * v})[0], wl, wp)) / (2 * h)
        assert abs((g * v).sum() - fd) <= 1e-5 * abs(fd)


def test_exported_bundled_model_is_plain_standard_onnx(tmp_path, bundled, rng):
    path = tmp_path / "grad.onnx"
    assert main(["export-gradients", "--out", str(path), "--relu", "guided"]) == 0
    proto = onnx.load(str(path))
    onnx.checker.check_model(proto)
    assert {n.domain for n in proto.graph.node} <= {""}
    assert [o.domain for o in proto.opset_import] == [""]
    meta = {p.key: p.value for p in proto.metadata_props}
    assert json.loads(meta["explainer.gradient"]) == {"wrt": "input", "layer": None, "relu": "guided"}
    assert "explainer.preprocessing" in meta and "explainer.labels" in meta
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])  # fresh, no options
    assert [i.name for i in sess.get_inputs()] == ["input", "logit_weights", "probability_weights"]
    assert [o.name for o in sess.get_outputs()] == ["logits", "gradient"]
    x = rng.normal(size=(2, 3, 224, 224)).astype(np.float32)
    wl, wp = weights(rng, 2, 1000)
    out, g = sess.run(None, {"input": x, "logit_weights": wl, "probability_weights": wp})
    np.testing.assert_allclose(out, bundled.predict(x), rtol=1e-4, atol=1e-4)
    assert g.shape == x.shape and np.isfinite(g).all()


def test_backend_gradients_are_batch_invariant(bundled, rng):
    x = rng.normal(size=(3, 3, 224, 224)).astype(np.float32)
    wl, wp = weights(rng, 3, 1000)
    out, g, acts = bundled.gradients(x, wl, wp)
    assert acts is None and g.shape == x.shape and g.dtype == np.float32
    np.testing.assert_allclose(out, bundled.predict(x), rtol=1e-4, atol=1e-4)
    for i in range(3):
        _, gi, _ = bundled.gradients(x[i:i + 1], wl[i:i + 1], wp[i:i + 1])
        assert rel_err(gi[0], g[i]) <= 1e-5
    layer = "/_swish_1/Clip_output_0"
    _, gl, al = bundled.gradients(x[:2], wl[:2], wp[:2], layer=layer)
    assert gl.shape == al.shape == (2, 1280, 7, 7)
    assert set(bundled._gradient_sessions) == {(None, "standard"), (layer, "standard")}  # built once each


def _two_layer(op_nodes, x, w2col):
    """x (1, D) -> MatMul(I) -> activation -> MatMul(W2): class 0's column is ``w2col``."""
    d = len(x)
    w2 = np.stack([w2col, np.zeros(d)], axis=1)
    nodes = [N("MatMul", ["x", "w1"], ["h"])] + op_nodes + [N("MatMul", ["r", "w2"], ["y"])]
    model = build(nodes, [1, d], [1, 2], {"w1": np.eye(d), "w2": w2, "lo": 0.0, "hi": 6.0}, dtype=np.float32)
    return model, np.asarray([x], np.float32)


@pytest.mark.parametrize("relu, expected", [("standard", [1, 0, -1]), ("guided", [1, 0, 0]),
                                            ("deconv", [1, 1, 0])])
def test_relu_rules_on_hand_derived_example(relu, expected):
    # h = x = [2, -1, 3]; r = relu(h) = [2, 0, 3]; y0 = r . [1, 1, -1] so d y0 / d r = [1, 1, -1].
    # standard: mask h > 0 -> [1, 0, -1]; guided: also drop negative gradients -> [1, 0, 0];
    # deconv: only drop negative gradients -> [1, 1, 0].
    model, x = _two_layer([N("Relu", ["h"], ["r"])], [2, -1, 3], [1, 1, -1])
    g = run_ort(gradient_model(model, relu=relu), x, np.array([[1, 0]], np.float32), np.zeros((1, 2), np.float32))
    np.testing.assert_array_equal(g, [expected])


@pytest.mark.parametrize("relu, expected", [("standard", [1, 0, 0, -1]), ("guided", [1, 0, 0, 0]),
                                            ("deconv", [1, 1, 1, 0])])
def test_relu6_rules_on_hand_derived_example(relu, expected):
    # h = [2, -1, 7, 5]; relu6 active on [1, 0, 0 (saturated), 1]; d y0 / d r = [1, 1, 1, -1].
    model, x = _two_layer([N("Clip", ["h", "lo", "hi"], ["r"])], [2, -1, 7, 5], [1, 1, 1, -1])
    g = run_ort(gradient_model(model, relu=relu), x, np.array([[1, 0]], np.float32), np.zeros((1, 2), np.float32))
    np.testing.assert_array_equal(g, [expected])


def test_unsupported_operator_on_the_path_is_named():
    model = build([N("Acos", ["x"], ["e"], name="my_acos"), N("Relu", ["e"], ["y"])], ["N", 4], ["N", 4])
    with pytest.raises(InputError, match=r"unsupported operator Acos \(node 'my_acos'\)"):
        gradient_model(model)


def test_unsupported_operator_off_the_path_is_fine(rng):
    w0 = rng.normal(size=(4, 3))
    model = build([N("Erf", ["w0"], ["w"]), N("MatMul", ["x", "w"], ["y"])], ["N", 4], ["N", 3], {"w0": w0},
                  dtype=np.float32)
    x = rng.normal(size=(2, 4)).astype(np.float32)
    wl, wp = np.ones((2, 3), np.float32), np.zeros((2, 3), np.float32)
    from scipy.special import erf
    np.testing.assert_allclose(run_ort(gradient_model(model), x, wl, wp), np.tile(erf(w0).sum(1), (2, 1)),
                               rtol=1e-5)


def test_bad_options_are_input_errors():
    model = build([N("Relu", ["x"], ["y"], name="r")], ["N", 4], ["N", 4])
    with pytest.raises(InputError, match="relu must be one of"):
        gradient_model(model, relu="leaky")
    with pytest.raises(InputError, match="neither a node nor a tensor"):
        gradient_model(model, layer="nope")
    assert gradient_model(model, layer="r").graph.output[2].name == "activations"


def test_softmax_output_model_and_layouts_through_the_backend(tmp_path, rng):
    """p = softmax(z), z = W x: gradient = W^T (wl + p * (wp - sum(p * wp))), in NCHW."""
    w = rng.normal(size=(4, 3, 5, 6))
    for layout, batch in (("NCHW", None), ("NHWC", 3)):
        path = linear_classifier(tmp_path / f"{layout}.onnx", w.astype(np.float32), layout=layout,
                                 softmax=True, batch=batch)
        model = explainer.load_model(path)
        x = rng.normal(size=(7, 3, 5, 6)).astype(np.float32)
        wl, wp = weights(rng, 7, 4)
        out, g, _ = model.gradients(x, wl, wp)
        z = np.einsum("kchw,nchw->nk", w, x)
        p = np.exp(z - z.max(1, keepdims=True))
        p /= p.sum(1, keepdims=True)
        np.testing.assert_allclose(out, p, rtol=1e-4, atol=1e-6)
        gz = wl + p * (wp - (p * wp).sum(1, keepdims=True))
        np.testing.assert_allclose(g, np.einsum("nk,kchw->nchw", gz, w), rtol=1e-4, atol=1e-5)
        with pytest.raises(InputError, match="logit_weights must have shape"):
            model.gradients(x, wl[:3], wp)


def test_negative_pads_crop():
    model = build([N("Pad", ["x", "p"], ["y"])], ["N", 2, 4, 5], ["N", 2, 3, 6],
                  {"p": np.array([0, 0, 1, -1, 0, 0, -2, 2])}, dtype=np.float32)
    gy = np.arange(36, dtype=np.float32).reshape(1, 2, 3, 6) + 1
    g = run_ort(gradient_model(model), np.ones((1, 2, 4, 5), np.float32), gy.reshape(1, -1),
                np.zeros((1, 36), np.float32))
    expected = np.zeros((1, 2, 4, 5), np.float32)
    expected[:, :, 0:2, 1:5] = gy[:, :, 1:3, 0:4]  # y rows 1..2 = x rows 0..1; y cols 0..3 = x cols 1..4
    np.testing.assert_array_equal(g, expected)


def test_dynamic_spatial_size_and_old_opsets_match(rng):
    w = rng.normal(size=(4, 3, 3, 3))
    wg = rng.normal(size=(5, 4 * 3 * 2))
    def make(spatial, opset):
        nodes = [N("Conv", ["x", "w"], ["c"], pads=[0, 1, 1, 0], strides=[2, 2]), N("Relu", ["c"], ["r"]),
                 N("Flatten", ["r"], ["f"]), N("Gemm", ["f", "wg"], ["z"], transB=1),
                 N("Softmax", ["z"], ["y"], axis=1)]
        return build(nodes, ["N", 3] + spatial, ["N", 5], {"w": w, "wg": wg}, dtype=np.float32, opset=opset)
    x = rng.normal(size=(2, 3, 6, 5)).astype(np.float32)
    wl, wp = weights(rng, 2, 5)
    expected = run_ort(gradient_model(make([6, 5], 17)), x, wl, wp)
    for spatial, opset in (([6, 5], 11), ([6, 5], 13), (["H", "W"], 17)):
        got = run_ort(gradient_model(make(spatial, opset)), x, wl, wp)
        assert rel_err(got, expected) <= 1e-6, (spatial, opset)


def test_cli_export_gradients(tmp_path, capsys):
    model = build([N("Relu", ["x"], ["r"], name="act"), N("Flatten", ["r"], ["f"]),
                   N("MatMul", ["f", "w"], ["y"])], ["N", 1, 2, 2], ["N", 3], {"w": np.ones((4, 3))},
                  dtype=np.float32)
    src = tmp_path / "m.onnx"
    onnx.save(model, str(src))
    out = tmp_path / "g.onnx"
    assert main(["export-gradients", "--model", str(src), "--out", str(out), "--layer", "act"]) == 0
    assert json.loads(capsys.readouterr().out)["wrt"] == "r"
    assert [o.name for o in onnx.load(str(out)).graph.output] == ["y", "gradient", "activations"]
    assert main(["export-gradients", "--model", str(src), "--out", str(out), "--layer", "zzz"]) == 2
    assert main(["export-gradients", "--model", str(src), "--out", str(src)]) == 2
    assert "neither a node nor a tensor" in capsys.readouterr().err
    assert not list(tmp_path.glob(".tmp-*"))
