"""Safe image reading and the preprocessing that turns pixels into a model input."""

from __future__ import annotations

import io
import json
import warnings
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import InputError
from .validation import number, numbers

FORMATS = ("PNG", "JPEG", "BMP", "GIF", "TIFF", "WEBP", "PPM")
LAYOUTS = ("NCHW", "NHWC")
RESIZES = ("stretch", "crop")
MIN_CROP_FRACTION = 0.05  # the crop resize upscales by 1 / crop_fraction
MAX_INTERMEDIATE_PIXELS = 1 << 24  # the crop resize never allocates a larger whole image (48 MB RGB)
MAX_FACTOR = 1e6  # |scale|, |mean|, |std| beyond this are not preprocessing but an attack on float32


def read_image(path: str | Path) -> np.ndarray:
    """Read an image file as RGB pixels.

    EXIF orientation is applied, alpha is composited on white, 16-bit images are
    scaled to 8 bits, animated images give their first frame.

    Parameters
    ----------
    path : str or Path
        A PNG, JPEG, BMP, GIF, TIFF, WebP or PPM file.

    Returns
    -------
    pixels : (H, W, 3) uint8 ndarray
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such image file")
    return _decode(path, str(path))


def decode_image(data: bytes, name: str = "image") -> np.ndarray:
    """:func:`read_image` for the bytes of an image file (e.g. from a request); ``name`` is
    what an error message calls it."""
    return _decode(io.BytesIO(data), name)


def _decode(source: Path | io.BytesIO, name: str) -> np.ndarray:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # e.g. a corrupt EXIF block: the image is read or refused
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(source, formats=FORMATS) as im:
                im.seek(0)
                im = ImageOps.exif_transpose(im)
                return _to_rgb(im)
    except (UnidentifiedImageError, Image.DecompressionBombWarning,
            Image.DecompressionBombError, OSError, ValueError, SyntaxError) as e:
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        if isinstance(e, UnidentifiedImageError):
            reason = "not a PNG, JPEG, BMP, GIF, TIFF, WebP or PPM image"
        raise InputError(f"{name}: not a readable image ({reason})") from None


def _to_rgb(im: Image.Image) -> np.ndarray:
    if im.mode in ("I;16", "I;16B", "I;16L", "I"):
        a = np.asarray(im, dtype=np.float64)  # by the format's range, never the image's own maximum
        top = 65535.0 if im.mode != "I" or a.max(initial=0) <= 65535 else 2147483647.0
        gray = np.clip(a / top * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return np.repeat(gray[:, :, None], 3, axis=2)
    if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
        im = im.convert("RGBA")
        background = Image.new("RGBA", im.size, (255, 255, 255, 255))
        im = Image.alpha_composite(background, im)
    return np.asarray(im.convert("RGB"), dtype=np.uint8).copy()


@dataclass(frozen=True)
class Preprocessing:
    """How uint8 RGB pixels become the model's input tensor.

    The image is resized to ``size`` then each channel is mapped
    ``x = (pixel * scale - mean) / std``. ``resize="stretch"`` resizes the whole
    image (aspect ratio not kept); ``resize="crop"`` resizes the shorter side to
    ``size / crop_fraction`` and takes the centre (the usual ImageNet evaluation).

    Attributes
    ----------
    size : (H, W) tuple of int
    layout : {"NCHW", "NHWC"}
        Layout of the model's input tensor.
    scale : float
    mean, std : tuple of float, one per channel
    channels : int
        1 (grayscale) or 3 (RGB).
    resize : {"stretch", "crop"}
    crop_fraction : float in (0, 1]
    """

    size: tuple[int, int]
    layout: str = "NCHW"
    scale: float = 1.0 / 255.0
    mean: tuple[float, ...] = (0.0, 0.0, 0.0)
    std: tuple[float, ...] = (1.0, 1.0, 1.0)
    channels: int = 3
    resize: str = "stretch"
    crop_fraction: float = 0.875

    def __post_init__(self) -> None:
        if len(self.size) != 2 or not all(isinstance(v, (int, np.integer)) and 0 < v <= 16384
                                          for v in self.size):
            raise InputError(f"size must be two integers in 1..16384, got {self.size!r}")
        if self.layout not in LAYOUTS:
            raise InputError(f"layout must be NCHW or NHWC, got {self.layout!r}")
        if self.resize not in RESIZES:
            raise InputError(f"resize must be one of {RESIZES}, got {self.resize!r}")
        number("crop_fraction", self.crop_fraction, low=MIN_CROP_FRACTION, high=1.0)
        if self.channels not in (1, 3):
            raise InputError(f"the model input has {self.channels} channels; only 1 or 3 are images")
        for name in ("mean", "std"):
            v = getattr(self, name)
            if len(v) not in (1, self.channels):
                raise InputError(f"{name} needs 1 or {self.channels} values, got {list(v)}")
        number("scale", self.scale, low=-MAX_FACTOR, high=MAX_FACTOR, normal=True)
        numbers("mean", self.mean, low=-MAX_FACTOR, high=MAX_FACTOR)
        numbers("std", self.std, low=-MAX_FACTOR, high=MAX_FACTOR, normal=True)

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    def updated(self, **changes: Any) -> "Preprocessing":
        """Return a copy with the non-None ``changes`` applied (CLI overrides)."""
        given = {k: _as_tuple(v) if k in ("mean", "std", "size") else v
                 for k, v in changes.items() if v is not None}
        return replace(self, **given)


def _as_tuple(v: Any) -> tuple:
    return tuple(v) if isinstance(v, (list, tuple)) else (v,)


def parse_preprocessing(text: str, **defaults: Any) -> Preprocessing:
    """Parse the ``explainer.preprocessing`` metadata JSON of an ONNX model.

    Keys missing from the JSON come from ``defaults``.
    """
    keys = ("size", "layout", "scale", "mean", "std", "resize", "crop_fraction")
    try:
        d = json.loads(text)
        fields = {**defaults, **{k: d[k] for k in keys if k in d}}
        fields = {k: _as_tuple(v) if k in ("mean", "std", "size") else v for k, v in fields.items()}
        return Preprocessing(**fields)
    except (ValueError, TypeError, KeyError) as e:
        if isinstance(e, InputError):
            raise
        raise InputError(f"model metadata explainer.preprocessing is not usable ({e})") from None


def preprocess(pixels: np.ndarray, spec: Preprocessing) -> np.ndarray:
    """Resize and normalise pixels into one input tensor.

    Parameters
    ----------
    pixels : (H0, W0, 3) uint8 ndarray
    spec : Preprocessing

    Returns
    -------
    x : (1, C, H, W) float32 ndarray, always NCHW (methods work in NCHW; the
        backend converts to the model's own layout).
    """
    if not isinstance(spec, Preprocessing):
        raise InputError(f"spec must be a Preprocessing, got {type(spec).__name__}")
    resized = fit_pixels(pixels, spec)
    v = resized.astype(np.float32)
    if spec.channels == 1:
        v = v @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
        v = v[:, :, None]
    mean = np.asarray(spec.mean, dtype=np.float32)
    std = np.asarray(spec.std, dtype=np.float32)
    x = (v * np.float32(spec.scale) - mean) / std
    return np.ascontiguousarray(x.transpose(2, 0, 1)[None], dtype=np.float32)


def fit_pixels(pixels: np.ndarray, spec: Preprocessing) -> np.ndarray:
    """Resize (and for ``resize="crop"`` centre-crop) pixels to ``spec.size``.

    Returns
    -------
    pixels : (H, W, 3) uint8 ndarray, H, W = spec.size
    """
    pixels = check_pixels(pixels)
    if spec.resize == "stretch":
        return resize_pixels(pixels, spec.size)
    h, w = spec.size
    h0, w0 = pixels.shape[:2]
    nh, nw, top, left = crop_geometry(pixels.shape, spec)
    if nh * nw <= MAX_INTERMEDIATE_PIXELS:
        big = resize_pixels(pixels, (nh, nw))
        return big[top:top + h, left:left + w]
    # over the cap (a thin or tiny image upscaled): resample only the kept region, same sampling grid
    sy, sx = h0 / nh, w0 / nw
    box = (left * sx, top * sy, (left + w) * sx, (top + h) * sy)
    return np.asarray(Image.fromarray(pixels).resize((w, h), Image.Resampling.BICUBIC, box=box))


def crop_geometry(shape: Sequence[int], spec: Preprocessing) -> tuple[int, int, int, int]:
    """The crop resize's geometry: (nh, nw) the whole image resized so its shorter side is
    ``max(size) / crop_fraction``, and (top, left) of the kept ``size`` window in it. The one
    place both :func:`fit_pixels` and :func:`crop_box` (and any mapping back onto the original
    image) take it from; the resized whole is never allocated over MAX_INTERMEDIATE_PIXELS."""
    h, w = spec.size
    h0, w0 = int(shape[0]), int(shape[1])
    if h0 < 1 or w0 < 1:
        raise InputError(f"image has no pixels (shape {list(shape)})")
    ratio = max(h, w) / spec.crop_fraction / min(h0, w0)
    nh, nw = max(h, round(h0 * ratio)), max(w, round(w0 * ratio))
    return nh, nw, (nh - h) // 2, (nw - w) // 2


def check_pixels(pixels: Any) -> np.ndarray:
    """``pixels`` when they are (H, W, 3) uint8 with H, W >= 1; InputError otherwise."""
    if not isinstance(pixels, np.ndarray) or pixels.dtype != np.uint8 or pixels.ndim != 3 \
            or pixels.shape[2] != 3 or 0 in pixels.shape:
        got = f"{pixels.dtype} {list(pixels.shape)}" if isinstance(pixels, np.ndarray) else type(pixels).__name__
        raise InputError(f"pixels must be an (H, W, 3) uint8 array with H, W >= 1, got {got}")
    return pixels


def crop_box(shape: Sequence[int], spec: Preprocessing) -> tuple[float, float, float, float]:
    """The region of the original image that :func:`fit_pixels` keeps.

    Parameters
    ----------
    shape : (H0, W0, ...) the original image's shape
    spec : Preprocessing

    Returns
    -------
    box : (left, top, right, bottom) in the original image's pixel coordinates
        (the whole image for ``resize="stretch"``).
    """
    h0, w0 = int(shape[0]), int(shape[1])
    if spec.resize == "stretch":
        return (0.0, 0.0, float(w0), float(h0))
    h, w = spec.size
    nh, nw, top, left = crop_geometry(shape, spec)
    sy, sx = nh / h0, nw / w0
    return (left / sx, top / sy, (left + w) / sx, (top + h) / sy)


def resize_pixels(pixels: np.ndarray, size: Sequence[int]) -> np.ndarray:
    """Resize (H0, W0, 3) uint8 pixels to ``size`` = (H, W) with antialiased bicubic."""
    h, w = int(size[0]), int(size[1])
    if pixels.shape[:2] == (h, w):
        return pixels
    return np.asarray(Image.fromarray(pixels).resize((w, h), Image.Resampling.BICUBIC))


MAX_DISPLAY_SIDE = 2048


def display_copy(pixels: np.ndarray, max_side: int = MAX_DISPLAY_SIDE) -> np.ndarray:
    """The original picture for drawing, shrunk so its long side is at most ``max_side``
    (a 1 x 10000 image becomes 1 x 2048, never larger: drawing cost stays bounded).

    Returns
    -------
    pixels : (h, w, 3) uint8 ndarray, h, w <= max_side, each >= 1
    """
    h0, w0 = pixels.shape[:2]
    f = max_side / max(h0, w0)
    if f >= 1:
        return pixels
    return resize_pixels(pixels, (max(1, round(h0 * f)), max(1, round(w0 * f))))
