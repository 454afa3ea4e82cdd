"""Served explanations: the request checks, the in-server model wrapper, export-explainer,
and (marked slow) the Triton explainer model against the real local server."""

import json

import numpy as np
import onnxruntime as ort
import pytest

import explainer
from explainer.cli import main
from explainer.errors import InputError
from explainer.imaging import Preprocessing
from explainer.backends.triton.served import ServedModel
from explainer.backends.triton.explain_export import explain_model_name, export_explainer, served_config
from explainer.serving.requests import MODULES, check_request, pack_arrays, unpack_arrays
from explainer.backends.triton.repo import _model_config, write_model
from explainer.backends.triton.server import PROJECT, LocalTritonServer
from tiny import linear_classifier

PRE = {"size": [16, 16], "mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]}
COFFEE = str(PROJECT / "models" / "efficientnet_lite0" / "examples" / "coffee.png")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    d = tmp_path_factory.mktemp("serving")
    w = np.random.default_rng(11).normal(size=(4, 3, 16, 16)).astype(np.float32) * 0.2
    return {"nchw": linear_classifier(d / "nchw.onnx", w, preprocessing=PRE),
            "nhwc": linear_classifier(d / "nhwc.onnx", w, layout="NHWC", preprocessing={**PRE, "layout": "NHWC"})}


def _x(seed=1):
    return np.random.default_rng(seed).normal(size=(1, 3, 16, 16)).astype(np.float32)


@pytest.mark.parametrize("method,options,message", [
    ("grad-cam", {}, "does not run server-side"),
    ("gradient", {"num_samples": 40000}, "needs 120000 forward passes"),
    ("occlusion", {"bogus": 1}, "has no option 'bogus'"),
    ("occlusion", {"progress": True}, "not available server-side"),
    ("prediction-difference", {"data": "/etc"}, "not available server-side"),
    ("lime", {"segmentation": "/tmp/labels.npy"}, "not available server-side"),
    ("rise", {"num_masks": 10**6}, "needs 1000000 forward passes"),
    ("prediction-difference", {"window_size": 2}, "forward passes"),
    ("rise", {"seed": True}, "expected a number"),
    ("rise", {"mask_value": [1.0] * 40}, "a list of 1 to 16 numbers"),
    ("occlusion", {"mask_value": float("nan")}, "not a finite number"),
    ("occlusion", {"score": "x" * 100}, "longer than 64"),
    (3, {}, "must be a method name"),
    ("rise", [1], "must be a JSON object"),
])
def test_requests_are_checked(method, options, message):
    with pytest.raises(InputError, match=message):
        check_request(method, options)


def test_a_valid_request_is_passed_as_it_is():
    opts = {"num_masks": 64, "grid_size": 4, "seed": 3, "mask_value": [0.1, 0.2, 0.3]}
    assert check_request("rise", opts) == opts
    assert check_request("prediction-difference", {"window_size": 8, "stride": 8}, max_forward_passes=10**6)


def test_arrays_round_trip_without_pickle():
    arrays = {"feature_map": np.arange(12, dtype=np.int32).reshape(3, 4), "importance": np.array([0.5, -1.0])}
    back = unpack_arrays(pack_arrays(arrays))
    assert set(back) == set(arrays) and all(np.array_equal(back[k], arrays[k]) for k in arrays)
    assert pack_arrays({}) == b"" and unpack_arrays(b"") == {}


@pytest.mark.parametrize("layout", ["nchw", "nhwc"])
def test_served_model_gives_the_client_side_map(tiny, layout):
    """The in-server wrapper (split by max_batch_size 3, 2 in flight) over real ONNX Runtime
    gives the map of the in-process backend, byte for byte."""
    session = ort.InferenceSession(str(tiny[layout]), providers=["CPUExecutionProvider"])
    calls = []

    def infer(name, feeds, outputs):
        assert name == "tiny" and outputs == ["logits"]
        calls.append(feeds["input"].shape)
        return session.run(outputs, feeds)

    pre = Preprocessing(size=(16, 16), layout=layout.upper(), mean=(0.5,) * 3, std=(0.25,) * 3)
    served = {"model": "tiny", "input": "input", "output": "logits", "preprocessing": pre.to_json(),
              "labels": ["a", "b", "c", "d"], "output_kind": "", "max_batch_size": 3}
    model = ServedModel(served, infer, in_flight=2)
    assert model.spec.num_classes == 4 and model.spec.labels == ("a", "b", "c", "d")
    assert model.spec.output_kind == "logits"
    local = explainer.load_model(str(tiny[layout]))
    opts = dict(mask_size=3, stride=2, output_upsampling="none", mini_batch_size=8)
    got, ref = (explainer.occlusion_sensitivity(m, _x(), None, **opts) for m in (model, local))
    np.testing.assert_array_equal(got.map, ref.map)
    assert got.target == ref.target
    # the same options; only the recorded inference path's reason names the backend
    assert {k: v for k, v in got.params.items() if k != "inference"} == \
        {k: v for k, v in ref.params.items() if k != "inference"}
    assert got.params["inference"]["path"] == ref.params["inference"]["path"] == "full"
    assert max(s[0] for s in calls) == 3 and calls[-1][1:] == ((3, 16, 16) if layout == "nchw" else (16, 16, 3))


def test_export_explainer_writes_a_python_backend_model(tmp_path, tiny):
    write_model(tmp_path, tiny["nchw"], "tiny", max_batch_size=4)
    folder = export_explainer(tmp_path, "tiny", instances=2, in_flight=3, max_forward_passes=5000)
    assert folder == tmp_path / explain_model_name("tiny") == tmp_path / "tiny_explain"
    cfg = _model_config((folder / "config.pbtxt").read_text(), folder)
    assert cfg.backend == "python" and cfg.instance_group[0].count == 2
    assert [i.name for i in cfg.input] == ["image", "request"] and list(cfg.input[0].dims) == [1, 3, 16, 16]
    assert [o.name for o in cfg.output] == ["map", "record", "arrays"] and list(cfg.output[0].dims) == [16, 16]
    served = json.loads(cfg.parameters["explainer.served"].string_value)
    assert served["model"] == "tiny" and served["max_batch_size"] == 4 and served["input"] == "input"
    assert json.loads(served["preprocessing"])["mean"] == [0.5, 0.5, 0.5]
    assert cfg.parameters["explainer.max_forward_passes"].string_value == "5000"
    version = folder / "1"
    assert (version / "model.py").read_text().startswith('"""Triton Python-backend model')
    assert (version / "explainer" / "methods" / "occlusion.py").is_file()
    assert "from ." not in (version / "explainer" / "__init__.py").read_text()  # no client stack in the server
    assert not list(version.rglob("__pycache__")) and not (version / "explainer" / "data").exists()
    assert {p.suffix for p in (version / "explainer").rglob("*") if p.is_file()} == {".py"}
    export_explainer(tmp_path, "tiny")  # again: replaces the copy
    assert served_config(tmp_path, "tiny") == cfg.parameters["explainer.served"].string_value


def test_export_explainer_refuses_what_it_cannot_serve(tmp_path, tiny):
    with pytest.raises(InputError, match="no model 'missing'"):
        export_explainer(tmp_path, "missing")
    write_model(tmp_path, tiny["nchw"], "tiny")
    with pytest.raises(InputError, match="instances must be a positive integer"):
        export_explainer(tmp_path, "tiny", instances=0)
    (tmp_path / "tiny" / "config.pbtxt").write_text(
        (tmp_path / "tiny" / "config.pbtxt").read_text().replace("max_batch_size: 128", "max_batch_size: 0")
        .replace("dims: [ 3, 16, 16 ]", "dims: [ 1, 3, 16, 16 ]"))
    with pytest.raises(InputError, match="must take batches"):
        export_explainer(tmp_path, "tiny")
    assert main(["export-explainer", "--triton-repo", str(tmp_path), "--model", "nope"]) == 2


def test_server_side_on_needs_a_triton_endpoint(tmp_path, tiny, capsys):
    code = main(["explain", COFFEE, "--model", str(tiny["nchw"]), "--method", "occlusion",
                 "--server-side", "on", "--out", str(tmp_path)])
    assert code == 2 and "needs a Triton endpoint" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())


