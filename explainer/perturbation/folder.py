"""A folder of images, preprocessed for the model (prediction difference's replacement data)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..imaging import Preprocessing, preprocess, read_image

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm")


def image_files(folder: str | Path | None) -> list[Path]:
    """The image files directly inside ``folder``, sorted by name.

    Raises InputError when the folder is missing, not a folder or has no images.
    """
    if folder is None or str(folder) == "":
        raise InputError("prediction difference needs data=FOLDER, a folder of images to draw "
                         "window replacements from (e.g. a few hundred training images)")
    path = Path(folder)
    if not path.is_dir():
        raise InputError(f"data folder {path}: no such folder")
    files = sorted(p for p in path.iterdir()
                   if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith("."))
    if not files:
        raise InputError(f"data folder {path}: no image files ({', '.join(IMAGE_SUFFIXES)})")
    return files


def load_folder(folder: str | Path | None, preprocessing: Preprocessing) -> np.ndarray:
    """Every image of ``folder`` preprocessed for the model.

    Returns
    -------
    data : (n, C, H, W) float32 ndarray
    """
    files = image_files(folder)
    return np.concatenate([preprocess(read_image(f), preprocessing) for f in files], axis=0)


def tensor_digest(x: np.ndarray) -> str:
    """sha256 of a (1, C, H, W) input tensor's float32 bytes: the content an image shows the model."""
    return hashlib.sha256(np.ascontiguousarray(x, dtype=np.float32).tobytes()).hexdigest()


def load_folder_except(folder: str | Path | None, preprocessing: Preprocessing,
                       exclude: np.ndarray | None) -> tuple[np.ndarray, list[Path], int]:
    """The folder's images preprocessed, without any whose tensor equals ``exclude``.

    Prediction difference must not sample a window from the image it explains (a sample
    equal to the image changes nothing and pulls the evidence towards 0); the image is
    recognised by content (:func:`tensor_digest`), whatever its file name.

    Returns
    -------
    data : (n, C, H, W) float32 ndarray, possibly n = 0
    files : the n files kept
    excluded : how many files were left out
    """
    files = image_files(folder)
    skip = None if exclude is None else tensor_digest(exclude)
    kept, tensors = [], []
    for f in files:
        t = preprocess(read_image(f), preprocessing)
        if tensor_digest(t) != skip:
            kept.append(f)
            tensors.append(t)
    shape = (0,) + tuple(exclude.shape[1:]) if exclude is not None else (0,)
    data = np.concatenate(tensors, axis=0) if tensors else np.zeros(shape, np.float32)
    return data, kept, len(files) - len(kept)
