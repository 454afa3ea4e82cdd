"""Dask connections for cluster runs, and the one loop that runs image tasks on them.

``--workers N`` starts a LocalCluster of N worker processes (one thread each) on 127.0.0.1
with its scratch space in a temporary folder that is removed at the end; ``--scheduler
ADDRESS`` joins an existing cluster. Failures become the package's errors: a scheduler
that cannot be reached or goes away mid-run is a :class:`ServerError` (exit 3), a task
that keeps killing workers too.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import tempfile
import uuid
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator

from tqdm import tqdm

from ..errors import ExplainerError, InputError, ServerError

MAX_TASK_BYTES = 32 * 2**20  # a task carries one image file; bigger ones belong on shared storage
CONNECT_S = 10.0
SCHEMES = ("tcp", "tls", "ucx", "ws", "wss")


@dataclass
class Cluster:
    """A connected Dask client; ``dashboard`` is the dashboard's link, or None when there is none."""

    client: Any
    address: str
    dashboard: str | None


def check_options(workers: int | None, scheduler: str | None) -> None:
    """Refuse a bad ``--workers`` / ``--scheduler`` combination before anything runs."""
    if workers is not None and scheduler is not None:
        raise InputError("give at most one of --workers N and --scheduler ADDRESS")
    if workers is not None and (isinstance(workers, bool) or workers < 1):
        raise InputError(f"--workers must be a positive integer, got {workers}")
    if scheduler is not None and scheduler.partition("://")[0] not in SCHEMES:
        raise InputError(f"--scheduler must be a Dask address such as tcp://HOST:8786, got {scheduler!r}")
    if importlib.util.find_spec("distributed") is None:
        raise InputError("cluster runs need Dask's distributed: pip install 'explainer[cluster]'")


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Dask's own log lines (reconnect attempts, lost workers) stay off the user's terminal."""
    names = ["distributed", "tornado", "asyncio"] + [
        n for n in list(logging.root.manager.loggerDict) if n.startswith(("distributed.", "tornado."))]
    logs = [logging.getLogger(n) for n in names]  # Dask gives some children their own levels
    levels = [log.level for log in logs]
    for log in logs:
        log.setLevel(logging.CRITICAL + 1)
    try:
        yield
    finally:
        for log, level in zip(logs, levels):
            log.setLevel(level)


@contextlib.contextmanager
def connect(workers: int | None = None, scheduler: str | None = None) -> Iterator[Cluster]:
    """A LocalCluster of ``workers`` processes, or a client of the scheduler at ``scheduler``."""
    check_options(workers, scheduler)
    import dask
    from distributed import Client, LocalCluster

    with _quiet(), tempfile.TemporaryDirectory(prefix="explainer-dask-", ignore_cleanup_errors=True) as scratch, \
            dask.config.set({"temporary-directory": scratch}):  # its lock files too, not in $TMPDIR
        local = None
        try:
            if scheduler is None:
                # every port on 127.0.0.1 and chosen free (the scheduler's HTTP server too: without
                # an address it takes 8787, with or without the dashboard)
                local = LocalCluster(n_workers=workers or 1, threads_per_worker=1, processes=True,
                                     host="127.0.0.1", local_directory=scratch, silence_logs=logging.CRITICAL,
                                     dashboard_address="127.0.0.1:0")
                client = Client(local)
            else:
                client = Client(scheduler, timeout=CONNECT_S)
        except (OSError, TimeoutError) as e:
            if local is not None:
                local.close()
            raise ServerError(f"cannot reach the Dask scheduler at {scheduler or 'a local cluster'} "
                              f"({str(e).splitlines()[0][:160]})") from None
        try:
            dashboard = "dashboard" in (client.scheduler_info().get("services") or {}) and \
                (local is None or importlib.util.find_spec("bokeh") is not None)  # else a "needs bokeh" page
            yield Cluster(client, client.scheduler.address, client.dashboard_link if dashboard else None)
        finally:
            with contextlib.suppress(Exception):
                client.close(timeout=CONNECT_S)
            if local is not None:
                with contextlib.suppress(Exception):
                    local.close(timeout=CONNECT_S)


def run_tasks(cluster: Cluster, tasks: Iterable[tuple[Callable[..., Any], tuple]], total: int,
              done: Callable[[int, Any], int | None], *, progress: bool = False, hint: str = "",
              images: int | None = None) -> None:
    """Run ``fn(*args)`` for each of the ``total`` tasks; ``done(i, result)`` as each completes.

    ``tasks`` is consumed lazily: at most a window of tasks (4 per worker thread, at least
    32) exists at a time, in the client and in the scheduler, however long the run. A
    worker lost mid-run has its tasks rerun elsewhere by Dask (a task that kills
    ``distributed.scheduler.allowed-failures`` + 1 workers fails the run). One progress bar
    over the ``images`` (default: one per task); ``done`` returns how many images its task
    held (None: one).
    """
    from distributed import as_completed

    client, run_id = cluster.client, uuid.uuid4().hex[:8]
    window = max(32, 4 * sum(client.nthreads().values()))
    source = enumerate(tasks)

    def submit_next() -> Any | None:
        for i, (fn, args) in source:
            return client.submit(fn, *args, key=f"explainer-{run_id}-{i}", pure=False)
        return None

    pending = {f for f in (submit_next() for _ in range(min(window, total))) if f is not None}
    queue = as_completed(pending)
    finished, images = 0, total if images is None else images
    with tqdm(total=images, desc="images", unit="image", disable=not progress) as bar:
        try:
            for future in queue:
                i = int(str(future.key).rsplit("-", 1)[1])
                result = _result(future, cluster.address, finished, images, hint)
                pending.discard(future)
                future.release()
                following = submit_next()
                if following is not None:
                    pending.add(following)
                    queue.add(following)
                count = done(i, result)
                finished += 1 if count is None else count
                bar.update(1 if count is None else count)
        except ExplainerError:
            raise
        except (OSError, TimeoutError) as e:
            raise _gone(cluster.address, finished, images, hint, str(e)) from None
        finally:
            with contextlib.suppress(Exception):
                client.cancel(list(pending))


def _result(future: Any, address: str, finished: int, total: int, hint: str) -> Any:
    from concurrent.futures import CancelledError

    from distributed import KilledWorker

    try:
        return future.result()
    except CancelledError as e:
        raise _gone(address, finished, total, hint, getattr(e, "reason", None) or "cancelled") from None
    except KilledWorker as e:
        raise ServerError("an image task was given up after the Dask workers running it died "
                          f"repeatedly ({str(e).splitlines()[0][:160]})") from None


def _gone(address: str, finished: int, total: int, hint: str, reason: str) -> ServerError:
    return ServerError(f"lost the Dask scheduler at {address} ({reason}) after {finished} of {total} "
                       f"images; {hint or 'their outputs are complete'}")
