"""Every reverse-pass rule against central finite differences (float64), and ORT against that."""

import zlib

import numpy as np
import pytest
from onnx import helper

from grad_check import build, check

N = helper.make_node


def const(name: str, value) -> helper.NodeProto:
    arr = np.asarray(value, dtype=np.float64)
    return N("Constant", [], [name], value=helper.make_tensor(name, 11, arr.shape, arr.ravel().tolist()))


def case(nodes, x_shape, inits=None):
    """A make(dtype) for check(): the Constant nodes above are float64, fixed up per dtype."""
    def make(dtype):
        fixed = []
        for n in nodes:
            if n.op_type == "Constant" and dtype == np.float32:
                t = n.attribute[0].t
                arr = np.asarray(t.double_data, np.float32).reshape(tuple(t.dims))
                n = N("Constant", [], list(n.output), value=helper.make_tensor(t.name, 1, arr.shape, arr.ravel()))
            fixed.append(n)
        return build(fixed, ["N"] + list(x_shape), None, inits, dtype=dtype)
    return make


R = np.random.default_rng(42)
W3 = R.normal(size=(4, 3, 3, 3))
CASES = {
    "conv_asym_pads_stride2": ([N("Conv", ["x", "w"], ["y"], pads=[0, 0, 1, 1], strides=[2, 2])], (3, 7, 7),
                               {"w": W3}),
    "conv_asym_pads_stride1": ([N("Conv", ["x", "w", "b"], ["y"], pads=[2, 0, 0, 1])], (3, 5, 6),
                               {"w": W3, "b": R.normal(size=4)}),
    "conv_depthwise": ([N("Conv", ["x", "w"], ["y"], pads=[1, 1, 1, 1], group=3)], (3, 6, 6),
                       {"w": R.normal(size=(3, 1, 3, 3))}),
    "conv_depthwise_stride2_asym": ([N("Conv", ["x", "w"], ["y"], pads=[1, 2, 2, 1], group=3, strides=[2, 2])],
                                    (3, 8, 7), {"w": R.normal(size=(6, 1, 3, 3))}),
    "conv_depthwise_stride2_same": ([N("Conv", ["x", "w"], ["y"], pads=[0, 0, 1, 1], group=4, strides=[2, 2])],
                                    (4, 8, 8), {"w": R.normal(size=(4, 1, 3, 3))}),
    "conv_depthwise_stride2_5x5": ([N("Conv", ["x", "w"], ["y"], pads=[1, 1, 2, 2], group=3, strides=[2, 2])],
                                   (3, 9, 10), {"w": R.normal(size=(3, 1, 5, 5))}),
    "conv_depthwise_multiplier_stride3_dilated": ([N("Conv", ["x", "w"], ["y"], pads=[2, 1, 1, 0], group=2,
                                                     strides=[3, 2], dilations=[2, 1])],
                                                  (2, 10, 11), {"w": R.normal(size=(4, 1, 3, 2))}),
    "conv_depthwise_1d_stride2": ([N("Conv", ["x", "w"], ["y"], pads=[1, 1], group=3, strides=[2])], (3, 9),
                                  {"w": R.normal(size=(3, 1, 3))}),
    "conv_dilated": ([N("Conv", ["x", "w"], ["y"], pads=[2, 1, 2, 1], dilations=[2, 1])], (3, 7, 6),
                     {"w": W3}),
    "conv_groups_strides_dilations": ([N("Conv", ["x", "w"], ["y"], pads=[1, 0, 0, 2], group=2,
                                         strides=[2, 3], dilations=[1, 2])], (4, 9, 10),
                                      {"w": R.normal(size=(6, 2, 3, 2))}),
    "conv_same_upper": ([N("Conv", ["x", "w"], ["y"], auto_pad="SAME_UPPER", strides=[2, 2])], (3, 6, 5),
                        {"w": W3}),
    "conv_pad_beyond_kernel": ([N("Conv", ["x", "w"], ["y"], pads=[1, 2, 0, 1])], (3, 4, 4),
                               {"w": R.normal(size=(2, 3, 1, 1))}),
    "conv_1d": ([N("Conv", ["x", "w"], ["y"], pads=[0, 1], strides=[2])], (3, 9), {"w": R.normal(size=(2, 3, 3))}),
    "conv_transpose": ([N("ConvTranspose", ["x", "w"], ["y"], strides=[2, 2], pads=[0, 1, 1, 0],
                          output_padding=[1, 0])], (3, 4, 4), {"w": R.normal(size=(3, 2, 3, 3))}),
    "conv_transpose_groups_dilated": ([N("ConvTranspose", ["x", "w"], ["y"], group=2, dilations=[2, 1],
                                         pads=[1, 0, 2, 1])], (4, 4, 5), {"w": R.normal(size=(4, 3, 2, 3))}),
    "gemm_transB": ([N("Flatten", ["x"], ["f"]), N("Gemm", ["f", "w", "b"], ["y"], transB=1, alpha=0.7, beta=2.0)],
                    (2, 3), {"w": R.normal(size=(4, 6)), "b": R.normal(size=4)}),
    "gemm": ([N("Gemm", ["x", "w"], ["y"], alpha=1.5)], (5,), {"w": R.normal(size=(5, 3))}),
    "matmul_batched": ([N("MatMul", ["x", "w"], ["y"])], (2, 3, 5), {"w": R.normal(size=(5, 4))}),
    "matmul_both_on_path": ([N("Transpose", ["x"], ["t"], perm=[0, 2, 1]), N("MatMul", ["x", "t"], ["y"])],
                            (3, 4), None),
    "relu": ([N("Relu", ["x"], ["y"])], (3, 4, 4), None),
    "relu6_constants": ([const("lo", 0.0), const("hi", 0.6), N("Clip", ["x", "lo", "hi"], ["y"])], (3, 4, 4), None),
    "clip_general": ([N("Clip", ["x", "lo", "hi"], ["y"])], (3, 4, 4), {"lo": -0.5, "hi": 0.4}),
    "clip_min_only": ([N("Clip", ["x", "lo"], ["y"])], (3, 4, 4), {"lo": 0.0}),
    "leaky_relu": ([N("LeakyRelu", ["x"], ["y"], alpha=0.1)], (3, 4, 4), None),
    "prelu": ([N("PRelu", ["x", "s"], ["y"])], (3, 4, 4), {"s": R.normal(size=(3, 1, 1))}),
    "sigmoid_tanh": ([N("Sigmoid", ["x"], ["s"]), N("Tanh", ["s"], ["y"])], (3, 4, 4), None),
    "hard_swish": ([N("Mul", ["x", "k"], ["s"]), N("HardSwish", ["s"], ["y"])], (3, 4, 4), {"k": 4.0}),
    "hard_sigmoid": ([N("HardSigmoid", ["x"], ["y"], alpha=0.5)], (3, 4, 4), None),
    "softmax_mid": ([N("Softmax", ["x"], ["s"], axis=1), N("Mul", ["s", "k"], ["y"])], (3, 4, 4),
                    {"k": R.normal(size=(3, 1, 1))}),
    "log_softmax_exp_abs_neg": ([N("LogSoftmax", ["x"], ["s"], axis=2), N("Abs", ["s"], ["a"]),
                                 N("Neg", ["a"], ["e"]), N("Exp", ["e"], ["y"])], (3, 4), None),
    "log_sqrt": ([N("Exp", ["x"], ["e"]), N("Sqrt", ["e"], ["s"]), N("Log", ["s"], ["y"])], (3, 4), None),
    "batch_norm": ([N("BatchNormalization", ["x", "s", "b", "m", "v"], ["y"], epsilon=1e-3)], (3, 4, 4),
                   {"s": R.normal(size=3), "b": R.normal(size=3), "m": R.normal(size=3), "v": R.random(3) + 0.5}),
    "add_broadcast_both_on_path": ([N("GlobalAveragePool", ["x"], ["p"]), N("Add", ["x", "p"], ["y"])],
                                   (3, 4, 5), None),
    "mul_squeeze_excite": ([N("ReduceMean", ["x"], ["p"], axes=[2, 3], keepdims=1), N("Sigmoid", ["p"], ["s"]),
                            N("Mul", ["x", "s"], ["y"])], (3, 4, 5), None),
    "mul_sub_broadcast_constants": ([N("Mul", ["x", "c"], ["m"]), N("Sub", ["k", "m"], ["y"])], (3, 4, 5),
                                    {"c": R.normal(size=(1, 5)), "k": R.normal(size=(3, 1, 1))}),
    "div_both_on_path": ([N("Mul", ["x", "x"], ["q"]), N("ReduceSum", ["q", "ax"], ["s"], keepdims=1),
                          N("Add", ["s", "one"], ["d"]), N("Div", ["x", "d"], ["y"])], (3, 4),
                         {"ax": np.array([1]), "one": 1.0}),
    "div_rank_broadcast": ([N("Exp", ["x"], ["e"]), N("Div", ["c", "e"], ["y"])], (3, 4), {"c": R.normal(size=4)}),
    "max_pool_overlapping": ([N("MaxPool", ["x"], ["y"], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])],
                             (2, 7, 7), None),
    "max_pool_dilated_ceil": ([N("MaxPool", ["x"], ["y"], kernel_shape=[2, 2], strides=[2, 2], dilations=[2, 1],
                                 ceil_mode=1)], (2, 7, 6), None),
    "average_pool_pads": ([N("AveragePool", ["x"], ["y"], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 0, 0, 1])],
                          (2, 7, 6), None),
    "average_pool_count_pads": ([N("AveragePool", ["x"], ["y"], kernel_shape=[3, 2], strides=[1, 2],
                                   pads=[1, 1, 1, 1], count_include_pad=1)], (2, 5, 6), None),
    "average_pool_ceil": ([N("AveragePool", ["x"], ["y"], kernel_shape=[2, 2], strides=[2, 2], ceil_mode=1)],
                          (2, 5, 5), None),
    "global_pools": ([N("GlobalMaxPool", ["x"], ["a"]), N("GlobalAveragePool", ["x"], ["b"]),
                      N("Concat", ["a", "b"], ["y"], axis=1)], (3, 4, 5), None),
    "reduce_mean_no_keepdims": ([N("ReduceMean", ["x"], ["y"], axes=[1, 3], keepdims=0)], (3, 4, 5), None),
    "reduce_sum_all": ([N("ReduceSum", ["x"], ["s"], keepdims=0), N("Mul", ["x", "s"], ["y"])], (3, 4), None),
    "lrn_odd": ([N("LRN", ["x"], ["y"], size=3, alpha=0.5, beta=0.75, bias=1.5)], (5, 3, 3), None),
    "lrn_even": ([N("LRN", ["x"], ["y"], size=4, alpha=0.3, beta=0.6, bias=2.0)], (6, 2, 3), None),
    "concat_split": ([N("Relu", ["x"], ["r"]), N("Concat", ["x", "r"], ["c"], axis=2),
                      N("Split", ["c", "sp"], ["s1", "s2", "s3"], axis=2), N("Mul", ["s1", "s3"], ["y"])],
                     (2, 3, 4), {"sp": np.array([2, 3, 1])}),
    "split_unused_output": ([N("Split", ["x", "sp"], ["a", "b"], axis=1), N("Tanh", ["b"], ["y"])], (5, 3),
                            {"sp": np.array([2, 3])}),
    "slice_steps": ([N("Slice", ["x", "st", "en", "ax", "sp"], ["y"])], (4, 5, 6),
                    {"st": np.array([1, 0, -1]), "en": np.array([4, 5, -7]), "ax": np.array([1, 2, 3]),
                     "sp": np.array([1, 2, -2])}),
    "slice_plain": ([N("Slice", ["x", "st", "en", "ax"], ["y"])], (4, 5),
                    {"st": np.array([1, 2]), "en": np.array([3, 100]), "ax": np.array([-2, -1])}),
    "pad_constant": ([N("Pad", ["x", "p", "v"], ["y"], mode="constant")], (2, 4, 5),
                     {"p": np.array([0, 0, 1, 0, 0, 0, 2, 2]), "v": 0.5}),
    "pad_reflect": ([N("Pad", ["x", "p"], ["y"], mode="reflect")], (2, 4, 5),
                    {"p": np.array([0, 0, 2, 1, 0, 0, 1, 3])}),
    "pad_edge": ([N("Pad", ["x", "p"], ["y"], mode="edge")], (2, 4, 5), {"p": np.array([0, 0, 2, 0, 0, 0, 1, 3])}),
    "transpose_reshape": ([N("Transpose", ["x"], ["t"], perm=[0, 3, 1, 2]), N("Reshape", ["t", "s"], ["r"]),
                           N("Flatten", ["r"], ["y"], axis=1)], (2, 3, 4), {"s": np.array([0, 4, 6, 1])}),
    "squeeze_unsqueeze_expand": ([N("Unsqueeze", ["x", "a"], ["u"]), N("Expand", ["u", "s"], ["e"]),
                                  N("Squeeze", ["e", "b"], ["y"])], (3, 1), {"a": np.array([1]),
                                                                            "s": np.array([1, 1, 3, 4]),
                                                                            "b": np.array([1])}),
    "identity_dropout_cast": ([N("Identity", ["x"], ["i"]), N("Dropout", ["i"], ["d"]), N("Relu", ["d"], ["y"])],
                              (3, 4), None),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_rule_matches_finite_differences(name):
    nodes, shape, inits = CASES[name]
    rng = np.random.default_rng(zlib.crc32(name.encode()))
    x = rng.normal(size=(2,) + tuple(shape))
    check(case(nodes, shape, inits), x, rng, ort=name != "lrn_even")  # ORT's LRN takes odd sizes only
