"""Hangs and blow-ups (issue 14, classes 5-8): looping models, thin images, ulimit -v, huge sizes."""

import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import explainer
import explainer.imaging as imaging
from explainer.cli import main
from hostile import looping_model
from tiny import linear_classifier

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def short_limit(monkeypatch):
    monkeypatch.setenv("EXPLAINER_MODEL_TIMEOUT", "2")


@pytest.mark.parametrize("threshold, isolate", [
    (0.0, True), (-1.0, False), pytest.param(-1.0, True, marks=pytest.mark.slow),
    pytest.param(0.0, False, marks=pytest.mark.slow)])
def test_looping_models_are_refused_with_the_true_reason(short_limit, tmp_path, threshold, isolate):
    path = looping_model(tmp_path / "loop.onnx", threshold)
    t0 = time.perf_counter()
    with pytest.raises(explainer.InputError, match="did not finish .*within 2 s"):
        explainer.load_model(path, isolate=isolate)
    assert time.perf_counter() - t0 < 15


def test_a_model_that_loops_later_is_stopped_with_the_true_reason(short_limit, tmp_path, capsys):
    path = looping_model(tmp_path / "loop.onnx", 1e4)  # passes the probe, loops on a bright input
    model = explainer.load_model(path, isolate=True)
    t0 = time.perf_counter()
    with pytest.raises(explainer.ModelError, match="did not finish one batch within 2 s"):
        model.predict(np.full((2, 3, 8, 8), 100, np.float32))
    assert time.perf_counter() - t0 < 10
    np.save(tmp_path / "x.npy", np.full((1, 3, 8, 8), 100, np.float32))
    assert main(["classify", str(tmp_path / "x.npy"), "--model", str(path)]) == 3
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "did not finish" in err[0], err


THIN = [(1, 10000), (10000, 1), (2, 40000), (1, 1), (3, 7)]


@pytest.mark.parametrize("shape", THIN)
@pytest.mark.parametrize("size, fraction", [((224, 224), 0.875), ((300, 200), 0.05), ((8, 8), 1.0)])
def test_the_crop_loader_never_builds_a_huge_intermediate(tmp_path, shape, size, fraction):
    """Thin images cost little: the crop resize of the shared loader stays under its pixel cap."""
    Image.fromarray(np.random.default_rng(0).integers(0, 256, shape + (3,), dtype=np.uint8)).save(tmp_path / "t.png")
    spec = imaging.Preprocessing(size=size, resize="crop", crop_fraction=fraction)
    pixels = imaging.read_image(tmp_path / "t.png")
    nh, nw, top, left = imaging.crop_geometry(pixels.shape, spec)
    t0 = time.perf_counter()
    fitted = imaging.fit_pixels(pixels, spec)
    assert time.perf_counter() - t0 < 1.0 and fitted.shape == size + (3,)
    x0, y0, x1, y1 = imaging.crop_box(pixels.shape, spec)
    assert 0 <= x0 < x1 <= shape[1] + 1e-6 and 0 <= y0 < y1 <= shape[0] + 1e-6


@pytest.mark.parametrize("shape", [(30, 50), (17, 9), (64, 64), (5, 7)])
def test_the_capped_crop_samples_what_the_full_resize_would(monkeypatch, shape):
    pixels = np.random.default_rng(1).integers(0, 256, shape + (3,), dtype=np.uint8)
    spec = imaging.Preprocessing(size=(12, 10), resize="crop", crop_fraction=0.5)
    full = imaging.fit_pixels(pixels, spec).astype(int)
    monkeypatch.setattr(imaging, "MAX_INTERMEDIATE_PIXELS", 0)
    capped = imaging.fit_pixels(pixels, spec).astype(int)
    assert np.abs(full - capped).mean() < 1.0 and np.abs(full - capped).max() <= 8


@pytest.mark.parametrize("limit_gib", [3, pytest.param(6, marks=pytest.mark.slow)])
def test_a_hard_ulimit_v_is_kept_and_the_model_runs(tmp_path, limit_gib):
    model = linear_classifier(tmp_path / "m.onnx", np.ones((2, 3, 8, 8), np.float32))
    np.save(tmp_path / "x.npy", np.zeros((1, 3, 8, 8), np.float32))
    limit = limit_gib << 30
    code = ("import resource, sys; from explainer.backends.isolation import address_space_limit; "
            "soft, hard = address_space_limit(16 << 30); assert soft <= %d and hard <= %d, (soft, hard); "
            "from explainer.cli import main; sys.exit(main(sys.argv[1:]))" % (limit, limit))
    env = {**os.environ, "PYTHONPATH": str(ROOT), "EXPLAINER_GRAPH_CACHE": "off"}
    proc = subprocess.run([sys.executable, "-c", code, "classify", str(tmp_path / "x.npy"), "--model", str(model)],
                          env=env, capture_output=True, text=True, timeout=120,
                          preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_AS, (limit, limit)))
    assert proc.returncode == 0, proc.stderr


@pytest.mark.parametrize("method, option, value", [
    ("lime", "--num-samples", 10 ** 12), ("lime", "--num-samples", 2 ** 62), ("rise", "--num-masks", 10 ** 12),
    ("rise", "--num-masks", 10 ** 15), ("integrated-gradients", "--num-steps", 10 ** 13),
    ("integrated-gradients", "--num-steps", 2 ** 61)])
