"""Attention rollout (Abnar & Zuidema 2020, "Quantifying Attention Flow in Transformers").

The attention weights of every layer are the outputs of the graph's attention Softmax
nodes: a Softmax over the last axis of a (N, heads, T, T) tensor whose output multiplies
the values (MatMul or Einsum), found in the ONNX graph (graph/feature_default.py). Per
layer the heads are fused (mean, max or min), the residual connection is added as the
identity, ``0.5 A + 0.5 I``, and the rows renormalised; the layers' matrices are
multiplied in order, ``R = A_L ... A_1``. The map is the class token's row of R over the
patch tokens (the mean of the patch rows when the model has no leading token), on the
patch grid found from the patch embedding, upsampled to the input. Class-agnostic: the
target is recorded only.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from ..errors import InputError
from ..explanation import Explanation
from ..graph.feature_default import windowed
from ..model import Model
from . import MethodInfo, Option
from .activations import upsample
from .common import explanation, prepare

FUSIONS = ("mean", "max", "min")


def rollout(attentions: list[np.ndarray], head_fusion: str = "mean") -> np.ndarray:
    """The rolled-out attention (T, T) of one image.

    Parameters
    ----------
    attentions : list of (heads, T, T) or (T, T) ndarrays, first layer first; rows sum to 1
    head_fusion : {"mean", "max", "min"}

    Returns
    -------
    (T, T) float64 ndarray, rows summing to 1
    """
    result = None
    for a in attentions:
        a = np.asarray(a, np.float64)
        fused = a if a.ndim == 2 else getattr(a, head_fusion)(axis=0)
        step = 0.5 * fused + 0.5 * np.eye(fused.shape[-1])
        step /= step.sum(axis=-1, keepdims=True)
        result = step if result is None else step @ result
    if result is None:
        raise InputError("attention-rollout: no attention layers")
    return result


def attention_rollout(model: Model, image: Any, target: int | str | None = None, *, head_fusion: str = "mean",
                      output_upsampling: str = "bicubic", progress: bool = False) -> Explanation:
    """Attention rollout of a vision transformer.

    Parameters
    ----------
    model : Model with ``attention()`` (an ONNX file)
    image : str, Path or ndarray
    target : int, str or None (recorded; rollout does not depend on it)
    head_fusion : {"mean", "max", "min"}
    output_upsampling : {"bicubic", "nearest", "none"}

    Returns
    -------
    Explanation
        ``map`` : (H, W) float32 (or the (h, w) grid with "none"); ``arrays["rollout"]`` : (h, w),
        the class token's attention to each patch.
    """
    if head_fusion not in FUSIONS:
        raise InputError(f"head_fusion must be one of {FUSIONS}, got {head_fusion!r}")
    if output_upsampling not in ("bicubic", "nearest", "none"):
        raise InputError(f"output_upsampling must be bicubic, nearest or none, got {output_upsampling!r}")
    att = model.attention()
    prep = prepare(model, image, target, "probability")
    started = time.perf_counter()
    got = model.activations(prep.x, list(att.tensors))
    prep.stats.model_s += time.perf_counter() - started
    prep.stats.forward_passes += 1
    t = att.prefix + att.grid[0] * att.grid[1]
    wrong = sorted({got[name].shape[-1] for name in att.tensors} - {t})
    if wrong:
        raise InputError(windowed(wrong, t))
    layers = [np.asarray(got[name], np.float64).reshape(-1, t, t) for name in att.tensors]
    r = rollout(layers, head_fusion)
    row = r[0] if att.prefix else r[att.prefix:].mean(axis=0)
    grid = row[att.prefix:].reshape(att.grid)
    relevance = grid if output_upsampling == "none" else upsample(
        grid, prep.x.shape[2:], 3 if output_upsampling == "bicubic" else 0)
    params = dict(head_fusion=head_fusion, layers=len(layers), token_grid=list(att.grid),
                  prefix_tokens=att.prefix, output_upsampling=output_upsampling)
    return explanation(model, prep, "attention-rollout", relevance, params,
                       arrays={"rollout": grid.astype(np.float32)})


METHODS = [MethodInfo("attention-rollout", attention_rollout, (
    Option("--head-fusion", "head_fusion", dict(choices=list(FUSIONS),
                                                help="attention-rollout: how heads combine (default mean)")),
    Option("--output-upsampling", "output_upsampling", dict(choices=["bicubic", "nearest", "none"])),
), help="attention rollout (Abnar & Zuidema 2020) for vision transformers")]
