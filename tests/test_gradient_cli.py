"""Every gradient method end to end through the command line on the bundled model."""

import json

import numpy as np
import pytest

from explainer.cli import main

IMAGE = "models/efficientnet_lite0/examples/chelsea.png"


@pytest.mark.parametrize("method, extra", [
    ("gradient", []), ("guided-backprop", ["--num-samples", "2", "--seed", "1"]), ("deconvnet", ["--score", "logit"]),
    ("integrated-gradients", ["--num-steps", "3", "--baseline", "zeros", "--integration", "trapezoid"]),
    ("grad-cam", ["--output-upsampling", "nearest"]), ("cam", [])])
def test_image_methods(tmp_path, capsys, method, extra):
    assert main(["explain", IMAGE, "--method", method, "--out", str(tmp_path), "--json", "--save-input"] + extra) == 0
    summary = json.loads(capsys.readouterr().out)[0]
    assert summary["label"] == "tiger cat" and summary["map_shape"] == [224, 224]
    assert np.load(tmp_path / f"chelsea.{method}.npy").shape == (224, 224)
    assert (tmp_path / f"chelsea.{method}.png").stat().st_size > 1000
    if method in ("grad-cam", "cam"):
        assert np.load(tmp_path / f"chelsea.{method}.feature_map.npy").shape == (7, 7)
    else:
        attributions = np.load(tmp_path / f"chelsea.{method}.attributions.npy")
        assert attributions.shape == (1, 3, 224, 224) and np.abs(attributions).max() > 0
    if method == "integrated-gradients":
        assert summary["params"]["integration"] == "trapezoid" and summary["params"]["completeness_gap"] >= 0


def test_deep_dream(tmp_path, capsys):
    args = ["explain", "--method", "deep-dream", "--target", "tiger cat", "--out", str(tmp_path), "--json",
            "--num-iterations", "1", "--pyramid-levels", "2", "--channels", "281,285"]
    assert main(args) == 0
    summary = json.loads(capsys.readouterr().out)[0]
    assert summary["params"]["channels"] == [281, 285] and summary["label"] == "tabby"
    assert {p.split("/")[-1] for p in summary["files"]} == {"deep-dream.class_281.png", "deep-dream.class_285.png",
                                                            "deep-dream.dreams.npy", "deep-dream.json"}
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.split("/")[-1] for p in summary["files"])


def test_bare_deep_dream_dreams_the_top_classes(tmp_path, capsys):
    assert main(["explain", "--method", "deep-dream", "--out", str(tmp_path), "--json",
                 "--num-iterations", "1", "--pyramid-levels", "1"]) == 0
    summary = json.loads(capsys.readouterr().out)[0]
    assert len(summary["params"]["channels"]) == 3
    assert sorted(p.name for p in tmp_path.glob("*.png")) == sorted(
        f"deep-dream.class_{c}.png" for c in summary["params"]["channels"])


def test_cli_errors(tmp_path, capsys):
    assert main(["explain", IMAGE, "--method", "grad-cam", "--out", str(tmp_path), "--feature-layer", "nope"]) == 2
    assert "nope" in capsys.readouterr().err
    assert main(["explain", IMAGE, "--method", "gradient", "--out", str(tmp_path), "--num-steps", "3"]) == 2
    assert "--num-steps does not apply to --method gradient" in capsys.readouterr().err
    assert main(["explain", "--method", "deep-dream", "--out", str(tmp_path), "--layer", "nope"]) == 2
    assert "nope" in capsys.readouterr().err
