"""What a Dask worker runs: one image per task, the model rebuilt once per worker process.

A task carries the image file's bytes (not its path), so workers need no shared file
system; only the model file (or the Triton endpoint) must be reachable from every worker,
and its sha256 must match the client's. ONNX Runtime sessions use one intra-op thread
(``$EXPLAINER_THREADS``, default 1 on a worker): a worker's parallelism is its Dask threads.
"""

from __future__ import annotations

import io
import json
import os
import threading
from dataclasses import replace, dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..errors import InputError
from ..imaging import decode_image
from ..methods.common import ImageInput, load_input
from ..model import Model

_LOCK = threading.Lock()
_MODELS: dict[str, Model] = {}


@dataclass(frozen=True)
class ImageTask:
    """One image as a task carries it.

    Attributes
    ----------
    source : str, the path as the client named it (recorded in the outputs)
    data : bytes, the file's content (an encoded image, or a .npy array)
    """

    source: str
    data: bytes


def worker_model(description: dict[str, Any], sha256: str) -> Model:
    """The model of ``description``, built once per worker process and shared by its threads.

    Raises InputError when the worker's copy of the model file differs from the client's.
    """
    from ..api import model_from_description
    from ..backends.cpu_parallel import THREADS_ENV

    key = json.dumps(description, sort_keys=True, default=repr)
    with _LOCK:
        model = _MODELS.get(key)
        if model is None:
            os.environ.setdefault(THREADS_ENV, "1")
            model = _MODELS[key] = model_from_description(description)
    if sha256 and model.spec.sha256 and model.spec.sha256 != sha256:
        raise InputError(f"the model file {model.spec.source} on worker {worker_name()} differs from "
                         f"the client's (sha256 {model.spec.sha256[:12]} vs {sha256[:12]})")
    return model


def worker_name() -> str:
    """The Dask address of the worker running this task ("" outside a worker)."""
    try:
        from distributed import get_worker

        return str(get_worker().address)
    except (ImportError, ValueError):
        return ""


def image_input(model: Model, task: ImageTask) -> ImageInput:
    """Decode and preprocess the task's image exactly as ``load_input`` does for the file."""
    if Path(task.source).suffix.lower() == ".npy":
        try:
            arr = np.load(io.BytesIO(task.data), allow_pickle=False)
        except (ValueError, OSError, EOFError) as e:
            raise InputError(f"{task.source}: not a readable .npy array ({str(e)[:120]})") from None
        if arr.dtype.kind not in "fiu" or (arr.dtype.kind == "f" and not np.all(np.isfinite(arr))):
            raise InputError(f"{task.source}: .npy input must hold finite numbers")
        given = load_input(model, arr)
    else:
        given = load_input(model, decode_image(task.data, task.source))
    return replace(given, source=task.source)  # the original picture and its size travel along


def explain_task(description: dict[str, Any], sha256: str, method: str, options: dict[str, Any],
                 server_side: str, target: str | None, task: ImageTask | None) -> tuple[Any, str]:
    """Explain one image as ``explainer explain`` does; returns (Explanation, worker address)."""
    from ..methods import discover
    from ..serving.commands import explainer_for

    model = worker_model(description, sha256)
    info = discover()[method]
    run = explainer_for(model, info, options, server_side)
    image = image_input(model, task) if task is not None else None
    return run(image, target, progress=False), worker_name()


def chunk_task(fn: Callable[..., Any], calls: list[tuple]) -> list[Any]:
    """``[fn(*args) for args in calls]``: several images in one task (``--chunk``)."""
    return [fn(*args) for args in calls]


def audit_settings(a: Any) -> dict[str, Any]:
    """The audit's scalar settings (every attribute of ``Audit`` that is a number, a string or
    None, counters aside), which a worker's one-image Audit must share with the client's."""
    return {k: v for k, v in vars(a).items()
            if isinstance(v, (int, float, str, type(None))) and k not in ("computed", "reused")}


def audit_task(description: dict[str, Any], sha256: str, methods: list[str], steps: int, seed: int,
               target: int, task: ImageTask, objects: np.ndarray | None,
               settings: dict[str, Any] | None = None) -> dict[str, Any]:
    """One image of an audit: {method: Explained} for ``methods``, as ``audit.run.compute`` makes it.

    Parameters
    ----------
    target : the class the client predicted for the image (explained and measured)
    objects : (H, W) bool ndarray or None, the image's object mask
    settings : :func:`audit_settings` of the client's Audit
    """
    from ..audit.records import Audit
    from ..audit.run import compute
    from ..methods import discover

    model = worker_model(description, sha256)
    given = image_input(model, task)
    a = Audit(model, [Path(task.source)], [None], np.zeros((1, model.spec.num_classes)),
              np.array([target]), np.asarray(given.pixels)[None], given.x, list(methods))
    a.objects = None if objects is None else np.asarray(objects, dtype=bool)[None]
    vars(a).update(settings or {})
    found = discover()
    return {name: compute(a, 0, found[name], steps, seed) for name in methods}
