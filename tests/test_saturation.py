"""Issue 20 (1): a saturated softmax gives Grad-CAM an exact, non-zero probability gradient; the
default score of CAM-type methods is the logit; a constant map warns, is recorded and is undefined
for the randomisation check."""

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import explainer
from explainer import metrics
from explainer.cli import main
from explainer.methods.grad_cam import cam, grad_cam

N = helper.make_node
SHORTCUT = Path(__file__).resolve().parents[1] / "models" / "shortcut"


def _gap_model(path, conv, wfc, bfc, softmax=False):
    """input (N, 1, 4, 4) -> 1x1 Conv (C filters) -> Relu -> GAP -> Flatten -> Gemm (K, C) [-> Softmax]."""
    nodes = [N("Conv", ["input", "k"], ["c"], name="conv"), N("Relu", ["c"], ["a"], name="act"),
             N("GlobalAveragePool", ["a"], ["g"]), N("Flatten", ["g"], ["f"], axis=1),
             N("Gemm", ["f", "w", "b"], ["z" if softmax else "logits"], transB=1)]
    if softmax:
        nodes.append(N("Softmax", ["z"], ["logits"], axis=1))
    inits = {"k": np.asarray(conv, np.float32)[:, None, None, None], "w": wfc, "b": bfc}
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("input", TensorProto.FLOAT,
                                                                         ["N", 1, 4, 4])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", len(bfc)])],
                              [numpy_helper.from_array(np.asarray(v, np.float32), n) for n, v in inits.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return explainer.load_model(path, size=(4, 4), scale=1.0, mean=[0.0], std=[1.0])


def _saturated(tmp_path, softmax=False):
    # A_0 = ReLU(x), A_1 = ReLU(-x); logits z = W mean(A) + b with a margin of ~40: softmax(z)[0]
    # is exactly 1.0 in float32 (1 - 4e-18 in exact arithmetic).
    w = np.array([[3.0, -2.0], [1.0, 1.0], [-1.0, 2.0]])
    b = np.array([40.0, 0.0, 0.0])
    model = _gap_model(tmp_path / ("satp.onnx" if softmax else "sat.onnx"), [1.0, -1.0], w, b, softmax)
    x = np.array([[1, 2, 0, -1], [0, 1, 2, 0], [-2, 0, 1, 1], [0, 0, -1, 3]], np.float32)[None, None] / 4
    return model, x, w, b


@pytest.mark.parametrize("softmax", [False, True])
def test_saturated_probability_gradient_is_exact(tmp_path, softmax):
    """A logit model and the same model ending in Softmax, score="probability": the exact
    float64 map, not 0. (The Softmax-ended model's default score is its logits: LogitView.)"""
    model, x, w, b = _saturated(tmp_path, softmax)
    a = np.stack([np.maximum(x[0, 0], 0), np.maximum(-x[0, 0], 0)]).astype(np.float64)
    z = w @ a.mean(axis=(1, 2)) + b
    p = np.exp(z - z.max()) / np.exp(z - z.max()).sum()
    assert np.float32(p[0]) == 1.0  # float32 saturates
    # d p_0 / d z_j = p_0 (delta_0j - p_j), with 1 - p_0 = p_1 + p_2 (no cancellation)
    dz = p[0] * np.array([p[1] + p[2], -p[1], -p[2]])
    alpha = dz @ w / 16  # spatial mean of d p_0 / d A_c = sum_j dz_j W[j, c] / (h w)
    want = np.maximum(np.tensordot(alpha, a, axes=1), 0)
    e = grad_cam(model, x, 0, output_upsampling="none", score="probability")
    assert np.ptp(e.map) > 0 and "constant_map" not in e.params and e.params["score"] == "probability"
    np.testing.assert_allclose(e.map, want, rtol=1e-4, atol=1e-6 * want.max())
    # the raw gradient through the model's API: exact too, not 0 for the top class's own term
    _, g, _ = model.gradients(x, np.zeros((1, 3), np.float32), np.eye(3, dtype=np.float32)[:1], layer="a")
    np.testing.assert_allclose(g[0].astype(np.float64).mean(axis=(1, 2)), alpha, rtol=1e-4)
    if softmax:  # the default explains the logits before the Softmax, as for the logit model
        logit_map = np.maximum(np.tensordot(w[0] / 16, a, axes=1), 0)
        d = grad_cam(model, x, 0, output_upsampling="none")
        assert d.params["score"] == "logit"
        np.testing.assert_allclose(d.map, logit_map, rtol=1e-4, atol=1e-6)


def test_cam_methods_default_to_the_logit(tmp_path):
    model, x, _, _ = _saturated(tmp_path)
    e = grad_cam(model, x, 0, output_upsampling="none")
    assert e.params["score"] == "logit"
    np.testing.assert_array_equal(e.map, grad_cam(model, x, 0, score="logit", output_upsampling="none").map)
    assert cam(model, x, 0).params["score"] == "logit"
    assert grad_cam(model, x, 0, score="probability").params["score"] == "probability"


def test_constant_map_warns_and_is_recorded(tmp_path, capsys):
    # class 2's Grad-CAM: alpha = W[2] / 16 = [-1, 2] / 16 over A_0 = ReLU(x), A_1 = ReLU(-x);
    # with x >= 0 everywhere, A_1 = 0 and the sum -A_0 / 16 <= 0: ReLU makes the map all zero.
    model, x, _, _ = _saturated(tmp_path)
    e = grad_cam(model, np.abs(x) + 0.5, 2, score="logit", output_upsampling="none")
    assert np.ptp(e.map) == 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "grad-cam: the map is constant" in err[0]
    assert e.params["constant_map"] is True and "constant" in e.params["warnings"][0]
    assert json.loads(json.dumps(e.to_dict(), default=str))["params"]["constant_map"] is True


def test_randomisation_check_calls_a_constant_map_undefined():
    model = explainer.load_model(SHORTCUT / "model.onnx")
    r = metrics.randomisation_check(model, lambda m: np.zeros((64, 64)), max_layers=1)
    assert np.isnan(r.correlations[0]) and r.undefined == ["the original map is constant"]
    assert np.isnan(metrics.spearman(np.ones(5), np.arange(5.0)))


def test_shortcut_grad_cam_default_finds_the_watermark(tmp_path, capsys):
    image = SHORTCUT / "testset" / "triangle" / "triangle_08_wm.png"  # called a circle: p = 1.0 in float32
    assert main(["explain", str(image), "--model", str(SHORTCUT / "model.onnx"), "--method", "grad-cam",
                 "--out", str(tmp_path), "--quiet"]) == 0
    m = np.load(next(tmp_path.glob("*.grad-cam.npy")))
    mask = explainer.read_image(SHORTCUT / "masks" / "watermark" / "triangle" / image.name).max(axis=2) > 0
    assert metrics.pointing_game(m, mask, tolerance=4)
    assert "warning" not in capsys.readouterr().err
