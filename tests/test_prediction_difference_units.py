"""Prediction difference for hidden units, the command line end to end, and bad input."""

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper
from PIL import Image
from skimage import data as skdata

import explainer
from explainer.cli import main
from explainer.errors import InputError
from explainer.graph.outputs import layer_means_model
from explainer.methods.prediction_difference import prediction_difference
from tiny import linear_classifier

EXAMPLES = Path(__file__).resolve().parent.parent / "models" / "efficientnet_lite0" / "examples"


def _conv_classifier(path, rng):
    """input (N,3,8,8) -> Conv 4x3x3x3 (pad 1) -> Relu "feat" -> GAP -> Flatten "flat" -> 2 logits."""
    inits = [numpy_helper.from_array(rng.normal(size=(4, 3, 3, 3)).astype(np.float32), "Wc"),
             numpy_helper.from_array(rng.normal(size=4).astype(np.float32), "Bc"),
             numpy_helper.from_array(rng.normal(size=(4, 2)).astype(np.float32), "Wf")]
    nodes = [helper.make_node("Conv", ["input", "Wc", "Bc"], ["conv"], name="conv_node", pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["conv"], ["feat"], name="relu_node"),
             helper.make_node("GlobalAveragePool", ["feat"], ["pool"], name="gap"),
             helper.make_node("Flatten", ["pool"], ["flat"], name="flatten", axis=1),
             helper.make_node("MatMul", ["flat", "Wf"], ["logits"], name="fc")]
    graph = helper.make_graph(nodes, "conv", [helper.make_tensor_value_info("input", TensorProto.FLOAT,
                                                                            ["N", 3, 8, 8])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 2])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    helper.set_model_props(model, {"explainer.preprocessing": json.dumps({"size": [8, 8]})})
    onnx.save(model, str(path))
    return path


def _tensor_means(path, tensor, batch):
    """Mean over H, W of ``tensor``, read as an extra output of the unchanged model."""
    proto = onnx.load(str(path))
    proto.graph.output.append(helper.make_tensor_value_info(tensor, TensorProto.FLOAT, None))
    sess = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    out = sess.run([tensor], {sess.get_inputs()[0].name: batch})[0]
    return out.reshape(out.shape[0], out.shape[1], -1).mean(axis=2)


def _run(proto, batch):
    sess = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, {sess.get_inputs()[0].name: batch})


@pytest.mark.parametrize("layer", ["feat", "relu_node", "conv", "flat"])
def test_layer_means_model_equals_the_extra_output_mean(tmp_path, rng, layer):
    path = _conv_classifier(tmp_path / "c.onnx", rng)
    batch = rng.normal(size=(5, 3, 8, 8)).astype(np.float32)
    derived = layer_means_model(onnx.load(str(path)), layer)
    out = _run(derived, batch)
    tensor = {"relu_node": "feat"}.get(layer, layer)
    assert len(out) == 1 and out[0].shape == (5, 4)
    np.testing.assert_allclose(out[0], _tensor_means(path, tensor, batch), rtol=1e-5, atol=1e-6)
    kept = {n.op_type for n in derived.graph.node}
    assert "MatMul" not in kept  # the classifier head past the layer is pruned


def test_layer_means_model_on_the_bundled_model(bundled, rng):
    layer = "/_blocks.15/_project_conv/Conv"
    proto = onnx.load(str(bundled.path))
    batch = rng.normal(size=(2, 3, 224, 224)).astype(np.float32)
    out = _run(layer_means_model(proto, layer), batch)[0]
    expected = _tensor_means(bundled.path, layer + "_output_0", batch)
    assert out.shape == expected.shape == (2, 320)
    np.testing.assert_allclose(out, expected, rtol=1e-4, atol=1e-5)


def test_unknown_layer_is_an_input_error(tmp_path, rng):
    proto = onnx.load(str(_conv_classifier(tmp_path / "c.onnx", rng)))
    with pytest.raises(InputError, match="'nope' is not a node or tensor"):
        layer_means_model(proto, "nope")


def test_hidden_unit_activation_difference_by_brute_force(tmp_path, rng):
    # S = 3 constant images: every window is replaced by each once, so the evidence of window w
    # is mean_HW(feat_u(x)) - mean_j mean_HW(feat_u(x with w := v_j)), computed here directly.
    path = _conv_classifier(tmp_path / "c.onnx", rng)
    model = explainer.load_model(path)
    values = [0, 128, 255]
    folder = tmp_path / "data"
    folder.mkdir()
    for v in values:
        Image.fromarray(np.full((8, 8, 3), v, np.uint8)).save(folder / f"{v}.png")
    x = rng.uniform(size=(1, 3, 8, 8)).astype(np.float32)
    e = prediction_difference(model, x, layer="relu_node", unit=2, window_size=3, stride=2, num_samples=3,
                              data=folder)
    corners = e.arrays["window_corners"]
    batch = []
    for y, x0 in corners:
        for v in values:
            b = x.copy()
            b[0, :, y:y + 3, x0:x0 + 3] = np.float32(v / 255)
            batch.append(b[0])
    means = _tensor_means(path, "feat", np.stack(batch))[:, 2].reshape(len(corners), 3)
    base = _tensor_means(path, "feat", x)[0, 2]
    np.testing.assert_allclose(e.arrays["window_evidence"], base - means.mean(axis=1), rtol=1e-4, atol=1e-5)
    assert e.target == 2 and e.label == "relu_node unit 2" and e.params["score"] == "logit"
    assert e.params["layer"] == "relu_node" and e.params["unit"] == 2
    np.testing.assert_allclose(e.score, base, rtol=1e-5)


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory):
    """Three natural images from scikit-image, as the folder to sample windows from."""
    folder = tmp_path_factory.mktemp("pda-data")
    for name in ("astronaut", "coffee", "rocket"):  # not chelsea, the image explained
        Image.fromarray(getattr(skdata, name)()).save(folder / f"{name}.png")
    return folder


