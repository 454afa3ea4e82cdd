"""Grad-CAM and CAM: a hand-derived conv model, default layers, CAM = Grad-CAM up to scale, errors."""

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import explainer
from explainer.errors import InputError
from explainer.methods.grad_cam import cam, grad_cam

N = helper.make_node


def _save(path, nodes, inits, x_shape, k):
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("input", TensorProto.FLOAT, x_shape)],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", k])],
                              [numpy_helper.from_array(np.asarray(v, np.float32), n) for n, v in inits.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return explainer.load_model(path)


def test_grad_cam_hand_derived(tmp_path):
    # x = [[1, 2], [3, 4]]; 1x1 conv filters +1 (bias 0) and -1 (bias 5), then Relu:
    # A_0 = [[1, 2], [3, 4]], A_1 = [[4, 3], [2, 1]]. Logit 0 = Flatten(A) . W[:, 0] with channel 0's
    # weights [1, 3, 0, 0] (alpha_0 = mean = 1) and channel 1's [-1, -1, -1, -1] (alpha_1 = -1):
    # map = ReLU(A_0 - A_1) = ReLU([[-3, -1], [1, 3]]) = [[0, 0], [1, 3]].
    w = np.zeros((8, 2))
    w[:, 0] = [1, 3, 0, 0, -1, -1, -1, -1]
    w[:, 1] = 0.5
    nodes = [N("Conv", ["input", "k", "b"], ["c"], name="conv"), N("Relu", ["c"], ["a"], name="act"),
             N("Flatten", ["a"], ["f"], axis=1), N("MatMul", ["f", "w"], ["logits"])]
    model = _save(tmp_path / "m.onnx", nodes, {"k": [[[[1.0]]], [[[-1.0]]]], "b": [0, 5], "w": w},
                  ["N", 1, 2, 2], 2)
    x = np.array([[[[1, 2], [3, 4]]]], np.float32)
    e = grad_cam(model, x, 0, score="logit", output_upsampling="none")
    np.testing.assert_allclose(e.map, [[0, 0], [1, 3]], atol=1e-6)
    assert e.params["feature_layer"] == "act"  # the default: the last ReLU with spatial size > 1
    up = grad_cam(model, x, 0, score="logit", feature_layer="a")
    assert up.map.shape == (2, 2) and up.params["feature_layer"] == "a"
    with pytest.raises(InputError, match="cam needs a model that ends in GlobalAveragePool"):
        cam(model, x, 0)


def _gap_model(path, rng, concat):
    """Two conv+Relu branches (concatenated, or only the first) -> GAP -> Flatten -> Gemm."""
    c = 4 if concat else 2
    nodes = [N("Conv", ["input", "k1"], ["c1"], pads=[1, 1, 1, 1]), N("Relu", ["c1"], ["r1"], name="relu1"),
             N("Conv", ["input", "k2"], ["c2"], pads=[1, 1, 1, 1]), N("Relu", ["c2"], ["r2"], name="relu2")]
    last = "r2"
    if concat:
        nodes.append(N("Concat", ["r1", "r2"], ["cat"], axis=1, name="cat"))
        last = "cat"
    nodes += [N("GlobalAveragePool", [last], ["g"]), N("Flatten", ["g"], ["f"], axis=1),
              N("Gemm", ["f", "wfc", "bfc"], ["logits"], transB=1)]
    inits = {"k1": rng.normal(size=(2, 3, 3, 3)), "k2": rng.normal(size=(2, 3, 3, 3)),
             "wfc": rng.normal(size=(3, c)), "bfc": rng.normal(size=3)}
    return _save(path, nodes, inits, ["N", 3, 6, 5], 3)


def test_default_layer_is_the_final_concat_and_cam_equals_grad_cam(tmp_path, rng):
    model = _gap_model(tmp_path / "cat.onnx", rng, concat=True)
    x = rng.normal(size=(1, 3, 6, 5)).astype(np.float32)
    g = grad_cam(model, x, 1, score="logit")
    assert g.params["feature_layer"] == "cat"
    c = cam(model, x, 1, score="logit")
    assert c.params["feature_layer"] == "cat" and c.map.shape == (6, 5)
    # Grad-CAM of a logit through GAP + FC: alpha_c = W[t, c] / (h w), so Grad-CAM = ReLU(CAM) / (h w)
    np.testing.assert_allclose(g.arrays["feature_map"], np.maximum(c.arrays["feature_map"], 0) / 30,
                               rtol=1e-5, atol=1e-7)
    # CAM by brute force: 3x3 convolutions (pad 1) by loops, Relu, weighted by the Gemm row
    inits = {t.name: numpy_helper.to_array(t) for t in onnx.load(str(tmp_path / "cat.onnx")).graph.initializer}
    xp = np.pad(x[0].astype(np.float64), [(0, 0), (1, 1), (1, 1)])
    k = np.concatenate([inits["k1"], inits["k2"]])
    feats = np.zeros((4, 6, 5))
    for o in range(4):
        for i in range(6):
            for j in range(5):
                feats[o, i, j] = max(0.0, (xp[:, i:i + 3, j:j + 3] * k[o]).sum())
    np.testing.assert_allclose(c.arrays["feature_map"], np.tensordot(inits["wfc"][1], feats, axes=1),
                               rtol=1e-5, atol=1e-6)
    plain = _gap_model(tmp_path / "plain.onnx", rng, concat=False)
    assert grad_cam(plain, x, 0).params["feature_layer"] == "relu2"


def test_bundled_default_layer_and_maps():
    bundled = explainer.load_model()  # its own instance: the shared fixture's gradient sessions stay untouched
    image = "models/efficientnet_lite0/examples/chelsea.png"
    g = grad_cam(bundled, image, score="logit")
    assert g.params["feature_layer"] == "/_swish_1/Clip" and g.arrays["feature_map"].shape == (7, 7)
    assert g.map.shape == (224, 224) and g.map.max() > 0
    c = cam(bundled, image, score="logit")
    assert c.params["feature_layer"] == "/_swish_1/Clip_output_0"
    np.testing.assert_allclose(g.arrays["feature_map"], np.maximum(c.arrays["feature_map"], 0) / 49,
                               rtol=1e-3, atol=1e-5 * c.arrays["feature_map"].max())
