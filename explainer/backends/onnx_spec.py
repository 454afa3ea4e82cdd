"""What an ONNX classifier file declares: its image input, layout, preprocessing and labels."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnx

from ..errors import InputError
from ..imaging import Preprocessing, parse_preprocessing


_DTYPES = {onnx.TensorProto.FLOAT: np.float32, onnx.TensorProto.FLOAT16: np.float16,
           onnx.TensorProto.DOUBLE: np.float64}


def _dims(value_info: onnx.ValueInfoProto) -> list[int | None]:
    shape = value_info.type.tensor_type.shape
    return [d.dim_value if d.HasField("dim_value") else None for d in shape.dim]


def _image_input(model: onnx.ModelProto, path: Path) -> onnx.ValueInfoProto:
    weights = {init.name for init in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in weights]
    images = [i for i in inputs if len(_dims(i)) == 4]
    if len(inputs) != 1 or not images:
        shapes = {i.name: _dims(i) for i in inputs}
        raise InputError(f"{path}: not an image classifier: expected one 4-D image input, found {shapes}")
    if images[0].type.tensor_type.elem_type not in _DTYPES:
        raise InputError(f"{path}: not an image classifier: input {images[0].name!r} is not a float tensor")
    dims = _dims(images[0])
    if any(d is not None and not 0 < d <= MAX_DIM for d in dims):
        raise InputError(f"{path}: not an image classifier: input dims {dims} are out of range (1..{MAX_DIM})")
    return images[0]


MAX_DIM = 16384


def _layout(dims: list[int | None]) -> str:
    if dims[1] in (1, 3):
        return "NCHW"
    if dims[3] in (1, 3):
        return "NHWC"
    return "NCHW"


def _metadata(model: onnx.ModelProto) -> dict[str, str]:
    return {p.key: p.value for p in model.metadata_props}


def _preprocessing(dims: list[int | None], meta: dict[str, str], overrides: dict[str, Any],
                   path: Path) -> tuple[Preprocessing, str]:
    layout = overrides.get("layout") or _layout(dims)
    c_axis, h_axis, w_axis = (1, 2, 3) if layout == "NCHW" else (3, 1, 2)
    channels = dims[c_axis] or 3
    fixed = (dims[h_axis], dims[w_axis])
    size = tuple(fixed) if None not in fixed else None
    base = dict(size=size or (1, 1), layout=layout, channels=channels)
    if channels == 1:
        base.update(mean=(0.0,), std=(1.0,))
    source = "default"
    if "explainer.preprocessing" in meta:
        spec, source = parse_preprocessing(meta["explainer.preprocessing"], **base), "metadata"
    else:
        spec = Preprocessing(**base)
    if any(overrides.get(k) is not None for k in ("size", "layout", "scale", "mean", "std")):
        spec, source = spec.updated(**overrides), "options"
    if size is None and "explainer.preprocessing" not in meta and overrides.get("size") is None:
        raise InputError(f"{path}: the input size is not fixed in the model; give it with --size H W")
    if size is not None and tuple(spec.size) != size:
        raise InputError(f"{path}: the model's input is fixed at {size[0]}x{size[1]}, not {spec.size}")
    return spec, source


def _labels(meta: dict[str, str], path: Path) -> list[str] | None:
    if "explainer.labels" in meta:
        return meta["explainer.labels"].split("\n")
    txt = path.with_name("labels.txt")
    if txt.is_file() and (txt.is_symlink() or not txt.resolve().is_relative_to(path.resolve().parent)):
        raise InputError(f"{txt}: a labels.txt that is a symlink or lies outside the model's folder is not read")
    if txt.is_file():
        return [line.strip() for line in txt.read_text(encoding="utf-8", errors="replace").splitlines()
                if line.strip()]
    return None
