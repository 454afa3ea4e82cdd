"""Load and probe a model in a child process first, so a runtime crash is a message.

A hostile or corrupt ONNX file can crash ONNX Runtime itself (a segfault, an abort,
memory exhaustion). The first session is therefore created in a forked child with a
memory limit and a time limit; only when it loads and runs a zero input there does
the parent load it. Children come from a fork server (a clean, single-threaded
process with onnxruntime already imported), so each costs milliseconds.
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import resource
import signal
import sys
import threading
import time
import types
from typing import Any, Callable, Iterator

from ..errors import InputError, ModelError

DEFAULT_MEMORY_BYTES = 16 << 30
DEFAULT_TIMEOUT_S = 300.0
TIMEOUT_ENV = "EXPLAINER_MODEL_TIMEOUT"


def model_timeout() -> float:
    """Seconds one model call may take (the probe, every in-process run): $EXPLAINER_MODEL_TIMEOUT,
    default 300."""
    from ..validation import env_seconds

    return float(env_seconds(TIMEOUT_ENV, DEFAULT_TIMEOUT_S, 7 * 24 * 3600.0))


def run_with_deadline(session: Any, outputs: list[str] | None, feed: dict[str, Any], what: str) -> list[Any]:
    """``session.run`` under the wall-clock limit of :func:`model_timeout` (ONNX Runtime's
    terminate flag, set by a timer); ModelError with the true reason when it is reached."""
    import onnxruntime as ort

    limit = model_timeout()
    options = ort.RunOptions()
    token = _WATCHDOG.add(time.monotonic() + limit, options)
    try:
        return session.run(outputs, feed, options)
    except Exception as e:
        if options.terminate:
            raise ModelError(f"{what}: the model did not finish one batch within {limit:g} s "
                             f"(${TIMEOUT_ENV})") from None
        raise e
    finally:
        _WATCHDOG.remove(token)


class _Watchdog:
    """One daemon thread that sets ``terminate`` on the RunOptions of runs past their deadline
    (a thread per run would cost more than a small model's batch)."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._runs: dict[int, tuple[float, Any]] = {}
        self._next = 0
        self._wake_at = float("inf")  # when the thread next looks (it is woken only for a sooner deadline)
        self._thread: threading.Thread | None = None

    def add(self, deadline: float, options: Any) -> int:
        with self._cond:
            self._next += 1
            self._runs[self._next] = (deadline, options)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._watch, name="explainer-watchdog", daemon=True)
                self._thread.start()
            if deadline < self._wake_at:
                self._cond.notify()
            return self._next

    def remove(self, token: int) -> None:
        with self._cond:
            self._runs.pop(token, None)

    def _watch(self) -> None:
        with self._cond:
            while True:
                now = time.monotonic()
                for token, (deadline, options) in list(self._runs.items()):
                    if deadline <= now:
                        options.terminate = True
                        del self._runs[token]
                self._wake_at = min((d for d, _ in self._runs.values()), default=now + 60.0)
                self._cond.wait(max(0.01, self._wake_at - now))


_WATCHDOG = _Watchdog()


def address_space_limit(memory_bytes: int) -> tuple[int, int]:
    """The (soft, hard) RLIMIT_AS for the child: ``memory_bytes``, never above the limits the
    process already has (a ``ulimit -v`` lower than ours is kept, not raised)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    inf = resource.RLIM_INFINITY
    limit = min(v for v in (memory_bytes, soft, hard) if v != inf)
    return limit, (limit if hard == inf else hard)


def _child(conn: Any, job: Callable[..., None], args: tuple, memory_bytes: int) -> None:
    try:
        resource.setrlimit(resource.RLIMIT_AS, address_space_limit(memory_bytes))
        job(*args)
        conn.send("")
    except BaseException as e:  # report every failure to the parent as text
        conn.send(str(e).splitlines()[0][:300] if str(e) else type(e).__name__)
    finally:
        conn.close()


def _context() -> Any:
    global _CTX
    if _CTX is None and "forkserver" in mp.get_all_start_methods():
        _CTX = mp.get_context("forkserver")
        _CTX.set_forkserver_preload(["numpy", "onnxruntime", "explainer.backends.isolation"])
    return _CTX


_CTX: Any = None


def run_isolated(job: Callable[..., None], args: tuple, what: str, *,
                 memory_bytes: int = DEFAULT_MEMORY_BYTES, timeout_s: float | None = None) -> None:
    """Run ``job(*args)`` in a child; turn a crash, a hang or an error into InputError.

    ``job`` is a module-level function that raises to report a problem; its
    message comes back to the parent. Without a fork server (Windows) it runs here.
    """
    ctx = _context()
    if ctx is None:
        job(*args)
        return
    timeout_s = model_timeout() if timeout_s is None else timeout_s
    parent, child = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_child, args=(child, job, args, memory_bytes), daemon=True)
    with _caller_main_hidden():
        proc.start()
    child.close()
    ready = False
    try:
        ready = parent.poll(timeout_s)
        message = parent.recv() if ready else None
    except EOFError:
        message = None
    finally:
        proc.join(5 if ready else 0.1)
        if proc.is_alive():
            proc.kill()
            proc.join()
    if not ready:
        raise InputError(f"{what}: loading and running the model once did not finish within {timeout_s:g} s")
    if message is None:
        code = proc.exitcode
        if code is not None and code < 0:
            name = signal.Signals(-code).name if -code in signal.valid_signals() else str(-code)
            raise InputError(f"{what}: ONNX Runtime crashed on this model ({name})")
        raise InputError(f"{what}: ONNX Runtime ended without an answer on this model")
    if message:
        raise InputError(message if message.startswith(what) else f"{what}: {message}")


@contextlib.contextmanager
def _caller_main_hidden() -> Iterator[None]:
    """multiprocessing re-imports the caller's ``__main__`` in a child (a script with side effects
    at import would run them again); the job is a module-level function and needs none of it."""
    main = sys.modules.get("__main__")
    sys.modules["__main__"] = types.ModuleType("__main__")
    try:
        yield
    finally:
        if main is not None:
            sys.modules["__main__"] = main


def probe_session(path: str, providers: list[str], input_name: str, shape: tuple[int, ...],
                  dtype: str, output_name: str) -> None:
    """Create a session on ``path`` and run it on :func:`probe_inputs` (the child's job)."""
    import onnxruntime as ort

    ort.set_default_logger_severity(4)
    session = ort.InferenceSession(path, providers=providers)
    for x in probe_inputs(shape, dtype):
        session.run([output_name], {input_name: x})


def probe_inputs(shape: tuple[int, ...], dtype: str) -> list[Any]:
    """What a model is tried on before it is trusted: zeros and a fixed standard-normal input
    (what normalised images look like), so a model that misbehaves only on non-zero input is
    caught too."""
    import numpy as np

    return [np.zeros(shape, dtype=dtype), np.random.default_rng(0).standard_normal(shape).astype(dtype)]
