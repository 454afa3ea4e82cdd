"""Activations of named layers, checked against truncated ONNX models built by onnx's extractor."""

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from PIL import Image

import explainer
from explainer.cli import main
from explainer.errors import InputError
from explainer.backends.onnx_derived import activations as layer_activations
from explainer.graph.activations import with_outputs
from explainer.visualization.tiles import BORDER
from explainer.methods.activations import activations, imtile, mat2gray, upsample
from explainer.methods.common import load_input

SHORTCUT = Path(__file__).resolve().parent.parent / "models" / "shortcut"
IMAGE = SHORTCUT / "testset" / "circle" / "circle_00_wm.png"
RELU = "/features/features.3/Relu"
TENSOR = "/features/features.3/Relu_output_0"


@pytest.fixture(scope="module")
def model():
    return explainer.load_model(SHORTCUT / "model.onnx")


def _truncated(tmp_path, tensor):
    path = tmp_path / "truncated.onnx"
    onnx.utils.extract_model(str(SHORTCUT / "model.onnx"), str(path), ["input"], [tensor])
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def test_layer_activations_equal_truncated_model(tmp_path, model, rng):
    batch = rng.normal(size=(5, 3, 64, 64)).astype(np.float32)
    ref = _truncated(tmp_path, TENSOR).run(None, {"input": batch})[0]
    for names in ([RELU], [TENSOR]):  # node name or tensor name
        got = layer_activations(model, batch, names, mini_batch_size=2)[names[0]]
        np.testing.assert_array_equal(got, ref)
    assert ref.shape == (5, 32, 16, 16)


def test_activations_method(tmp_path, model):
    e = activations(model, IMAGE, layer=RELU, num_channels=5)
    x = load_input(model, IMAGE).x
    ref = _truncated(tmp_path, TENSOR).run(None, {"input": x})[0][0]
    np.testing.assert_array_equal(e.arrays["activations"], ref)
    strongest = int(np.argmax(ref.reshape(32, -1).max(axis=1)))
    assert e.params["channel"] == strongest and e.label == "circle"
    np.testing.assert_allclose(e.map, upsample(ref[strongest], (64, 64), 3), rtol=1e-6)
    # 5 channels: 3 columns x 2 rows; each 16x16 channel enlarged 6x (>= 96 px) below a 16 px
    # number strip, 3 px borders; a 3-line title strip (8 + 17 * 3 px) names the layer
    tile = e.images["tile"]
    assert tile.shape == (59 + 2 * (16 + 96 + 3) + 3, 3 * (96 + 3) + 3, 3)
    g = mat2gray(ref[:5])
    top, left = 59 + 3 + 16, 3 + 99
    np.testing.assert_array_equal(tile[top:top + 96, left:left + 96, 0],
                                  np.round(np.kron(g[1], np.ones((6, 6))) * 255).astype(np.uint8))
    assert np.all(tile[top:top + 96, left - 3:left] == BORDER)   # a border between cells
    assert np.all(tile[59 + 2 * 115:, 3 * 99 + 3 - 96 - 3:] == BORDER)   # the 6th cell is empty
    strip = tile[59 + 3:59 + 3 + 16, 3:3 + 96]
    assert (strip == 255).any() and (strip == BORDER).all(axis=2).any()   # "ch 0" written in white
    files = e.save(tmp_path / "out", "c")
    tile = np.asarray(Image.open(tmp_path / "out" / "c.activations.tile.png"))
    np.testing.assert_array_equal(tile, e.images["tile"])
    assert len(files) == 5


def test_auto_layer_is_the_default_feature_layer(model):
    e = activations(model, IMAGE)
    assert e.params["layer"] == "/features/features.7/Relu" and e.params["shape"] == [64, 8, 8]


def test_imtile_and_mat2gray_by_hand():
    a = np.arange(12, dtype=float).reshape(3, 2, 2)
    g = mat2gray(a)
    assert g.min() == 0 and g.max() == 1 and g[1, 0, 0] == pytest.approx(4 / 11)
    t = imtile(g, min_size=2)  # 2x2 grid of 2x2 cells; the fourth cell black
    assert t.shape == (4, 4)
    np.testing.assert_array_equal(t[:2, 2:], np.round(g[1] * 255))
    np.testing.assert_array_equal(t[2:, 2:], 0)
    assert imtile(g, min_size=5).shape == (12, 12)  # each cell enlarged 3x
    np.testing.assert_array_equal(mat2gray(np.full((2, 2), 7.0)), 0)


def test_upsample_constant_and_nearest():
    np.testing.assert_allclose(upsample(np.full((4, 4), 3.0), (16, 16), 3), 3.0)
    m = np.array([[0.0, 1.0], [2.0, 3.0]])
    np.testing.assert_array_equal(upsample(m, (4, 4), 0), np.kron(m, np.ones((2, 2))))


def test_errors(model):
    with pytest.raises(InputError, match="4-D"):
        activations(model, IMAGE, layer="/fc/Gemm")
    with pytest.raises(InputError, match="not a node or tensor"):
        activations(model, IMAGE, layer="nope")
    with pytest.raises(InputError, match="num_channels"):
        activations(model, IMAGE, layer=RELU, num_channels=0)


def test_with_outputs_keeps_the_classifier(model, rng):
    proto = onnx.load(str(SHORTCUT / "model.onnx"))
    derived = with_outputs(proto, [RELU, "/pool/GlobalAveragePool"])
    onnx.checker.check_model(derived)
    assert [o.name for o in derived.graph.output] == ["logits", TENSOR, "/pool/GlobalAveragePool_output_0"]
    batch = rng.normal(size=(2, 3, 64, 64)).astype(np.float32)
    out = ort.InferenceSession(derived.SerializeToString()).run(None, {"input": batch})
    np.testing.assert_allclose(out[0], model.predict(batch), rtol=1e-5, atol=1e-6)


def test_cli_export_layers_and_explain(tmp_path, capsys):
    out = tmp_path / "layers.onnx"
    assert main(["export-layers", "--model", str(SHORTCUT / "model.onnx"), "--layers",
                 f"{RELU},/pool/GlobalAveragePool", "--out", str(out)]) == 0
    names = [o.name for o in onnx.load(str(out)).graph.output]
    assert names[0] == "logits" and TENSOR in names
    assert explainer.load_model(out).spec.labels == ("circle", "square", "triangle")
    assert main(["explain", "--model", str(SHORTCUT / "model.onnx"), "--method", "activations",
                 "--layer", RELU, "--num-channels", "4", "--out", str(tmp_path / "e"), "--quiet",
                 str(IMAGE)]) == 0
    assert (tmp_path / "e" / "circle_00_wm.activations.tile.png").is_file()
    assert main(["export-layers", "--model", str(out), "--layers", "x", "--out", str(out)]) == 2
    assert "overwrite" in capsys.readouterr().err
