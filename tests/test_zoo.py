"""The test zoo (tests/zoo/make_zoo.py): every method on every model where it applies, and every
gradient method against central finite differences of the ONNX model itself (float64).

The fast tier checks a ViT, a ConvNeXt and the dynamic-H/W model; the rest are marked slow.
Scores are always given explicitly (Grad-CAM's default score may change).
"""

import json
import subprocess
import sys

import numpy as np
import pytest

import explainer

from explainer.errors import InputError
from explainer.graph.feature_default import default_feature
from explainer.methods import discover
from explainer.methods.attention_rollout import rollout
from zoo_check import NAMES, ZOO, Zoo, rel_l2

FAST = {"vit", "convnext", "dynamic_hw"}
TOL = 1e-2
CAM_MODELS = {"dynamic_hw", "nhwc", "resnet_dynamo", "se_silu", "shufflenet", "softmax_head", "swin", "vit_registers"}
ATTENTION = {"vit", "vit_dynamo", "vit_registers"}
PREFIX = {"vit_registers": 3}  # a class token and two registers


def tiered(names):
    return [n if n in FAST else pytest.param(n, marks=pytest.mark.slow) for n in names]


def test_zoo_models_are_small_and_cover_the_patterns():
    assert len(NAMES) >= 10
    for name in NAMES:
        assert (ZOO / f"{name}.onnx").stat().st_size < 1_000_000, name


@pytest.mark.parametrize("name", NAMES)
def test_default_feature_layer_on_every_zoo_model(name):
    import onnx

    layout = "NHWC" if name == "nhwc" else "NCHW"
    found = default_feature(onnx.load(str(ZOO / f"{name}.onnx")), layout)
    assert found is not None
    layer, view = found
    if name in ATTENTION:  # the tokens entering the last attention block, class (and register) tokens dropped
        assert view.layout == "tokens" and view.grid == (4, 4) and view.prefix == PREFIX.get(name, 1)
    else:  # the NHWC-input model is NCHW inside; Swin's channels-last tokens are transposed before the pool
        assert view.layout == "NCHW" and len(layer.shape) == 4


@pytest.mark.parametrize("name", tiered(NAMES))
def test_gradient_methods_match_finite_differences(name):
    z = Zoo(name)
    methods = discover()
    rng = np.random.default_rng(1)
    coords = rng.choice(z.x.size, 32, replace=False)
    target = 3
    # input gradients (the gradient method's attributions), logit and probability scores
    for score in ("logit", "probability"):
        e = methods["gradient"].function(z.model, z.x, target, score=score)
        fd = z.fd(z.x, coords, target, score)
        assert rel_l2(e.arrays["attributions"].reshape(-1)[coords], fd) <= TOL, (score, e, fd)
    # integrated gradients: x * mean of the gradients at alpha x, alpha = 1/4 .. 1
    e = methods["integrated-gradients"].function(z.model, z.x, target, score="logit", baseline="zeros",
                                                 num_steps=4, completeness_tolerance=0)
    path = np.mean([z.fd(a * z.x, coords, target, "logit") for a in (0.25, 0.5, 0.75, 1.0)], axis=0)
    assert rel_l2(e.arrays["attributions"].reshape(-1)[coords], z.x.reshape(-1)[coords] * path) <= TOL
    # Grad-CAM's gradient at its default feature layer (score given explicitly)
    layer = z.model.default_feature_layer()
    tensor = z.model.feature_view(layer).tensor
    wl = np.zeros((1, z.model.spec.num_classes), np.float32)
    wl[0, target] = 1
    _, grad, acts = z.model.gradients(z.x, wl, np.zeros_like(wl), layer=layer)
    picks = rng.choice(acts.size, 32, replace=False)
    fd = z.fd(acts, picks, target, "logit", layer=tensor)
    assert rel_l2(grad.reshape(-1)[picks], fd) <= TOL
    cam = methods["grad-cam"].function(z.model, z.x, target, score="logit", output_upsampling="none")
    assert np.all(np.isfinite(cam.map)) and cam.map.ndim == 2


@pytest.mark.parametrize("name", [n if n in ("resnet_dynamo", "nhwc") else pytest.param(n, marks=pytest.mark.slow)
                                  for n in sorted(CAM_MODELS)])
def test_cam_equals_grad_cam_on_global_average_pool_heads(name):
    # behind GAP + FC, d logit_t / d A_c = W[t, c] / (h w): ReLU(CAM) / (h w) is Grad-CAM (score logit)
    z = Zoo(name)
    methods = discover()
    c = methods["cam"].function(z.model, z.x, 2, score="logit", output_upsampling="none")
    g = methods["grad-cam"].function(z.model, z.x, 2, score="logit", output_upsampling="none",
                                     feature_layer=c.params["feature_layer"])
    h, w = c.map.shape
    np.testing.assert_allclose(g.map, np.maximum(c.map, 0) / (h * w), rtol=1e-3, atol=1e-6 * np.abs(c.map).max())


