"""Data-parallel CPU forward passes (OnnxModel.predict in pieces on one-thread sessions): the same
outputs as the main session, and never built from a file that changed or went away."""

from pathlib import Path

import numpy as np
import pytest

import explainer
from explainer.backends import onnxruntime as ortb
from explainer.backends.cpu_parallel import cpu_cores
from tiny import linear_classifier

BUNDLED = Path(__file__).resolve().parent.parent / "models" / "efficientnet_lite0" / "model.onnx"
needs_cores = pytest.mark.skipif(cpu_cores() < 2, reason="one CPU: whole batches on the main session")


@needs_cores
@pytest.mark.parametrize("n", [9, 16, 37])
def test_pieces_equal_the_main_session(tmp_path, rng, n):
    w = rng.normal(size=(4, 3, 6, 5)).astype(np.float32)
    model = explainer.load_model(linear_classifier(tmp_path / "m.onnx", w))
    x = rng.normal(size=(n, 3, 6, 5)).astype(np.float32)
    out = model.predict(x)
    assert len(model._pieces) == min(cpu_cores(), ortb.MAX_PIECE_WORKERS)  # the parallel path ran
    whole = model._run(x)  # the main session on the whole batch
    np.testing.assert_array_equal(out, whole)
    np.testing.assert_allclose(out, x.reshape(n, -1) @ w.reshape(4, -1).T, rtol=1e-4, atol=1e-5)


@needs_cores
def test_bundled_model_pieces_are_bitwise_equal(rng):
    model = explainer.load_model(str(BUNDLED))
    x = rng.random((20, 3, 224, 224), dtype=np.float32)
    np.testing.assert_array_equal(model.predict(x), model._run(x))


@needs_cores
def test_no_pieces_from_a_changed_or_missing_file(tmp_path, rng):
    w = rng.normal(size=(2, 3, 4, 4)).astype(np.float32)
    x = rng.normal(size=(12, 3, 4, 4)).astype(np.float32)
    changed = explainer.load_model(linear_classifier(tmp_path / "a.onnx", w))
    linear_classifier(tmp_path / "a.onnx", w * 2)  # swapped after the checks
    gone = explainer.load_model(linear_classifier(tmp_path / "b.onnx", w))
    (tmp_path / "b.onnx").unlink()
    for model in (changed, gone):
        out = model.predict(x)
        assert model._pieces == []  # the main session ran the batch
        np.testing.assert_allclose(out, x.reshape(12, -1) @ w.reshape(2, -1).T, rtol=1e-4, atol=1e-5)


def test_small_batches_stay_on_the_main_session(tmp_path, rng):
    w = rng.normal(size=(2, 3, 4, 4)).astype(np.float32)
    model = explainer.load_model(linear_classifier(tmp_path / "m.onnx", w))
    model.predict(rng.normal(size=(ortb.PIECE, 3, 4, 4)).astype(np.float32))
    assert not hasattr(model, "_pieces")
