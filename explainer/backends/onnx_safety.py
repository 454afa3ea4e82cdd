"""Checks on an ONNX file before any runtime reads it (the external-data CVE family).

onnx's external data has let crafted models read files outside their folder
(CVE-2022-25882, CVE-2024-27318, CVE-2025-51480, CVE-2026-27489/34447). ONNX Runtime
resolves external data itself, so every location is validated here first.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import onnx
from onnx.external_data_helper import ExternalDataInfo, _get_all_tensors

from ..errors import InputError

DEFAULT_MAX_MODEL_BYTES = 4 << 30


def file_sha256(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def read_onnx(path: str | Path, *, max_bytes: int = DEFAULT_MAX_MODEL_BYTES) -> onnx.ModelProto:
    """Load an ONNX graph (external data not loaded) after checking the file."""
    return load_checked(path, max_bytes=max_bytes)[0]


def load_checked(path: str | Path, *,
                 max_bytes: int = DEFAULT_MAX_MODEL_BYTES) -> tuple[onnx.ModelProto, dict[str, str]]:
    """Load an ONNX graph (external data not loaded) after checking the file.

    Returns
    -------
    proto : onnx.ModelProto
    external : dict of str to str
        sha256 of every external data file, by its relative location.

    Raises
    ------
    InputError
        Missing file, a file over ``max_bytes``, not ONNX, or unsafe external data.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such model file")
    size = path.stat().st_size
    if size > max_bytes:
        raise InputError(f"{path}: model file is {size} bytes, over the limit of {max_bytes}")
    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception as e:  # protobuf raises several unrelated types
        raise InputError(f"{path}: not a readable ONNX model ({type(e).__name__})") from None
    return proto, external_files(proto, path, max_bytes=max_bytes)


def external_files(proto: onnx.ModelProto, path: Path, *, max_bytes: int) -> dict[str, str]:
    """Validate every external-data reference; return {relative location: sha256}.

    A location must be relative, free of "..", inside the model's folder once
    resolved, reached through no symlink, not a hard link, and the byte range
    ``offset + length`` must lie inside the file.
    """
    folder = path.resolve().parent
    seen: dict[str, str] = {}
    total = 0
    for tensor in _get_all_tensors(proto):
        if tensor.data_location != onnx.TensorProto.EXTERNAL:
            continue
        info = ExternalDataInfo(tensor)
        target = _safe_location(info.location, folder, path)
        size = target.stat().st_size
        offset, length = int(info.offset or 0), info.length
        if offset < 0 or offset > size or (length is not None and (length < 0 or offset + int(length) > size)):
            raise InputError(f"{path}: external data of {tensor.name!r} lies past the end of {info.location}")
        if info.location not in seen:
            total += size
            if total > max_bytes:
                raise InputError(f"{path}: external data over the limit of {max_bytes} bytes")
            seen[info.location] = file_sha256(target)
    return seen


def _safe_location(location: str, folder: Path, path: Path) -> Path:
    bad = f"{path}: unsafe external data location {location!r}"
    if not location or os.path.isabs(location) or location.startswith(("/", "\\")) or ":" in location:
        raise InputError(bad + " (absolute)")
    parts = Path(location.replace("\\", "/")).parts
    if ".." in parts:
        raise InputError(bad + " (contains '..')")
    current = folder
    for part in parts:
        current = current / part
        if current.is_symlink():
            raise InputError(bad + " (symlink)")
    if not current.resolve().is_relative_to(folder):
        raise InputError(bad + " (outside the model folder)")
    if not current.is_file():
        raise InputError(f"{path}: external data file {location!r} is missing")
    if current.stat().st_nlink > 1:
        raise InputError(bad + " (hard link)")
    return current