def test_cam_refuses_heads_without_global_average_pooling():
    with pytest.raises(InputError, match="cam needs a model that ends in GlobalAveragePool"):
        discover()["cam"].function(Zoo("vit").model, Zoo("vit").x, 0, score="logit")


def test_rollout_hand_derived():
    # one layer, 2 tokens, heads [[.5, .5], [1, 0]] and [[1, 0], [0, 1]]: mean [[.75, .25], [.5, .5]];
    # 0.5 A + 0.5 I = [[.875, .125], [.25, .75]] (rows sum to 1); two layers multiply.
    a = np.array([[[0.5, 0.5], [1.0, 0.0]], [[1.0, 0.0], [0.0, 1.0]]])
    one = np.array([[0.875, 0.125], [0.25, 0.75]])
    np.testing.assert_allclose(rollout([a]), one)
    np.testing.assert_allclose(rollout([a, a]), one @ one)
    # max over heads [[1, .5], [1, 1]] -> [[1, .25], [.5, 1]] -> rows renormalised
    np.testing.assert_allclose(rollout([a], "max"), [[0.8, 0.2], [1 / 3, 2 / 3]])


@pytest.mark.parametrize("name", sorted(ATTENTION))
def test_attention_rollout_on_token_models(name):
    z = Zoo(name)
    e = discover()["attention-rollout"].function(z.model, z.x, None, output_upsampling="none")
    prefix = PREFIX.get(name, 1)
    assert e.map.shape == (4, 4) and e.params["layers"] == 2 and e.params["prefix_tokens"] == prefix
    assert np.all(e.map > 0) and e.map.sum() < 1  # the class token keeps part of its own attention
    att = z.model.attention()
    got = z.model.activations(z.x, list(att.tensors))
    r = rollout([got[t][0] for t in att.tensors])
    np.testing.assert_allclose(e.map, r[0, prefix:].reshape(4, 4), rtol=1e-5)


def test_attention_rollout_refuses_models_without_global_attention(tmp_path):
    for name, why in (("convnext", "no attention Softmax"), ("swin", "windowed attention")):
        run = subprocess.run([sys.executable, "-m", "explainer", "explain", "--model", str(ZOO / f"{name}.onnx"),
                              "--method", "attention-rollout", "--out", str(tmp_path), "--target", "0",
                              str(ZOO.parent.parent / "explainer/data/efficientnet_lite0/examples/chelsea.png")],
                             capture_output=True, text=True)
        assert run.returncode == 2 and why in run.stderr and len(run.stderr.strip().splitlines()) == 1, run.stderr
    assert not list(tmp_path.iterdir())


def test_inspect_names_the_feature_layer_grid_and_coverage():
    run = subprocess.run([sys.executable, "-m", "explainer", "inspect", "--model", str(ZOO / "vit.onnx"), "--json"],
                         capture_output=True, text=True, check=True)
    info = json.loads(run.stdout)
    assert info["default_feature_layer"] and info["uncovered_operators"] == []
    assert info["feature_view"]["layout"] == "tokens" and info["feature_view"]["grid"] == [4, 4]


def test_logit_score_on_a_softmax_model_is_the_logit_before_the_softmax(tmp_path):
    import onnx

    z = Zoo("softmax_head")
    logit = float(z.score(z.x.astype(np.float64), 1, "logit")[0])
    e = discover()["gradient"].function(z.model, z.x, 1, score="logit")
    assert e.score == pytest.approx(logit, rel=1e-4)
    # occlusion on the Softmax model's logits = occlusion on the same network cut before its Softmax
    cut = onnx.load(str(z.path))
    softmax = cut.graph.node[-1]
    assert softmax.op_type == "Softmax"
    cut.graph.node.remove(softmax)
    cut.graph.output[0].name = softmax.input[0]
    onnx.save(cut, str(tmp_path / "logits.onnx"))
    plain = explainer.load_model(tmp_path / "logits.onnx")
    options = dict(score="logit", mask_size=8, stride=8)
    o = discover()["occlusion"].function(z.model, z.x, 1, **options)
    ref = discover()["occlusion"].function(plain, z.x, 1, **options)
    assert o.score == pytest.approx(logit, rel=1e-4)
    np.testing.assert_allclose(o.map, ref.map, rtol=1e-4, atol=1e-6 * np.nanmax(np.abs(ref.map)))


SMALL = {"occlusion": dict(mask_size=8, stride=8), "lime": dict(num_samples=40, num_features=4),
         "rise": dict(num_masks=40), "prediction-difference": dict(window_size=8, stride=8, num_samples=2),
         "integrated-gradients": dict(num_steps=4, completeness_tolerance=0), "gradient": dict(num_samples=2),
         "deep-dream": dict(num_iterations=2, pyramid_levels=1, channels=[0]), "activations": {},
         "grad-cam": dict(score="logit"), "cam": dict(score="logit"), "guided-backprop": {}, "deconvnet": {},
         "attention-rollout": {}}