@pytest.mark.parametrize("sampling, extra", [
    ("marginal", ["--window-size", "32", "--stride", "32"]),
    ("conditional", ["--window-size", "16", "--stride", "64", "--patch-size", "20"]),
])
def test_cli_end_to_end(tmp_path, capsys, image_folder, sampling, extra):
    out = tmp_path / "out"
    code = main(["explain", str(EXAMPLES / "chelsea.png"), "--method", "prediction-difference",
                 "--out", str(out), "--data", str(image_folder), "--sampling", sampling,
                 "--num-samples", "2", "--seed", "5", "--cache-dir", str(tmp_path / "cache"),
                 "--mini-batch-size", "30", "--json", *extra])
    assert code == 0, capsys.readouterr().err
    rec = json.loads(capsys.readouterr().out)[0]
    windows = {"marginal": 7 * 7, "conditional": 5 * 5}[sampling]
    assert rec["params"]["num_windows"] == windows and rec["params"]["sampling"] == sampling
    assert rec["timings"]["forward_passes"] == windows * 2 + 1 and rec["display"] == "diverging"
    assert rec["map_min"] < 0 < rec["map_max"]
    stem = out / "chelsea.prediction-difference"
    for suffix in (".npy", ".png", ".json", ".window_evidence.npy", ".window_corners.npy"):
        assert Path(str(stem) + suffix).is_file()
    assert np.load(str(stem) + ".window_evidence.npy").shape == (windows,)


@pytest.mark.parametrize("args, message", [
    ([], "needs data=FOLDER"),
    (["--data", "{empty}"], "no image files"),
    (["--data", "{missing}"], "no such folder"),
    (["--data", "{data}", "--unit", "3"], "unit= needs layer="),
    (["--data", "{data}", "--layer", "no/such/layer"], "is not a node or tensor"),
    (["--data", "{data}", "--layer", "/_conv_head/Conv", "--score", "probability"], "no probability"),
    (["--data", "{data}", "--window-size", "0"], "window_size must be a positive integer"),
    (["--data", "{data}", "--window-size", "300"], "larger than"),
    (["--data", "{data}", "--sampling", "conditional", "--window-size", "10", "--patch-size", "8"],
     "patch_size must be between"),
    (["--data", "{data}", "--coarse-to-fine", "2"], "coarse_to_fine must be in (0, 1]"),
    (["--data", "{data}", "--stride", "12", "--coarse-to-fine", "0.1"], "stride < window_size"),
    (["--data", "{data}", "--num-samples", "-1"], "num_samples must be a positive integer"),
    (["--data", "{data}", "--sampling", "gibbs"], "invalid choice"),
    (["--data", "{data}", "--mask-size", "4"], "does not apply to --method prediction-difference"),
])
def test_bad_input_is_one_line_exit_2(tmp_path, capsys, image_folder, args, message):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("no images here")
    fill = dict(empty=tmp_path / "empty", missing=tmp_path / "missing", data=image_folder)
    out = tmp_path / "out"
    argv = ["explain", str(EXAMPLES / "chelsea.png"), "--method", "prediction-difference",
            "--out", str(out), *[a.format(**fill) for a in args]]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1 and not out.exists()


def test_bad_options_in_python(tmp_path, rng):
    w = np.zeros((2, 3, 6, 6), np.float32)
    model = explainer.load_model(linear_classifier(tmp_path / "m.onnx", w, preprocessing={"size": [6, 6]}))
    folder = tmp_path / "d"
    folder.mkdir()
    Image.fromarray(np.zeros((6, 6, 3), np.uint8)).save(folder / "a.png")
    x = np.zeros((1, 3, 6, 6), np.float32)
    for kwargs, message in [(dict(seed=-1), "seed"), (dict(stride=(1, 2, 3)), "stride"),
                            (dict(score="odds"), "score"), (dict(mini_batch_size=0), "mini_batch_size"),
                            (dict(training_size=0), "training_size"), (dict(num_classes=0), "num_classes")]:
        with pytest.raises(InputError, match=message):
            prediction_difference(model, x, window_size=2, data=folder, **kwargs)