@pytest.mark.slow
def test_the_shipped_package_imports_in_the_server_environment(tmp_path, tiny):
    """Every server-side method's module imports with the server's packages (numpy < 2, no tritonclient
    needed, SERVER_PACKAGES) from the copy shipped with the model."""
    import subprocess

    from explainer.backends.triton.server import ensure_venv

    write_model(tmp_path, tiny["nchw"], "tiny")
    version = export_explainer(tmp_path, "tiny") / "1"
    code = ("import sys; sys.path.insert(0, '.'); import explainer.backends.triton.served, "
            "explainer.serving.requests as r; [r.method_function(m) for m in r.MODULES]; "
            "print(sys.modules['explainer'].__file__)")
    out = subprocess.run([str(ensure_venv() / "bin" / "python"), "-c", code], cwd=version,
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-500:]
    assert out.stdout.strip() == str(version / "explainer" / "__init__.py")


# -- against the real local Triton server ------------------------------------------------------------


def _folder(d):
    from PIL import Image

    rng = np.random.default_rng(4)
    for i in range(3):
        Image.fromarray(rng.integers(0, 256, (20, 24, 3), dtype=np.uint8)).save(d / f"sample{i}.png")
    return d


@pytest.fixture(scope="module")
def server(tmp_path_factory, tiny):
    repo = tmp_path_factory.mktemp("explain-repo")
    write_model(repo, tiny["nchw"], "tiny", max_batch_size=4)
    write_model(repo, tiny["nhwc"], "plain", max_batch_size=4)  # no explainer deployed next to it
    write_model(repo, PROJECT / "models" / "efficientnet_lite0" / "model.onnx", "efficientnet_lite0")
    export_explainer(repo, "tiny", max_forward_passes=3000, data=_folder(tmp_path_factory.mktemp("data")))
    assert main(["export-gradients", "--model", str(tiny["nchw"]), "--triton-repo", str(repo), "--name", "tiny"]) == 0
    export_explainer(repo, "efficientnet_lite0")
    with LocalTritonServer(repo, http_port=0, grpc_port=0) as s:
        yield s


