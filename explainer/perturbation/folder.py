"""A folder of images, preprocessed for the model (prediction difference's replacement data)."""

from __future__ import annotations

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
