"""Vectorised mask generators; each works on NumPy or CuPy arrays (``xp``)."""

from __future__ import annotations

from types import ModuleType
from typing import Any


def box_axes(lo_y: Any, lo_x: Any, size: tuple[int, int], shape: tuple[int, int],
             xp: ModuleType) -> tuple[Any, Any]:
    """Row and column membership of rectangular masks, clipped to the image.

    Parameters
    ----------
    lo_y, lo_x : (M,) int arrays
        Top-left corner of each mask (may be negative or run past the edge).
    size : (h, w)
        Mask height and width.
    shape : (H, W)
        Image size.
    xp : numpy or cupy

    Returns
    -------
    rows : (M, H) bool array, rows[m, y] is True when mask m covers row y
    cols : (M, W) bool array
    """
    ys = xp.arange(shape[0])[None, :]
    xs = xp.arange(shape[1])[None, :]
    rows = (ys >= lo_y[:, None]) & (ys < lo_y[:, None] + size[0])
    cols = (xs >= lo_x[:, None]) & (xs < lo_x[:, None] + size[1])
    return rows, cols


def apply_boxes(x: Any, rows: Any, cols: Any, value: Any, xp: ModuleType) -> Any:
    """Copies of ``x`` with one rectangular mask each set to ``value``.

    Parameters
    ----------
    x : (1, C, H, W) float32 array
    rows : (M, H) bool array
    cols : (M, W) bool array
    value : (C,) float32 array, the fill value per channel

    Returns
    -------
    batch : (M, C, H, W) float32 array
    """
    inside = rows[:, None, :, None] & cols[:, None, None, :]
    return xp.where(inside, value[None, :, None, None], x).astype(xp.float32, copy=False)


def box_coverage_sum(weights: Any, rows: Any, cols: Any) -> Any:
    """Sum of per-mask weights over the pixels each mask covers: one GEMM.

    Since mask m is the outer product ``rows[m] x cols[m]``, the sum over masks of
    ``weights[m] * mask_m`` is ``(rows * weights)^T @ cols``.

    Parameters
    ----------
    weights : (M,) float array
    rows : (M, H) bool array
    cols : (M, W) bool array

    Returns
    -------
    total : (H, W) float64 array
    """
    r = rows.astype("float64") * weights[:, None]
    return r.T @ cols.astype("float64")
