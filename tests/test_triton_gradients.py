"""Gradient methods against a real local Triton server equal the in-process results.

The gradient models are exported at test time into a temporary repository next to their
forward models (``explainer export-gradients --triton-repo``), never committed.
"""

import json

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import explainer
from explainer.backends.triton.naming import gradient_model_name, sanitise_layer
from explainer.cli import main
from explainer.errors import InputError
from explainer.methods.deep_dream import deep_dream
from explainer.methods.grad_cam import cam, grad_cam
from explainer.methods.gradient_maps import deconvnet, gradient, guided_backprop
from explainer.methods.integrated_gradients import integrated_gradients
from explainer.backends.triton.repo import write_model
from explainer.backends.triton.server import PROJECT, LocalTritonServer

BUNDLED = PROJECT / "models" / "efficientnet_lite0" / "model.onnx"
COFFEE = str(PROJECT / "models" / "efficientnet_lite0" / "examples" / "coffee.png")
PRE = {"size": [8, 8], "mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]}
N = helper.make_node


def _conv_relu_gap(path, tanh_head=False):
    """input (N, 3, 8, 8) -> Conv 3x3 (4 filters) -> Relu "act" -> GAP -> Flatten -> Gemm: 3 logits
    (with ``tanh_head``: -> Gemm (4 -> 4) -> Tanh -> Gemm, a head CAM does not apply to)."""
    rng = np.random.default_rng(3)
    inits = {"k": rng.normal(size=(4, 3, 3, 3)), "b": rng.normal(size=4) * 0.1,
             "w": rng.normal(size=(3, 4)), "c": rng.normal(size=3), "h": rng.normal(size=(4, 4))}
    nodes = [N("Conv", ["input", "k", "b"], ["conv"], pads=[1, 1, 1, 1], name="conv"),
             N("Relu", ["conv"], ["a"], name="act"), N("GlobalAveragePool", ["a"], ["g"]),
             N("Flatten", ["g"], ["f"], axis=1), N("Gemm", ["f", "w", "c"], ["logits"], transB=1)]
    if tanh_head:
        nodes[3:4] = [N("Flatten", ["g"], ["f0"], axis=1), N("Gemm", ["f0", "h"], ["f1"]), N("Tanh", ["f1"], ["f"])]
    image = helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, 8, 8])
    graph = helper.make_graph(nodes, "tiny", [image],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 3])],
                              [numpy_helper.from_array(np.asarray(v, np.float32), n) for n, v in inits.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    helper.set_model_props(model, {"explainer.preprocessing": json.dumps(PRE)})
    onnx.save(model, str(path))
    return path


def _export(repo, model, name, *extra):
    assert main(["export-gradients", "--model", str(model), "--triton-repo", str(repo), "--name", name, *extra]) == 0


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """tiny (max_batch_size 4) with standard/guided/deconv input and "auto" layer gradients;
    plain (the same model, no gradient model); the bundled model with input gradients."""
    repo = tmp_path_factory.mktemp("repo")
    tiny = _conv_relu_gap(tmp_path_factory.mktemp("tiny") / "tiny.onnx")
    write_model(repo, tiny, "tiny", max_batch_size=4)
    write_model(repo, tiny, "plain", max_batch_size=4)
    for relu in ("standard", "guided", "deconv"):
        _export(repo, tiny, "tiny", "--relu", relu)
    _export(repo, tiny, "tiny", "--layer", "auto")
    _export(repo, tiny, "tiny", "--dream-layer", "act")
    tanh_head = _conv_relu_gap(tmp_path_factory.mktemp("tanh") / "tanh.onnx", tanh_head=True)
    write_model(repo, tanh_head, "tanhhead", max_batch_size=4)
    _export(repo, tanh_head, "tanhhead", "--layer", "auto")
    write_model(repo, BUNDLED, "efficientnet_lite0")
    _export(repo, BUNDLED, "efficientnet_lite0")
    with LocalTritonServer(repo, http_port=0, grpc_port=0) as server:
        yield {"server": server, "repo": repo, "tiny": tiny, "tanh": tanh_head}


def _x(seed=1):
    return np.random.default_rng(seed).normal(size=(1, 3, 8, 8)).astype(np.float32)


def _same(remote, local):
    assert remote.target == local.target and remote.map.shape == local.map.shape
    np.testing.assert_allclose(remote.map, local.map, rtol=1e-5, atol=1e-6 * np.abs(local.map).max())
    for key, value in local.arrays.items():
        np.testing.assert_allclose(remote.arrays[key], value, rtol=1e-5, atol=1e-6 * np.abs(value).max() + 1e-12)


CASES = [(gradient, dict(num_samples=6, mini_batch_size=5)),  # SmoothGrad: 6 inputs in requests of <= 4
         (guided_backprop, dict()), (deconvnet, dict(score="logit")),
         (integrated_gradients, dict(num_steps=9, mini_batch_size=7)),
         (grad_cam, dict(feature_layer="act")), (grad_cam, dict()), (grad_cam, dict(feature_layer="a")),
         (cam, dict()), (cam, dict(score="logit"))]


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_every_gradient_method_equals_in_process(served, protocol):
    server = served["server"]
    local = explainer.load_model(str(served["tiny"]))
    remote = explainer.load_model(f"{server.grpc_url if protocol == 'grpc' else server.http_url}/tiny", concurrency=3)
    for method, opts in CASES:
        _same(method(remote, _x(), 2, **opts), method(local, _x(), 2, **opts))
    assert grad_cam(remote, _x(), 1).params["feature_layer"] == "act"  # "auto" read from the deployed model
    dream = dict(pyramid_levels=2, num_iterations=3, channels=[0, 2])
    a, b = deep_dream(remote, None, **dream), deep_dream(local, None, **dream)
    np.testing.assert_allclose(a.params["objective_end"], b.params["objective_end"], rtol=1e-4)
    assert a.params["objective_end"] != a.params["objective_start"]
    assert np.abs(a.map - b.map).max() <= 1.01 / 255  # uint8 pictures: at most one grey level apart
    hidden = dict(dream, layer="act", channels=[3, 1])  # through the deployed tiny_dream__act
    a, b = deep_dream(remote, None, **hidden), deep_dream(local, None, **hidden)
    np.testing.assert_allclose(a.params["objective_end"], b.params["objective_end"], rtol=1e-4)
    assert a.params["objective_end"][0] > a.params["objective_start"][0]
    np.testing.assert_allclose(a.arrays["dreams"], b.arrays["dreams"], rtol=1e-4, atol=1e-4)


def test_gradients_split_by_max_batch_size_and_keep_order(served):
    local = explainer.load_model(str(served["tiny"]))
    remote = explainer.load_model(f"{served['server'].grpc_url}/tiny", concurrency=4)
    batch = np.random.default_rng(5).normal(size=(11, 3, 8, 8)).astype(np.float32)
    wl = np.random.default_rng(6).normal(size=(11, 3)).astype(np.float32)
    wp = np.random.default_rng(7).normal(size=(11, 3)).astype(np.float32)
    for layer in (None, "act"):
        got, want = remote.gradients(batch, wl, wp, layer=layer), local.gradients(batch, wl, wp, layer=layer)
        assert (got[2] is None) == (layer is None) == (want[2] is None)
        for g, w in zip(got[:2 if layer is None else 3], want):
            np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-6)
    assert got[1].shape == (11, 4, 8, 8) and got[2].shape == (11, 4, 8, 8)
    with pytest.raises(InputError, match="logit_weights must have shape"):
        remote.gradients(batch, wl[:3], wp)