@pytest.mark.slow
@pytest.mark.parametrize("method,options", [
    ("occlusion", dict(mask_size=3, stride=2, output_upsampling="none", mini_batch_size=8)),
    ("occlusion", dict(mask_size=5, stride=3, mini_batch_size=16)),
    ("rise", dict(num_masks=96, grid_size=4, seed=5, mini_batch_size=16)),
    ("lime", dict(num_samples=64, num_features=9, segmentation="grid", seed=2)),
    ("prediction-difference", dict(window_size=4, stride=4, num_samples=3, seed=1, mini_batch_size=8)),
    ("gradient", dict(num_samples=5, seed=3, mini_batch_size=2)),
    ("integrated-gradients", dict(num_steps=7, mini_batch_size=3)),
])
def test_server_side_maps_equal_client_side(server, tmp_path, method, options):
    from explainer.backends.triton.explain_client import deployed_explainer, explain_served

    model = explainer.load_model(f"{server.grpc_url}/tiny")
    name = deployed_explainer(model, method, options, "auto")
    assert name == "tiny_explain"
    data = {"data": str(_folder(tmp_path))} if method == "prediction-difference" else {}
    local = explainer.methods.discover()[method].function(model, _x(), 2, **options, **data)
    served = explain_served(model, name, method, _x(), 2, options)
    np.testing.assert_array_equal(served.map, local.map)
    assert (served.target, served.label, served.score, served.seed) == (local.target, local.label, local.score, local.seed)
    assert {**served.params, "data": ""} == json.loads(json.dumps({**local.params, "data": ""}))
    assert set(served.arrays) == set(local.arrays)
    for k in local.arrays:  # LIME's tree importances: the server's numpy 1 sums in another order (1e-17)
        np.testing.assert_allclose(served.arrays[k], local.arrays[k], rtol=0, atol=1e-12)
    assert "server-side tiny_explain" in served.backend and served.timings["forward_passes"] == local.timings["forward_passes"]


