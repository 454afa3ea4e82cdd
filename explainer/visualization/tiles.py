"""Tiles of feature-map channels a person can read: borders, channel numbers, a title."""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

BORDER = (70, 70, 90)


def _font(size: int) -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1: the fixed bitmap font
        return ImageFont.load_default()


def channel_tile(values: np.ndarray, numbers: Sequence[int], title: str, *, min_cell: int = 96,
                 border: int = 3, label: int = 16) -> np.ndarray:
    """Tile channels in [0, 1] as grey images with borders, channel numbers and a title.

    Parameters
    ----------
    values : (n, h, w) float ndarray in [0, 1] (white = strong, black = weak)
    numbers : n channel numbers, written above their cells
    title : the lines above the tile (e.g. the layer and the scaling), newline-separated
    min_cell : each channel is enlarged by an integer factor (nearest) to at least this
        many pixels on its long side
    border, label : pixel sizes of the borders and the number strips (the title strip is
        ``header = 8 + 17 * lines``)

    Returns
    -------
    tile : (header + rows * (label + f h + border) + border, cols * (f w + border) + border, 3)
        uint8 ndarray, ``cols = ceil(sqrt(n))``, ``f = ceil(min_cell / max(h, w))``
    """
    n, h, w = values.shape
    cols = math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    f = max(1, math.ceil(min_cell / max(h, w)))
    ch, cw = f * h, f * w
    header = 8 + 17 * len(title.splitlines())
    width = cols * (cw + border) + border
    height = header + rows * (label + ch + border) + border
    canvas = np.empty((height, width, 3), np.uint8)
    canvas[:] = BORDER
    canvas[:header] = 255
    grey = np.round(np.clip(values, 0, 1) * 255).astype(np.uint8)
    for i in range(n):
        r, c = divmod(i, cols)
        top = header + r * (label + ch + border) + border + label
        left = border + c * (cw + border)
        canvas[top:top + ch, left:left + cw] = np.kron(grey[i], np.ones((f, f), np.uint8))[..., None]
    im = Image.fromarray(canvas)
    draw = ImageDraw.Draw(im)
    for j, line in enumerate(title.splitlines()):
        draw.text((4, 4 + 17 * j), line, fill=(0, 0, 0), font=_font(14))
    small = _font(12)
    for i, number in enumerate(numbers):
        r, c = divmod(i, cols)
        draw.text((border + c * (cw + border) + 2, header + r * (label + ch + border) + border + 1),
                  f"ch {number}", fill=(255, 255, 255), font=small)
    return np.asarray(im)


def with_colorbar(picture: np.ndarray, cmap: str, vmin: float, vmax: float, *, width: int = 12,
                  gap: int = 4, text: int = 44) -> np.ndarray:
    """``picture`` with a vertical colour bar on its right, its top and bottom values written.

    Parameters
    ----------
    picture : (h, w, 3) uint8 ndarray
    cmap : a matplotlib colormap name; vmin, vmax : the values at the bar's ends

    Returns
    -------
    (h, w + gap + width + text, 3) uint8 ndarray (white background)
    """
    import matplotlib

    h, w = picture.shape[:2]
    out = np.full((h, w + gap + width + text, 3), 255, np.uint8)
    out[:, :w] = picture
    ramp = matplotlib.colormaps[cmap](np.linspace(1, 0, h))[:, :3] * 255
    out[:, w + gap:w + gap + width] = np.round(ramp).astype(np.uint8)[:, None, :]
    im = Image.fromarray(out)
    draw = ImageDraw.Draw(im)
    font = _font(10)
    x = w + gap + width + 2
    draw.text((x, 0), f"{vmax:.2g}", fill=(0, 0, 0), font=font)
    draw.text((x, h - 12), f"{vmin:.2g}", fill=(0, 0, 0), font=font)
    return np.asarray(im)
