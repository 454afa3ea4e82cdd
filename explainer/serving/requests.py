"""One explanation request, as a server runs it: the method, its options, their limits.

Shared by the Triton explainer model (``M_explain``, run inside the server) and the
KServe endpoint. The perturbation methods and the input-gradient methods (through the
deployed gradient model, or an ONNX model's own) run server-side; options are the
method's own keyword arguments (the CLI's ``dest`` names, e.g. ``mask_size``), JSON
values only, and every option that would read a file on the server (LIME's
``segmentation`` file, prediction difference's ``data``, ``cache_dir``) is refused.
The method functions are imported one by one, so a server needs only what they import
(numpy, scipy, Pillow, tqdm; scikit-image and scikit-learn for LIME).
"""

from __future__ import annotations

import base64
import importlib
import inspect
import io
import json
import math
from typing import Any, Mapping

import numpy as np

from ..errors import InputError
from ..explanation import Explanation

MODULES = {"occlusion": "occlusion", "rise": "rise", "lime": "lime",
           "prediction-difference": "prediction_difference", "gradient": "gradient_maps",
           "guided-backprop": "gradient_maps", "deconvnet": "gradient_maps",
           "integrated-gradients": "integrated_gradients"}
REFUSED = {"progress", "data", "cache_dir", "layer", "unit", "sampling", "execution_environment"}
MAX_OPTIONS, MAX_TEXT, MAX_LIST = 24, 64, 16
DEFAULT_MAX_PASSES = 100_000


def method_function(method: str) -> Any:
    """The function of a server-side method (imported on first use)."""
    if method not in MODULES:
        raise InputError(f"method {method!r} does not run server-side; choose one of {sorted(MODULES)}")
    module = importlib.import_module(f"explainer.methods.{MODULES[method]}")
    return next(m.function for m in module.METHODS if m.name == method)


def _check_value(name: str, value: Any) -> None:
    if isinstance(value, bool) or value is None:
        raise InputError(f"option {name}: expected a number, text or a list of numbers, got {value!r}")
    if isinstance(value, str):
        if len(value) > MAX_TEXT:
            raise InputError(f"option {name}: text longer than {MAX_TEXT} characters")
        return
    if isinstance(value, list):
        if not 1 <= len(value) <= MAX_LIST:
            raise InputError(f"option {name}: a list of 1 to {MAX_LIST} numbers, got {len(value)} items")
        for v in value:
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                raise InputError(f"option {name}: a list of numbers, got an item {v!r}")
            _check_number(name, v)
        return
    if not isinstance(value, (int, float)):
        raise InputError(f"option {name}: expected a number, text or a list of numbers, got {type(value).__name__}")
    _check_number(name, value)


def _check_number(name: str, value: float) -> None:
    if not math.isfinite(value) or abs(value) > 1e9:
        raise InputError(f"option {name}: {value!r} is not a finite number below 1e9")


def _passes(method: str, options: Mapping[str, Any], shape: tuple[int, int]) -> int:
    """Forward passes the request asks for (an upper bound; occlusion is bounded by the image)."""
    if method == "rise":
        return int(options.get("num_masks", 4000))
    if method == "lime":
        return int(options.get("num_samples", 2048))
    if method == "integrated-gradients":
        return 3 * int(options.get("num_steps", 25))  # a gradient costs about 3 forward passes
    if method in ("gradient", "guided-backprop", "deconvnet"):
        return 3 * max(1, int(options.get("num_samples", 0)))
    if method == "prediction-difference":
        from ..methods.prediction_difference import prediction_difference_cost

        keys = ("window_size", "stride", "num_samples", "coarse_to_fine")
        given = {k: options[k] for k in keys if k in options}
        return int(prediction_difference_cost(shape, **given)["forward_passes"])
    return 0


def check_request(method: Any, options: Any, *, max_forward_passes: int = DEFAULT_MAX_PASSES,
                  shape: tuple[int, int] = (224, 224)) -> dict[str, Any]:
    """Validate a request's method and options; return the options as keyword arguments.

    Parameters
    ----------
    method : str, one of ``MODULES``
    options : mapping of option name (the method's keyword argument) to a JSON value
    max_forward_passes : int
        Refuse requests that would run the model more often than this.
    shape : (H, W), the model's input size
    """
    if not isinstance(method, str):
        raise InputError("parameters.method must be a method name")
    fn = method_function(method)
    if not isinstance(options, Mapping):
        raise InputError("the options must be a JSON object")
    if len(options) > MAX_OPTIONS:
        raise InputError(f"too many options ({len(options)}; at most {MAX_OPTIONS})")
    accepted = {p.name for p in inspect.signature(fn).parameters.values()
                if p.kind == inspect.Parameter.KEYWORD_ONLY} - REFUSED
    for name, value in options.items():
        if name in REFUSED or (method == "lime" and name == "segmentation" and str(value).endswith(".npy")):
            raise InputError(f"option {name} is not available server-side")
        if name not in accepted:
            raise InputError(f"{method} has no option {name!r}; it takes {', '.join(sorted(accepted))}")
        _check_value(name, value)
    passes = _passes(method, options, tuple(shape))
    if passes > max_forward_passes:
        raise InputError(f"the request needs {passes} forward passes; this server allows {max_forward_passes}")
    return dict(options)


def explain_tensor(model: Any, method: str, x: np.ndarray, target: int | str | None,
                   options: Mapping[str, Any], *, data: str | None = None) -> Explanation:
    """Run a checked request on ``x`` : (1, C, H, W) float32 (NCHW), on the server's CPU or GPU.

    ``data``: the server's folder of images for prediction difference (its ``data`` option).
    """
    if method == "prediction-difference":
        if not data:
            raise InputError("prediction-difference needs a folder of images on the server; this one has "
                             "none (export-explainer --data FOLDER, or serve --data FOLDER)")
        options = {**options, "data": data}
    return method_function(method)(model, x, target, progress=False, **options)


def record(explanation: Explanation) -> dict[str, Any]:
    """The JSON record sent back with the map (``Explanation.to_dict``)."""
    return json.loads(json.dumps(explanation.to_dict(), allow_nan=False, default=_plain))


def _plain(v: Any) -> Any:
    return v.tolist() if isinstance(v, np.ndarray) else v.item() if isinstance(v, np.generic) else str(v)


def pack_arrays(arrays: Mapping[str, np.ndarray]) -> bytes:
    """The explanation's extra arrays as a compressed ``.npz`` (b"" when there are none)."""
    if not arrays:
        return b""
    buf = io.BytesIO()
    np.savez_compressed(buf, **{k: np.asarray(v) for k, v in arrays.items()})
    return buf.getvalue()


def unpack_arrays(data: bytes) -> dict[str, np.ndarray]:
    """Inverse of :func:`pack_arrays` (no pickled objects)."""
    if not data:
        return {}
    with np.load(io.BytesIO(data), allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def encode_array(a: np.ndarray) -> dict[str, Any]:
    """An array as JSON: base64 of its little-endian bytes, dtype and shape."""
    a = np.ascontiguousarray(a)
    a = a.astype(a.dtype.newbyteorder("<"), copy=False)
    return {"b64": base64.b64encode(a.tobytes()).decode("ascii"), "dtype": a.dtype.name, "shape": list(a.shape)}


def decode_array(d: Mapping[str, Any]) -> np.ndarray:
    """Inverse of :func:`encode_array`."""
    return np.frombuffer(base64.b64decode(d["b64"]), dtype=np.dtype(d["dtype"]).newbyteorder("<")).reshape(d["shape"])
