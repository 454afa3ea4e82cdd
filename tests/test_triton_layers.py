"""Layer activations against a real local Triton server equal the in-process results.

The layers model is exported at test time into a temporary repository next to its forward
model (``explainer export-layers --triton-repo``), never committed.
"""

import json

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import explainer
from explainer.cli import main
from explainer.errors import InputError
from explainer.methods.activations import activations
from explainer.backends.triton.repo import write_model
from explainer.backends.triton.server import PROJECT, LocalTritonServer

COFFEE = str(PROJECT / "models" / "efficientnet_lite0" / "examples" / "coffee.png")
PRE = {"size": [8, 8], "mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]}
N = helper.make_node
LAYERS = "act,/block/conv2"  # a node named by its node name, another by a path-like node name


def _tiny(path):
    """input (N, 3, 8, 8) -> Conv (4) -> Relu "act" (tensor "a") -> Conv 1x1 "/block/conv2" (5) -> GAP -> Gemm."""
    rng = np.random.default_rng(4)
    inits = {"k": rng.normal(size=(4, 3, 3, 3)), "b": rng.normal(size=4) * 0.1,
             "k2": rng.normal(size=(5, 4, 1, 1)), "w": rng.normal(size=(3, 5)), "c": rng.normal(size=3)}
    nodes = [N("Conv", ["input", "k", "b"], ["conv"], pads=[1, 1, 1, 1], name="conv"),
             N("Relu", ["conv"], ["a"], name="act"),
             N("Conv", ["a", "k2"], ["/block/conv2_output_0"], name="/block/conv2"),
             N("GlobalAveragePool", ["/block/conv2_output_0"], ["g"], name="gap"),
             N("Flatten", ["g"], ["f"], axis=1), N("Gemm", ["f", "w", "c"], ["logits"], transB=1)]
    image = helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, 8, 8])
    graph = helper.make_graph(nodes, "tiny", [image],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 3])],
                              [numpy_helper.from_array(np.asarray(v, np.float32), n) for n, v in inits.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    helper.set_model_props(model, {"explainer.preprocessing": json.dumps(PRE)})
    onnx.save(model, str(path))
    return path


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """tiny (max_batch_size 4) with its layers model tiny_layers; plain: the same model without one."""
    repo = tmp_path_factory.mktemp("repo")
    tiny = _tiny(tmp_path_factory.mktemp("tiny") / "tiny.onnx")
    write_model(repo, tiny, "tiny", max_batch_size=4)
    write_model(repo, tiny, "plain", max_batch_size=4)
    assert main(["export-layers", "--model", str(tiny), "--layers", LAYERS, "--triton-repo", str(repo),
                 "--name", "tiny"]) == 0
    with LocalTritonServer(repo, http_port=0, grpc_port=0) as server:
        yield {"server": server, "repo": repo, "tiny": tiny}


def _batch(n, seed=1):
    return np.random.default_rng(seed).normal(size=(n, 3, 8, 8)).astype(np.float32)


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_activations_equal_in_process(served, protocol):
    server = served["server"]
    local = explainer.load_model(str(served["tiny"]))
    remote = explainer.load_model(f"{server.grpc_url if protocol == 'grpc' else server.http_url}/tiny",
                                  concurrency=3)
    names = ["act", "a", "/block/conv2", "/block/conv2_output_0"]  # node and tensor names alike
    batch = _batch(11)  # three requests of <= 4, run concurrently, come back in order
    got, want = remote.layer_activations(batch, names), local.activations(batch, names)
    assert list(got) == names and got["a"].shape == (11, 4, 8, 8) and got["/block/conv2"].shape == (11, 5, 8, 8)
    for name in names:
        assert got[name].dtype == np.float32
        np.testing.assert_allclose(got[name], want[name], rtol=1e-6, atol=1e-6)
    assert np.abs(want["a"]).max() > 0 and (want["a"] >= 0).all() and (want["/block/conv2"] < 0).any()
    for layer in ("act", "/block/conv2"):  # the method through the generic path, as the CLI runs it
        a, b = (activations(m, COFFEE, layer=layer, num_channels=3) for m in (remote, local))
        np.testing.assert_allclose(a.arrays["activations"], b.arrays["activations"], rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(a.map, b.map, rtol=1e-5, atol=1e-6)
        assert a.params["channel"] == b.params["channel"] and a.target == b.target
        np.testing.assert_array_equal(a.images["tile"], b.images["tile"])


def test_layer_not_exposed_and_explicit_model(served):
    url = f"{served['server'].grpc_url}"
    tiny = explainer.load_model(f"{url}/tiny")
    with pytest.raises(InputError, match=r"layer 'gap' is not exposed by the layers model 'tiny_layers' "
                                         r"\(it exposes act, /block/conv2\).*--layers act,/block/conv2,gap"):
        tiny.layer_activations(_batch(2), ["act", "gap"])
    with pytest.raises(InputError, match="batch must be"):
        tiny.layer_activations(_batch(2)[:, :, :4], ["act"])
    plain = explainer.load_model(f"{url}/plain", layers_model="tiny_layers")
    local = explainer.load_model(str(served["tiny"]))
    np.testing.assert_allclose(plain.layer_activations(_batch(3), ["a"])["a"],
                               local.activations(_batch(3), ["a"])["a"], rtol=1e-6, atol=1e-6)
    with pytest.raises(InputError, match="'tiny' is not a layers model"):
        explainer.load_model(f"{url}/plain", layers_model="tiny").layer_activations(_batch(1), ["act"])
    with pytest.raises(InputError, match="only to Triton endpoints"):
        explainer.load_model(str(served["tiny"]), layers_model="tiny_layers")


def test_missing_layers_model_via_cli(served, tmp_path, capsys):
    out = tmp_path / "o"
    args = ["explain", COFFEE, "--method", "activations", "--layer", "act", "--out", str(out), "--quiet",
            "--model", f"{served['server'].http_url}/plain"]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert "'plain_layers'" in err and "export-layers --model plain.onnx --layers act --triton-repo REPO" in err
    assert "load it on the server" in err and "--layers-model" in err
    assert not out.exists()


def test_repository_layout_config_and_export_errors(served, tmp_path, capsys):
    folder = served["repo"] / "tiny_layers"
    cfg = (folder / "config.pbtxt").read_text()
    assert "max_batch_size: 4" in cfg and "dynamic_batching" in cfg and 'platform: "onnxruntime_onnx"' in cfg
    for line in ('name: "logits" data_type: TYPE_FP32 dims: [ 3 ]', 'name: "a" data_type: TYPE_FP32 dims: [ 4, 8, 8 ]',
                 'name: "/block/conv2_output_0" data_type: TYPE_FP32 dims: [ 5, 8, 8 ]', '"explainer.layers"'):
        assert line in cfg
    assert not (folder / "1" / "model.onnx").is_symlink()
    tiny = str(served["tiny"])
    assert main(["export-layers", "--model", tiny, "--layers", "act"]) == 2
    assert main(["export-layers", "--model", tiny, "--layers", "act", "--out", str(tmp_path / "l.onnx"),
                 "--triton-repo", str(tmp_path)]) == 2
    assert main(["export-layers", "--model", tiny, "--layers", "act", "--triton-repo", str(tmp_path / "no")]) == 2
    assert main(["export-layers", "--model", tiny, "--layers", "zzz", "--triton-repo", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "exactly one of --out FILE and --triton-repo REPO" in err and "no such folder" in err
    assert "'zzz' is not a node or tensor" in err and not list(tmp_path.iterdir())
