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


def apply_boxes(x: Any, rows: Any, cols: Any, value: Any, xp: ModuleType, out: Any = None) -> Any:
    """Copies of ``x`` with one rectangular mask each set to ``value``.

    Parameters
    ----------
    x : (1, C, H, W) float32 array
    rows : (M, H) bool array
    cols : (M, W) bool array
    value : (C,) float32 array, the fill value per channel
    out : (M, C, H, W) float32 array, optional
        A buffer to fill in place (see ``engine.BatchRing``).

    Returns
    -------
    batch : (M, C, H, W) float32 array
    """
    inside = rows[:, None, :, None] & cols[:, None, None, :]
    if out is None:
        out = xp.empty((rows.shape[0],) + tuple(x.shape[1:]), xp.float32)
    out[...] = x
    xp.copyto(out, xp.broadcast_to(value[None, :, None, None], out.shape), where=inside)
    return out


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


def blend(x: Any, keep: Any, fill: Any, xp: ModuleType, out: Any = None) -> Any:
    """Copies of ``x`` where each mask keeps some pixels and fills the rest.

    ``batch = fill + keep * (x - fill)``: a boolean ``keep`` picks pixels of ``x``
    or ``fill`` exactly; a float ``keep`` in [0, 1] (RISE) mixes them.

    Parameters
    ----------
    x : (1, C, H, W) float32 array
    keep : (M, H, W) bool or float array
    fill : (1, C, H, W) or (C,) float32 array, the values of removed pixels
    out : (M, C, H, W) float32 array, optional
        A buffer to fill in place (see ``engine.BatchRing``).

    Returns
    -------
    batch : (M, C, H, W) float32 array
    """
    if fill.ndim == 1:
        fill = fill[None, :, None, None]
    if out is None:
        out = xp.empty((keep.shape[0],) + tuple(x.shape[1:]), xp.float32)
    if keep.dtype == bool:
        out[...] = fill
        xp.copyto(out, xp.broadcast_to(x, out.shape), where=keep[:, None])
        return out
    xp.subtract(x, fill, out=out)
    out *= keep[:, None]
    out += fill
    return out


def segment_masks(z: Any, labels: Any) -> Any:
    """Pixel masks of on/off feature vectors: one gather, ``z[:, labels]``.

    Parameters
    ----------
    z : (M, F) bool array, z[m, j] is True when feature j is kept in sample m
    labels : (H, W) int array with values in 0..F-1, the feature of each pixel

    Returns
    -------
    keep : (M, H, W) bool array
    """
    return z[:, labels]


def grid_labels(shape: tuple[int, int], cells: tuple[int, int], xp: ModuleType) -> Any:
    """Label matrix of a regular grid of ``cells`` = (rows, cols) over ``shape``.

    Pixel (y, x) is in cell (y * rows // H, x * cols // W), labelled row-major.

    Returns
    -------
    labels : (H, W) int32 array with values in 0..rows*cols-1
    """
    (h, w), (rows, cols) = shape, cells
    r = xp.arange(h) * rows // h
    c = xp.arange(w) * cols // w
    return (r[:, None] * cols + c[None, :]).astype(xp.int32)


def linear_resize_matrix(n_in: int, n_out: int, xp: ModuleType) -> Any:
    """Bilinear (per axis: linear) resize from ``n_in`` to ``n_out`` samples as a matrix.

    Same as ``skimage.transform.resize(order=1, mode="reflect", anti_aliasing=False)``
    (what the RISE reference code uses): output i samples input coordinate
    ``u = (i + 0.5) * n_in / n_out - 0.5``, mirrored about the end samples when
    outside [0, n_in - 1] (u -> -u, u -> 2 (n_in - 1) - u).

    Returns
    -------
    a : (n_out, n_in) float32 array, ``resized = a @ signal``; rows sum to 1
    """
    u = (xp.arange(n_out) + 0.5) * (n_in / n_out) - 0.5
    last = n_in - 1
    u = xp.clip(xp.where(u < 0, -u, xp.where(u > last, 2 * last - u, u)), 0, last)
    lo = xp.floor(u).astype(xp.int64)
    hi = xp.minimum(lo + 1, n_in - 1)
    frac = (u - lo).astype(xp.float32)
    a = xp.zeros((n_out, n_in), xp.float32)
    rows = xp.arange(n_out)
    a[rows, lo] += 1 - frac
    a[rows, hi] += frac
    return a


def shifted_upsample(grids: Any, shifts: Any, row_matrix: Any, col_matrix: Any,
                     shape: tuple[int, int], xp: ModuleType) -> Any:
    """RISE masks: small grids resized by matrices, then cropped at a shift.

    Mask m is ``row_matrix[dy:dy+H] @ grids[m] @ col_matrix[dx:dx+W].T`` with
    (dy, dx) = shifts[m]: two batched matrix products, no per-mask loop.

    Parameters
    ----------
    grids : (M, s, s) float32 array
    shifts : (M, 2) int array, (dy, dx) of each crop
    row_matrix : (Hup, s) float32 array, from :func:`linear_resize_matrix`
    col_matrix : (Wup, s) float32 array
    shape : (H, W), the crop size (H + max dy <= Hup, W + max dx <= Wup)

    Returns
    -------
    masks : (M, H, W) float32 array
    """
    rows = row_matrix[shifts[:, 0:1] + xp.arange(shape[0])[None, :]]  # (M, H, s)
    cols = col_matrix[shifts[:, 1:2] + xp.arange(shape[1])[None, :]]  # (M, W, s)
    return xp.matmul(xp.matmul(rows, grids), cols.transpose(0, 2, 1))

