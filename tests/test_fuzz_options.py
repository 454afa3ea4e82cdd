"""Bad numbers, odd models, odd names and wrong API types (issue 14, classes 14-16): generated cases.

Every refusal is one ``explainer: error:`` line with exit status 2 (3 for a misbehaving
model), never "internal error", a traceback, a silent default or raw terminal control.
"""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper
from PIL import Image

import explainer
from explainer.cli import main
from tiny import linear_classifier

ROOT = Path(__file__).resolve().parent.parent


def _cli(capsys, args):
    code = main([str(a) for a in args])
    out = capsys.readouterr()
    assert "Traceback" not in out.err and "internal error" not in out.err, out.err
    if code:
        lines = out.err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("explainer: error:"), out.err
    return code, out


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    d = tmp_path_factory.mktemp("opts")
    model = linear_classifier(d / "m.onnx", np.random.default_rng(1).normal(size=(3, 3, 8, 8)).astype(np.float32))
    image = d / "x.npy"
    np.save(image, np.random.default_rng(2).normal(size=(1, 3, 8, 8)).astype(np.float32))
    return d, model, image


BAD_NUMBERS = {"--std": ["nan", "inf", "-inf", "1e-45", "0", "1e300"], "--mean": ["nan", "inf", "-1e300"],
               "--scale": ["nan", "inf", "0", "1e-44", "-inf"]}


@pytest.mark.parametrize("option, value", [(o, v) for o, vs in BAD_NUMBERS.items() for v in vs])
def test_bad_preprocessing_numbers_are_exit_2(capsys, setup, option, value):
    _, model, image = setup
    code, out = _cli(capsys, ["classify", image, "--model", model, option, value])
    assert code == 2 and option.strip("-") in out.err, out.err


@pytest.mark.parametrize("option, value", [(o, v) for o in ("--timeout", "--retry-seconds")
                                           for v in ("0", "nan", "inf", "-1", "-inf")
                                           if not (o == "--retry-seconds" and v == "0")])
def test_bad_triton_numbers_are_refused_before_connecting(capsys, setup, option, value):
    _, _, image = setup
    code, out = _cli(capsys, ["classify", image, "--model", "grpc://127.0.0.1:9/m", option, value])
    assert code == 2 and ("timeout" in out.err or "retry" in out.err), out.err


@pytest.mark.parametrize("url", ["grpc://127.0.0.1:0/m", "http://127.0.0.1:0/m", "http://127.0.0.1:70000/m",
                                 "grpc://127.0.0.1:-1/m", "https://h:x/m"])
def test_bad_ports_are_exit_2(capsys, setup, url):
    code, out = _cli(capsys, ["classify", setup[2], "--model", url])
    assert code == 2 and "port" in out.err, out.err


@pytest.mark.parametrize("target", ["\u00b2", "\u0663", "\uff11", "-1", "99", "1.5", " ", "class 9"])
def test_bad_targets_are_exit_2(capsys, setup, tmp_path, target):
    _, model, image = setup
    code, out = _cli(capsys, ["explain", image, "--model", model, "--method", "occlusion", "--mask-size", "4",
                              "--target", target, "--out", tmp_path / "o", "--quiet"])
    assert code == 2 and "target" in out.err, out.err


BAD_METADATA = [{"scale": float("nan")}, {"scale": 1e-45}, {"scale": float("inf")}, {"std": [0, 1, 1]},
                {"std": [1e-42, 1, 1]}, {"std": float("nan")}, {"mean": [float("inf"), 0, 0]},
                {"resize": "crop", "crop_fraction": 1e-9}, {"crop_fraction": 0}, {"crop_fraction": -1},
                {"crop_fraction": 2}, {"crop_fraction": float("nan")}, {"size": [0, 8]}, {"std": "x"},
                {"scale": True}, {"mean": [1, 2]}]


