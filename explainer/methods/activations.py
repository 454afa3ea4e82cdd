"""Activations of a layer (MATLAB activations + imtile(mat2gray(...)))."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np

from ..model import Model
from ..errors import InputError
from ..explanation import Explanation
from ..graph.features import to_maps
from . import MethodInfo, Option
from .common import explanation, prepare
from ..visualization.tiles import channel_tile

UPSAMPLING = ("bicubic", "nearest")


def mat2gray(a: np.ndarray) -> np.ndarray:
    """Scale an array to [0, 1] by its own min and max (zeros when constant)."""
    a = np.asarray(a, dtype=np.float64)
    lo, hi = float(a.min()), float(a.max())
    return (a - lo) / (hi - lo) if hi > lo else np.zeros_like(a)


def imtile(channels: np.ndarray, *, min_size: int = 32) -> np.ndarray:
    """Tile (C, h, w) values in [0, 1] into one uint8 image, row by row.

    The grid has ceil(sqrt(C)) columns; empty cells are black. Each channel is
    enlarged by an integer factor (nearest) to be at least ``min_size`` pixels high.

    Returns
    -------
    tile : (rows * h * f, cols * w * f) uint8 ndarray
    """
    c, h, w = channels.shape
    cols = math.ceil(math.sqrt(c))
    rows = math.ceil(c / cols)
    f = max(1, math.ceil(min_size / h))
    grid = np.zeros((rows * cols, h, w))
    grid[:c] = channels
    grid = grid.reshape(rows, cols, h, w).transpose(0, 2, 1, 3).reshape(rows * h, cols * w)
    return np.round(np.kron(grid, np.ones((f, f))) * 255).astype(np.uint8)


def upsample(channel: np.ndarray, shape: tuple[int, int], order: int) -> np.ndarray:
    """Resize an (h, w) map to ``shape`` aligning pixel centres (edges held constant)."""
    coords = [(np.arange(n) + 0.5) * (m / n) - 0.5 for n, m in zip(shape, channel.shape)]
    yy, xx = np.meshgrid(*coords, indexing="ij")
    from scipy import ndimage
    return ndimage.map_coordinates(np.asarray(channel, np.float64), [yy, xx], order=order,
                                   mode="nearest")


def resolve_layer(model: Model, layer: str) -> str:
    """``layer``, or for "auto" the model's default feature layer (its output tensor)."""
    return layer if layer != "auto" else model.default_feature_layer()


def feature_maps(t: np.ndarray, model: Model, layer: str, who: str) -> np.ndarray:
    """A layer tensor as (N, C, h, w) maps: its layout (or token grid) read from the graph.

    A model without a graph (a served one) gives 4-D tensors in its input's layout.
    """
    view = model.feature_view(layer)
    if view.layout != "tokens" and t.ndim != 4:
        raise InputError(f"layer {layer!r} has a {t.ndim}-D output {list(t.shape)}; {who} needs a 4-D "
                         "(N, C, h, w) feature map or (N, T, D) tokens on a patch grid")
    try:
        return to_maps(t, view)
    except ValueError as e:
        raise InputError(f"layer {layer!r}: {e}") from None


def activations(model: Model, image: Any, target: int | str | None = None, *, layer: str = "auto",
                num_channels: int = 16, output_upsampling: str = "bicubic",
                progress: bool = False) -> Explanation:
    """A layer's activations for one image.

    Parameters
    ----------
    model : Model
    image : str, Path, ndarray
    target : ignored but for the label recorded (default: top-1 class)
    layer : str
        A node or tensor name (``explainer inspect``) with a 4-D (1, C, h, w) output;
        "auto": the default feature layer (as MATLAB gradCAM picks it).
    num_channels : int
        How many channels, from the first, go in the tile image.
    output_upsampling : {"bicubic", "nearest"}

    Returns
    -------
    Explanation
        ``map`` : (H, W) the strongest channel (largest activation) upsampled to the
        input; ``arrays["activations"]`` : (C, h, w) float32; ``images["tile"]`` :
        (h', w', 3) uint8, mat2gray of the first ``num_channels`` channels (one scale, as
        MATLAB's ``imtile(mat2gray(act))``) tiled with borders, channel numbers and a
        title naming the layer (:func:`explainer.visualization.tiles.channel_tile`);
        ``params["channel"]`` : the strongest channel.
    """
    if output_upsampling not in UPSAMPLING:
        raise InputError(f"output_upsampling must be one of {UPSAMPLING}, got {output_upsampling!r}")
    if isinstance(num_channels, bool) or not isinstance(num_channels, (int, np.integer)) or num_channels < 1:
        raise InputError(f"num_channels must be a positive integer, got {num_channels!r}")
    prep = prepare(model, image, target, "probability")
    layer = resolve_layer(model, layer)
    act = feature_maps(model.activations(prep.x, [layer])[layer], model, layer, "activations")
    a = act[0]
    channel = int(np.argmax(a.reshape(a.shape[0], -1).max(axis=1)))
    order = 3 if output_upsampling == "bicubic" else 0
    relevance = upsample(a[channel], prep.x.shape[2:], order)
    shown = a[:int(num_channels)]
    params = dict(layer=layer, shape=list(a.shape), channel=channel,
                  num_channels=int(shown.shape[0]), output_upsampling=output_upsampling)
    prep.stats.forward_passes += 1
    result = explanation(model, prep, "activations", relevance, params,
                         arrays={"activations": a.astype(np.float32)})
    title = (f"layer {layer}\nchannels 0-{shown.shape[0] - 1} of {a.shape[0]} ({a.shape[1]}x{a.shape[2]})"
             "\none grey scale, white = strongest")
    tile = channel_tile(mat2gray(shown), list(range(shown.shape[0])), title)
    return dataclasses.replace(result, images={"tile": tile})


METHODS = [MethodInfo("activations", activations, (
    Option("--layer", "layer", dict(help="a layer: node or tensor name (see `explainer inspect`)")),
    Option("--num-channels", "num_channels", dict(type=int, help="channels in the tile (default 16)")),
), help="activations of a layer: tile of channels and the strongest channel over the image")]
