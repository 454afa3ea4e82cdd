"""What every method does before and after its own work."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
import argparse
import sys
from typing import Any, Callable

import numpy as np

from ..model import Model, resolve_target, scores
from ..errors import InputError
from ..validation import check_memory
from ..explanation import Explanation
from ..imaging import crop_box, display_copy, fit_pixels, preprocess, read_image
from ..perturbation.engine import RunStats, timed_predict



@dataclass(frozen=True)
class ImageInput:
    """An image made ready for a model.

    Attributes
    ----------
    x : (1, C, H, W) float32 ndarray, NCHW
    pixels : (H, W, 3) uint8 ndarray or None (when given a tensor)
    source : str, the file it came from ("" for arrays)
    crop_box : (left, top, right, bottom) of the original image the tensor shows, or None
        (when given a tensor)
    original : (h, w, 3) uint8 ndarray or None, the original picture for drawing (long side
        capped at 2048 px, :func:`explainer.imaging.display_copy`)
    image_size : (H0, W0) of the original image, or None
    """

    x: np.ndarray
    pixels: np.ndarray | None
    source: str
    crop_box: tuple[float, float, float, float] | None = None
    original: np.ndarray | None = None
    image_size: tuple[int, int] | None = None


@dataclass
class Prepared:
    """An input ready to explain: the tensor, its pixels and the base prediction."""

    x: np.ndarray
    pixels: np.ndarray | None
    source: str
    target: int
    score: float
    scores: np.ndarray
    stats: RunStats = field(default_factory=RunStats)
    started: float = field(default_factory=time.perf_counter)
    crop_box: tuple[float, float, float, float] | None = None
    original: np.ndarray | None = None
    image_size: tuple[int, int] | None = None


def load_input(model: Model, image: Any) -> ImageInput:
    """Turn an image path, pixel array or input tensor into an NCHW tensor.

    Parameters
    ----------
    image : str, Path, ndarray or ImageInput
        A file; (H0, W0, 3) or (H0, W0) uint8 pixels; a (1, C, H, W) float
        tensor already preprocessed for the model (NCHW whatever the model's
        layout); or an ImageInput from an earlier call (returned as it is).
    """
    spec = require_model(model).spec
    if isinstance(image, ImageInput):
        return image
    source = str(image) if isinstance(image, (str, Path)) else ""
    if isinstance(image, (str, Path)) and Path(image).suffix.lower() != ".npy":
        pixels = read_image(image)
    else:
        arr = read_npy(image) if source else np.asarray(image)
        if arr.ndim == 4:
            if arr.shape[0] != 1 or tuple(arr.shape[1:]) != spec.input_shape:
                raise InputError(f"input tensor has shape {list(arr.shape)}; the model takes "
                                 f"[1, {', '.join(map(str, spec.input_shape))}] (NCHW)")
            if not np.all(np.isfinite(arr)):
                raise InputError("input tensor contains NaN or Inf")
            return ImageInput(arr.astype(np.float32), None, source)
        if arr.ndim == 2:
            arr = np.repeat(arr[:, :, None], 3, axis=2)
        if arr.ndim != 3 or arr.shape[2] != 3 or arr.dtype != np.uint8:
            raise InputError(f"image must be (H, W, 3) uint8 pixels or a (1, C, H, W) tensor, "
                             f"got {arr.dtype} {list(arr.shape)}")
        pixels = arr
    if 0 in pixels.shape[:2]:
        raise InputError(f"image has no pixels (shape {list(pixels.shape)})")
    c, h, w = spec.input_shape
    check_memory(f"a {h}x{w} model input", 16.0 * c * h * w * 4 + pixels.nbytes * 4)
    x = preprocess(pixels, spec.preprocessing)
    return ImageInput(x, fit_pixels(pixels, spec.preprocessing), source,
                      crop_box(pixels.shape, spec.preprocessing), display_copy(pixels),
                      (int(pixels.shape[0]), int(pixels.shape[1])))


def require_model(model: Any) -> Model:
    """``model`` when it is a loaded model (``explainer.load_model``); InputError otherwise."""
    spec = getattr(model, "spec", None)
    if not callable(getattr(model, "predict", None)) or not hasattr(spec, "preprocessing"):
        raise InputError(f"model must be a loaded model (explainer.load_model(...)), got {type(model).__name__}")
    return model


def read_npy(path: str | Path) -> np.ndarray:
    """Read a .npy input: a (1, C, H, W) float tensor or (H, W, 3) uint8 pixels.

    Pickled objects are refused; NaN and Inf are refused by ``load_input``.
    """
    if not Path(path).is_file():
        raise InputError(f"{path}: no such input file")
    _check_npy_header(Path(path))
    try:
        arr = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as e:
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise InputError(f"{path}: not a readable .npy array ({reason[:120]})") from None
    if arr.dtype.kind not in "fiu":
        raise InputError(f"{path}: .npy input must hold numbers, not {arr.dtype}")
    if arr.dtype.kind == "f" and not np.all(np.isfinite(arr)):
        raise InputError(f"{path}: .npy input contains NaN or Inf")
    return arr


def _check_npy_header(path: Path) -> None:
    """Refuse, before reading the data, a .npy whose header claims more than the file holds or
    more memory than there is."""
    try:
        with open(path, "rb") as f:
            version = np.lib.format.read_magic(f)
            read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            shape, _, dtype = read(f)
            offset = f.tell()
    except (ValueError, OSError, EOFError, SyntaxError, TypeError) as e:
        raise InputError(f"{path}: not a readable .npy array ({str(e).splitlines()[0][:120] if str(e) else ''})") \
            from None
    claimed = int(np.prod(shape, dtype=object)) * dtype.itemsize
    if claimed > path.stat().st_size - offset:
        raise InputError(f"{path}: .npy header claims {claimed} bytes of data, the file holds "
                         f"{path.stat().st_size - offset}")
    check_memory(f"{path}", claimed)


def prepare(model: Model, image: Any, target: int | str | None, score: str) -> Prepared:
    """Load the input and run the base prediction (one forward pass)."""
    started = time.perf_counter()
    inp = load_input(model, image)
    stats = RunStats()
    s = scores(timed_predict(model, inp.x, stats), model.spec, score)[0]
    idx = resolve_target(target, model.spec, int(np.argmax(s)))
    return Prepared(inp.x, inp.pixels, inp.source, idx, float(s[idx]), s, stats, started, inp.crop_box,
                    inp.original, inp.image_size)


def explanation(model: Model, prep: Prepared, method: str, relevance: np.ndarray,
                params: dict[str, Any], seed: int | None = None,
                arrays: dict[str, np.ndarray] | None = None, display: str = "jet") -> Explanation:
    """Package a finished map with everything needed to reproduce it."""
    m = np.asarray(relevance, dtype=np.float32)
    finite = np.isfinite(m)
    if not np.all(finite | (np.isnan(m) & bool(params.get("uncovered_pixels")))):
        raise InputError(f"{method}: the map contains NaN or Inf")
    if finite.any() and np.ptp(m[finite]) == 0:
        note = constant_map_warning(method, float(m[finite][0]))
        params = {**params, **note, "warnings": list(params.get("warnings", [])) + note["warnings"]}
    return Explanation(
        map=m, target=prep.target, label=model.spec.labels[prep.target], score=prep.score,
        method=method, params=params, seed=seed, backend=describe_backend(model),
        model_sha256=model.spec.sha256,
        model_files=dict(model.spec.extra.get("external_data_sha256", {})),
        timings={"wall_s": time.perf_counter() - prep.started,
                 "forward_passes": prep.stats.forward_passes, "model_s": prep.stats.model_s},
        pixels=prep.pixels, input=prep.x, source=prep.source, arrays=dict(arrays or {}),
        display=display, preprocessing=asdict(model.spec.preprocessing),
        crop_box=None if prep.crop_box is None else [round(v, 3) for v in prep.crop_box],
        original=prep.original, image_size=None if prep.image_size is None else list(prep.image_size))


def constant_map_warning(method: str, value: float) -> dict[str, Any]:
    """Warn (one line on stderr) that a map is constant, and the params recording it.

    A constant map says nothing (e.g. Grad-CAM whose weighted sum is negative everywhere,
    or a saturated score); metrics treat it as undefined (see ``explainer.metrics``).
    """
    text = (f"{method}: the map is constant ({value:g} everywhere): it ranks no pixel above another "
            "(a saturated score? try --score logit)")
    print(f"explainer: warning: {text}", file=sys.stderr, flush=True)
    return {"constant_map": True, "warnings": [text]}


def describe_backend(model: Model) -> str:
    providers = getattr(model, "providers", None)
    name = getattr(model, "backend", type(model).__name__)
    return f"{name} ({providers[0]})" if providers else name


def auto_or_numbers(kind: Callable[[str], Any]) -> Callable[[str], Any]:
    """An argparse type: "auto", one number, or several separated by commas."""
    def parse(text: str) -> Any:
        if text == "auto":
            return "auto"
        try:
            values = [kind(p) for p in text.replace(",", " ").split()]
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected 'auto' or {kind.__name__} values, got {text!r}")
        if not values:
            raise argparse.ArgumentTypeError("expected a value")
        return values[0] if len(values) == 1 else values
    return parse
