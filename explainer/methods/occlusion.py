"""Occlusion sensitivity, with MATLAB's occlusionSensitivity options."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from ..model import Model, logit_view
from ..errors import InputError
from ..explanation import Explanation
from ..perturbation import masks
from ..perturbation.engine import check_batch_size, perturb
from ..xp import array_module, to_numpy
from . import MethodInfo, Option
from .shared_options import INCREMENTAL_OPTION, check_incremental, incremental_runner
from .common import explanation, prepare, auto_or_numbers

UPSAMPLING = ("bicubic", "nearest", "none")
CLIPPING = ("on", "off")


@dataclass(frozen=True)
class OcclusionGrid:
    """Where the masks go: top-left corners along each axis.

    Attributes
    ----------
    mask_size, stride : (h, w)
    lo_y : (ny,) int ndarray, top rows of the masks (negative when clipped)
    lo_x : (nx,) int ndarray, left columns
    """

    mask_size: tuple[int, int]
    stride: tuple[int, int]
    lo_y: np.ndarray
    lo_x: np.ndarray

    @property
    def count(self) -> int:
        return len(self.lo_y) * len(self.lo_x)


def _pair(name: str, value: Any, auto: tuple[int, int], shape: tuple[int, int]) -> tuple[int, int]:
    if isinstance(value, str):
        if value != "auto":
            raise InputError(f"{name} must be 'auto', an integer or a pair, got {value!r}")
        return auto
    pair = tuple(value) if isinstance(value, (list, tuple, np.ndarray)) else (value, value)
    if len(pair) != 2 or not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool)
                                 for v in pair):
        raise InputError(f"{name} must be 'auto', an integer or a pair of integers, got {value!r}")
    if min(pair) < 1:
        raise InputError(f"{name} must be positive, got {list(pair)}")
    return int(pair[0]), int(pair[1])


def occlusion_grid(shape: tuple[int, int], mask_size: Any = "auto", stride: Any = "auto",
                   mask_clipping: str = "on") -> OcclusionGrid:
    """Resolve the "auto" options and place the masks.

    "auto" mask size is 20% and "auto" stride 10% of the input's height and width
    (rounded, at least 1). With ``mask_clipping="on"`` mask centres lie on the grid
    0, stride, 2*stride, ... up to the last pixel and masks are clipped at the
    edges; with "off" every mask lies fully inside the image, from the top-left.
    """
    h, w = shape
    size = _pair("mask_size", mask_size, (max(1, round(0.2 * h)), max(1, round(0.2 * w))), shape)
    step = _pair("stride", stride, (max(1, round(0.1 * h)), max(1, round(0.1 * w))), shape)
    if size[0] > h or size[1] > w:
        raise InputError(f"mask_size {list(size)} is larger than the {h}x{w} input")
    if mask_clipping not in CLIPPING:
        raise InputError(f"mask_clipping must be 'on' or 'off', got {mask_clipping!r}")
    axes = []
    for n, m, s in zip(shape, size, step):
        if mask_clipping == "on":
            axes.append(np.arange(0, n, s) - (m - 1) // 2)
        else:
            axes.append(np.arange(0, n - m + 1, s))
    return OcclusionGrid(size, step, axes[0], axes[1])


def _mask_value(value: Any, x: np.ndarray) -> np.ndarray:
    c = x.shape[1]
    if isinstance(value, str):
        if value != "auto":
            raise InputError(f"mask_value must be 'auto', a number or {c} numbers, got {value!r}")
        return x.mean(axis=(0, 2, 3)).astype(np.float32)
    v = np.atleast_1d(np.asarray(value, dtype=np.float64))
    if v.ndim != 1 or len(v) not in (1, c) or not np.all(np.isfinite(v)):
        raise InputError(f"mask_value must be 'auto', a number or {c} numbers, got {value!r}")
    return np.broadcast_to(v, (c,)).astype(np.float32)


def occlusion_sensitivity(model: Model, image: Any, target: int | str | None = None, *,
                          mask_size: int | Sequence[int] | str = "auto",
                          stride: int | Sequence[int] | str = "auto",
                          mask_value: float | Sequence[float] | str = "auto",
                          mask_clipping: str = "on", output_upsampling: str = "bicubic",
                          mini_batch_size: int = 128, score: str = "probability",
                          execution_environment: str = "auto", incremental: str = "auto",
                          progress: bool = False) -> Explanation:
    """Change in the target's score when each part of the image is occluded.

    Parameters
    ----------
    model : Model
    image : str, Path or ndarray
        File, (H0, W0, 3) uint8 pixels, or a (1, C, H, W) float32 input tensor.
    target : int, str or None
        Class index or label; None explains the top-1 class.
    mask_size, stride : int, (int, int) or "auto"
        "auto": 20% / 10% of the input size.
    mask_value : float, (C,) floats or "auto"
        Fill value in the input tensor's units; "auto" = per-channel mean of it.
    mask_clipping : {"on", "off"}
    output_upsampling : {"bicubic", "nearest", "none"}
        "none": map[y, x] = mean over masks covering (y, x) of
        score(x) - score(masked x), NaN where no mask covers. "bicubic"/"nearest":
        the per-mask score changes, placed at the mask centres and interpolated.
    mini_batch_size : int
    score : {"probability", "logit"}
    execution_environment : {"auto", "cpu", "gpu"}
        Where masks are built and maps aggregated (NumPy or CuPy).
    incremental : {"auto", "off"}
        "auto": run masked inputs incrementally (only the region of each layer a mask
        reaches is recomputed, ``Model.incremental``) when the model is an in-process
        convolutional ONNX model and the cost model expects it to pay; same map to
        float32 rounding. ``params["inference"]`` says which path ran and why.

    Returns
    -------
    Explanation
        ``map`` : (H, W) float32 at the model's input resolution; NaN at pixels no mask
        covers (e.g. the right/bottom strip with ``mask_clipping="off"`` when the stride does
        not divide H - mask; hatched in the picture), counted in ``params["uncovered_pixels"]``.
    """
    if output_upsampling not in UPSAMPLING:
        raise InputError(f"output_upsampling must be one of {UPSAMPLING}, got {output_upsampling!r}")
    check_batch_size(mini_batch_size)
    check_incremental(incremental)
    xp = array_module(execution_environment)
    model = logit_view(model, score)  # a Softmax-ended ONNX model: the logits before the Softmax
    prep = prepare(model, image, target, score)
    shape = prep.x.shape[2:]
    grid = occlusion_grid(shape, mask_size, stride, mask_clipping)
    value = _mask_value(mask_value, prep.x)
    x_dev, value_dev = xp.asarray(prep.x), xp.asarray(value)
    lo_y, lo_x = xp.asarray(grid.lo_y), xp.asarray(grid.lo_x)
    nx = len(grid.lo_x)

    def axes(start: int, stop: int) -> tuple[Any, Any]:
        idx = xp.arange(start, stop)
        return masks.box_axes(lo_y[idx // nx], lo_x[idx % nx], grid.mask_size, shape, xp)

    def fill(out: Any, start: int, stop: int) -> Any:
        return masks.apply_boxes(x_dev, *axes(start, stop), value_dev, xp, out=out)

    runner, inference = incremental_runner(model, prep.x, grid.mask_size, incremental)
    y = perturb(runner, prep.x, grid.count, fill, mini_batch_size, prep.stats, xp, score=score,
                target=prep.target, progress=progress, desc="occlusion")
    diff = prep.score - y
    all_axes = axes(0, grid.count)
    relevance = _aggregate(diff, grid, shape, output_upsampling, all_axes, xp)
    covered = to_numpy(masks.box_coverage_sum(xp.ones(grid.count, dtype=xp.float32), *all_axes)) > 0
    relevance = np.where(covered, relevance, np.nan)  # no mask covers these pixels: no measurement
    params = dict(mask_size=list(grid.mask_size), stride=list(grid.stride),
                  mask_value=value.tolist(), mask_clipping=mask_clipping,
                  output_upsampling=output_upsampling, mini_batch_size=int(mini_batch_size),
                  score=score, execution_environment=xp.__name__, num_masks=grid.count,
                  inference=inference, uncovered_pixels=int((~covered).sum()))
    return explanation(model, prep, "occlusion", relevance, params)


def _aggregate(diff: np.ndarray, grid: OcclusionGrid, shape: tuple[int, int], upsampling: str,
               all_axes: tuple[Any, Any], xp: Any) -> np.ndarray:
    if upsampling == "none":
        rows, cols = all_axes
        w = xp.asarray(diff)
        total = to_numpy(masks.box_coverage_sum(w, rows, cols))
        count = to_numpy(masks.box_coverage_sum(xp.ones_like(w), rows, cols))
        return np.divide(total, count, out=np.zeros_like(total), where=count > 0)
    values = diff.reshape(len(grid.lo_y), len(grid.lo_x))
    centre = [lo[0] + (m - 1) / 2 for lo, m in zip((grid.lo_y, grid.lo_x), grid.mask_size)]
    coords = [(np.arange(n) - c) / s for n, c, s in zip(shape, centre, grid.stride)]
    yy, xx = np.meshgrid(*coords, indexing="ij")
    order = 3 if upsampling == "bicubic" else 0
    from scipy import ndimage
    return ndimage.map_coordinates(values, [yy, xx], order=order, mode="nearest")


METHODS = [MethodInfo("occlusion", occlusion_sensitivity, (
    Option("--mask-size", "mask_size", dict(type=auto_or_numbers(int),
                                            help="'auto' (20%% of the input), N or 'H,W'")),
    Option("--stride", "stride", dict(type=auto_or_numbers(int),
                                      help="'auto' (10%% of the input), N or 'H,W'")),
    Option("--mask-value", "mask_value", dict(type=auto_or_numbers(float),
                                              help="'auto' (per-channel mean), a number or 'R,G,B'")),
    Option("--mask-clipping", "mask_clipping", dict(choices=["on", "off"])),
    Option("--output-upsampling", "output_upsampling", dict(choices=["bicubic", "nearest", "none"])),
    Option("--mini-batch-size", "mini_batch_size", dict(type=int)),
    Option("--score", "score", dict(choices=["probability", "logit"])),
    INCREMENTAL_OPTION,
), help="occlusion sensitivity (MATLAB occlusionSensitivity)")]