@pytest.mark.slow
def test_cli_uses_the_explainer_model_and_inspect_lists_it(server, tmp_path, capsys):
    url = f"{server.http_url}/efficientnet_lite0"
    args = ["explain", COFFEE, "--model", url, "--method", "occlusion", "--stride", "56", "--mask-size", "84",
            "--json", "--quiet"]
    assert main(args + ["--out", str(tmp_path / "on"), "--server-side", "on"]) == 0
    on = json.loads(capsys.readouterr().out)[0]
    assert main(args + ["--out", str(tmp_path / "off"), "--server-side", "off"]) == 0
    off = json.loads(capsys.readouterr().out)[0]
    assert "server-side efficientnet_lite0_explain" in on["backend"] and "server-side" not in off["backend"]
    assert on["label"] == off["label"] == "espresso" and on["params"] == off["params"]
    a, b = (np.load(tmp_path / d / "coffee.occlusion.npy") for d in ("on", "off"))
    np.testing.assert_array_equal(a, b)
    assert main(["inspect", "--model", url, "--json"]) == 0
    deployed = json.loads(capsys.readouterr().out)["deployed"]
    assert {"model": "efficientnet_lite0_explain", "kind": "explainer", "layers": [],
            "methods": sorted(MODULES)} in deployed


@pytest.mark.slow
def test_server_side_errors_are_one_line(server, tmp_path, capsys):
    base = ["explain", COFFEE, "--method", "rise", "--out", str(tmp_path), "--quiet"]
    tiny_url = f"{server.grpc_url}/tiny"
    # the server's own limit (3000 forward passes for tiny_explain), checked in the server
    assert main(base + ["--model", tiny_url, "--num-masks", "4000", "--server-side", "on"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "explainer: error: the request needs 4000 forward passes; this server allows 3000"
    assert main(base + ["--model", tiny_url, "--num-masks", "16", "--target", "no such class", "--server-side", "on"]) == 2
    assert "is not a class label" in capsys.readouterr().err
    pd = ["explain", COFFEE, "--method", "prediction-difference", "--out", str(tmp_path), "--quiet", "--stride", "8"]
    assert main(pd + ["--model", f"{server.grpc_url}/efficientnet_lite0", "--server-side", "on"]) == 2
    assert "needs a folder of images on the server" in capsys.readouterr().err
    assert main(base + ["--model", f"{server.grpc_url}/plain", "--server-side", "on"]) == 2
    err = capsys.readouterr().err
    assert "no explainer model 'plain_explain'" in err and "export-explainer" in err and err.count("\n") == 1
    assert main(base + ["--model", f"{server.grpc_url}/plain", "--num-masks", "8", "--server-side", "auto"]) == 0
    assert list(tmp_path.glob("coffee.rise.*"))  # auto without M_explain: explained client-side



@pytest.mark.slow
def test_bytes_on_the_wire_are_about_image_plus_map(server):
    """Counted by a TCP proxy between client and server: request + answer <= 2 x (image + map)."""
    import sys

    from explainer.backends.triton.explain_client import explain_served

    sys.path.insert(0, str(PROJECT / "benchmarks"))
    from throttle import Throttle

    proxy = Throttle(("127.0.0.1", server.grpc_port))
    try:
        model = explainer.load_model(f"grpc://127.0.0.1:{proxy.port}/efficientnet_lite0")
        proxy.reset()
        e = explain_served(model, "efficientnet_lite0_explain", "occlusion", COFFEE, None,
                           {"mask_size": 84, "stride": 56})
        image_map = e.input.nbytes + e.map.nbytes
        assert e.timings["forward_passes"] == 17 and image_map == 3 * 224 * 224 * 4 + 224 * 224 * 4
        assert image_map < proxy.total <= 2 * image_map  # vs 17 x 602 KB = 10 MB client-side
    finally:
        proxy.close()
