"""The on-disk cache of gradient graphs: hits, verification, and turning it off."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from explainer.backends import graph_cache
from explainer.backends.onnx_gradients import gradient_bytes
from explainer.backends.onnxruntime import OnnxModel
from test_incremental import conv_net


@pytest.fixture
def folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv(graph_cache.ENV, str(tmp_path / "graphs"))
    return tmp_path / "graphs"


def test_round_trip_and_checks(folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    key = graph_cache.cache_key("abc", "gradient", layer=None, relu="standard")
    assert key != graph_cache.cache_key("abd", "gradient", layer=None, relu="standard")
    assert graph_cache.load(key) is None
    assert graph_cache.store(key, b"graph bytes", {"sample_bytes": 7})
    assert graph_cache.load(key) == (b"graph bytes", {"sample_bytes": 7, "sha256": graph_cache.load(key)[1]["sha256"]})
    assert oct((folder / f"{key}.onnx").stat().st_mode & 0o777) == "0o600"
    (folder / f"{key}.onnx").write_bytes(b"graph bytez")  # changed behind the cache's back
    assert graph_cache.load(key) is None
    graph_cache.store(key, b"graph bytes", {})
    os.chmod(folder / f"{key}.json", 0o666)  # writable by others: not trusted
    assert graph_cache.load(key) is None
    monkeypatch.setenv(graph_cache.ENV, "off")
    assert graph_cache.cache_dir() is None and graph_cache.load(key) is None
    assert not graph_cache.store(key, b"x", {})


def test_gradient_graph_comes_from_the_cache(folder: Path, tmp_path: Path) -> None:
    path = conv_net(tmp_path / "net.onnx")
    x = np.random.default_rng(0).normal(size=(2, 3, 48, 48)).astype(np.float32)
    w = np.zeros((2, 5), np.float32)
    w[:, 1] = 1.0
    first = OnnxModel(path, device="cpu")
    _, plain, _ = first.gradients(x, w, 0 * w)
    assert len(list(folder.glob("*.onnx"))) == 1
    # put the guided-backprop graph under the standard key: a fresh model must now use it,
    # which proves the graph is read from the cache and not rebuilt
    guided, per_sample = gradient_bytes(first, None, "guided")
    key = graph_cache.cache_key(first.spec.sha256 + "{}", "gradient", layer=None, relu="standard")
    graph_cache.store(key, guided, {"sample_bytes": per_sample})
    _, got, _ = OnnxModel(path, device="cpu").gradients(x, w, 0 * w)
    _, want, _ = OnnxModel(path, device="cpu").gradients(x, w, 0 * w, relu="guided")
    assert not np.allclose(plain, want)
    np.testing.assert_array_equal(got, want)
    (folder / f"{key}.onnx").write_bytes(guided[:-1] + b"\0")  # corrupt: hash fails, rebuilt
    _, again, _ = OnnxModel(path, device="cpu").gradients(x, w, 0 * w)
    np.testing.assert_array_equal(again, plain)


def test_probe_verdict_is_remembered_only_after_a_pass(folder: Path, tmp_path: Path) -> None:
    import json

    from tiny import feature_map_model

    path = conv_net(tmp_path / "net.onnx")
    OnnxModel(path, device="cpu", isolate=True)
    kinds = [json.loads(p.read_text())["kind"] for p in folder.glob("*.json")]
    assert kinds == ["probe"]
    bad = feature_map_model(tmp_path / "features.onnx")  # loads and runs, but is no classifier
    with pytest.raises(Exception, match="not an image classifier"):
        OnnxModel(bad, device="cpu", isolate=True)
    assert len(list(folder.glob("*.json"))) == 2  # the probe itself passed: remembered
