"""Grad-CAM (MATLAB gradCAM) and CAM (Zhou et al. 2016) for models ending in GAP + FC."""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from ..graph.heads import cam_weights  # noqa: F401  (re-exported: CAM's head reader)
from ..model import CapabilityError, Model, logit_view
from ..errors import InputError
from ..explanation import Explanation
from . import MethodInfo, Option
from .activations import feature_maps, resolve_layer, upsample
from .common import explanation, prepare
from .gradient_common import has_gradients, require_gradients, target_weights

UPSAMPLING = ("bicubic", "nearest", "none")


def _channels_first(t: np.ndarray, model: Model, layer: str) -> np.ndarray:
    """A layer tensor as (N, C, h, w) maps: its layout (or token grid) read from the graph."""
    return feature_maps(t, model, layer, "Grad-CAM")


def _finish(model: Model, prep: Any, method: str, cam: np.ndarray, upsampling: str,
            params: dict[str, Any]) -> Explanation:
    if upsampling not in UPSAMPLING:
        raise InputError(f"output_upsampling must be one of {UPSAMPLING}, got {upsampling!r}")
    if upsampling == "none":
        relevance = cam
    else:
        relevance = upsample(cam, prep.x.shape[2:], 3 if upsampling == "bicubic" else 0)
    params.update(output_upsampling=upsampling, feature_map_shape=list(cam.shape))
    return explanation(model, prep, method, relevance, params,
                       arrays={"feature_map": cam.astype(np.float32)})


def grad_cam(model: Model, image: Any, target: int | str | None = None, *, feature_layer: str = "auto",
             score: str = "auto", output_upsampling: str = "bicubic",
             progress: bool = False) -> Explanation:
    """Gradient-weighted class activation map.

    map = ReLU(sum_c alpha_c A_c), alpha_c = the spatial mean of d score / d A_c, A the
    feature layer's (C, h, w) activations; upsampled to the input size.

    Parameters
    ----------
    model : GradientModel
    image : str, Path or ndarray
    target : int, str or None
    feature_layer : str
        A node or tensor name with a 4-D output, or (N, T, D) tokens on a patch grid; "auto":
        the default feature layer (MATLAB's ReLU rule, else the global pool's input, else the
        tokens entering the last attention block; graph/features.py).
    score : {"auto", "logit", "probability"}
        "auto" (default): the logit, as pytorch-grad-cam, for a model that outputs logits or
        ends in a Softmax whose input the graph gives; otherwise the probability. A confident
        prediction's probability gradient is tiny (p (1 - p)), never exactly 0: it is computed
        without saturating (see ``explainer.graph.gradients``), but the logit's map is the one
        users expect.
    output_upsampling : {"bicubic", "nearest", "none"}
        "none" leaves the map at the feature layer's (h, w).

    Returns
    -------
    Explanation
        ``map`` : (H, W) float32 (or (h, w) with "none"); ``arrays["feature_map"]`` : (h, w).
    """
    require_gradients(model, "grad-cam")
    score = cam_score(model, score)
    model = logit_view(model, score)  # a Softmax-ended model: the logits before the Softmax
    prep = prepare(model, image, target, score)
    layer = resolve_layer(model, feature_layer)
    wl, wp = target_weights(model, 1, prep.target, score)
    started = time.perf_counter()
    _, grad, acts = model.gradients(prep.x, wl, wp, layer=layer)
    prep.stats.model_s += time.perf_counter() - started
    prep.stats.forward_passes += 1
    g, a = (_channels_first(t, model, layer)[0].astype(np.float64) for t in (grad, acts))
    alpha = g.mean(axis=(1, 2))
    cam = np.maximum(np.tensordot(alpha, a, axes=1), 0.0)
    params = dict(feature_layer=layer, score=score, channels=int(a.shape[0]))
    view = model.feature_view(layer)
    if view.layout == "tokens":
        params.update(token_grid=list(view.grid or ()), prefix_tokens=view.prefix)
    return _finish(model, prep, "grad-cam", cam, output_upsampling, params)


def cam_score(model: Model, score: str) -> str:
    """The score CAM-type methods explain: "auto" is the logit, or the probability for a model
    that outputs probabilities and whose logits it cannot give (``logits_tensor``)."""
    if score == "auto":
        has_logits = model.spec.output_kind == "logits" or model.logits_tensor() is not None
        return "logit" if has_logits else "probability"
    if score not in ("logit", "probability"):
        raise InputError(f"score must be 'auto', 'logit' or 'probability', got {score!r}")
    return score


