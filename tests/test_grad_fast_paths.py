"""The forms the exporter picks for speed on ONNX Runtime, held to exact answers.

ReLU/ReLU6 masks as HardSigmoid steps (exact at and next to the clamp bounds), strided
depthwise convolutions through a zero-spreading 1x1 ConvTranspose (the form is really
taken; its values are checked against finite differences in test_grad_rules), and
constant reshape targets that keep the batch size known to shape inference.
"""

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from explainer.api import BUNDLED_MODEL
from explainer.graph.gradients import gradient_model
from grad_check import build

N = helper.make_node
F32 = np.float32


def _grad_session(nodes, x_shape, inits=None, relu="standard"):
    model = build(nodes, x_shape, None, inits, dtype=F32)
    grad = gradient_model(model, relu=relu)
    return grad, ort.InferenceSession(grad.SerializeToString(), providers=["CPUExecutionProvider"])


def _sum_gradient(session, x):
    """d sum(y) / d x for a model whose output y has x's shape (flattened per sample)."""
    n = x.shape[0]
    weights = np.ones((n, int(np.prod(x.shape[1:]))), F32)
    feed = {"x": x, "logit_weights": weights, "probability_weights": np.zeros_like(weights)}
    return session.run(["gradient"], feed)[0]


# every kind of float32 around the bounds 0 and 6: zero, the smallest normal, tiny and
# ordinary values, the neighbours of 6, 6 itself, and values clamped from either side
_TOP = F32(6.0)
EDGE = np.array([0.0, 2.0 ** -126, 2.0 ** -120, 1e-30, 1e-7, 0.5, 1.0, 5.999,
                 np.nextafter(_TOP, F32(0)), 6.0, np.nextafter(_TOP, F32(10)), 7.0, 1e30,
                 -2.0 ** -126, -1e-30, -1.0, -1e30], F32)


@pytest.mark.parametrize("hi", [None, 6.0, 0.6, 2.0 ** 20])
def test_step_masks_are_exact_next_to_the_bounds(hi):
    top = F32(hi) if hi is not None else None
    inputs = EDGE if top is None else np.concatenate(
        [EDGE, np.array([np.nextafter(top, F32(0)), top, np.nextafter(top, F32(np.inf))], F32)])
    x = inputs.reshape(1, -1)
    inits = {"lo": np.array(0.0, F32), "hi": np.array(hi if hi is not None else 0.0, F32)}
    node = N("Clip", ["x", "lo", "hi"], ["y"]) if hi is not None else N("Relu", ["x"], ["y"])
    grad, session = _grad_session([node], ["N", x.shape[1]], inits if hi is not None else None)
    assert "HardSigmoid" in {n.op_type for n in grad.graph.node}  # the fast form is the one under test
    want = ((x > 0) & ((x < top) if top is not None else True)).astype(F32)
    np.testing.assert_array_equal(_sum_gradient(session, x), want)


def test_guided_mask_keeps_only_positive_gradients_where_active():
    x = np.array([[-1.0, 0.0, 1e-30, 2.0, 6.0, 7.0]], F32)
    # y = clip(x, 0, 6) * w: the gradient reaching the clamp is w, of either sign
    w = np.array([[1.0, 1.0, -1.0, -1.0, 1.0, 1.0]], F32)
    nodes = [N("Clip", ["x", "lo", "hi"], ["c"]), N("Mul", ["c", "w"], ["y"])]
    inits = {"lo": np.array(0.0, F32), "hi": np.array(6.0, F32), "w": w}
    _, session = _grad_session(nodes, ["N", 6], inits, relu="guided")
    np.testing.assert_array_equal(_sum_gradient(session, x), [[0, 0, 0, 0, 0, 0]])
    _, session = _grad_session(nodes, ["N", 6], {**inits, "w": -w}, relu="guided")
    np.testing.assert_array_equal(_sum_gradient(session, x), [[0, 0, 1, 1, 0, 0]])


def test_double_models_and_unusual_bounds_keep_the_comparisons():
    for dtype, lo, hi in ((np.float64, 0.0, 6.0), (F32, -1.0, 6.0), (F32, 0.0, 2.0 ** 110)):
        model = build([N("Clip", ["x", "lo", "hi"], ["y"])], ["N", 3], None,
                      {"lo": np.array(lo), "hi": np.array(hi)}, dtype=dtype)
        ops = {n.op_type for n in gradient_model(model).graph.node}
        assert "HardSigmoid" not in ops and "Greater" in ops, (dtype, lo, hi)


def _conv_transposes(grad):
    inits = {t.name: numpy_helper.to_array(t) for t in grad.graph.initializer}
    return [(n, inits.get(n.input[1])) for n in grad.graph.node if n.op_type == "ConvTranspose"]


@pytest.mark.parametrize("x_shape, w_shape, attrs", [
    ((4, 8, 8), (4, 1, 3, 3), dict(pads=[0, 0, 1, 1], group=4, strides=[2, 2])),
    ((3, 9, 10), (3, 1, 5, 5), dict(pads=[1, 1, 2, 2], group=3, strides=[2, 2])),
    ((2, 10, 11), (4, 1, 3, 2), dict(pads=[2, 1, 1, 0], group=2, strides=[3, 2], dilations=[2, 1])),
])
def test_strided_depthwise_conv_takes_the_spreading_form(x_shape, w_shape, attrs):
    w = np.random.default_rng(0).normal(size=w_shape).astype(F32)
    model = build([N("Conv", ["x", "w"], ["y"], **attrs)], ["N", *x_shape], None, {"w": w}, dtype=F32)
    grad = gradient_model(model)
    spreads = _conv_transposes(grad)
    assert len(spreads) == 1
    node, ones = spreads[0]
    assert list(helper.get_attribute_value(next(a for a in node.attribute if a.name == "kernel_shape"))) == [1, 1]
    np.testing.assert_array_equal(ones, np.ones((w_shape[0], 1, 1, 1), F32))


def test_strided_conv_that_is_not_depthwise_keeps_conv_transpose():
    w = np.random.default_rng(0).normal(size=(4, 3, 3, 3)).astype(F32)
    model = build([N("Conv", ["x", "w"], ["y"], pads=[0, 0, 1, 1], strides=[2, 2])], ["N", 3, 8, 8], None,
                  {"w": w}, dtype=F32)
    (node, weights), = _conv_transposes(gradient_model(model))
    np.testing.assert_array_equal(weights, w)


def test_bundled_model_gradient_shapes_stay_known():
    """Flatten's and GlobalAveragePool's reverse keep (N, C, H, W): no runtime-shape Reshape/Expand."""
    grad = gradient_model(onnx.load(str(BUNDLED_MODEL)))
    assert not [n for n in grad.graph.node if n.op_type in ("Shape", "Expand")]
    inferred = onnx.shape_inference.infer_shapes(grad)
    shapes = {v.name: [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]
              for v in inferred.graph.value_info if v.type.tensor_type.elem_type == TensorProto.FLOAT}
    backward = [shapes[n.output[0]] for n in grad.graph.node if n.op_type == "Conv" and n.name.startswith("grad/")]
    assert backward and all(s and s[0] == "N" for s in backward)
