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


# --- every place the format can hold a tensor (issue 14, classes 1 and 2) ---

from hostile import HIDDEN_ONLY, PLACES, hidden_weights_model  # noqa: E402

from explainer.backends.onnx_safety import all_tensors  # noqa: E402

W = np.array([[1.0, -2.0], [3.0, 0.5], [-1.5, 4.0]], np.float32)  # (C=3, K=2)


def _expected_w(place):
    return np.full_like(W, W[0, 0]) if place == "constant_of_shape" else W


@pytest.mark.parametrize("place", PLACES + HIDDEN_ONLY)
def test_walk_visits_every_place(tmp_path, place):
    path = hidden_weights_model(tmp_path / "m", place, W)
    proto = onnx.load(str(path), load_external_data=False)
    external = [t for t in all_tensors(proto) if t.data_location == onnx.TensorProto.EXTERNAL]
    assert len(external) == (2 if place == "subgraph" else 1)


def _attack(tmp_path, kind):
    """Reference fields for an unsafe variant, after planting what it points at."""
    folder = tmp_path / "m"
    folder.mkdir(exist_ok=True)
    canary = tmp_path / "canary.bin"
    canary.write_bytes(b"\1" * 64)
    if kind == "hardlink":
        os.link(canary, folder / "hard.bin")
        return dict(location="hard.bin"), "hard link"
    if kind == "symlink":
        os.symlink(canary, folder / "link.bin")
        return dict(location="link.bin"), "symlink"
    return {"traversal": (dict(location="../canary.bin"), "'..'"),
            "absolute": (dict(location=str(canary)), "absolute"),
            "past_end": (dict(offset=10_000), "past the end"),
            "nul": (dict(location="w.bin\0x"), "malformed"),
            "long": (dict(location="x" * 5000), "malformed"),
            "long_part": (dict(location="y" * 300), "unsafe"),
            "offset_text": (dict(offset="abc"), "offset"),
            "offset_negative": (dict(offset="-4"), "offset"),
            "offset_float": (dict(offset="1e3"), "offset"),
            "offset_superscript": (dict(offset="\u00b2"), "offset"),
            "length_negative": (dict(length="-1"), "length"),
            "length_arabic": (dict(length="\u0663"), "length")}[kind]


ATTACKS = ("hardlink", "symlink", "traversal", "absolute", "past_end", "nul", "long", "long_part",
           "offset_text", "offset_negative", "offset_float", "offset_superscript", "length_negative",
           "length_arabic")
FAST = {("sparse_initializer", "hardlink"), ("function", "symlink"), ("constant", "traversal"),
        ("training_info", "hardlink"), ("function_default", "traversal"),
        ("subgraph", "offset_superscript"), ("constant_of_shape", "nul"), ("initializer", "length_arabic")}


@pytest.mark.parametrize("place, kind", [
    pytest.param(p, k, marks=() if (p, k) in FAST else pytest.mark.slow) for p in PLACES + HIDDEN_ONLY
    for k in ATTACKS])
def test_unsafe_reference_refused_in_every_place(tmp_path, place, kind):
    fields, reason = _attack(tmp_path, kind)
    path = hidden_weights_model(tmp_path / "m", place, W, **fields)
    with pytest.raises(explainer.InputError, match=reason):
        explainer.load_model(path)


DERIVED = ("activations", "gradients", "hidden_units", "linear_head")


@pytest.mark.parametrize("place, derived", [(p, d) for p in PLACES for d in DERIVED
                                            if d != "linear_head" or p in ("initializer", "constant")])
def test_derived_models_read_weights_only_from_the_model_folder(tmp_path, monkeypatch, place, derived):
    """A decoy ``w.bin`` in the working directory must never become weights of a derived model."""
    path = hidden_weights_model(tmp_path / "m", place, W)
    work = tmp_path / "cwd"
    work.mkdir()
    (work / "w.bin").write_bytes((W * 100 + 7).tobytes())
    monkeypatch.chdir(work)
    w = _expected_w(place)
    model = explainer.load_model(path, device="cpu", size=(8, 8))
    x = np.random.default_rng(0).normal(size=(2, 3, 8, 8)).astype(np.float32)
    logits = x.mean(axis=(2, 3)) @ w  # hand-derived: GAP then W
    if derived == "activations":
        got = model.activations(x, ["logits"])["logits"]
        np.testing.assert_allclose(got, logits, rtol=1e-5, atol=1e-5)
    elif derived == "gradients" and place in ("sparse_initializer", "function"):
        with pytest.raises(explainer.InputError, match="cannot (load|differentiate)"):  # not built: no leak
            model.gradients(x, np.ones((2, 2), np.float32), np.zeros((2, 2), np.float32))
    elif derived == "gradients":
        onehot = np.tile(np.array([[0.0, 1.0]], np.float32), (2, 1))
        out, grad, _ = model.gradients(x, onehot, np.zeros_like(onehot))
        np.testing.assert_allclose(out, logits, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(grad, np.broadcast_to(w[None, :, 1, None, None] / 64, x.shape), rtol=1e-5)
    elif derived == "hidden_units":
        units = model.hidden_unit_model("logits")
        np.testing.assert_allclose(units.predict(x), logits, rtol=1e-5, atol=1e-5)
    else:
        _, fc = model.linear_head()
        np.testing.assert_allclose(fc, w.T, rtol=1e-6)
