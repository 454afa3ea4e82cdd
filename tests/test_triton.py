"""The Triton backend against a real local Triton server (nvidia-pytriton's tritonserver).

The first run sets up the server's environment (conftest: explainer.backends.triton.server.ensure_venv,
about a minute); the server starts in a few seconds.
"""

import json
import threading
import time
import urllib.request

import numpy as np
import pytest

import explainer
from explainer.backends.triton.endpoints import headers_dict, parse_endpoints
from explainer.backends.triton.transport import TritonError
from explainer.cli import main
from explainer.backends.triton.repo import python_backend_repo, write_model
from explainer.backends.triton.server import PROJECT, LocalTritonServer, free_port
from tiny import linear_classifier

COFFEE = str(PROJECT / "models" / "efficientnet_lite0" / "examples" / "coffee.png")
PRE = {"size": [16, 16], "mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]}
SECRET = "s3cr3t-t0ken-value"

def _same(a, b, tol: float = 1e-5) -> bool:
    """Maps equal to ``tol``, NaN (pixels no occlusion window covers) in the same places."""
    return bool(np.array_equal(np.isnan(a), np.isnan(b)) and np.nanmax(np.abs(a - b)) <= tol)



@pytest.fixture(scope="session")
def tiny_onnx(tmp_path_factory):
    d = tmp_path_factory.mktemp("tiny")
    w = np.random.default_rng(7).normal(size=(3, 3, 16, 16)).astype(np.float32) * 0.1
    big = np.random.default_rng(8).normal(size=(2, 3, 48, 48)).astype(np.float32) * 0.01
    return {"tiny": linear_classifier(d / "tiny.onnx", w, preprocessing=PRE),
            "big": linear_classifier(d / "big.onnx", big, preprocessing={**PRE, "size": [48, 48]}),
            "bare": linear_classifier(d / "bare.onnx", np.ones((2, 3, 4, 4), np.float32))}


@pytest.fixture(scope="session")
def server(tmp_path_factory, tiny_onnx):
    """One server: tiny (max_batch_size 4) and the bundled model."""
    repo = tmp_path_factory.mktemp("repo")
    write_model(repo, tiny_onnx["tiny"], "tiny", max_batch_size=4)
    write_model(repo, PROJECT / "models" / "efficientnet_lite0" / "model.onnx", "efficientnet_lite0")
    write_model(repo, tiny_onnx["bare"], "bare")
    with LocalTritonServer(repo, http_port=0, grpc_port=0) as s:
        yield s


def _x(shape=(1, 3, 16, 16), seed=1):
    return np.random.default_rng(seed).normal(size=shape).astype(np.float32)


OPTS = dict(mask_size=3, stride=2, output_upsampling="none", mini_batch_size=16)


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_same_map_as_onnx_for_every_concurrency(server, tiny_onnx, protocol):
    ref = explainer.occlusion_sensitivity(explainer.load_model(str(tiny_onnx["tiny"])), _x(), 1, **OPTS)
    url = f"{server.grpc_url if protocol == 'grpc' else server.http_url}/tiny"
    for concurrency in (1, 2, 8):
        model = explainer.load_model(url, concurrency=concurrency, headers=[f"Authorization: Bearer {SECRET}"])
        assert model.in_flight == concurrency and model.spec.max_batch_size == 4 < OPTS["mini_batch_size"]
        e = explainer.occlusion_sensitivity(model, _x(), 1, **OPTS)
        assert _same(e.map, ref.map) and e.target == ref.target
        assert e.backend == f"triton ({url})" and SECRET not in json.dumps(e.to_dict())
        assert model.spec.preprocessing.mean == (0.5, 0.5, 0.5) and model.spec.preprocessing_source == "metadata"


def test_predict_splits_and_keeps_order(server, tiny_onnx):
    local = explainer.load_model(str(tiny_onnx["tiny"]))
    model = explainer.load_model(f"{server.grpc_url}/tiny", concurrency=3)
    batch = _x((23, 3, 16, 16), seed=3)
    np.testing.assert_allclose(model.predict(batch), local.predict(batch), atol=1e-5)
    assert model.predict(batch[:0]).shape == (0, 3)


def test_replica_that_is_down_is_set_aside(server, tiny_onnx):
    dead = f"grpc://127.0.0.1:{free_port()}/tiny"
    model = explainer.load_model(f"{dead},{server.http_url}/tiny,{server.grpc_url}/tiny", concurrency=4)
    ref = explainer.occlusion_sensitivity(explainer.load_model(str(tiny_onnx["tiny"])), _x(), 1, **OPTS)
    e = explainer.occlusion_sensitivity(model, _x(), 1, **OPTS)
    assert _same(e.map, ref.map)
    assert model.pool.replicas[0].aside_until > 0


def test_bundled_model_end_to_end_cli(server, tmp_path, capsys):
    url = f"{server.grpc_url}/efficientnet_lite0"
    args = ["explain", COFFEE, "--method", "occlusion", "--json", "--stride", "56"]  # 16 masks: cheap
    assert main(args + ["--out", str(tmp_path / "local")]) == 0
    assert main(args + ["--out", str(tmp_path / "remote"), "--model", url,
                        "--header", f"Authorization: Bearer {SECRET}"]) == 0
    out = capsys.readouterr()
    a = np.load(tmp_path / "local" / "coffee.occlusion.npy")
    b = np.load(tmp_path / "remote" / "coffee.occlusion.npy")
    assert _same(a, b)
    meta = json.loads((tmp_path / "remote" / "coffee.occlusion.json").read_text())
    assert meta["target"] == 967 and meta["label"] == "espresso" and meta["backend"] == f"triton ({url})"
    every = out.out + out.err + "".join(p.read_bytes().decode("latin-1") for p in (tmp_path / "remote").iterdir())
    assert SECRET not in every


def _fails_cleanly(capsys, tmp_path, args, message, code=2):
    out = tmp_path / "out"
    assert main(["explain", COFFEE, "--method", "occlusion", "--out", str(out), *args]) == code
    err = capsys.readouterr().err.strip()
    assert err.startswith("explainer: error:") and len(err.splitlines()) == 1 and message in err, err
    assert not out.exists()
    return err


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_unknown_model(server, tmp_path, capsys, protocol):
    base = server.grpc_url if protocol == "grpc" else server.http_url
    _fails_cleanly(capsys, tmp_path, ["--model", f"{base}/nope"], "has no model 'nope'")


@pytest.mark.parametrize("scheme", ["grpc", "http"])
def test_server_not_running(tmp_path, capsys, scheme):
    _fails_cleanly(capsys, tmp_path, ["--model", f"{scheme}://127.0.0.1:{free_port()}/tiny"],
                   "cannot reach the Triton server")


def _inference_count(http_url: str, model: str) -> int:
    with urllib.request.urlopen(f"{http_url}/v2/models/{model}/stats", timeout=2) as r:
        return int(json.load(r)["model_stats"][0]["inference_count"])


def test_server_stopped_mid_run(tmp_path_factory, tmp_path, capsys, tiny_onnx):
    repo = tmp_path_factory.mktemp("repo_stop")
    write_model(repo, tiny_onnx["big"], "big", max_batch_size=8)
    own = LocalTritonServer(repo, http_port=0, grpc_port=0).start()
    try:
        def stop_once_running():
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and _inference_count(own.http_url, "big") < 20:
                time.sleep(0.01)
            own.stop()
        stopper = threading.Thread(target=stop_once_running)
        stopper.start()
        # 48x48 masks of 2 at stride 1 with clipping: 2304 requests of one input each
        err = _fails_cleanly(capsys, tmp_path, ["--model", f"{own.grpc_url}/big", "--mask-size", "2",
                                                "--stride", "1", "--mini-batch-size", "1", "--concurrency", "1",
                                                "--retry-seconds", "2"],
                             own.grpc_url.split("//")[1], code=3)
        stopper.join()
        # what a stopping Triton says: models unloaded first (NOT_FOUND, never retried), then
        # UNAVAILABLE, then connection refused (both retried until the attempts run out)
        assert any(m in err for m in ("has no available versions", "unavailable", "cannot reach")), err
    finally:
        own.stop()


def test_production_config_carries_the_metadata(tiny_onnx):
    from explainer.backends.triton.repo import production_config
    assert "explainer.preprocessing" in production_config(PROJECT / "models/efficientnet_lite0/model.onnx", "m")
    assert "parameters" not in production_config(tiny_onnx["bare"], "bare")


def test_no_preprocessing_is_a_clear_error(server):
    with pytest.raises(ValueError, match="no explainer.preprocessing parameter"):
        explainer.load_model(f"{server.grpc_url}/bare")
    model = explainer.load_model(f"{server.http_url}/bare", scale=1 / 255, mean=[0.5], std=[0.5])
    assert model.spec.preprocessing_source == "options" and model.spec.num_classes == 2
    assert model.spec.labels == ("class 0", "class 1")


def test_python_backend_copy_of_the_bundled_repo(tmp_path):
    assert python_backend_repo(PROJECT / "triton_repo", tmp_path) == ["efficientnet_lite0"]
    cfg = (tmp_path / "efficientnet_lite0" / "config.pbtxt").read_text()
    assert 'backend: "python"' in cfg and "onnxruntime_onnx" not in cfg and "explainer.labels" in cfg
    assert (tmp_path / "efficientnet_lite0" / "1" / "model.onnx").resolve() == \
        (PROJECT / "models" / "efficientnet_lite0" / "model.onnx").resolve()
    shipped = (PROJECT / "triton_repo" / "efficientnet_lite0" / "config.pbtxt").read_text()
    assert 'platform: "onnxruntime_onnx"' in shipped and "dynamic_batching" in shipped


@pytest.mark.parametrize("url, message", [
    ("grpc://127.0.0.1:8001", "expected grpc://HOST:PORT/MODEL"),
    ("grpc://user:pw@127.0.0.1:8001/m", "no credentials in the URL"),
    ("grpc://127.0.0.1:99999/m", "port"),
    ("grpc://h:1/m@v2", "version must be a number"),
    ("grpc://h:1/a,grpc://h:2/b", "same model"),
    ("ftp://h:1/m", "scheme"),
])
def test_bad_urls(url, message):
    with pytest.raises(ValueError, match=message):
        parse_endpoints(url)


def test_urls_and_headers():
    e = parse_endpoints("grpcs://a.example:9000/resnet@3, http://[::1]/resnet@3")
    assert [str(x) for x in e] == ["grpcs://a.example:9000/resnet@3", "http://[::1]:8000/resnet@3"]
    assert headers_dict(["Authorization: Bearer x:y"]) == {"authorization": "Bearer x:y"}
    with pytest.raises(ValueError) as info:
        headers_dict([f"Bearer {SECRET}"])
    assert SECRET not in str(info.value)
    assert issubclass(TritonError, ValueError)


def test_grpcs_with_a_ca_certificate(tmp_path, tiny_onnx):
    import shutil
    import subprocess

    from explainer.backends.triton.endpoints import Tls
    if shutil.which("openssl") is None:
        pytest.skip("needs the openssl command to make a certificate")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", cert,
                    "-days", "1", "-subj", "/CN=localhost", "-addext", "subjectAltName=IP:127.0.0.1"],
                   check=True, capture_output=True)
    write_model(tmp_path / "repo", tiny_onnx["tiny"], "tiny", max_batch_size=4)
    tls_args = ["--grpc-use-ssl=true", f"--grpc-server-cert={cert}", f"--grpc-server-key={key}"]
    with LocalTritonServer(tmp_path / "repo", http_port=0, grpc_port=0, extra_args=tls_args) as own:
        url = f"grpcs://127.0.0.1:{own.grpc_port}/tiny"
        ref = explainer.occlusion_sensitivity(explainer.load_model(str(tiny_onnx["tiny"])), _x(), 1, **OPTS)
        e = explainer.occlusion_sensitivity(explainer.load_model(url, tls=Tls(ca_cert=str(cert))), _x(), 1, **OPTS)
        assert _same(e.map, ref.map)
        with pytest.raises(ValueError, match="cannot reach"):  # plain gRPC to a TLS port
            explainer.load_model(f"grpc://127.0.0.1:{own.grpc_port}/tiny")
