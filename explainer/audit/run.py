"""``explainer audit``: classify, explain and measure every image of a folder, resumably."""

from __future__ import annotations

import hashlib
import inspect
import json
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
from tqdm import tqdm

from .. import metrics
from ..model import Model
from ..dataset import list_images, load_folder, predict_all
from ..errors import InputError
from ..explanation import atomic_write_all, safe_stem
from ..imaging import read_image
from ..methods import MethodInfo, discover
from ..methods.common import ImageInput
from .findings import spurious_region
from .verdict import headlines
from .records import Audit, AuditResult, Explained
from .sanity import mprt, pointing_summary

CACHE_VERSION = 2  # 2: pointing game with tolerance, undefined on an empty mask or constant map
Prefill = Callable[[Audit, Path, int, int], int]


def _methods(names: Sequence[str]) -> dict[str, MethodInfo]:
    found = discover()
    chosen = {}
    for name in names:
        if name not in found or not found[name].needs_image or name == "activations":
            usable = sorted(n for n, i in found.items() if i.needs_image and n != "activations")
            raise InputError(f"method {name!r} cannot be audited; choose from {', '.join(usable)}")
        chosen[name] = found[name]
    return chosen


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _masks(folder: Path, masks: Path | None, paths: list[Path], shape: tuple[int, int]) -> np.ndarray | None:
    """(N, H, W) bool object masks mirroring the folder, or None when any is missing."""
    if masks is None:
        return None
    found = []
    for p in paths:
        rel = p.relative_to(folder)
        cands = [masks / rel] + [masks / rel.with_suffix(s) for s in (".png", ".bmp", ".tif")]
        hit = next((c for c in cands if c.is_file()), None)
        if hit is None:
            raise InputError(f"no mask for {rel} in {masks}")
        m = read_image(hit).max(axis=2) > 0
        if m.shape != shape:
            raise InputError(f"mask {hit} is {m.shape[0]}x{m.shape[1]}, the model input is "
                             f"{shape[0]}x{shape[1]}")
        found.append(m)
    return np.stack(found)


def pointing_tolerance(shape: tuple[int, ...], tolerance: int | str = "auto") -> int:
    """Pixels a pointing-game hit may miss the mask by: "auto" is Zhang et al.'s 15 px at 224,
    scaled to the input (4 px at 64)."""
    if tolerance == "auto":
        return int(round(15 * min(shape[-2:]) / 224))
    if isinstance(tolerance, bool) or not isinstance(tolerance, (int, np.integer)) or tolerance < 0:
        raise InputError(f"pointing tolerance must be 'auto' or an integer >= 0, got {tolerance!r}")
    return int(tolerance)


def audit_images(model: Model, folder: str | Path, out: str | Path, *, methods: Sequence[str] = ("occlusion",),
                 masks: str | Path | None = None, steps: int = 32, seed: int = 0,
                 progress: bool = False, data: str | Path | None = None,
                 tolerance: int | str = "auto", prefill: Prefill | None = None) -> Audit:
    """Classify every image, explain it with each method and measure the maps (cached in OUT/cache).

    ``prefill(audit, cache, steps, seed)``, when given, fills the cache first (e.g. on a
    Dask cluster, explainer.cluster) and returns how many results it computed."""
    infos = _methods(methods)
    folder, out = Path(folder), Path(out)
    listing = list_images(folder)
    x, pixels = load_folder(model, listing.paths)
    probs = predict_all(model, x)
    a = Audit(model, listing.paths, listing.truth, probs, probs.argmax(axis=1), pixels, x, list(infos))
    a.objects = _masks(folder, Path(masks) if masks else None, listing.paths, x.shape[2:])
    a.tolerance, a.data = pointing_tolerance(x.shape, tolerance), None if data is None else str(data)
    cache = out / "cache"
    cache.mkdir(parents=True, exist_ok=True)
    a.results = {name: [] for name in infos}
    prefilled = prefill(a, cache, steps, seed) if prefill is not None else 0
    for i in tqdm(range(len(a.paths)), desc="audit", unit="image", disable=not progress):
        for name, info in infos.items():
            a.results[name].append(_explained(a, i, name, info, cache, steps, seed))
    a.computed, a.reused = a.computed + prefilled, a.reused - prefilled
    for name in infos:
        maps = np.stack([r.map for r in a.results[name]])
        for k in sorted(set(a.predicted.tolist())):
            sel = a.predicted == k
            objects = a.objects[sel] if a.objects is not None else None
            a.findings.append(spurious_region(name, model.spec.labels[k], maps[sel], objects))
    return a


def cache_entry(a: Audit, i: int, name: str, cache: Path, steps: int,
                seed: int) -> tuple[dict[str, Any], Path, Path]:
    """The cache key of image ``i`` and method ``name``, and its .json and .npy files."""
    path = a.paths[i]
    stem = f"{i:04d}-{safe_stem(path.stem)}.{name}"
    key = {"version": CACHE_VERSION, "model": a.model.spec.sha256, "image": str(path),
           "image_sha256": _sha(path), "method": name, "seed": seed, "steps": steps,
           "target": int(a.predicted[i]), "data": a.data, "tolerance": a.tolerance,
           "mask": None if a.objects is None else hashlib.sha256(a.objects[i].tobytes()).hexdigest()}
    return key, cache / f"{stem}.json", cache / f"{stem}.npy"


