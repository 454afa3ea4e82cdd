"""Reverse-pass rules of transformer-era and dynamic-shape operators against central finite differences.

Each case is a tiny graph with a dynamic batch (and, where marked, dynamic spatial sizes, so
the rule must compute sizes at run time); ``check`` compares the float64 gradient model run
by onnx's reference evaluator with float64 central differences, then ONNX Runtime's float32
gradient with that.
"""

import zlib

import numpy as np
import pytest
from onnx import helper

from grad_check import build, check

N = helper.make_node
R = np.random.default_rng(7)


def scales(*values):
    """A float32 Constant ``sc`` (Resize's scales stay float32 in a float64 model)."""
    arr = np.asarray(values, np.float32)
    return N("Constant", [], ["sc"], value=helper.make_tensor("sc", 1, arr.shape, arr))


def case(nodes, x_shape, inits=None, opset=17, dynamic=False):
    """A make(dtype) for check(); ``dynamic``: every size but the first two unknown to shape inference."""
    dims = ["N"] + [f"d{i}" if dynamic and i > 0 else s for i, s in enumerate(x_shape)]

    def make(dtype):
        return build(nodes, dims, None, inits, dtype=dtype, opset=opset)
    return make


LN = [N("LayerNormalization", ["x", "s", "b"], ["y"], axis=-1, epsilon=1e-3)]
DECOMPOSED_LN = [N("ReduceMean", ["x"], ["m"], axes=[-1]), N("Sub", ["x", "m"], ["c"]),
                 N("Pow", ["c", "two"], ["sq"]), N("ReduceMean", ["sq"], ["v"], axes=[-1]),
                 N("Add", ["v", "eps"], ["ve"]), N("Sqrt", ["ve"], ["sd"]), N("Div", ["c", "sd"], ["n"]),
                 N("Mul", ["n", "s"], ["y"])]
ATTENTION = [N("MatMul", ["x", "wq"], ["q"]), N("MatMul", ["x", "wk"], ["k"]),
             N("Transpose", ["k"], ["kt"], perm=[0, 2, 1]), N("MatMul", ["q", "kt"], ["a"]),
             N("Softmax", ["a"], ["p"], axis=-1), N("MatMul", ["p", "x"], ["y"])]
