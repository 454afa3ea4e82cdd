"""``explainer serve``: the real KServe server on 127.0.0.1, called over HTTP (marked slow)."""

import base64
import json
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

import numpy as np
import pytest

import explainer
from explainer.cli import main
from explainer.imaging import read_image
from explainer.serving.requests import decode_array, encode_array  # no kserve import here: its protos
# clash with tritonclient.grpc's in one process (the server runs in its own)
from explainer.backends.triton.server import PROJECT, free_port

COFFEE = PROJECT / "models" / "efficientnet_lite0" / "examples" / "coffee.png"
NAME = "efficientnet_lite0"


def test_arrays_travel_as_base64_json():
    a = np.arange(12, dtype=np.float32).reshape(3, 4) / 7
    d = json.loads(json.dumps(encode_array(a)))
    assert d["dtype"] == "float32" and d["shape"] == [3, 4]
    np.testing.assert_array_equal(decode_array(d), a)


@pytest.mark.parametrize("args,message", [
    (["--model", "grpc://127.0.0.1:1/m"], "over http:// or https://"),
    (["--max-instances", "0"], "--max-instances must be a positive integer"),
    (["--port", "70000"], "--port must be 1-65535"),
])
def test_serve_refuses_bad_options_before_loading_anything(args, message, capsys):
    assert main(["serve", *args]) == 2
    assert message in capsys.readouterr().err
    assert "kserve" not in sys.modules  # checked before the SDK is imported


@pytest.fixture(scope="module")
def kserve_url():
    port = free_port()
    cmd = [sys.executable, "-m", "explainer", "serve", "--port", str(port), "--max-concurrency", "1",
           "--max-queue", "0", "--max-body-bytes", str(2 * 2**20), "--max-forward-passes", "5000"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            assert proc.poll() is None, proc.stdout.read().decode(errors="replace")[-2000:]
            try:
                with urllib.request.urlopen(f"{url}/v1/models", timeout=1) as r:
                    if r.status == 200:
                        break
            except OSError:
                time.sleep(0.3)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _post(url, body, *, raw=False):
    data = body if raw else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method="POST", headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=300) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def _instances(data=None):
    data = COFFEE.read_bytes() if data is None else data
    return [{"image": {"b64": base64.b64encode(data).decode()}}]


OCCLUSION = {"method": "occlusion", "mask_size": 84, "stride": 56}


@pytest.mark.slow
def test_models_predict_and_explain(kserve_url):
    with urllib.request.urlopen(f"{kserve_url}/v1/models", timeout=10) as r:
        assert json.loads(r.read()) == {"models": [NAME]}
    status, out = _post(f"{kserve_url}/v1/models/{NAME}:predict", {"instances": _instances()})
    assert status == 200 and out["predictions"][0][0]["label"] == "espresso"
    status, out = _post(f"{kserve_url}/v1/models/{NAME}:explain", {"instances": _instances(), "parameters": OCCLUSION})
    assert status == 200 and len(out["explanations"]) == 1
    got = out["explanations"][0]
    model = explainer.load_model()
    ref = explainer.occlusion_sensitivity(model, read_image(COFFEE), mask_size=84, stride=56)
    np.testing.assert_array_equal(decode_array(got["map"]), ref.map)
    assert got["record"]["label"] == "espresso" and got["record"]["params"]["num_masks"] == ref.params["num_masks"]


@pytest.mark.slow
@pytest.mark.parametrize("path,body,status,message", [
    (f"/v1/models/nope:explain", {"instances": []}, 404, "nope"),
    (f"/v1/models/{NAME}:explain", b"{not json", 400, ""),
    (f"/v1/models/{NAME}:explain", {"images": []}, 400, 'with an "instances" list'),
    (f"/v1/models/{NAME}:explain", {"instances": [{"image": {"b64": "@@"}}]}, 400, "not valid base64"),
    (f"/v1/models/{NAME}:explain", {"instances": [{"image": {"b64": "aGVsbG8="}}]}, 400, "not a readable image"),
    (f"/v1/models/{NAME}:explain", {"instances": None, "parameters": {}}, 400, "instances"),
    (f"/v1/models/{NAME}:explain", {"parameters": {"method": "rise", "num_masks": 6000}}, 400,
     "needs 6000 forward passes; this server allows 5000"),
    (f"/v1/models/{NAME}:explain", {"parameters": {"method": "grad-cam"}}, 400, "does not run server-side"),
    (f"/v1/models/{NAME}:explain", {"parameters": {"method": "occlusion", "strides": 3}}, 400, "no option 'strides'"),
    (f"/v1/models/{NAME}:explain", {"parameters": {"method": "occlusion", "target": "unicorn"}}, 400,
     "not a class label"),
    (f"/v1/models/{NAME}:explain", b"x" * (3 * 2**20), 413, "larger than 2097152 bytes"),
])
def test_bad_requests_get_one_clear_4xx(kserve_url, path, body, status, message):
    if isinstance(body, dict) and "parameters" in body and "instances" not in body:
        body = {**body, "instances": _instances()}
    got, out = _post(kserve_url + path, body, raw=isinstance(body, bytes))
    assert got == status and set(out) == {"error"} and message in out["error"]
    assert "\n" not in out["error"] and "Traceback" not in out["error"]


@pytest.mark.slow
def test_concurrency_is_bounded(kserve_url):
    """One explanation at a time and no queue: a second one at the same moment gets 503."""
    body = {"instances": _instances(), "parameters": {"method": "occlusion", "stride": 8, "mask_size": 40}}
    results = []
    threads = [threading.Thread(target=lambda: results.append(_post(f"{kserve_url}/v1/models/{NAME}:explain", body)))
               for _ in range(2)]
    for t in threads:
        t.start()
        time.sleep(0.5)
    for t in threads:
        t.join()
    codes = sorted(code for code, _ in results)
    assert codes == [200, 503]
    assert "busy" in next(out for code, out in results if code == 503)["error"]