def cam(model: Model, image: Any, target: int | str | None = None, *, score: str = "auto",
        output_upsampling: str = "bicubic", progress: bool = False) -> Explanation:
    """Class activation map: sum_c W[target, c] A_c, A the features before the global pooling.

    The map is the target's logit before pooling (signed, unnormalised); ``score`` only
    picks how the target and its score are reported ("auto": the logit, see ``grad_cam``). With score="logit", Grad-CAM on
    the same layer equals ReLU(CAM) / (h * w). W comes from the ONNX file, or on a
    Triton endpoint from the deployed gradient model of the default feature layer
    (``export-gradients --layer auto``), checked to be that of a GAP + FC head.

    Returns
    -------
    Explanation
        ``map`` : (H, W) float32 (or (h, w) with "none"); ``arrays["feature_map"]`` : (h, w).
    """
    score = cam_score(model, score)
    model = logit_view(model, score)  # a Softmax-ended model: the logits before the Softmax
    try:
        head: tuple[str, np.ndarray] | None = model.linear_head()
    except CapabilityError:
        if not has_gradients(model):
            raise InputError("cam reads the fully connected weights from the ONNX file; "
                             f"{model.spec.source!r} is not one (use --method grad-cam)") from None
        head = None  # a served model: the weights come from its deployed layer gradients
    if head is not None:
        tensor, weights = head
        prep = prepare(model, image, target, score)
        a = _channels_first(model.activations(prep.x, [tensor])[tensor], model, tensor)[0]
        prep.stats.forward_passes += 1
        if weights.shape != (model.spec.num_classes, a.shape[0]):
            raise InputError(f"cam: FC weights {list(weights.shape)} do not match {a.shape[0]} channels "
                             f"and {model.spec.num_classes} classes")
        row = weights[prep.target]
    else:
        prep = prepare(model, image, target, score)
        tensor, row, a = _served_cam_row(model, prep)
    value = np.tensordot(row, a.astype(np.float64), axes=1)
    params = dict(feature_layer=tensor, score=score, channels=int(a.shape[0]))
    return _finish(model, prep, "cam", value, output_upsampling, params)


def _served_cam_row(model: Model, prep: Any) -> tuple[str, np.ndarray, np.ndarray]:
    """CAM without the ONNX file (a Triton endpoint): the target's FC row from layer gradients.

    Behind GlobalAveragePool + a fully connected layer, d logit_t / d A_c(i, j) is
    W[t, c] / (h w) at every position and for every input. The deployed gradient model
    of the default feature layer gives it at the image and at the all-zero input; a
    gradient that varies over space or between the two means another head, and is refused.

    Returns
    -------
    layer : str
    row : (C,) float64 ndarray, W[target]
    activations : (C, h, w) float32 ndarray, the image's feature map
    """
    require_gradients(model, "cam")
    layer = resolve_layer(model, "auto")
    wl = np.zeros((2, model.spec.num_classes), np.float32)
    wl[:, prep.target] = 1.0
    started = time.perf_counter()
    _, grad, acts = model.gradients(np.concatenate([prep.x, np.zeros_like(prep.x)]), wl, np.zeros_like(wl),
                                    layer=layer)
    prep.stats.model_s += time.perf_counter() - started
    prep.stats.forward_passes += 2
    g = _channels_first(grad, model, layer).astype(np.float64)
    row = g[0].mean(axis=(1, 2))
    if np.abs(g - row[None, :, None, None]).max() > 1e-4 * (np.abs(g).max() + 1e-30):
        raise InputError(f"cam needs GlobalAveragePool + a fully connected layer after the feature layer "
                         f"{layer!r}; the served model's gradient there varies over space or with the input "
                         "(use --method grad-cam)")
    return layer, row * g.shape[2] * g.shape[3], _channels_first(acts, model, layer)[0]


UPSAMPLE_OPTION = Option("--output-upsampling", "output_upsampling",
                         dict(choices=["bicubic", "nearest", "none"]))
SCORE_OPTION = Option("--score", "score", dict(choices=["probability", "logit"]))

METHODS = [
    MethodInfo("grad-cam", grad_cam, (
        Option("--feature-layer", "feature_layer", dict(help="grad-cam: a 4-D layer (see `explainer inspect`); "
                                                             "default: MATLAB's default feature layer")),
        SCORE_OPTION, UPSAMPLE_OPTION), help="Grad-CAM (MATLAB gradCAM)"),
    MethodInfo("cam", cam, (SCORE_OPTION, UPSAMPLE_OPTION),
               help="class activation map, for models ending in global average pooling + FC"),
]
