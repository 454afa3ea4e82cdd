"""explainer.from_function: a plain callable runs every black-box method, with the ONNX backend's maps."""

from __future__ import annotations

import pickle

import numpy as np
import onnxruntime as ort
import pytest
from PIL import Image

import explainer
from explainer.errors import InputError
from tiny import linear_classifier

PRE = {"size": [12, 12], "mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]}


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    """The same linear classifier as an ONNX model and as a function running the same file."""
    d = tmp_path_factory.mktemp("function_backend")
    w = np.random.default_rng(7).normal(size=(4, 3, 12, 12)).astype(np.float32)
    path = linear_classifier(d / "m.onnx", w, preprocessing=PRE)
    onnx_model = explainer.load_model(path, device="cpu")
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    fn = explainer.from_function(lambda b: session.run(None, {"input": b})[0], input_shape=(3, 12, 12),
                                 preprocessing=onnx_model.spec.preprocessing, labels=list("abcd"))
    images = d / "data"
    images.mkdir()
    rng = np.random.default_rng(1)
    for i in range(6):
        Image.fromarray(rng.integers(0, 256, (12, 12, 3), dtype=np.uint8)).save(images / f"{i}.png")
    image = rng.integers(0, 256, (12, 12, 3), dtype=np.uint8)
    return onnx_model, fn, image, images


CASES = {
    "occlusion": lambda m, img, data: explainer.occlusion_sensitivity(m, img, mask_size=4, stride=2),
    "lime": lambda m, img, data: explainer.image_lime(m, img, num_samples=64, num_features=9,
                                                      segmentation="grid", model_type="linear"),
    "rise": lambda m, img, data: explainer.rise(m, img, num_masks=64, grid_size=3, mini_batch_size=16),
    "prediction_difference": lambda m, img, data: explainer.prediction_difference(
        m, img, window_size=4, stride=4, num_samples=3, data=data),
}


@pytest.mark.parametrize("method", sorted(CASES))
def test_callable_maps_equal_onnx_maps(pair, method):
    onnx_model, fn, image, data = pair
    want, got = CASES[method](onnx_model, image, data), CASES[method](fn, image, data)
    assert got.target == want.target and got.map.shape == want.map.shape
    assert np.array_equal(got.map, want.map), np.abs(got.map - want.map).max()
    assert got.to_dict()["backend"].startswith("function")


def test_numpy_function_matches_within_rounding(pair):
    onnx_model, _, image, _ = pair
    session = ort.InferenceSession(onnx_model.spec.source, providers=["CPUExecutionProvider"])
    mat = np.asarray(session.run(None, {"input": np.eye(432, dtype=np.float32).reshape(432, 3, 12, 12)})[0])
    fn = explainer.from_function(lambda b: b.reshape(len(b), -1).astype(np.float64) @ mat, input_shape=(3, 12, 12),
                                 preprocessing=onnx_model.spec.preprocessing)
    assert fn.spec.num_classes == 4 and fn.spec.labels[0] == "class 0"
    a = explainer.occlusion_sensitivity(onnx_model, image, mask_size=4, stride=2, score="logit")
    b = explainer.occlusion_sensitivity(fn, image, mask_size=4, stride=2, score="logit")
    np.testing.assert_allclose(b.map, a.map, rtol=1e-4, atol=1e-4)


def test_layer_and_gradient_methods_refuse_a_function(pair):
    _, fn, image, _ = pair
    with pytest.raises(InputError, match="needs gradients"):
        explainer.grad_cam(fn, image)
    with pytest.raises(InputError, match="activations needs"):
        fn.activations(np.zeros((1, 3, 12, 12), np.float32), ["x"])
    with pytest.raises(InputError, match="cam reads the fully connected weights"):
        explainer.cam(fn, image)


def test_bad_functions_and_shapes(pair):
    with pytest.raises(InputError, match="input_shape must be"):
        explainer.from_function(lambda b: b, input_shape=(12, 12))
    broken = explainer.from_function(lambda b: np.zeros((len(b) + 1, 4)), input_shape=(3, 4, 4), num_classes=4)
    with pytest.raises(explainer.ModelError, match="returned shape"):
        broken.predict(np.zeros((2, 3, 4, 4), np.float32))

    def fails(b):
        raise RuntimeError("boom")
    with pytest.raises(explainer.ModelError, match="boom"):
        explainer.from_function(fails, input_shape=(3, 4, 4), num_classes=2).predict(np.zeros((1, 3, 4, 4), np.float32))


def scores_of_sum(batch: np.ndarray) -> np.ndarray:
    s = batch.reshape(len(batch), -1).sum(axis=1)
    return np.stack([s, -s], axis=1)


def test_descriptions_are_picklable_and_rebuild_the_model(pair):
    onnx_model, _, image, _ = pair
    x = np.random.default_rng(0).normal(size=(3, 3, 12, 12)).astype(np.float32)
    rebuilt = explainer.model_from_description(pickle.loads(pickle.dumps(onnx_model.describe())))
    assert np.array_equal(rebuilt.predict(x), onnx_model.predict(x)) and rebuilt.spec == onnx_model.spec
    fn = explainer.from_function(scores_of_sum, input_shape=(3, 12, 12), labels=["up", "down"])
    again = explainer.model_from_description(pickle.loads(pickle.dumps(fn.describe())))
    assert np.array_equal(again.predict(x), fn.predict(x)) and again.spec == fn.spec
    with pytest.raises(InputError, match="unknown backend"):
        explainer.model_from_description({"backend": "nope"})