def test_huge_counts_are_refused_with_the_number(capsys, tmp_path, method, option, value):
    model = linear_classifier(tmp_path / "m.onnx", np.ones((2, 3, 8, 8), np.float32))
    np.save(tmp_path / "x.npy", np.zeros((1, 3, 8, 8), np.float32))
    t0 = time.perf_counter()
    code = main(["explain", str(tmp_path / "x.npy"), "--model", str(model), "--method", method, option, str(value),
                 "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "GiB of memory" in err[0], err
    assert time.perf_counter() - t0 < 10 and not (tmp_path / "o").exists()


def _npy_claiming(path, descr, shape, data=b"\0" * 64):
    header = repr({"descr": descr, "fortran_order": False, "shape": shape}).encode()
    header += b" " * (-(len(header) + 11) % 64) + b"\n"
    path.write_bytes(b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little") + header + data)
    return path


@pytest.mark.parametrize("descr, shape", [("<f4", (30000, 1000, 1000)), ("<f4", (1, 3, 10 ** 6, 10 ** 6)),
                                          ("|u1", (2 ** 40, 1, 3)), ("<f8", (1, 3, 8, 8)), ("|u1", (9, 9, 3))])
def test_npy_headers_that_claim_more_than_the_file_holds_are_refused(capsys, tmp_path, descr, shape):
    model = linear_classifier(tmp_path / "m.onnx", np.ones((2, 3, 8, 8), np.float32))
    path = _npy_claiming(tmp_path / "claim.npy", descr, shape)
    code = main(["classify", str(path), "--model", str(model)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "header claims" in err[0], err


class _TcpServer:
    """A real TCP server on 127.0.0.1 that hands every connection to ``_answer`` in a thread."""

    def __init__(self):
        import socket
        import threading

        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(50)
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        import threading

        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._answer, args=(conn,), daemon=True).start()

    def _answer(self, conn):
        raise NotImplementedError


class _Dribbler(_TcpServer):
    """Answers every HTTP request with headers, then one byte every ``gap`` s (or, with
    ``gap=None``, nothing at all after the headers)."""

    def __init__(self, gap):
        self.gap = gap
        super().__init__()

    def _answer(self, conn):
        try:
            conn.recv(65536)
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n")
            while True:
                time.sleep(self.gap or 3600)
                conn.sendall(b" ")
        except OSError:
            pass
        finally:
            conn.close()


@pytest.mark.parametrize("gap, timeout", [(0.5, 1.5), pytest.param(2.0, 1.0, marks=pytest.mark.slow),
                                          (None, 1.0), pytest.param(0.2, 2.5, marks=pytest.mark.slow)])
def test_a_dribbling_server_cannot_outlast_the_request_timeout(capsys, tmp_path, gap, timeout):
    server = _Dribbler(gap)
    np.save(tmp_path / "x.npy", np.zeros((1, 3, 8, 8), np.float32))
    t0 = time.perf_counter()
    code = main(["classify", str(tmp_path / "x.npy"), "--model", f"http://127.0.0.1:{server.port}/m",
                 "--timeout", str(timeout), "--retry-seconds", "1"])
    elapsed = time.perf_counter() - t0
    server.sock.close()
    err = capsys.readouterr().err.strip().splitlines()
    assert code in (2, 3) and len(err) == 1 and ("timeout" in err[0] or "timed out" in err[0]), err
    assert elapsed < 3 * timeout + 3, elapsed


@pytest.mark.parametrize("layer", ["logits", "z"])
def test_derived_sessions_run_under_the_same_limit(short_limit, tmp_path, layer):
    model = explainer.load_model(looping_model(tmp_path / "loop.onnx", 1e4))
    bright = np.full((1, 3, 8, 8), 100, np.float32)
    with pytest.raises(explainer.ModelError, match="did not finish one batch within 2 s"):
        model.activations(bright, ["logits"])
    np.testing.assert_allclose(model.activations(bright / 1e4, [layer])[layer].ravel()[:2], [1.92, 1.92], rtol=1e-5)


class _Silent(_TcpServer):
    """Accepts connections and never says a word (a hung gRPC peer)."""

    def _answer(self, conn):
        time.sleep(3600)


@pytest.mark.parametrize("timeout", [1.0, 2.0])
def test_a_silent_grpc_server_cannot_outlast_the_request_timeout(capsys, tmp_path, timeout):
    """gRPC readiness and config calls carry the request timeout as their deadline (before: gRPC's
    own 20 s connection timeout, whatever --timeout said)."""
    server = _Silent()
    np.save(tmp_path / "x.npy", np.zeros((1, 3, 8, 8), np.float32))
    t0 = time.perf_counter()
    code = main(["classify", str(tmp_path / "x.npy"), "--model", f"grpc://127.0.0.1:{server.port}/m",
                 "--timeout", str(timeout), "--retry-seconds", "1"])
    elapsed = time.perf_counter() - t0
    server.sock.close()
    err = capsys.readouterr().err.strip().splitlines()
    assert code in (2, 3) and len(err) == 1 and "timed out" in err[0], err
    assert elapsed < 3 * timeout + 3, elapsed