@pytest.mark.parametrize("meta", BAD_METADATA, ids=[json.dumps(m) for m in BAD_METADATA])
def test_bad_preprocessing_metadata_is_refused(tmp_path, meta):
    path = linear_classifier(tmp_path / "m.onnx", np.ones((2, 3, 8, 8), np.float32),
                             preprocessing={"size": [8, 8], **meta})
    with pytest.raises(explainer.InputError, match="metadata|scale|std|mean|crop_fraction|size"):
        explainer.load_model(path)


def _odd_model(path, kind):
    """'nan': every output NaN; 'batch1': one row whatever the batch (mean over the batch)."""
    w = helper.make_tensor("W", TensorProto.FLOAT, [192, 2], np.ones(384, np.float32).tolist())
    nodes = [helper.make_node("Flatten", ["input"], ["flat"], axis=1), helper.make_node("MatMul", ["flat", "W"], ["z"])]
    inits = [w]
    if kind == "nan":
        inits.append(helper.make_tensor("nan", TensorProto.FLOAT, [], [float("nan")]))
        nodes.append(helper.make_node("Mul", ["z", "nan"], ["logits"]))
    else:
        nodes.append(helper.make_node("ReduceMean", ["z"], ["logits"], axes=[0], keepdims=1))
    g = helper.make_graph(nodes, "odd", [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, 8, 8])],
                          [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 2])], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    onnx.save(m, str(path))
    return path


@pytest.mark.parametrize("kind, command", [("nan", "classify --json"), ("nan", "classify"), ("nan", "explain"),
                                           ("batch1", "explain"), ("batch1", "explain-lime")])
def test_misbehaving_models_are_exit_3(capsys, setup, tmp_path, kind, command):
    model = _odd_model(tmp_path / f"{kind}.onnx", kind)
    args = ["classify", setup[2], "--model", model] + (["--json"] if "json" in command else [])
    if command.startswith("explain"):
        method = ["--method", "lime", "--num-samples", "20"] if "lime" in command else \
            ["--method", "occlusion", "--mask-size", "4"]
        args = ["explain", setup[2], "--model", model, *method, "--out", tmp_path / "o", "--quiet"]
    code, out = _cli(capsys, args)
    assert code == 3, out.err
    assert ("NaN" in out.err) if kind == "nan" else ("batch" in out.err), out.err


@pytest.mark.parametrize("shape", [(0, 8, 3), (8, 0, 3), (0, 0, 3), (0, 5)])
@pytest.mark.parametrize("resize", ["crop", "stretch"])
def test_empty_pixel_arrays_are_exit_2(capsys, tmp_path, shape, resize):
    model = linear_classifier(tmp_path / "m.onnx", np.ones((2, 3, 8, 8), np.float32),
                              preprocessing={"size": [8, 8], "resize": resize})
    np.save(tmp_path / "e.npy", np.zeros(shape, np.uint8))
    code, out = _cli(capsys, ["classify", tmp_path / "e.npy", "--model", model])
    assert code == 2 and "pixels" in out.err, out.err


NAMES = ["a\nb", "x\x1b[31mred", "bell\x07", "cr\rfake", "tab\there", "nl\u2028sep", "del\x7f", "c1\x9b2J"]


@pytest.mark.parametrize("name", NAMES, ids=range(len(NAMES)))
def test_paths_and_labels_cannot_drive_the_terminal(capsys, tmp_path, name):
    model = linear_classifier(tmp_path / "m.onnx", np.ones((2, 3, 8, 8), np.float32), preprocessing={"size": [8, 8]})
    (tmp_path / "labels.txt").write_text(f"first {name}\nsecond\n")
    image = tmp_path / f"img {name}.png"
    Image.fromarray(np.full((8, 8, 3), 9, np.uint8)).save(image, format="PNG")
    code, out = _cli(capsys, ["classify", image, "--model", model, "--top", "2"])
    assert code == 0, out.err
    assert not any(c in out.out for c in "\x1b\x07\r\x7f\x9b\u2028"), out.out
    assert len(out.out.strip().splitlines()) == 3  # the path, then two classes
    code, out = _cli(capsys, ["classify", tmp_path / f"missing {name}.png", "--model", model])
    assert code == 2 and not any(c in out.err for c in "\x1b\x07\r\x7f\x9b\u2028")


