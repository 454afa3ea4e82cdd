"""Hostile models and images through the real CLI: never a traceback, a hang or a stray read."""

import os
import time
import warnings

import numpy as np

from explainer.cli import main
from hostile import image_corpus, onnx_corpus
from tiny import linear_classifier

LIMIT_S = 30


def _run(capsys, args):
    t0 = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:  # a warning would be a second stderr line
        warnings.simplefilter("always")
        code = main(args)
    elapsed = time.perf_counter() - t0
    assert not caught, [f"{w.category.__name__}: {w.message}" for w in caught]
    out = capsys.readouterr()
    assert elapsed < LIMIT_S, f"{args} took {elapsed:.1f} s"
    assert "Traceback" not in out.err and "internal error" not in out.err, out.err
    if code != 0:
        assert code == 2, (args, code, out.err)
        lines = out.err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("explainer: error:"), out.err
    return code, out


def test_hostile_onnx_corpus(tmp_path, capsys):
    folder = tmp_path / "models"
    folder.mkdir()
    canary = tmp_path / "canary.bin"
    os.mkfifo(canary)  # any open() of it for reading would block: a read shows up as a hang
    cases = onnx_corpus(folder, canary)
    assert len(cases) >= 130
    image = tmp_path / "img.npy"
    np.save(image, np.zeros((1, 3, 8, 8), np.float32))
    codes = {f"{c.parent.name}/{c.name}": _run(capsys, ["classify", str(image), "--model", str(c),
                                                          "--max-model-bytes", "2000000"])[0] for c in cases}
    # byte mutations inside the weights leave a valid model, which then just runs
    refused = {name for name, code in codes.items() if code == 2}
    assert refused >= {name for name in codes if "/mut" not in name}
    assert _run(capsys, ["classify", str(image), "--model", str(cases[0]), "--max-model-bytes", "10"])[0] == 2


def test_hostile_image_corpus(tmp_path, capsys):
    folder = tmp_path / "images"
    folder.mkdir()
    model = linear_classifier(tmp_path / "tiny.onnx", np.ones((2, 3, 8, 8), np.float32),
                              preprocessing={"size": [8, 8]})
    cases = image_corpus(folder)
    assert len(cases) >= 50
    out_dir = tmp_path / "out"
    results = {c.name: _run(capsys, ["explain", str(c), "--model", str(model), "--method", "occlusion",
                                     "--mask-size", "4", "--out", str(out_dir), "--quiet"])[0] for c in cases}
    valid = {"ok.png", "ok.jpg", "anim.gif", "tiny.png", "thin.png", "okpix.npy", "oktensor.npy", "noext",
             "mode_L.png", "mode_LA.png", "mode_RGBA.png", "mode_P.png", "mode_1.png", "mode_I_16.png",
             "mode_CMYK.jpg", "thin_tall.png", "dark16.png"} | {f"exif{o}.jpg" for o in range(1, 9)}
    assert {n for n, c in results.items() if c == 0} >= valid
    for bad in ["bomb.png", "nan.npy", "inf.npy", "pickle.npy", "shape.npy", "floatpix.npy", "svg.svg",
                "pdf.pdf", "empty.png", "text.png", "dir.png", "passwd.png", "trunc0.png", "junk0.png"]:
        assert results[bad] == 2, bad
    written = sorted(p.name for p in out_dir.iterdir())
    assert all(not n.startswith(".tmp") for n in written)  # no temporary leftovers
    assert {p.name for p in tmp_path.iterdir()} == {"images", "tiny.onnx", "out"}  # nothing outside --out
