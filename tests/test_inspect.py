"""Layer listing and MATLAB's default feature layer."""

import onnx
from onnx import TensorProto, helper

from explainer.graph.inspect import default_feature_layer, layers


def _model(nodes, out_shape):
    g = helper.make_graph(nodes, "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 4, 4])],
                          [helper.make_tensor_value_info(nodes[-1].output[0], TensorProto.FLOAT, out_shape)])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


def test_last_relu_like_with_spatial_extent():
    m = _model([helper.make_node("Relu", ["x"], ["r1"], name="relu1"),
                helper.make_node("Relu", ["r1"], ["r2"], name="relu2"),
                helper.make_node("Add", ["r1", "r2"], ["sum"], name="add"),
                helper.make_node("Sigmoid", ["sum"], ["s"], name="sig"),
                helper.make_node("GlobalAveragePool", ["s"], ["gap"], name="gap"),
                helper.make_node("Relu", ["gap"], ["out"], name="relu_1x1")], [1, 2, 1, 1])
    names = [layer.name for layer in layers(m)]
    assert names == ["relu1", "relu2", "add", "sig", "gap", "relu_1x1"]
    assert layers(m)[0].shape == (1, 2, 4, 4)
    # the Add gathers two ReLU outputs; the 1x1 ReLU has no spatial extent
    assert default_feature_layer(m).name == "add"


def test_no_feature_layer():
    m = _model([helper.make_node("Sigmoid", ["x"], ["s"])], [1, 2, 4, 4])
    assert default_feature_layer(m) is None
    assert isinstance(m, onnx.ModelProto)