@pytest.mark.parametrize("bits", [16, 32])
@pytest.mark.parametrize("level", [0, 300, 3000, 65535])
def test_high_bit_depth_images_keep_their_brightness(tmp_path, bits, level):
    """Scaled by the format's range, never the image's own maximum (a dark image stays dark)."""
    a = np.full((6, 6), level, np.uint16 if bits == 16 else np.int32)
    path = tmp_path / ("i.png" if bits == 16 else "i.tif")
    Image.fromarray(a).save(path)
    got = explainer.read_image(path)
    assert np.all(np.abs(got.astype(int) - round(level / 65535 * 255)) <= 1), (got.max(), level)


BAD_MODELS = [None, "model.onnx", 3, object(), np.zeros(3)]


@pytest.mark.parametrize("bad", BAD_MODELS, ids=["None", "str", "int", "object", "array"])
@pytest.mark.parametrize("call", ["classify", "occlusion_sensitivity", "rise", "gradient"])
def test_api_refuses_non_models(bad, call):
    with pytest.raises(explainer.InputError, match="loaded model"):
        getattr(explainer, call)(bad, np.zeros((8, 8, 3), np.uint8))


@pytest.mark.parametrize("pixels", [None, "x.png", np.zeros((4, 4), np.float32), np.zeros((0, 4, 3), np.uint8),
                                    np.zeros((4, 4, 4), np.uint8), [[1, 2, 3]]])
def test_preprocess_refuses_non_pixels(pixels):
    with pytest.raises(explainer.InputError, match="pixels"):
        explainer.preprocess(pixels, explainer.Preprocessing(size=(8, 8)))


@pytest.mark.parametrize("shape", [(3, 8, 8), (1, 3, 8, 9), (1, 1, 8, 8), (2, 8, 8, 3), (1, 3, 8, 8, 1)])
@pytest.mark.parametrize("backend", ["onnxruntime", "function"])
def test_predict_refuses_wrong_batches(tmp_path, shape, backend):
    if backend == "function":
        model = explainer.from_function(lambda x: x.reshape(len(x), -1)[:, :2], input_shape=(3, 8, 8))
    else:
        model = explainer.load_model(linear_classifier(tmp_path / "m.onnx", np.ones((2, 3, 8, 8), np.float32)))
    with pytest.raises(explainer.InputError, match="batch"):
        model.predict(np.zeros(shape, np.float32))


def test_missing_tls_files_are_one_line(capsys, setup):
    for flag in ("--tls-ca-cert", "--tls-client-cert", "--tls-client-key"):
        code, out = _cli(capsys, ["classify", setup[2], "--model", "grpcs://127.0.0.1:9/m", flag, "/nonexistent.pem"])
        assert code == 2 and "no such file" in out.err, out.err


def test_isolate_does_not_reimport_the_callers_script(tmp_path):
    count = tmp_path / "count.txt"
    script = tmp_path / "script.py"
    script.write_text(f"""import pathlib, sys
sys.path.insert(0, {str(ROOT / 'tests')!r})
pathlib.Path({str(count)!r}).open("a").write("x")
import numpy as np, explainer
from tiny import linear_classifier
if __name__ == "__main__":
    p = linear_classifier(pathlib.Path({str(tmp_path / 'm.onnx')!r}), np.full((2, 3, 8, 8), 0.5, np.float32))
    explainer.load_model(p, isolate=True)
""")
    env = {"PYTHONPATH": str(ROOT), "EXPLAINER_GRAPH_CACHE": "off", "PATH": "/usr/bin:/bin"}
    subprocess.run([sys.executable, str(script)], env=env, check=True, timeout=120)
    assert count.read_text() == "x"
