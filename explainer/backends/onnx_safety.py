"""Checks on an ONNX file before any runtime reads it (the external-data CVE family).

onnx's external data has let crafted models read files outside their folder
(CVE-2022-25882, CVE-2024-27318, CVE-2025-51480, CVE-2026-27489/34447). ONNX Runtime
resolves external data itself, so every location is validated here first.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Iterable, Iterator

import onnx

from ..errors import InputError

DEFAULT_MAX_MODEL_BYTES = 4 << 30
MAX_LOCATION_CHARS = 1024


def all_tensors(proto: onnx.ModelProto) -> Iterator[onnx.TensorProto]:
    """Every tensor the format can hold: initializers, sparse initializers (values and indices),
    tensor attributes (Constant, ConstantOfShape, ...) and sparse attributes, in the main graph,
    every subgraph (If, Loop, Scan bodies), every function body (and its attribute defaults)
    and the training-info graphs."""
    yield from _graph_tensors(proto.graph)
    for function in proto.functions:
        yield from _node_tensors(function.node)
        yield from _attribute_tensors(function.attribute_proto)
    for info in proto.training_info:
        yield from _graph_tensors(info.initialization)
        yield from _graph_tensors(info.algorithm)


def _graph_tensors(graph: onnx.GraphProto) -> Iterator[onnx.TensorProto]:
    yield from graph.initializer
    for sparse in graph.sparse_initializer:
        yield from (sparse.values, sparse.indices)
    yield from _node_tensors(graph.node)


def _node_tensors(nodes: Iterable[onnx.NodeProto]) -> Iterator[onnx.TensorProto]:
    for node in nodes:
        yield from _attribute_tensors(node.attribute)


def _attribute_tensors(attributes: Iterable[onnx.AttributeProto]) -> Iterator[onnx.TensorProto]:
    for a in attributes:
        if a.HasField("t"):
            yield a.t
        yield from a.tensors
        for sparse in ([a.sparse_tensor] if a.HasField("sparse_tensor") else []) + list(a.sparse_tensors):
            yield from (sparse.values, sparse.indices)
        if a.HasField("g"):
            yield from _graph_tensors(a.g)
        for g in a.graphs:
            yield from _graph_tensors(g)


def external_reference(tensor: onnx.TensorProto, path: Path) -> tuple[str, int, int | None]:
    """(location, offset, length) of an external tensor, each field checked (a malformed,
    negative, non-numeric or over-long field is an InputError naming the tensor)."""
    fields = {e.key: e.value for e in tensor.external_data}
    name = tensor.name[:80]
    location = fields.get("location", "")
    if "\0" in location or len(location) > MAX_LOCATION_CHARS:
        raise InputError(f"{path}: malformed external data location of tensor {name!r}")
    numbers: dict[str, int | None] = {}
    for key in ("offset", "length"):
        text = fields.get(key)
        if text is None or text == "":
            numbers[key] = None
            continue
        if not (text.isascii() and text.isdigit()) or len(text) > 20:
            raise InputError(f"{path}: external data {key} of tensor {name!r} is not a non-negative integer")
        numbers[key] = int(text)
    return location, numbers["offset"] or 0, numbers["length"]


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
    for tensor in all_tensors(proto):
        if tensor.data_location != onnx.TensorProto.EXTERNAL:
            continue
        location, offset, length = external_reference(tensor, path)
        target = _safe_location(location, folder, path)
        size = target.stat().st_size
        if offset > size or (length is not None and offset + length > size):
            raise InputError(f"{path}: external data of {tensor.name[:80]!r} lies past the end of {location}")
        if location not in seen:
            total += size
            if total > max_bytes:
                raise InputError(f"{path}: external data over the limit of {max_bytes} bytes")
            seen[location] = file_sha256(target)
    return seen


def load_in_memory(path: str | Path, *, max_bytes: int = DEFAULT_MAX_MODEL_BYTES) -> onnx.ModelProto:
    """The checked model with every external tensor (of :func:`all_tensors`) read into memory
    from the checked model folder: the one way a derived model gets its weights. The result
    holds no external reference, so nothing is ever resolved against the working directory."""
    path = Path(path)
    proto, _ = load_checked(path, max_bytes=max_bytes)
    folder = path.resolve().parent
    for tensor in all_tensors(proto):
        if tensor.data_location != onnx.TensorProto.EXTERNAL:
            continue
        location, offset, length = external_reference(tensor, path)
        with open(_safe_location(location, folder, path), "rb") as f:
            f.seek(offset)
            data = f.read() if length is None else f.read(length)
        tensor.raw_data = data
        del tensor.external_data[:]
        tensor.data_location = onnx.TensorProto.DEFAULT
    return proto


def in_memory_bytes(proto: onnx.ModelProto, what: str) -> bytes:
    """The serialized ``proto`` for an ONNX Runtime session made from bytes; InputError when
    any tensor still refers to external data (ONNX Runtime would resolve it against the
    working directory, not the checked model folder)."""
    if any(t.data_location == onnx.TensorProto.EXTERNAL for t in all_tensors(proto)):
        raise InputError(f"the {what} still refers to external data; derived models take their "
                         "weights only from the checked model folder")
    return proto.SerializeToString()


def _safe_location(location: str, folder: Path, path: Path) -> Path:
    bad = f"{path}: unsafe external data location {location[:200]!r}"
    if not location:
        raise InputError(bad + " (empty)")
    if os.path.isabs(location) or location.startswith(("/", "\\")) or ":" in location:
        raise InputError(bad + " (absolute)")
    parts = Path(location.replace("\\", "/")).parts
    if ".." in parts:
        raise InputError(bad + " (contains '..')")
    current = folder
    try:
        for part in parts:
            current = current / part
            if current.is_symlink():
                raise InputError(bad + " (symlink)")
        if not current.resolve().is_relative_to(folder):
            raise InputError(bad + " (outside the model folder)")
        if not current.is_file():
            raise InputError(f"{path}: external data file {location[:200]!r} is missing")
        if current.stat().st_nlink > 1:
            raise InputError(bad + " (hard link)")
    except InputError:
        raise
    except (OSError, ValueError) as e:  # a name too long, a NUL byte
        raise InputError(bad + f" ({type(e).__name__})") from None
    return current
