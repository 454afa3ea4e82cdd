"""The ONNX Runtime backend: spec discovery, batching, preprocessing overrides."""

import json

import numpy as np
import pytest

import explainer
from explainer.backends.base import batch_slices
from tiny import feature_map_model, linear_classifier


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
def test_layout_is_discovered_and_predictions_agree(tmp_path, rng, layout):
    w = rng.normal(size=(5, 3, 6, 7)).astype(np.float32)
    model = explainer.load_model(linear_classifier(tmp_path / "m.onnx", w, layout=layout))
    assert model.spec.preprocessing.layout == layout
    assert model.spec.input_shape == (3, 6, 7) and model.spec.num_classes == 5
    x = rng.normal(size=(4, 3, 6, 7)).astype(np.float32)
    expected = np.einsum("kchw,nchw->nk", w, x)
    np.testing.assert_allclose(model.predict(x), expected, rtol=1e-4, atol=1e-5)


def test_fixed_batch_one_splits_and_pads(tmp_path, rng):
    w = rng.normal(size=(3, 1, 4, 4)).astype(np.float32)
    model = explainer.load_model(linear_classifier(tmp_path / "m.onnx", w, batch=3))
    x = rng.normal(size=(7, 1, 4, 4)).astype(np.float32)  # 3 + 3 + 1 (padded to 3)
    np.testing.assert_allclose(model.predict(x), np.einsum("kchw,nchw->nk", w, x), rtol=1e-4, atol=1e-5)
    assert model.spec.max_batch_size == 3


def test_preprocessing_from_metadata_and_overrides(tmp_path, rng):
    pre = {"size": [4, 4], "layout": "NCHW", "scale": 1.0, "mean": [127, 127, 127], "std": [128, 128, 128]}
    path = linear_classifier(tmp_path / "m.onnx", np.ones((2, 3, 4, 4), np.float32), preprocessing=pre)
    model = explainer.load_model(path)
    assert model.spec.preprocessing_source == "metadata"
    assert model.spec.preprocessing.mean == (127, 127, 127)
    pixels = np.full((4, 4, 3), 255, np.uint8)
    x = explainer.preprocess(pixels, model.spec.preprocessing)
    np.testing.assert_allclose(x, np.full((1, 3, 4, 4), 1.0), rtol=1e-6)  # (255-127)/128
    other = explainer.load_model(path, mean=[0.0], std=[255.0], scale=1.0)
    assert other.spec.preprocessing_source == "options"
    np.testing.assert_allclose(explainer.preprocess(pixels, other.spec.preprocessing), 1.0)


def test_size_must_be_known_for_dynamic_spatial_models(tmp_path):
    import onnx
    path = linear_classifier(tmp_path / "m.onnx", np.ones((2, 3, 4, 4), np.float32))
    m = onnx.load(str(path))
    for d in m.graph.input[0].type.tensor_type.shape.dim[2:]:
        d.dim_param = "S"
    onnx.save(m, str(path))
    with pytest.raises(ValueError, match="--size"):
        explainer.load_model(path)
    assert explainer.load_model(path, size=(4, 4)).spec.input_shape == (3, 4, 4)


def test_labels_from_labels_txt(tmp_path):
    path = linear_classifier(tmp_path / "m.onnx", np.ones((2, 3, 4, 4), np.float32))
    assert explainer.load_model(path).spec.labels == ("class 0", "class 1")
    (tmp_path / "labels.txt").write_text("cat\ndog\n")
    model = explainer.load_model(path)
    assert model.spec.labels == ("cat", "dog")
    e = explainer.occlusion_sensitivity(model, np.ones((1, 3, 4, 4), np.float32), "dog", mask_size=2)
    assert e.target == 1 and e.label == "dog"


def test_non_classifiers_are_refused(tmp_path):
    with pytest.raises(ValueError, match="not an image classifier"):
        explainer.load_model(feature_map_model(tmp_path / "f.onnx"))
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"this is not protobuf \x00\xff" * 10)
    with pytest.raises(ValueError, match="not a readable ONNX model|cannot load"):
        explainer.load_model(bad)
    with pytest.raises(ValueError, match="no such model"):
        explainer.load_model(tmp_path / "missing.onnx")


def test_batch_slices():
    assert batch_slices(7, 3) == [slice(0, 3), slice(3, 6), slice(6, 7)]
    assert batch_slices(0, 3) == []
    with pytest.raises(ValueError):
        batch_slices(3, 0)


def test_bundled_model_metadata(bundled):
    spec = bundled.spec
    assert spec.input_shape == (3, 224, 224) and spec.num_classes == 1000
    assert spec.labels[967] == "espresso" and spec.output_kind == "logits"
    assert spec.preprocessing.resize == "crop" and spec.preprocessing_source == "metadata"
    assert spec.max_batch_size is None and len(spec.sha256) == 64
    json.loads(spec.preprocessing.to_json())


@pytest.mark.parametrize("name, classes", [("coffee", {967}), ("chelsea", set(range(281, 286))),
                                           ("rocket", {657, 744, 812})])
def test_bundled_model_classifies_skimage_images(bundled, name, classes):
    import skimage.data
    top = explainer.classify(bundled, getattr(skimage.data, name)(), top=1)[0]
    assert top["index"] in classes, top
