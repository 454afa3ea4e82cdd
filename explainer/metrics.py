"""How good is a map? Deletion / insertion AUC, pointing game, relevance mass, randomisation check.

References: Petsiuk et al. 2018 (RISE: deletion and insertion), Zhang et al. 2018 (pointing
game), Arras et al. 2022 (relevance mass accuracy), Adebayo et al. 2018 (sanity checks:
model-parameter randomisation, cascading from the top layer).
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import onnx
from onnx import numpy_helper

from .model import Model, scores
from .errors import InputError
from .methods.common import load_input
from .perturbation.engine import RunStats, check_batch_size, stream

PARAM_OPS = {"Conv", "ConvTranspose", "Gemm", "MatMul", "BatchNormalization",
             "InstanceNormalization", "LayerNormalization", "PRelu"}


@dataclass(frozen=True)
class Curve:
    """A deletion or insertion curve.

    Attributes
    ----------
    kind : {"deletion", "insertion"}
    auc : float, trapezoid area under ``scores`` over ``fractions``
    fractions : (S + 1,) float ndarray, fraction of pixels removed / inserted, 0 to 1
    scores : (S + 1,) float ndarray, the target's score at each step
    """

    kind: str
    auc: float
    fractions: np.ndarray
    scores: np.ndarray


def trapezoid(y: np.ndarray, x: np.ndarray) -> float:
    """Area under y(x) by the trapezoid rule."""
    y, x = np.asarray(y, np.float64), np.asarray(x, np.float64)
    return float(((y[1:] + y[:-1]) * np.diff(x)).sum() / 2)


def _check_map(relevance: np.ndarray, shape: tuple[int, int], name: str = "relevance") -> np.ndarray:
    m = np.asarray(relevance, dtype=np.float64)
    if m.shape != tuple(shape):
        raise InputError(f"{name} has shape {list(m.shape)}; expected {list(shape)}")
    if not np.all(np.isfinite(m)):
        raise InputError(f"{name} contains NaN or Inf")
    return m


def _substrate(x: np.ndarray, substrate: Any, blur_sigma: float) -> np.ndarray:
    """(1, C, H, W) image the pixels are replaced by / inserted into."""
    if isinstance(substrate, str):
        if substrate == "blur":
            from scipy import ndimage
            return ndimage.gaussian_filter(x, sigma=(0, 0, blur_sigma, blur_sigma), mode="nearest")
        if substrate == "mean":
            return np.broadcast_to(x.mean(axis=(2, 3), keepdims=True), x.shape).astype(np.float32)
        raise InputError(f"substrate must be 'blur', 'mean' or numbers, got {substrate!r}")
    v = np.atleast_1d(np.asarray(substrate, dtype=np.float32))
    if v.ndim != 1 or len(v) not in (1, x.shape[1]) or not np.all(np.isfinite(v)):
        raise InputError(f"substrate must be 'blur', 'mean', a number or {x.shape[1]} numbers, got {substrate!r}")
    return np.broadcast_to(v[None, :, None, None], x.shape).astype(np.float32)


def deletion_insertion(model: Model, image: Any, relevance: np.ndarray, target: int, *,
                       kind: str = "deletion", steps: int = 100, substrate: Any = "auto",
                       blur_sigma: float = 5.0, mini_batch_size: int = 128,
                       score: str = "probability") -> Curve:
    """Petsiuk's deletion or insertion curve of a map, and its area.

    Pixels are taken in order of decreasing relevance (ties: raster order), in
    ``steps`` equal parts. Deletion replaces them in the image by the substrate
    (a low AUC is good); insertion puts them into the substrate (a high AUC is good).

    Parameters
    ----------
    model : Model
    image : str, Path, ndarray or ImageInput
        As for the methods; the map's (H, W) is the model's input size.
    relevance : (H, W) ndarray
    target : int, class index
    kind : {"deletion", "insertion"}
    steps : int, number of steps S (S + 1 forward passes)
    substrate : "auto", "blur", "mean", a number or (C,) numbers
        In input-tensor units. "auto": 0 for deletion (the normalisation mean colour
        for mean/std-normalised models), "blur" for insertion (Gaussian, ``blur_sigma``).
    mini_batch_size : int
    score : {"probability", "logit"}

    Returns
    -------
    Curve
    """
    if kind not in ("deletion", "insertion"):
        raise InputError(f"kind must be 'deletion' or 'insertion', got {kind!r}")
    if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or steps < 1:
        raise InputError(f"steps must be a positive integer, got {steps!r}")
    check_batch_size(mini_batch_size)
    x = load_input(model, image).x
    h, w = x.shape[2:]
    m = _check_map(relevance, (h, w))
    if substrate == "auto":
        substrate = 0.0 if kind == "deletion" else "blur"
    base = _substrate(x, substrate, blur_sigma)
    rank = np.empty(h * w, np.int64)
    rank[np.argsort(-m.ravel(), kind="stable")] = np.arange(h * w)
    rank = rank.reshape(1, 1, h, w)
    counts = np.round(np.linspace(0, h * w, steps + 1)).astype(np.int64)
    first, second = (base, x) if kind == "deletion" else (x, base)

    def make_batch(start: int, stop: int) -> np.ndarray:
        taken = rank < counts[start:stop, None, None, None]
        return np.where(taken, first, second).astype(np.float32)

    out = stream(model, steps + 1, mini_batch_size, make_batch, RunStats())
    s = scores(out, model.spec, score)[:, int(target)]
    fractions = counts / (h * w)
    return Curve(kind, trapezoid(s, fractions), fractions, s)


def _check_mask(mask: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    m = np.asarray(mask)
    if m.shape != tuple(shape):
        raise InputError(f"mask has shape {list(m.shape)}; the map is {list(shape)}")
    return m.astype(bool)


def pointing_game(relevance: np.ndarray, mask: np.ndarray, *, tolerance: int = 0) -> bool:
    """True when the map's maximum lies inside the mask (grown by ``tolerance`` pixels).

    Every pixel reaching the maximum counts: a hit needs all of them inside, so a
    constant map never scores by luck unless the mask covers everything.

    Parameters
    ----------
    relevance : (H, W) ndarray
    mask : (H, W) bool ndarray, the ground truth
    tolerance : int, >= 0 (Zhang et al. use 15 pixels at 224x224)
    """
    m = _check_map(relevance, np.shape(relevance))
    gt = _check_mask(mask, m.shape)
    if tolerance < 0:
        raise InputError(f"tolerance must be >= 0, got {tolerance}")
    if tolerance:
        from scipy import ndimage
        gt = ndimage.binary_dilation(gt, structure=np.ones((3, 3), bool), iterations=int(tolerance))
    return bool(np.all(gt[m == m.max()]))


def relevance_mass(relevance: np.ndarray, mask: np.ndarray) -> float:
    """Positive relevance inside the mask / all positive relevance (0.0 when none).

    Parameters
    ----------
    relevance : (H, W) ndarray
    mask : (H, W) bool ndarray
    """
    m = np.clip(_check_map(relevance, np.shape(relevance)), 0, None)
    gt = _check_mask(mask, m.shape)
    total = m.sum()
    return float(m[gt].sum() / total) if total > 0 else 0.0


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman rank correlation of two arrays; NaN (undefined) when either is constant.

    A constant map ranks nothing: calling it "decorrelated" (0.0) would pass a sanity check
    that a method failed to produce a map for.
    """
    a, b = np.ravel(a), np.ravel(b)
    if np.ptp(a) == 0 or np.ptp(b) == 0:
        return float("nan")
    from scipy import stats
    return float(stats.spearmanr(a, b).statistic)