def test_missing_gradient_model_fails_at_once_saying_how(served, tmp_path, capsys):
    plain = explainer.load_model(f"{served['server'].grpc_url}/plain")
    with pytest.raises(InputError, match=r"'plain_grad_standard'.*export-gradients .*--triton-repo REPO --name plai"):
        gradient(plain, _x(), 0)
    with pytest.raises(InputError, match=r"'plain_grad_guided'.*--relu guided"):
        guided_backprop(plain, _x(), 0)
    with pytest.raises(InputError, match=r"'plain_grad_standard__act'.*--layer act"):
        grad_cam(plain, _x(), 0, feature_layer="act")
    with pytest.raises(InputError, match=r"default feature layer.*--feature-layer"):
        grad_cam(plain, _x(), 0)
    with pytest.raises(InputError, match=r"default feature layer.*export-gradients --triton-repo REPO --layer auto"):
        cam(plain, _x(), 0)
    with pytest.raises(InputError, match=r"'plain_dream__act'.*export-gradients .*--name plain --dream-layer act"):
        deep_dream(plain, None, layer="act", channels=[0])
    args = ["explain", COFFEE, "--method", "integrated-gradients", "--out", str(tmp_path / "o"),
            "--model", f"{served['server'].http_url}/plain"]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "plain_grad_standard" in err and "export-gradients" in err
    assert not (tmp_path / "o").exists()


def test_cam_on_triton_refuses_a_head_other_than_gap_and_fc(served):
    """The Tanh head's layer gradient is constant over space but changes with the input."""
    local = explainer.load_model(str(served["tanh"]))
    remote = explainer.load_model(f"{served['server'].grpc_url}/tanhhead")
    with pytest.raises(InputError, match=r"cam needs GlobalAveragePool \+ a fully connected layer after .*'act'"):
        cam(remote, _x(), 1)
    with pytest.raises(InputError, match="cam needs a model that ends in GlobalAveragePool"):
        cam(local, _x(), 1)
    _same(grad_cam(remote, _x(), 1), grad_cam(local, _x(), 1))  # Grad-CAM is the method for it


def test_gradient_model_named_explicitly(served):
    url = f"{served['server'].grpc_url}/plain"
    local = explainer.load_model(str(served["tiny"]))
    plain = explainer.load_model(url, gradient_model="tiny_grad_guided")
    _same(guided_backprop(plain, _x(), 0), guided_backprop(local, _x(), 0))
    with pytest.raises(InputError, match="computes relu='guided', layer=None, but relu='standard'"):
        gradient(plain, _x(), 0)
    with pytest.raises(InputError, match="'tiny' is not a gradient model"):
        gradient(explainer.load_model(url, gradient_model="tiny"), _x(), 0)
    with pytest.raises(InputError, match="only to Triton endpoints"):
        explainer.load_model(str(served["tiny"]), gradient_model="tiny_grad_standard")