def load_cached(key: dict[str, Any], meta_file: Path, map_file: Path) -> Explained | None:
    """The cached result when both files are there and were made for ``key``, else None."""
    if meta_file.is_file() and map_file.is_file():
        meta = json.loads(meta_file.read_text())
        if meta.get("key") == key:
            return Explained(np.load(map_file), meta["display"], meta["metrics"], meta["deletion"],
                             meta["insertion"])
    return None


def store_cached(key: dict[str, Any], r: Explained, meta_file: Path, map_file: Path) -> None:
    """Write one result into the cache, both files atomically."""
    meta = {"key": key, "display": r.display, "metrics": r.metrics, "deletion": r.deletion,
            "insertion": r.insertion}
    atomic_write_all({map_file: r.map, meta_file: json.dumps(meta, allow_nan=False).encode()})


def _explained(a: Audit, i: int, name: str, info: MethodInfo, cache: Path, steps: int,
               seed: int) -> Explained:
    key, meta_file, map_file = cache_entry(a, i, name, cache, steps, seed)
    cached = load_cached(key, meta_file, map_file)
    if cached is not None:
        a.reused += 1
        return cached
    r = compute(a, i, info, steps, seed)
    store_cached(key, r, meta_file, map_file)
    a.computed += 1
    return r


def method_kwargs(info: MethodInfo, seed: int, data: str | None) -> dict[str, Any]:
    """The audit's seed, and its --data folder for methods that sample from one."""
    params = inspect.signature(info.function).parameters
    kwargs: dict[str, Any] = {"seed": seed} if "seed" in params else {}
    if data is not None and "data" in params:
        kwargs["data"] = data
    return kwargs


def compute(a: Audit, i: int, info: MethodInfo, steps: int, seed: int) -> Explained:
    """Explain image ``i`` with one method and measure the map (deletion, insertion, masks)."""
    image = ImageInput(a.x[i:i + 1], a.pixels[i], str(a.paths[i]))
    target = int(a.predicted[i])
    e = info.function(a.model, image, target, progress=False, **method_kwargs(info, seed, a.data))
    m = np.asarray(e.map, dtype=np.float32)
    dele = metrics.deletion_insertion(a.model, image, m, target, kind="deletion", steps=steps)
    ins = metrics.deletion_insertion(a.model, image, m, target, kind="insertion", steps=steps)
    values: dict[str, Any] = {"deletion_auc": dele.auc, "insertion_auc": ins.auc}
    if a.objects is not None:
        defined = a.objects[i].any() and np.ptp(m) > 0  # no object, or a map that points nowhere: undefined
        values["pointing_game"] = metrics.pointing_game(m, a.objects[i], tolerance=a.tolerance) if defined else None
        values["relevance_mass"] = metrics.relevance_mass(m, a.objects[i])
    return Explained(m, e.display, values, dele.scores.tolist(), ins.scores.tolist())


def audit(model: Model, folder: str | Path, out: str | Path, *, methods: Sequence[str] = ("occlusion",),
          masks: str | Path | None = None, layer: str = "auto", top_k: int = 4, steps: int = 32,
          seed: int = 0, progress: bool = False, data: str | Path | None = None,
          pointing_tolerance: int | str = "auto", sanity_layers: int = 5,
          sanity_images: int = 1, prefill: Prefill | None = None) -> AuditResult:
    """Audit a folder and write ``OUT/index.html`` (see explainer.audit.report).

    Parameters
    ----------
    model : Model
    folder : images; sub-folder names are the true classes
    out : the report folder; ``OUT/cache`` keeps per-image results, so an
        interrupted audit resumes where it stopped (same results, byte for byte)
    methods : method names from ``explainer.methods.discover()``
    masks : folder of object masks mirroring ``folder`` (nonzero = object), optional
    layer : layer for t-SNE and maximal/minimal activating images ("auto": the
        default feature layer)
    top_k : images per row of the maximal/minimal activating grids
    steps : deletion/insertion steps
    seed : for methods that sample, and t-SNE
    data : folder of images for methods that sample from one (prediction difference)
    pointing_tolerance : pixels; "auto" = 15 px at 224 scaled to the input (see pointing_tolerance)
    sanity_layers, sanity_images : model-parameter randomisation of the top layers (0: skip) on
        the first images, per method (see explainer.audit.sanity)
    prefill : fills OUT/cache before the loop (see ``audit_images``), e.g. on a Dask cluster
    """
    from .report import write_report

    if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
        raise InputError(f"top_k must be a positive integer, got {top_k!r}")
    a = audit_images(model, folder, out, methods=methods, masks=masks, steps=steps, seed=seed,
                     progress=progress, data=data, tolerance=pointing_tolerance, prefill=prefill)
    infos = _methods(methods)
    checks = {"mprt": mprt(a, infos, lambda info: method_kwargs(info, seed, a.data), layers=sanity_layers,
                           images=sanity_images, seed=seed),
              "pointing_game": pointing_summary(a) if a.objects is not None else None,
              "pointing_tolerance": a.tolerance}
    report = write_report(a, Path(out), layer=layer, top_k=top_k, seed=seed, sanity=checks)
    labelled = [i for i, t in enumerate(a.truth) if t is not None]
    acc = None
    if labelled:
        acc = float(np.mean([a.truth[i] == model.spec.labels[a.predicted[i]] for i in labelled]))
    flags = [{"method": f.method, "class": f.label, "region": f.region,
              "consistency": f.consistency, "concentration": f.concentration}
             for f in a.findings if f.flagged]
    lines = headlines(a.findings, a.methods, objects=a.objects is not None)
    return AuditResult(report, acc, flags, a.findings, a.computed, a.reused, sanity=checks, headlines=lines)
