"""Triton faults (issue 7 item 4) against a real local Triton server, no mocks.

The server runs with ``--model-control-mode=explicit`` so a test can unload a model for
real, and serves test-only python-backend models that inject one fault each (sleep, NaN,
wrong shapes, an error) into a window of their requests; the client's load-time probe
(an all-zero input) is always answered normally. Restarts kill ``tritonserver`` with
SIGKILL and start it again on the same ports.
"""

import json
import os
import signal
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import explainer
from explainer.cli import main
from explainer.backends.triton.repo import WRAPPER, write_model
from explainer.backends.triton.server import LocalTritonServer
from tiny import linear_classifier

PRE = {"size": [16, 16], "mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]}
OCC = ["--method", "occlusion", "--mask-size", "3", "--stride", "2", "--output-upsampling", "none"]
RISE = ["--method", "rise", "--num-masks", "48", "--grid-size", "4", "--seed", "5"]
FAULTY = WRAPPER.replace("class TritonPythonModel:", "class _OnnxModel:") + '''

import time


class TritonPythonModel(_OnnxModel):
    """Test only: requests FROM <= i < TO (counting non-zero inputs) get the fault KIND."""

    def initialize(self, args):
        super().initialize(args)
        kind, lo, hi, *arg = json.loads(args["model_config"])["parameters"]["fault"]["string_value"].split()
        self.kind, self.lo, self.hi, self.arg, self.seen = kind, int(lo), int(hi), arg, 0

    def execute(self, requests):
        live = [pb_utils.get_input_tensor_by_name(r, self.inputs[0]).as_numpy().any() for r in requests]
        self.faulty = any(live) and self.lo <= self.seen < self.hi
        self.seen += sum(live)
        if self.faulty and self.kind == "sleep":
            time.sleep(float(self.arg[0]))
        if self.faulty and self.kind == "error":
            return [pb_utils.InferenceResponse(error=pb_utils.TritonError("injected fault")) for _ in requests]
        return super().execute(requests)

    def _respond(self, arrays):
        if self.faulty and self.kind == "nan":
            arrays = [np.full_like(a, np.nan) for a in arrays]
        elif self.faulty and self.kind == "wide":
            arrays = [np.concatenate([a, a[:, :1]], axis=1) for a in arrays]
        elif self.faulty and self.kind == "short":
            arrays = [a[:-1] for a in arrays]
        return super()._respond(arrays)
'''

def _same(a, b, tol: float = 1e-5) -> bool:
    """Maps equal to ``tol``, NaN (pixels no occlusion window covers) in the same places."""
    return bool(np.array_equal(np.isnan(a), np.isnan(b)) and np.nanmax(np.abs(a - b)) <= tol)



def write_faulty_model(repo: Path, onnx_path: Path, name: str, fault: str, **config) -> None:
    """A python-backend copy of ``onnx_path`` that injects ``fault`` ("KIND FROM TO [ARG]")."""
    folder = write_model(repo, onnx_path, name, **config)
    text = (folder / "config.pbtxt").read_text().replace('platform: "onnxruntime_onnx"', 'backend: "python"')
    (folder / "config.pbtxt").write_text(text + f'parameters {{ key: "fault" value {{ string_value: "{fault}" }} }}\n')
    (folder / "1" / "model.py").write_text(FAULTY)


@pytest.fixture(scope="session")
def onnx_models(tmp_path_factory):
    d = tmp_path_factory.mktemp("fault_onnx")
    w = np.random.default_rng(7).normal(size=(3, 3, 16, 16)).astype(np.float32) * 0.1
    big = np.random.default_rng(8).normal(size=(2, 3, 48, 48)).astype(np.float32) * 0.01
    return {"tiny": linear_classifier(d / "tiny.onnx", w, preprocessing=PRE),
            "big": linear_classifier(d / "big.onnx", big, preprocessing={**PRE, "size": [48, 48]})}


@pytest.fixture(scope="session")
def fault_server(tmp_path_factory, onnx_models):
    repo = tmp_path_factory.mktemp("fault_repo")
    tiny = onnx_models["tiny"]
    write_model(repo, tiny, "tiny", max_batch_size=4)
    write_model(repo, onnx_models["big"], "victim", max_batch_size=8)
    for name, fault in [("slow", "sleep 0 1000000 3"), ("nan", "nan 2 1000000"), ("wide", "wide 1 1000000"),
                        ("short", "short 1 1000000"), ("flaky", "error 40 41")]:
        write_faulty_model(repo, tiny, name, fault, max_batch_size=4)
    # every request takes 0.1 s and the queue holds one: 8 in flight must overflow it
    write_faulty_model(repo, tiny, "busy", "sleep 0 1000000 0.1", max_batch_size=1, max_queue_size=1)
    args = ["--model-control-mode=explicit", "--load-model=*"]
    with LocalTritonServer(repo, http_port=0, grpc_port=0, extra_args=args) as s:
        yield s


@pytest.fixture(scope="session")
def images(tmp_path_factory):
    d = tmp_path_factory.mktemp("fault_images")
    rng = np.random.default_rng(3)
    paths = []
    for i in range(8):
        paths.append(d / f"img{i}.png")
        Image.fromarray(rng.integers(0, 256, (20, 20, 3), dtype=np.uint8)).save(paths[-1])
    return [str(p) for p in paths]


def _explain(out: Path, url: str, *args: str, images: list[str]) -> int:
    return main(["explain", *images, "--out", str(out), "--quiet", "--model", url, *args])


def _fails_cleanly(capsys, out: Path, code: int, *messages: str) -> str:
    err = capsys.readouterr().err.strip()
    assert code == 3, err  # the server or model failed mid-run (ServerError / ModelError)
    assert err.startswith("explainer: error:") and len(err.splitlines()) == 1, err
    assert all(m in err for m in messages), err
    assert not out.exists() or not any(out.iterdir())
    return err


def _count(http_url: str, model: str) -> int:
    with urllib.request.urlopen(f"{http_url}/v2/models/{model}/stats", timeout=2) as r:
        return int(json.load(r)["model_stats"][0]["inference_count"])


def _when_count(http_url: str, model: str, count: int, action) -> threading.Thread:
    def run():
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and _count(http_url, model) < count:
            time.sleep(0.005)
        action()
    t = threading.Thread(target=run)
    t.start()
    return t


def _kill(server: LocalTritonServer) -> None:
    """SIGKILL to tritonserver and its python-backend stubs: no graceful unload, connections drop."""
    os.killpg(server.process.pid, signal.SIGKILL)
    server.process.wait()
    server.stop()


def _repository(http_url: str, model: str, verb: str) -> None:
    req = urllib.request.Request(f"{http_url}/v2/repository/models/{model}/{verb}", data=b"{}", method="POST")
    urllib.request.urlopen(req, timeout=30).close()


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_restart_mid_run_is_bridged_by_retries(tmp_path_factory, tmp_path, onnx_models, images, protocol):
    repo = tmp_path_factory.mktemp("repo_restart")
    write_model(repo, onnx_models["big"], "big", max_batch_size=8)
    own = LocalTritonServer(repo, http_port=0, grpc_port=0).start()
    restarted, finished = [], threading.Event()

    def kill_and_restart():
        _kill(own)
        time.sleep(0.5)
        restarted.append(own.start())  # same ports
        finished.wait(60)  # the server gets SIGTERM when the thread that started it ends
    try:
        killer = _when_count(own.http_url, "big", 20, kill_and_restart)
        url = f"{own.grpc_url if protocol == 'grpc' else own.http_url}/big"
        args = ["--method", "occlusion", "--mask-size", "2", "--stride", "2", "--mini-batch-size", "1",
                "--output-upsampling", "none"]
        code = _explain(tmp_path / "remote", url, *args, "--concurrency", "2", images=images[:1])
        finished.set()
        killer.join()
        assert restarted and code == 0
        assert _explain(tmp_path / "local", str(onnx_models["big"]), *args, images=images[:1]) == 0
        a, b = (np.load(tmp_path / d / "img0.occlusion.npy") for d in ("local", "remote"))
        assert _same(a, b)
    finally:
        own.stop()


def test_server_killed_for_good_fails_within_the_retry_budget(tmp_path_factory, tmp_path, capsys,
                                                              onnx_models, images):
    repo = tmp_path_factory.mktemp("repo_kill")
    write_model(repo, onnx_models["big"], "big", max_batch_size=8)
    own = LocalTritonServer(repo, http_port=0, grpc_port=0).start()
    try:
        killer = _when_count(own.http_url, "big", 20, lambda: _kill(own))
        t0 = time.monotonic()
        code = _explain(tmp_path / "out", f"{own.http_url}/big", "--method", "occlusion", "--mask-size", "2",
                        "--stride", "1", "--mini-batch-size", "1", "--concurrency", "1",
                        "--retry-seconds", "1.5", images=images[:1])
        killer.join()
        assert time.monotonic() - t0 < 10
        _fails_cleanly(capsys, tmp_path / "out", code, "cannot reach the Triton server", "attempts over")
    finally:
        own.stop()


def test_model_unloaded_mid_run(fault_server, tmp_path, capsys, images):
    s = fault_server
    # "victim" serves this test only: it stays unloaded afterwards
    unloader = _when_count(s.http_url, "victim", 20, lambda: _repository(s.http_url, "victim", "unload"))
    code = _explain(tmp_path / "out", f"{s.grpc_url}/victim", "--method", "occlusion", "--mask-size", "2",
                    "--stride", "1", "--mini-batch-size", "1", "--concurrency", "1", images=images[:1])
    unloader.join()
    _fails_cleanly(capsys, tmp_path / "out", code, "victim", "has no available versions")


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_slow_response_past_the_timeout(fault_server, tmp_path, capsys, images, protocol):
    url = f"{fault_server.grpc_url if protocol == 'grpc' else fault_server.http_url}/slow"
    t0 = time.monotonic()
    code = _explain(tmp_path / "out", url, *OCC, "--timeout", "0.5", images=images[:1])
    assert time.monotonic() - t0 < 3  # not retried
    _fails_cleanly(capsys, tmp_path / "out", code, "no answer within the request timeout of 0.5 s")


@pytest.mark.parametrize("model, message", [
    ("wide", "returned an output of shape (4, 4) for 4 inputs, expected (4, 3)"),
    ("short", "returned an output of shape (3, 3) for 4 inputs, expected (4, 3)"),
])
def test_wrong_shaped_response(fault_server, tmp_path, capsys, images, model, message):
    # the first request (the unperturbed image) is answered; the perturbed batches of 4 are not
    code = _explain(tmp_path / "out", f"{fault_server.grpc_url}/{model}", *OCC, "--mini-batch-size", "4",
                    images=images[:1])
    _fails_cleanly(capsys, tmp_path / "out", code, message)


def test_nan_response_names_the_batch(fault_server, tmp_path, capsys, images):
    # one request per batch of 4 (concurrency 1): the third perturbed batch comes back NaN
    code = _explain(tmp_path / "out", f"{fault_server.http_url}/nan", *OCC, "--mini-batch-size", "4",
                    "--concurrency", "1", images=images[:1])
    _fails_cleanly(capsys, tmp_path / "out", code, "NaN or Inf for a batch of 4 inputs (inputs 4-7)")


@pytest.mark.parametrize("method", [OCC, RISE], ids=["occlusion", "rise"])
def test_byte_identical_across_concurrency_and_batch_sizes(fault_server, tmp_path, images, method):
    blobs = set()
    for i, (concurrency, batch) in enumerate([(1, 4), (2, 16), (8, 16), (8, 5), (1, 1)]):
        out = tmp_path / str(i)
        assert _explain(out, f"{fault_server.grpc_url}/tiny", *method, "--concurrency", str(concurrency),
                        "--mini-batch-size", str(batch), images=images[:1]) == 0
        blobs.add(next(out.glob("*.npy")).read_bytes())
    assert len(blobs) == 1


def test_resume_after_an_interruption_is_byte_identical(fault_server, tmp_path, capsys, images):
    s = fault_server
    args = [*OCC, "--mini-batch-size", "4", "--concurrency", "1"]
    assert _explain(tmp_path / "ref", f"{s.grpc_url}/tiny", *args, images=images) == 0
    # "flaky" fails its 41st perturbed request once (INTERNAL: not retried): the run stops mid-way
    code = _explain(tmp_path / "out", f"{s.grpc_url}/flaky", *args, images=images)
    err = capsys.readouterr().err
    assert code == 3 and "injected fault" in err and len(err.strip().splitlines()) == 1
    done = sorted(p.name for p in (tmp_path / "out").iterdir())
    stems = sorted({n.split(".")[0] for n in done})
    assert 0 < len(stems) < len(images)
    assert done == sorted(f"{st}.occlusion.{ext}" for st in stems for ext in ("json", "npy", "png"))
    assert _explain(tmp_path / "out", f"{s.grpc_url}/flaky", *args, "--resume", images=images) == 0
    for ref in (tmp_path / "ref").glob("*.npy"):
        assert (tmp_path / "out" / ref.name).read_bytes() == ref.read_bytes(), ref.name


def test_retries_a_real_overloaded_server(fault_server, onnx_models):
    # the server answers UNAVAILABLE "Exceeds maximum queue size"; the client backs off
    # with jitter, lowers its requests in flight, and the map is still exact
    x = np.random.default_rng(0).normal(size=(1, 3, 16, 16)).astype(np.float32)
    opts = dict(mask_size=4, stride=4, output_upsampling="none", mini_batch_size=16)
    ref = explainer.occlusion_sensitivity(explainer.load_model(str(onnx_models["tiny"])), x, 1, **opts)
    model = explainer.load_model(f"{fault_server.grpc_url}/busy", concurrency=8)
    e = explainer.occlusion_sensitivity(model, x, 1, **opts)
    assert model.pool.busy_replies > 0 and model.pool.retried >= model.pool.busy_replies
    assert _same(e.map, ref.map)
