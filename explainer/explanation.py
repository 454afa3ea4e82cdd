"""The result of every method, and how it is saved (npy + png + json, atomically)."""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from .output_set import write_output_set
from .paths import package_version


@dataclass(frozen=True)
class Explanation:
    """One explanation of one image.

    Attributes
    ----------
    map : (H, W) float32 ndarray
        Relevance at the model's input resolution, unnormalised and signed.
    target : int
        The explained class index.
    label : str
        Its name.
    score : float
        The target's score on the unperturbed input (``params["score"]`` kind).
    method : str
    params : dict
        Every option actually used, "auto" values resolved.
    seed : int or None
    backend : str
        "onnxruntime" or "triton" plus the device or endpoint.
    model_sha256 : str
    model_files : dict of str to str
        sha256 of each external data file of the model, by location.
    timings : dict
        ``wall_s``, ``forward_passes``, ``model_s``.
    pixels : (H, W, 3) uint8 ndarray or None
        The image resized to the model's input, for overlays.
    input : (1, C, H, W) float32 ndarray or None
        The exact tensor explained (NCHW).
    source : str
        The image file, or "" for arrays.
    arrays : dict of str to ndarray
        Further results of the method (e.g. LIME's feature map and importances,
        raw gradients), saved as ``<stem>.<method>.<key>.npy``.
    display : {"jet", "diverging", "pixel", "none"}
        How the PNG shows the map (:mod:`explainer.visualization.rules`): jet over its
        range, red (for) / blue (against) centred on 0 for signed evidence, pixel
        attributions (percentile-clipped, a sign choice), or "none": no map files at all
        (a global method such as deep dream writes only its ``images``).
    images : dict of str to (h, w) or (h, w, 3) uint8 ndarray
        Further pictures (e.g. a tile of activation channels), saved as
        ``<stem>.<method>.<key>.png``.
    preprocessing : dict
        The preprocessing applied to the image (:class:`explainer.Preprocessing` fields).
    crop_box : [left, top, right, bottom] or None
        The region of the original image the model saw, in its pixel coordinates
        (None for a tensor input or no image).
    original : (h, w, 3) uint8 ndarray or None
        The original picture for ``view="full"`` drawings, long side capped at 2048 px.
    image_size : [H0, W0] or None
        The original image's size in pixels.
    explainer_version : str
        The version of explainer that made it.
    timestamp : str
        When it was made, ISO 8601 in UTC.
    """

    map: np.ndarray
    target: int
    label: str
    score: float
    method: str
    params: dict[str, Any]
    seed: int | None = None
    backend: str = ""
    model_sha256: str = ""
    model_files: dict[str, str] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    pixels: np.ndarray | None = field(default=None, repr=False)
    input: np.ndarray | None = field(default=None, repr=False)
    source: str = ""
    arrays: dict[str, np.ndarray] = field(default_factory=dict, repr=False)
    display: str = "jet"
    images: dict[str, np.ndarray] = field(default_factory=dict, repr=False)
    preprocessing: dict[str, Any] = field(default_factory=dict)
    crop_box: list[float] | None = None
    original: np.ndarray | None = field(default=None, repr=False)
    image_size: list[int] | None = None
    explainer_version: str = field(default_factory=package_version)
    timestamp: str = field(default_factory=lambda: datetime.now(timezone.utc).isoformat(timespec="seconds"))

    def to_dict(self) -> dict[str, Any]:
        """Everything but the arrays, JSON-ready."""
        skip = ("map", "pixels", "input", "arrays", "images", "original")
        d = {k: v for k, v in asdict(self).items() if k not in skip}
        d["arrays"] = {k: list(np.shape(v)) for k, v in self.arrays.items()}
        d["images"] = {k: list(np.shape(v)) for k, v in self.images.items()}
        d["map_shape"] = list(self.map.shape)
        finite = self.map[np.isfinite(self.map)]
        d["map_min"], d["map_max"] = (float(finite.min()), float(finite.max())) if finite.size else (None, None)
        d["map_nan_pixels"] = int(self.map.size - finite.size)
        return d

    def file_prefix(self, stem: str) -> str:
        """``<stem>.<method>``, or just the method for a global method's stem (deep dream
        writes ``deep-dream.class_967.png``, not ``deep-dream.deep-dream.class_967.png``)."""
        stem = safe_stem(stem)
        return stem if stem == self.method else f"{stem}.{self.method}"

    def save(self, out_dir: str | Path, stem: str, *, save_input: bool = False,
             input_tensor: np.ndarray | None = None, settings: dict[str, Any] | None = None,
             display: Any = None) -> list[Path]:
        """Write ``<stem>.<method>.npy``, ``.png`` and ``.json`` into ``out_dir``.

        The set appears all or nothing (:func:`explainer.output_set.write_output_set`): the
        ``.json`` is renamed into place last and records the sha256 of ``settings`` and the
        size and sha256 of every other file, which ``--resume`` verifies. ``stem`` is
        reduced to a safe file name. With ``save_input``, ``<stem>.input.npy`` holds
        ``input_tensor`` (default ``self.input``). ``display`` (a
        :class:`explainer.visualization.DisplayOptions`) chooses how the PNG draws the
        map; the JSON records it under ``display_options``. With ``display == "none"``
        only the JSON, ``arrays`` and ``images`` are written (see :meth:`file_prefix`).
        """
        from .visualization import DisplayOptions, overlay_png

        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        stem = safe_stem(stem)
        prefix = self.file_prefix(stem)
        options = display or DisplayOptions()
        record = {**self.to_dict(), "display_options": options.to_dict()}
        files: dict[Path, bytes | np.ndarray] = {}
        if self.display != "none":
            files[out / f"{prefix}.npy"] = self.map.astype(np.float32)
            files[out / f"{prefix}.png"] = overlay_png(self, options)
        for key, value in self.arrays.items():
            files[out / f"{prefix}.{safe_stem(key)}.npy"] = np.asarray(value)
        for key, value in self.images.items():
            files[out / f"{prefix}.{safe_stem(key)}.png"] = png_bytes(value)
        if save_input:
            files[out / f"{stem}.input.npy"] = np.asarray(
                self.input if input_tensor is None else input_tensor, dtype=np.float32)
        return write_output_set(files, out / f"{prefix}.json", record, settings)


def png_bytes(image: np.ndarray) -> bytes:
    """PNG encoding of an (h, w) or (h, w, 3) uint8 image."""
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.asarray(image, dtype=np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def safe_stem(name: str) -> str:
    """A file-name stem with no path separators, no leading dots, at most 100 chars."""
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", Path(name).name).lstrip(".")
    return stem[:100] or "image"


def atomic_write_all(files: dict[Path, bytes | np.ndarray]) -> list[Path]:
    """Write every file to a temporary name, then rename them all into place (all or nothing;
    ``.json`` text redacted): :func:`explainer.output_set.write_output_set` without a record."""
    return write_output_set(files)