def undefined_reason(original: np.ndarray, randomised_map: np.ndarray) -> str | None:
    """Why a randomisation-check correlation is undefined (None when it is defined)."""
    if np.ptp(original) == 0:
        return "the original map is constant"
    if np.ptp(randomised_map) == 0:
        return "the randomised model's map is constant"
    return None


def parameter_layers(proto: onnx.ModelProto) -> list[tuple[str, list[str]]]:
    """Layers with learned parameters, in graph order: (node name, its float initializers).

    A layer is a node of a PARAM_OPS type (Conv, Gemm, MatMul, normalisations, PRelu)
    with float initializer inputs; BatchNormalization lists only its scale and bias.
    """
    floats = {i.name for i in proto.graph.initializer if i.data_type in
              (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.DOUBLE)}
    found = []
    for n in proto.graph.node:
        if n.op_type not in PARAM_OPS:
            continue
        ins = list(n.input[1:3]) if n.op_type == "BatchNormalization" else list(n.input)
        params = [i for i in ins if i in floats]
        if params:
            found.append((n.name or n.output[0], params))
    return found


def randomised(proto: onnx.ModelProto, names: list[str], rng: np.random.Generator) -> onnx.ModelProto:
    """A copy of ``proto`` whose initializers ``names`` are redrawn N(0, std of the original)."""
    out = onnx.ModelProto()
    out.CopyFrom(proto)
    wanted = set(names)
    for init in out.graph.initializer:
        if init.name in wanted:
            w = numpy_helper.to_array(init)
            std = float(w.std()) or 0.01
            new = rng.normal(0.0, std, w.shape).astype(w.dtype)
            init.CopyFrom(numpy_helper.from_array(new, init.name))
    return out


