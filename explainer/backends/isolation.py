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
import types
from typing import Any, Callable, Iterator

from ..errors import InputError

DEFAULT_MEMORY_BYTES = 16 << 30
DEFAULT_TIMEOUT_S = 300.0


def _child(conn: Any, job: Callable[..., None], args: tuple, memory_bytes: int) -> None:
    try:
        resource.setrlimit(resource.RLIMIT_AS, (memory_bytes, memory_bytes))
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
                 memory_bytes: int = DEFAULT_MEMORY_BYTES, timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
    """Run ``job(*args)`` in a child; turn a crash, a hang or an error into InputError.

    ``job`` is a module-level function that raises to report a problem; its
    message comes back to the parent. Without a fork server (Windows) it runs here.
    """
    ctx = _context()
    if ctx is None:
        job(*args)
        return
    parent, child = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_child, args=(child, job, args, memory_bytes), daemon=True)
    with _caller_main_hidden():
        proc.start()
    child.close()
    try:
        ready = parent.poll(timeout_s)
        message = parent.recv() if ready else None
    except EOFError:
        message = None
    finally:
        proc.join(5 if message is not None else 0.1)
        if proc.is_alive():
            proc.kill()
            proc.join()
    if message is None:
        code = proc.exitcode
        if code is not None and code < 0:
            name = signal.Signals(-code).name if -code in signal.valid_signals() else str(-code)
            raise InputError(f"{what}: ONNX Runtime crashed on this model ({name})")
        raise InputError(f"{what}: loading the model did not finish within {timeout_s:.0f} s")
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
    """Create a session on ``path`` and run one zero input (the child's job)."""
    import numpy as np
    import onnxruntime as ort

    ort.set_default_logger_severity(3)
    session = ort.InferenceSession(path, providers=providers)
    session.run([output_name], {input_name: np.zeros(shape, dtype=dtype)})