CASES = {
    "layer_norm": (LN, (5, 6), {"s": R.normal(size=6), "b": R.normal(size=6)}),
    "layer_norm_two_axes_dynamic": ([N("LayerNormalization", ["x", "s"], ["y"], axis=-2)], (3, 4, 5),
                                    {"s": R.normal(size=(4, 5))}, 17, True),
    "layer_norm_decomposed": (DECOMPOSED_LN, (3, 6), {"two": 2.0, "eps": 1e-3, "s": R.normal(size=6)}, 13),
    "instance_norm_dynamic": ([N("InstanceNormalization", ["x", "s", "b"], ["y"], epsilon=1e-3)], (3, 4, 5),
                              {"s": R.normal(size=3), "b": R.normal(size=3)}, 17, True),
    "elu_selu_mean": ([N("Elu", ["x"], ["e"], alpha=0.7), N("Selu", ["x"], ["s"]), N("Mean", ["e", "s", "x"], ["y"])],
                      (7,), None),
    "gather_class_token": ([N("Gather", ["x", "i"], ["y"], axis=1)], (5, 4), {"i": np.array(0)}),
    "gather_one_index_negative": ([N("Gather", ["x", "i"], ["y"], axis=2)], (3, 5), {"i": np.array([-2])}),
    "gather_matrix_negative": ([N("Gather", ["x", "i"], ["y"], axis=2)], (3, 5),
                               {"i": np.array([[1, -1], [1, 0]])}, 17, True),
    "gather_elements": ([N("GatherElements", ["x", "i"], ["y"], axis=1)], (4, 3),
                        {"i": np.array([[[0, 3, 3], [2, 2, 1]]] * 2)}),
    "erf": ([N("Erf", ["x"], ["y"])], (5,), None),
    "gelu": ([N("Gelu", ["x"], ["y"])], (6,), None, 20),
    "gelu_tanh": ([N("Gelu", ["x"], ["y"], approximate="tanh")], (6,), None, 20),
    "softmax_inner_axis": ([N("Softmax", ["x"], ["y"], axis=1)], (4, 3), None),
    "log_softmax": ([N("LogSoftmax", ["x"], ["y"], axis=-1)], (4, 3), None),
    "attention_batched_matmul": (ATTENTION, (4, 3), {"wq": R.normal(size=(3, 3)), "wk": R.normal(size=(3, 3))}),
    "matmul_broadcast_dynamic": ([N("MatMul", ["x", "w"], ["y"])], (2, 3, 4), {"w": R.normal(size=(4, 2))},
                                 17, True),
    "einsum_batched": ([N("Einsum", ["x", "w"], ["y"], equation="bij,jk->bik")], (3, 4),
                       {"w": R.normal(size=(4, 2))}),
    "einsum_self_ellipsis": ([N("Einsum", ["x", "x"], ["y"], equation="...ij,...kj->...ik")], (3, 4), None),
    "einsum_reduce": ([N("Einsum", ["x"], ["y"], equation="bij->bj")], (3, 4), None),
    "split_concat": ([N("Split", ["x", "sp"], ["a", "c"], axis=1), N("Mul", ["a", "a"], ["a2"]),
                      N("Concat", ["c", "a2"], ["y"], axis=1)], (5, 2), {"sp": np.array([2, 3])}),
    "slice_negative_dynamic": ([N("Slice", ["x", "st", "en", "ax", "sp"], ["y"])], (4, 6),
                               {"st": np.array([-1, 1]), "en": np.array([-5, 100]), "ax": np.array([1, 2]),
                                "sp": np.array([-2, 2])}, 17, True),
    "slice_runtime_start": ([N("Shape", ["x"], ["s"], start=2, end=3), N("Div", ["s", "two"], ["h"]),
                             N("Slice", ["x", "h", "end", "ax"], ["y"])], (3, 6),
                            {"two": np.array([2]), "end": np.array([100]), "ax": np.array([2])}, 17, True),
    "roll_slice_concat": ([N("Slice", ["x", "a0", "a1", "ax"], ["p"]), N("Slice", ["x", "b0", "b1", "ax"], ["q"]),
                           N("Concat", ["q", "p"], ["y"], axis=2)], (3, 5),
                          {"a0": np.array([0]), "a1": np.array([-2]), "b0": np.array([-2]),
                           "b1": np.array([100]), "ax": np.array([2])}, 17, True),
    "reshape_flatten_squeeze": ([N("Reshape", ["x", "s"], ["r"]), N("Unsqueeze", ["r", "a"], ["u"]),
                                 N("Squeeze", ["u", "a"], ["q"]), N("Flatten", ["q"], ["y"], axis=1)], (3, 4),
                                {"s": np.array([0, -1, 2]), "a": np.array([1])}, 17, True),
    "expand_tile": ([N("Expand", ["x", "e"], ["t"]), N("Tile", ["t", "r"], ["y"])], (1, 3),
                    {"e": np.array([1, 2, 3]), "r": np.array([1, 2, 2])}),
    "where_pow_sqrt_reciprocal": ([N("Greater", ["x", "zero"], ["c"]), N("Pow", ["x", "three"], ["p"]),
                                   N("Abs", ["x"], ["ab"]), N("Sqrt", ["ab"], ["s"]),
                                   N("Reciprocal", ["s"], ["r"]), N("Where", ["c", "p", "r"], ["y"])],
                                  (7,), {"zero": 0.0, "three": 3.0}),
    "div_neg_abs": ([N("Neg", ["x"], ["n"]), N("Abs", ["x"], ["a"]), N("Add", ["a", "one"], ["a1"]),
                     N("Div", ["n", "a1"], ["y"])], (6,), {"one": 1.0}),
    "reduce_mean_sum_dynamic": ([N("ReduceMean", ["x"], ["m"], axes=[2, 3], keepdims=0),
                                 N("ReduceSum", ["x", "ax"], ["s"], keepdims=0), N("Add", ["m", "s"], ["y"])],
                                (2, 3, 4), {"ax": np.array([2, 3])}, 17, True),
    "reduce_norms": ([N("ReduceL2", ["x"], ["a"], axes=[2], keepdims=0), N("ReduceL1", ["x"], ["b"], axes=[2], keepdims=0),
                      N("ReduceSumSquare", ["x"], ["c"], axes=[2], keepdims=0),
                      N("ReduceLogSumExp", ["x"], ["d"], axes=[2], keepdims=0), N("Sum", ["a", "b", "c", "d"], ["y"])],
                     (3, 4), None),
    "reduce_max": ([N("ReduceMax", ["x"], ["y"], axes=[1], keepdims=0)], (4, 3), None),
    "global_average_pool_dynamic": ([N("GlobalAveragePool", ["x"], ["y"])], (2, 3, 4), None, 17, True),
    "pad_reflect_dynamic": ([N("Pad", ["x", "p"], ["y"], mode="reflect")], (2, 4, 5),
                            {"p": np.array([0, 0, 2, 1, 0, 0, 1, 3])}, 17, True),
    "pad_edge_dynamic": ([N("Pad", ["x", "p"], ["y"], mode="edge")], (2, 4, 5),
                         {"p": np.array([0, 0, 2, 0, 0, 0, 1, 3])}, 17, True),
    "pad_constant_runtime_pads": ([N("Shape", ["x"], ["s"], start=2, end=3), N("Sub", ["s", "s"], ["z"]),
                                   N("Concat", ["z", "z", "one", "z", "z", "z", "two", "z"], ["p"], axis=0),
                                   N("Pad", ["x", "p"], ["y"])], (2, 4, 5),
                                  {"one": np.array([1]), "two": np.array([2])}, 17, True),
    "resize_nearest": ([scales(1, 1, 2, 1.5), N("Resize", ["x", "", "sc"], ["y"], mode="nearest")], (2, 3, 4),
                       None, 17, True),
    "resize_linear_down": ([scales(1, 1, 0.5, 0.6), N("Resize", ["x", "", "sc"], ["y"], mode="linear")],
                           (2, 6, 5), None, 17, True),
    "resize_linear_sizes": ([N("Resize", ["x", "", "", "sz"], ["y"], mode="linear",
                               coordinate_transformation_mode="align_corners")], (2, 3, 4),
                            {"sz": np.array([2, 2, 5, 7])}),
    "resize_cubic_asymmetric": ([scales(1, 1, 1.5, 2), N("Resize", ["x", "", "sc"], ["y"], mode="cubic",
                                                         coordinate_transformation_mode="asymmetric")],
                                (2, 4, 3), None, 17, True),
    "cast_identity_dropout": ([N("Cast", ["x"], ["c"], to=11), N("Identity", ["c"], ["i"]),
                               N("Dropout", ["i"], ["d"]), N("CastLike", ["d", "x"], ["y"])], (4,), None),
    "hardswish_hardsigmoid": ([N("HardSwish", ["x"], ["h"]), N("HardSigmoid", ["h"], ["y"], alpha=0.3)],
                              (8,), None),
    "sigmoid_silu": ([N("Sigmoid", ["x"], ["s"]), N("Mul", ["x", "s"], ["y"])], (6,), None),
    "mish_softplus": ([N("Mish", ["x"], ["m"]), N("Softplus", ["m"], ["y"])], (6,), None, 18),
    "clip_runtime_bounds": ([N("ReduceMean", ["x"], ["lo"], keepdims=0), N("Clip", ["x", "lo", "hi"], ["y"])],
                            (6,), {"hi": 0.8}),
    "maxpool_ceil_mode": ([N("MaxPool", ["x"], ["y"], kernel_shape=[3, 3], strides=[2, 2], ceil_mode=1)],
                          (2, 6, 6), None),
    "max_min": ([N("Max", ["x", "h"], ["a"]), N("Min", ["a", "x"], ["y"])], (6,), {"h": 0.1}),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_rule_matches_finite_differences(name):
    nodes, shape, inits, *more = CASES[name]
    rng = np.random.default_rng(zlib.crc32(name.encode()))
    x = rng.normal(size=(2,) + tuple(shape))
    check(case(nodes, shape, inits, *more), x, rng)
