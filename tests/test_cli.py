"""The `explainer` command end to end on the bundled model, errors included."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from explainer.cli import main
from tiny import feature_map_model

EXAMPLES = Path(__file__).resolve().parent.parent / "models" / "efficientnet_lite0" / "examples"
COFFEE = str(EXAMPLES / "coffee.png")


def run(*args):
    """The real console entry point in a child process."""
    return subprocess.run([sys.executable, "-m", "explainer", *map(str, args)],
                          capture_output=True, text=True, timeout=300)


def test_classify(capsys):
    assert main(["classify", COFFEE, str(EXAMPLES / "rocket.png"), "--top", "3", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out[COFFEE][0]["index"] == 967 and out[COFFEE][0]["label"] == "espresso"
    assert len(out[COFFEE]) == 3


def test_inspect(capsys):
    assert main(["inspect", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["input"]["shape_nchw"] == [3, 224, 224]
    assert info["output"]["classes"] == 1000
    names = [layer["name"] for layer in info["layers"]]
    feature = info["default_feature_layer"]
    assert feature in names
    layer = info["layers"][names.index(feature)]
    assert layer["op"] == "Clip" and layer["shape"][2:] == [7, 7]


def test_explain_writes_three_files(tmp_path):
    out = tmp_path / "out"
    r = run("explain", COFFEE, "--method", "occlusion", "--out", out, "--save-input", "--json")
    assert r.returncode == 0, r.stderr
    assert "Traceback" not in r.stderr
    files = sorted(p.name for p in out.iterdir())
    assert files == ["coffee.input.npy", "coffee.occlusion.json", "coffee.occlusion.npy",
                     "coffee.occlusion.png"]
    m = np.load(out / "coffee.occlusion.npy")
    assert m.shape == (224, 224) and m.dtype == np.float32 and np.isfinite(m).all()
    meta = json.loads((out / "coffee.occlusion.json").read_text())
    assert meta["target"] == 967 and meta["label"] == "espresso"
    assert meta["params"]["mask_size"] == [45, 45] and meta["params"]["stride"] == [22, 22]
    assert meta["timings"]["forward_passes"] == 122 and len(meta["model_sha256"]) == 64
    assert np.load(out / "coffee.input.npy").shape == (1, 3, 224, 224)
    assert (out / "coffee.occlusion.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # the summary on stdout is the same record
    assert json.loads(r.stdout)[0]["target"] == 967


def test_explain_target_by_label_and_options(tmp_path, capsys):
    code = main(["explain", COFFEE, "--method", "occlusion", "--out", str(tmp_path), "--target", "cup",
                 "--mask-size", "60", "--stride", "56,40", "--mask-value", "0", "--mask-clipping", "off",
                 "--output-upsampling", "none", "--score", "logit", "--mini-batch-size", "7", "--json"])
    assert code == 0
    rec = json.loads(capsys.readouterr().out)[0]
    assert rec["target"] == 968 and rec["params"]["stride"] == [56, 40]
    assert rec["params"]["mask_value"] == [0.0, 0.0, 0.0]
    assert rec["params"]["num_masks"] == 3 * 5  # (224-60)//56+1 rows, (224-60)//40+1 cols


@pytest.fixture
def bad_inputs(tmp_path):
    text = tmp_path / "notes.png"
    text.write_text("hello, not an image")
    onnx_junk = tmp_path / "junk.onnx"
    onnx_junk.write_bytes(b"\x08\x07garbage" * 50)
    return {"text": text, "junk": onnx_junk, "features": feature_map_model(tmp_path / "feat.onnx")}


@pytest.mark.parametrize("case, message", [
    (["explain", "missing.png", "--method", "occlusion"], "no such image file"),
    (["explain", "{text}", "--method", "occlusion"], "not a readable image"),
    (["explain", COFFEE, "--method", "occlusion", "--model", "{junk}"], "not a readable ONNX model"),
    (["explain", COFFEE, "--method", "occlusion", "--model", "{features}"], "not an image classifier"),
    (["explain", COFFEE, "--method", "occlusion", "--model", "nothere.onnx"], "no such model file"),
    (["explain", COFFEE, "--method", "occlusion", "--target", "1000"], "not a class"),
    (["explain", COFFEE, "--method", "occlusion", "--target", "zebra crossing"], "not a class"),
    (["explain", COFFEE, "--method", "occlusion", "--mask-size", "300"], "larger than"),
    (["explain", COFFEE, "--method", "occlusion", "--stride", "-4"], "stride must be positive"),
    (["explain", COFFEE, "--method", "magic"], "invalid choice"),
    (["classify", "{text}"], "not a readable image"),
])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(tmp_path, capsys, bad_inputs, case, message):
    out = tmp_path / "out"
    args = [a.format(**bad_inputs) for a in case]
    if args[0] == "explain":
        args += ["--out", str(out)]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1 and err.startswith("explainer: error:")
    assert not out.exists()


def test_bad_input_in_a_real_process(tmp_path):
    r = run("explain", COFFEE, "--method", "occlusion", "--stride", "-1", "--out", tmp_path / "o")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "o").exists()


def test_stems_cannot_escape_out(tmp_path):
    from explainer.explanation import safe_stem
    assert safe_stem("../../etc/passwd") == "passwd"
    assert safe_stem("..hidden") == "hidden" and safe_stem("") == "image"


def test_byte_identical_across_batch_sizes_and_runs(tmp_path):
    outs = []
    for i, batch in enumerate(["128", "7", "128"]):
        out = tmp_path / str(i)
        assert main(["explain", COFFEE, "--method", "occlusion", "--out", str(out), "--quiet",
                     "--mini-batch-size", batch, "--stride", "44"]) == 0
        outs.append(out)
    for name in ["coffee.occlusion.npy", "coffee.occlusion.png"]:
        blobs = {(o / name).read_bytes() for o in outs}
        assert len(blobs) == 1, name


def test_resume_skips_finished_images(tmp_path, capsys):
    import shutil
    out = tmp_path / "out"
    images = []
    for name in ("a", "b"):
        images.append(tmp_path / f"{name}.png")
        shutil.copy(COFFEE, images[-1])
    args = ["explain", *map(str, images), "--method", "occlusion", "--out", str(out), "--stride", "60"]
    assert main(args) == 0
    first = {p.name: p.read_bytes() for p in out.iterdir()}
    (out / "b.occlusion.json").unlink()  # as if interrupted before b finished
    (out / "b.occlusion.npy").unlink()
    capsys.readouterr()
    assert main(args + ["--resume"]) == 0
    printed = capsys.readouterr().out
    assert "a.png" not in printed.split("skipped")[0] and "b.png" in printed
    again = {p.name: p.read_bytes() for p in out.iterdir()}
    assert again.keys() == first.keys()
    assert again["b.occlusion.npy"] == first["b.occlusion.npy"]


def test_duplicate_stems_are_refused(tmp_path, capsys):
    (tmp_path / "x").mkdir()
    import shutil
    shutil.copy(COFFEE, tmp_path / "x" / "coffee.png")
    assert main(["explain", COFFEE, str(tmp_path / "x" / "coffee.png"), "--method", "occlusion",
                 "--out", str(tmp_path / "out")]) == 2
    assert "share a file name" in capsys.readouterr().err