def test_repository_layout_and_config(served):
    repo = served["repo"]
    assert sorted(p.name for p in repo.iterdir() if p.name.startswith("tiny_grad")) == [
        "tiny_grad_deconv", "tiny_grad_guided", "tiny_grad_standard", "tiny_grad_standard__act"]
    cfg = (repo / "tiny_grad_standard__act" / "config.pbtxt").read_text()
    assert "max_batch_size: 4" in cfg and "dynamic_batching" in cfg and 'platform: "onnxruntime_onnx"' in cfg
    for line in ('name: "probability_weights" data_type: TYPE_FP32 dims: [ 3 ]',
                 'name: "gradient" data_type: TYPE_FP32 dims: [ 4, 8, 8 ]', 'name: "activations"'):
        assert line in cfg
    assert 'max_batch_size: 128' in (repo / "efficientnet_lite0_grad_standard" / "config.pbtxt").read_text()
    dream = (repo / "tiny_dream__act" / "config.pbtxt").read_text()
    for line in ('name: "logit_weights" data_type: TYPE_FP32 dims: [ 4 ]',
                 'name: "explainer_layer_means" data_type: TYPE_FP32 dims: [ 4 ]', "layer_means"):
        assert line in dream
    assert not (repo / "tiny_grad_standard" / "1" / "model.onnx").is_symlink()
    assert gradient_model_name("m", "/_swish_1/Clip", "guided") == "m_grad_guided__swish_1_Clip"
    long = sanitise_layer("x" * 300)
    assert len(long) == 120 and long != sanitise_layer("x" * 301)


def test_export_command_errors(served, tmp_path, capsys):
    tiny = str(served["tiny"])
    assert main(["export-gradients", "--model", tiny]) == 2
    assert main(["export-gradients", "--model", tiny, "--out", str(tmp_path / "g.onnx"),
                 "--triton-repo", str(tmp_path)]) == 2
    assert main(["export-gradients", "--model", tiny, "--triton-repo", str(tmp_path / "none")]) == 2
    assert main(["export-gradients", "--model", tiny, "--out", str(tmp_path / "g.onnx"), "--name", "x"]) == 2
    assert main(["export-gradients", "--model", tiny, "--triton-repo", str(tmp_path), "--layer", "zzz"]) == 2
    assert main(["export-gradients", "--model", tiny, "--out", str(tmp_path / "g.onnx"), "--dream-layer", "act",
                 "--relu", "guided"]) == 2
    err = capsys.readouterr().err
    assert "exactly one of --out FILE and --triton-repo REPO" in err and "no such folder" in err
    assert "--dream-layer takes no --layer and no --relu" in err and not (tmp_path / "g.onnx").exists()
    assert main(["export-gradients", "--model", tiny, "--out", str(tmp_path / "d.onnx"), "--dream-layer", "act"]) == 0
    dream = onnx.load(str(tmp_path / "d.onnx"))
    assert [o.name for o in dream.graph.output] == ["explainer_layer_means", "gradient"]


def test_bundled_gradient_cli_over_grpc_equals_in_process(served, tmp_path):
    args = ["explain", COFFEE, "--method", "gradient", "--json", "--quiet"]
    assert main(args + ["--out", str(tmp_path / "local")]) == 0
    assert main(args + ["--out", str(tmp_path / "remote"),
                        "--model", f"{served['server'].grpc_url}/efficientnet_lite0"]) == 0
    for suffix in ("gradient.npy", "gradient.attributions.npy"):
        a, b = (np.load(tmp_path / d / f"coffee.{suffix}") for d in ("local", "remote"))
        assert a.shape == b.shape and np.abs(a - b).max() <= 1e-5 * np.abs(a).max()
    meta = json.loads((tmp_path / "remote" / "coffee.gradient.json").read_text())
    assert meta["target"] == 967 and meta["backend"].startswith("triton (grpc://")


def test_inspect_lists_the_deployed_companion_models(served, capsys):
    """inspect on an endpoint: the layers reachable through the models deployed next to it."""
    assert main(["inspect", "--model", f"{served['server'].grpc_url}/tiny", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["default_feature_layer"] == "act" and [lay["name"] for lay in info["layers"]] == ["act"]
    found = {c["model"]: c for c in info["deployed"]}
    assert sorted(found) == ["tiny_dream__act", "tiny_grad_deconv", "tiny_grad_guided", "tiny_grad_standard",
                             "tiny_grad_standard__act"]
    assert found["tiny_dream__act"] == {"model": "tiny_dream__act", "kind": "dream", "layers": ["act"]}
    assert found["tiny_grad_standard__act"]["default_layer"] and found["tiny_grad_guided"]["relu"] == "guided"
    assert main(["inspect", "--model", f"{served['server'].http_url}/plain"]) == 0
    out = capsys.readouterr().out
    assert "layers (0, through the deployed models below)" in out and "deployed:" not in out