@dataclass(frozen=True)
class RandomisationResult:
    """Cascading model-parameter randomisation (Adebayo et al. 2018).

    Attributes
    ----------
    layers : list of str, the layers randomised, top first; step i randomises layers[:i+1]
    correlations : (L,) float ndarray, Spearman rank correlation of |map| with the original;
        NaN where undefined (a constant map: it is not "decorrelated", it is no map)
    maps : (L, H, W) float32 ndarray, the maps of the randomised models
    original : (H, W) float32 ndarray
    undefined : list of (L,) str or None, why each NaN correlation is undefined
    """

    layers: list[str]
    correlations: np.ndarray
    maps: np.ndarray
    original: np.ndarray
    undefined: list[str | None] | None = None


def randomisation_check(model: Model, explain: Callable[[Model], np.ndarray], *,
                        seed: int = 0, max_layers: int | None = None) -> RandomisationResult:
    """Randomise the model's layers cumulatively from the top and compare the maps.

    A method whose map depends on what the model learned should decorrelate as
    layers are randomised; a map that stays the same explains the image, not the model.

    Parameters
    ----------
    model : Model
        An ONNX Runtime model (its ``spec.source`` must be the .onnx file).
    explain : callable
        ``explain(model) -> (H, W) map`` for the image and target under test.
    seed : int
    max_layers : int, optional
        Stop after randomising this many layers (default: all).
    """
    from .backends.onnx_safety import load_in_memory
    from .backends.onnxruntime import OnnxModel

    path = Path(model.spec.source)
    if not path.is_file() or path.suffix.lower() != ".onnx":
        raise InputError(f"the randomisation check needs an ONNX model file, got {model.spec.source!r}")
    proto = load_in_memory(path)
    todo = list(reversed(parameter_layers(proto)))[:max_layers]
    if not todo:
        raise InputError(f"{path}: no layer with learned parameters to randomise")
    original = np.asarray(explain(model), np.float32)
    rng = np.random.default_rng(seed)
    pre = model.spec.preprocessing
    keep = dict(size=pre.size, layout=pre.layout, scale=pre.scale, mean=pre.mean, std=pre.std)
    maps, corrs = [], []
    with tempfile.TemporaryDirectory(prefix="explainer-rand-") as tmp:
        for i, (_, params) in enumerate(todo):
            proto = randomised(proto, params, rng)
            file = Path(tmp) / f"r{i}.onnx"
            onnx.save(proto, str(file))
            m = np.asarray(explain(OnnxModel(file, device="cpu", labels=model.spec.labels, **keep)), np.float32)
            maps.append(m)
            corrs.append(spearman(np.abs(original), np.abs(m)))
    why = [undefined_reason(np.abs(original), np.abs(m)) for m in maps]
    return RandomisationResult([t[0] for t in todo], np.array(corrs), np.stack(maps), original, why)
