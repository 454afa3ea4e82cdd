"""Incremental inference: geometry by hand, and the same outputs as full forward passes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from explainer.backends.incremental import IncrementalModel, changed_boxes, incremental_model
from explainer.backends.onnxruntime import OnnxModel
from explainer.errors import InputError
from explainer.graph.incremental import prefix, relative
from explainer.methods.occlusion import occlusion_sensitivity
from tiny import linear_classifier

SIZE = 48


def conv_net(path: Path, seed: int = 0) -> Path:
    """Conv 3x3 -> Relu -> Conv 3x3 stride 2 (pads 0,0,1,1) -> Clip -> residual depthwise 5x5
    -> MaxPool 2 -> Conv 1x1 -> Relu -> GlobalAveragePool -> Gemm, on (N, 3, 48, 48)."""
    rng = np.random.default_rng(seed)

    def w(name: str, *shape: int) -> onnx.TensorProto:
        return numpy_helper.from_array(rng.normal(0, 0.5, shape).astype(np.float32), name)

    lo, hi = numpy_helper.from_array(np.float32(0), "lo"), numpy_helper.from_array(np.float32(6), "hi")
    nodes = [
        helper.make_node("Conv", ["input", "w1", "b1"], ["c1"], kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["t1"]),
        helper.make_node("Conv", ["t1", "w2"], ["c2"], kernel_shape=[3, 3], strides=[2, 2], pads=[0, 0, 1, 1]),
        helper.make_node("Clip", ["c2", "lo", "hi"], ["t2"]),
        helper.make_node("Conv", ["t2", "w3"], ["c3"], kernel_shape=[5, 5], pads=[2, 2, 2, 2], group=8),
        helper.make_node("Relu", ["c3"], ["r3"]),
        helper.make_node("Add", ["t2", "r3"], ["t3"]),
        helper.make_node("MaxPool", ["t3"], ["t4"], kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Conv", ["t4", "w4"], ["c4"], kernel_shape=[1, 1]),
        helper.make_node("Relu", ["c4"], ["t5"]),
        helper.make_node("GlobalAveragePool", ["t5"], ["g"]),
        helper.make_node("Flatten", ["g"], ["f"], axis=1),
        helper.make_node("Gemm", ["f", "wf"], ["logits"], transB=1),
    ]
    inits = [w("w1", 8, 3, 3, 3), w("b1", 8), w("w2", 8, 8, 3, 3), w("w3", 8, 1, 5, 5),
             w("w4", 16, 8, 1, 1), w("wf", 5, 16), lo, hi]
    graph = helper.make_graph(
        nodes, "conv_net", [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, SIZE, SIZE])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 5])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> OnnxModel:
    return OnnxModel(conv_net(tmp_path_factory.mktemp("inc") / "net.onnx"), device="cpu")


def test_geometry_and_cuts_by_hand(net: OnnxModel) -> None:
    pre = prefix(onnx.load(str(net.path)), "input")
    geo = relative(pre, "input")
    # conv 3x3 pad 1: row o reads o-1..o+1; then conv 3x3 stride 2 pad-before 0 reads rows
    # 2o..2o+2 of t1, i.e. input rows 2o-1..2o+3
    assert (geo["t1"].stride.tolist(), geo["t1"].lo.tolist(), geo["t1"].hi.tolist()) == ([1, 1], [1, 1], [1, 1])
    assert (geo["t2"].stride.tolist(), geo["t2"].lo.tolist(), geo["t2"].hi.tolist()) == ([2, 2], [1, 1], [3, 3])
    # the residual adds the depthwise 5x5 (2 rows of t2 each side = 4 input rows): envelope
    assert (geo["t3"].lo.tolist(), geo["t3"].hi.tolist()) == ([5, 5], [7, 7])
    # MaxPool 2 stride 2 pad 0: rows 2o..2o+1 of t3
    assert (geo["t4"].stride.tolist(), geo["t4"].lo.tolist(), geo["t4"].hi.tolist()) == ([4, 4], [5, 5], [9, 9])
    assert pre.cuts == ("input", "c1", "t1", "c2", "t2", "t3", "t4", "c4", "t5")  # never inside the residual
    assert pre.stop.startswith("GlobalAveragePool")


def test_relative_rebased_from_the_input_equals_walking_the_graph(net: OnnxModel) -> None:
    bundled = Path(__file__).resolve().parent.parent / "models/efficientnet_lite0/model.onnx"
    for path in [net.path] + ([bundled] if bundled.is_file() else []):
        pre = prefix(onnx.load(str(path)), "input")
        absolute = relative(pre, pre.input)
        for cut in pre.cuts[1:]:
            walked, rebased = relative(pre, cut), relative(pre, cut, absolute)
            assert walked.keys() == rebased.keys()
            for t, g in walked.items():
                r = rebased[t]
                assert (g.stride.tolist(), g.lo.tolist(), g.hi.tolist()) == (r.stride.tolist(), r.lo.tolist(),
                                                                             r.hi.tolist()), (cut, t)


def test_changed_boxes() -> None:
    x = np.zeros((1, 2, 6, 7), np.float32)
    batch = np.repeat(x, 3, axis=0)
    batch[0, 1, 2:4, 3:6] = 1.0
    batch[2, 0, 5, 0] = -1.0
    assert changed_boxes(batch, x).tolist() == [[2, 4, 3, 6], [0, 0, 0, 0], [5, 6, 0, 1]]


def _masked(x: np.ndarray, boxes: list[tuple[int, int, int, int]], value: float) -> np.ndarray:
    batch = np.repeat(x, len(boxes), axis=0)
    for i, (y, xx, h, w) in enumerate(boxes):
        batch[i, :, y:y + h, xx:xx + w] = value
    return batch


def test_same_outputs_as_full_passes_and_batch_independent(net: OnnxModel) -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(size=(1, 3, SIZE, SIZE)).astype(np.float32)
    runner, info = incremental_model(net, x, (6, 6))
    assert isinstance(runner, IncrementalModel) and info["path"] == "incremental"
    boxes = [(0, 0, 6, 6), (42, 42, 6, 6), (0, 45, 6, 3), (20, 17, 5, 6), (31, 0, 1, 1), (0, 0, 0, 0),
             (10, 10, 20, 20)]  # edges, corners, clipped, one pixel, unchanged, too big (full pass)
    boxes += [(int(a), int(b), 6, 6) for a, b in rng.integers(0, SIZE - 5, size=(9, 2))]
    batch = _masked(x, boxes, 0.3)
    full = net.predict(batch)
    got = runner.predict(batch)
    assert np.abs(got - full).max() <= 1e-5 * max(1.0, np.abs(full).max())
    assert not np.allclose(full, full[5]), "the masks must change the outputs for the test to mean anything"
    ones = np.concatenate([runner.predict(batch[i:i + 1]) for i in range(len(batch))])
    threes = np.concatenate([runner.predict(batch[i:i + 3]) for i in range(0, len(batch), 3)])
    assert np.array_equal(ones, got) and np.array_equal(threes, got)


def test_occlusion_map_equals_naive(net: OnnxModel) -> None:
    x = np.random.default_rng(2).normal(size=(1, 3, SIZE, SIZE)).astype(np.float32)
    opts = dict(mask_size=6, stride=3, output_upsampling="none", score="logit")
    naive = occlusion_sensitivity(net, x, 0, incremental="off", **opts)
    fast = occlusion_sensitivity(net, x, 0, **opts)
    assert naive.params["inference"]["path"] == "full"
    assert fast.params["inference"]["path"] == "incremental"
    assert np.abs(naive.map).max() > 1e-3
    np.testing.assert_allclose(fast.map, naive.map, rtol=0, atol=1e-5 * np.abs(naive.map).max())


def test_fallbacks_are_reported(tmp_path: Path, net: OnnxModel) -> None:
    flat = OnnxModel(linear_classifier(tmp_path / "lin.onnx", np.ones((3, 3, 8, 8), np.float32)), device="cpu")
    x = np.zeros((1, 3, 8, 8), np.float32)
    model, info = incremental_model(flat, x, (2, 2))
    assert model is flat and info["path"] == "full" and "Flatten" in info["reason"]
    model, info = incremental_model(net, np.zeros((1, 3, SIZE, SIZE), np.float32), (SIZE, SIZE))
    assert model is net and info["path"] == "full" and "speed-up" in info["reason"]
    with pytest.raises(InputError, match="incremental"):
        occlusion_sensitivity(net, x, 0, incremental="fast")


def test_prediction_difference_map_equals_naive(net: OnnxModel, tmp_path: Path) -> None:
    from PIL import Image

    from explainer.methods.prediction_difference import prediction_difference

    rng = np.random.default_rng(3)
    data = tmp_path / "data"
    data.mkdir()
    for i in range(6):
        Image.fromarray(rng.integers(0, 256, size=(SIZE, SIZE, 3), dtype=np.uint8)).save(data / f"{i}.png")
    x = rng.normal(size=(1, 3, SIZE, SIZE)).astype(np.float32)
    opts = dict(window_size=4, stride=4, num_samples=3, data=data, score="logit", seed=1)
    naive = prediction_difference(net, x, 2, incremental="off", **opts)
    fast = prediction_difference(net, x, 2, **opts)
    assert (naive.params["inference"]["path"], fast.params["inference"]["path"]) == ("full", "incremental")
    assert np.abs(naive.map).max() > 1e-3
    np.testing.assert_allclose(fast.map, naive.map, rtol=0, atol=1e-5 * np.abs(naive.map).max())
