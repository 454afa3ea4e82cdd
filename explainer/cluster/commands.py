"""``--workers`` / ``--scheduler`` for ``explainer explain`` and ``explainer audit``: the client side.

The client validates every input, submits one task per image (the image file's bytes, at
most ``MAX_TASK_BYTES``), and writes each image's outputs into ``--out`` atomically, with
the same save code as a single-process run, as the tasks complete. The outputs are the
single-process run's, byte for byte, apart from timings and timestamps.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from itertools import islice
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator, Sequence

import numpy as np

from ..errors import InputError
from ..methods.common import load_input
from ..console import shown
from ..model import Model
from .connect import MAX_TASK_BYTES, Cluster, check_options, connect, run_tasks
from .worker import ImageTask, audit_settings, audit_task, chunk_task, explain_task

if TYPE_CHECKING:
    from ..audit.records import Audit
    from ..audit.run import Prefill


def add_options(p: argparse.ArgumentParser) -> None:
    """Add ``--workers`` and ``--scheduler`` to a subcommand."""
    g = p.add_argument_group("Dask cluster (docs/cluster.md; pip install 'explainer[cluster]')")
    g.add_argument("--workers", type=int, metavar="N",
                   help="run the images on a local Dask cluster of N worker processes (one thread each)")
    g.add_argument("--scheduler", metavar="ADDRESS",
                   help="run the images on an existing Dask cluster, e.g. tcp://HOST:8786")
    g.add_argument("--chunk", type=_positive, default=1, metavar="K",
                   help="images per task (default 1; more for small images, whose tasks cost little)")


def _positive(text: str) -> int:
    if not text.strip().isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return int(text)


def requested(args: argparse.Namespace) -> bool:
    """True when ``--workers`` or ``--scheduler`` was given (checked)."""
    workers, scheduler = getattr(args, "workers", None), getattr(args, "scheduler", None)
    if workers is None and scheduler is None:
        return False
    check_options(workers, scheduler)
    return True


def check_size(path: str | Path) -> None:
    """Refuse an image file too big to travel in a task (before anything runs)."""
    size = Path(path).stat().st_size
    if size > MAX_TASK_BYTES:
        raise InputError(f"{path}: {size / 2**20:.1f} MiB; a cluster task carries the image file's bytes, "
                         f"at most {MAX_TASK_BYTES // 2**20} MiB")


def image_task(path: str | Path) -> ImageTask:
    """The task payload of one image file: its bytes, size-checked."""
    check_size(path)
    return ImageTask(str(path), Path(path).read_bytes())


def _run(args: argparse.Namespace, tasks: Iterable[tuple[Any, tuple]], n: int,
         done: Callable[[int, Any], None], progress: bool, hint: str) -> None:
    """Connect, and run the ``n`` image tasks ``--chunk`` at a time; ``done(i, result)`` per image."""
    k = getattr(args, "chunk", 1) or 1
    source = iter(tasks)

    def chunks() -> Iterator[tuple[Any, tuple]]:
        while batch := list(islice(source, k)):
            yield chunk_task, (batch[0][0], [call for _, call in batch])

    def done_chunk(j: int, results: list[Any]) -> int:
        for m, result in enumerate(results):
            done(j * k + m, result)
        return len(results)

    with connect(args.workers, args.scheduler) as cluster:
        _announce(cluster, args.quiet)
        run_tasks(cluster, chunks(), -(-n // k), done_chunk, progress=progress, hint=hint, images=n)


def _announce(cluster: Cluster, quiet: bool) -> None:
    if cluster.dashboard and not quiet:
        print(f"Dask dashboard: {cluster.dashboard}", file=sys.stderr)


def explain(args: argparse.Namespace, model: Model, info: Any, options: dict[str, Any],
            todo: Sequence[tuple[str, str]], skipped: int, progress: bool,
            write: Callable[[Any, str], list[Path]]) -> None:
    """``explainer explain IMAGE... --workers N``: the cluster half of ``cli.cmd_explain``.

    ``todo`` holds (image, stem) of the images not skipped by ``--resume``; ``write(result,
    stem)`` saves one output set exactly as the single-process run does (``--out``, the
    settings ``--resume`` checks, the display options). Every image is
    decoded here first, as in a single-process run, but not kept: a task reads its file
    when it is submitted.
    """
    if info.needs_image:
        for path, _ in todo:
            load_input(model, path)
            check_size(path)
    described = model.describe()
    tasks = ((explain_task, (described, model.spec.sha256, info.name, options, args.server_side,
                             args.target, image_task(path) if info.needs_image else None))
             for path, _ in todo)
    summary: dict[int, dict[str, Any]] = {}

    def save(i: int, got: tuple[Any, str]) -> None:
        result, worker = got
        path, stem = todo[i]
        written = write(result, stem)
        summary[i] = {**result.to_dict(), "files": [str(f) for f in written], "worker": worker}
        if not args.json and not args.quiet:
            print(f"{shown(path)}: {shown(result.label)} ({result.score:.3f}) -> "
                  + ", ".join(shown(f) for f in written))

    if todo:
        _run(args, tasks, len(todo), save, progress,
             "the images written are complete; rerun with --resume to do the rest")
    if not args.json and not args.quiet and skipped:
        print(f"{skipped} image(s) already explained in {shown(args.out)}: skipped (--resume)")
    if args.json:
        print(json.dumps([summary[i] for i in sorted(summary)], indent=2, allow_nan=False))


def audit_prefill(args: argparse.Namespace, progress: bool) -> "Prefill | None":
    """The audit's cache filled on the cluster (``audit(..., prefill=...)``), or None when
    neither ``--workers`` nor ``--scheduler`` was given."""
    if not requested(args):
        return None
    from ..audit.run import cache_entry, load_cached, store_cached

    def prefill(a: "Audit", cache: Path, steps: int, seed: int) -> int:
        missing: dict[int, dict[str, tuple[dict[str, Any], Path, Path]]] = {}
        for i in range(len(a.paths)):
            for name in a.methods:
                entry = cache_entry(a, i, name, cache, steps, seed)
                if load_cached(*entry) is None:
                    missing.setdefault(i, {})[name] = entry
        order = sorted(missing)
        for i in order:
            check_size(a.paths[i])
        described, settings = a.model.describe(), audit_settings(a)
        tasks = ((audit_task, (described, a.model.spec.sha256, list(missing[i]), steps, seed,
                               int(a.predicted[i]), image_task(a.paths[i]),
                               None if a.objects is None else np.asarray(a.objects[i]), settings))
                 for i in order)
        stored = [0]

        def store(j: int, results: dict[str, Any]) -> None:  # j: the j-th image of ``order``
            for name, r in results.items():
                store_cached(*_with(missing[order[j]][name], r))
                stored[0] += 1

        if order:
            _run(args, tasks, len(order), store, progress, "the results computed are kept in OUT/cache; rerun "
                 "to do the rest")
        return stored[0]

    return prefill


def _with(entry: tuple[dict[str, Any], Path, Path], r: Any) -> tuple[dict[str, Any], Any, Path, Path]:
    key, meta_file, map_file = entry
    return key, r, meta_file, map_file
