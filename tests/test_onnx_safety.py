"""External data that points outside the model's folder is refused before any read."""

import os

import numpy as np
import onnx
import pytest

import explainer
from explainer.backends.onnx_safety import file_sha256
from tiny import linear_classifier


def _external_model(folder, location="weights.bin"):
    """A linear classifier whose weight tensor lives in an external file."""
    folder.mkdir(parents=True, exist_ok=True)
    w = np.arange(2 * 3 * 8 * 8, dtype=np.float32).reshape(2, 3, 8, 8) / 1000
    path = linear_classifier(folder / "plain.onnx", w)
    m = onnx.load(str(path))
    onnx.save(m, str(folder / "m.onnx"), save_as_external_data=True, all_tensors_to_one_file=True,
              location=location, size_threshold=0)
    return folder / "m.onnx", w


def _set_location(path, **fields):
    m = onnx.load(str(path), load_external_data=False)
    for t in m.graph.initializer:
        for entry in t.external_data:
            if entry.key in fields:
                entry.value = str(fields[entry.key])
    onnx.save(m, str(path))


def test_good_external_data_loads_and_is_hashed(tmp_path):
    path, w = _external_model(tmp_path / "model")
    model = explainer.load_model(path)
    x = np.ones((1, 3, 8, 8), np.float32)
    np.testing.assert_allclose(model.predict(x)[0], w.reshape(2, -1).sum(axis=1), rtol=1e-5)
    e = explainer.occlusion_sensitivity(model, x, mask_size=4)
    assert e.model_files == {"weights.bin": file_sha256(tmp_path / "model" / "weights.bin")}


@pytest.mark.parametrize("location, reason", [
    ("../canary.bin", "'..'"), ("/etc/hostname", "absolute"), ("sub/../../canary.bin", "'..'"),
    ("C:/x.bin", "absolute"), ("missing.bin", "missing")])
def test_traversal_is_refused(tmp_path, location, reason):
    path, _ = _external_model(tmp_path / "model")
    (tmp_path / "canary.bin").write_bytes(b"\0" * 1000)
    _set_location(path, location=location)
    with pytest.raises(ValueError, match=reason):
        explainer.load_model(path)


def test_symlink_and_hardlink_are_refused(tmp_path):
    path, _ = _external_model(tmp_path / "model")
    canary = tmp_path / "canary.bin"
    canary.write_bytes((tmp_path / "model" / "weights.bin").read_bytes())
    os.symlink(canary, tmp_path / "model" / "link.bin")
    _set_location(path, location="link.bin")
    with pytest.raises(ValueError, match="symlink"):
        explainer.load_model(path)
    os.link(canary, tmp_path / "model" / "hard.bin")
    _set_location(path, location="hard.bin")
    with pytest.raises(ValueError, match="hard link"):
        explainer.load_model(path)


def test_range_past_end_and_size_cap(tmp_path):
    path, _ = _external_model(tmp_path / "model")
    _set_location(path, offset=10_000_000)
    with pytest.raises(ValueError, match="past the end"):
        explainer.load_model(path)
    with pytest.raises(ValueError, match="over the limit"):
        explainer.load_model(linear_classifier(tmp_path / "p.onnx", np.ones((2, 3, 8, 8), np.float32)),
                             max_model_bytes=100)