def _applies(method, name):
    return (method != "cam" or name in CAM_MODELS) and (method != "attention-rollout" or name in ATTENTION)


@pytest.mark.parametrize("name", [n if n == "vit" else pytest.param(n, marks=pytest.mark.slow) for n in NAMES])
def test_every_method_runs_on_every_zoo_model(name, tmp_path):
    z = Zoo(name)
    examples = ZOO.parent.parent / "explainer" / "data" / "efficientnet_lite0" / "examples"
    for method, info in discover().items():
        options = dict(SMALL.get(method, {}))
        if method == "prediction-difference":
            options.update(data=str(examples), cache_dir=str(tmp_path))
        if not _applies(method, name):
            with pytest.raises(InputError):
                info.function(z.model, z.x, 0, **options)
            continue
        if method == "deep-dream":
            options["layer"] = z.model.default_feature_layer()
            if z.model.feature_view(options["layer"]).layout == "tokens":
                continue  # deep dream maximises channel means of 4-D maps
        e = info.function(z.model, z.x if info.needs_image else None, 0, **options)
        # NaN only where occlusion's windows leave pixels unmeasured (params["uncovered_pixels"])
        assert np.isfinite(e.map).sum() == e.map.size - e.params.get("uncovered_pixels", 0), (method, name)
        assert e.map.size > 1, (method, name)


def test_hidden_layers_use_the_graph_layout():
    # the NHWC-input model is NCHW inside: its last feature map has 32 channels, not 3
    nhwc = Zoo("nhwc")
    layer = nhwc.model.default_feature_layer()
    assert nhwc.model.layer_channels(layer) == 32
    # a ViT's token layer: D = 32 channels, averaged over the tokens
    vit = Zoo("vit")
    tokens = vit.model.default_feature_layer()
    assert vit.model.layer_channels(tokens) == 32
    w = np.zeros((1, 32), np.float32)
    w[0, 5] = 1
    means, _ = vit.model.layer_mean_gradients(vit.x, w, tokens)
    np.testing.assert_allclose(means[0], vit.model.activations(vit.x, [tokens])[tokens][0].mean(axis=0), atol=1e-5)
    # a ConvNeXt block's LayerNorm runs channels-last: layer means are over (h, w) per channel
    z = Zoo("convnext")
    tensor = "/blocks/blocks.0/norm/LayerNormalization_output_0"
    assert z.model.feature_view(tensor).layout == "NHWC" and z.model.layer_channels(tensor) == 16
    w = np.zeros((1, 16), np.float32)
    w[0, 2] = 1
    means, grad = z.model.layer_mean_gradients(z.x, w, tensor)
    np.testing.assert_allclose(means[0], z.model.activations(z.x, [tensor])[tensor][0].mean(axis=(0, 1)), atol=1e-5)
    # deep dream's gradient: d mean(channel 2) / d input against float64 central differences
    from onnx import TensorProto, helper

    from grad_check import reference
    from zoo_check import H, to_float64

    m64 = to_float64(z.proto)
    del m64.graph.output[:]
    m64.graph.output.append(helper.make_tensor_value_info(tensor, TensorProto.DOUBLE, None))
    ev = reference(m64)
    coords = np.random.default_rng(3).choice(z.x.size, 24, replace=False)
    batch = np.repeat(z.x.astype(np.float64).reshape(1, -1), 48, axis=0)
    batch[np.arange(0, 48, 2), coords] += H
    batch[np.arange(1, 48, 2), coords] -= H
    a = ev.run(None, {z.input: batch.reshape(48, 3, 32, 32)})[0]
    objective = a[..., 2].mean(axis=(1, 2))
    fd = (objective[0::2] - objective[1::2]) / (2 * H)
    assert rel_l2(grad.reshape(-1)[coords], fd) <= TOL


def test_no_default_feature_layer_names_the_option(tmp_path):
    from onnx import TensorProto, helper, numpy_helper
    import onnx

    w = numpy_helper.from_array(np.ones((3 * 8 * 8, 4), np.float32), "w")
    graph = helper.make_graph([helper.make_node("Flatten", ["x"], ["f"]), helper.make_node("Sigmoid", ["f"], ["s"]),
                               helper.make_node("MatMul", ["s", "w"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])], [w])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(tmp_path / "m.onnx"))
    model = explainer.load_model(tmp_path / "m.onnx")
    with pytest.raises(InputError, match="no default feature layer; name one with --feature-layer"):
        discover()["grad-cam"].function(model, np.zeros((1, 3, 8, 8), np.float32), 0, score="logit")
