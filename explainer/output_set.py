"""All-or-nothing output sets, a verified ``--resume``, the ``--out`` check, signals as interrupts.

The functions a batch runner needs (the command line, a cluster worker):

- :func:`write_output_set` writes an image's files (maps, PNG, extras) and its record
  JSON so that the set appears complete or not at all. The record is renamed into
  place last and holds ``"output_set"``: the sha256 of the settings that made it and
  the size and sha256 of every other file of the set.
- :func:`is_complete` says whether a record and its files are all there, intact, and
  made with these settings (what ``--resume`` may skip).
- :func:`check_out_dir` refuses an unusable output folder (empty, a file, under a file,
  a device, read-only, short of space) before anything is computed.
- :func:`signals_as_interrupt`: SIGTERM and SIGHUP (what batch schedulers send) end the
  run like Ctrl-C: one line, temporary files removed, no partial set.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import shutil
import signal
import tempfile
import threading
from pathlib import Path
from typing import Any, Iterator, Mapping

import numpy as np

from .errors import InputError, redact

KEY = "output_set"
_SIGNALS = tuple(getattr(signal, s) for s in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, s))


class Terminated(KeyboardInterrupt):
    """SIGTERM or SIGHUP, raised in the main thread like Ctrl-C; ``signum`` says which."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


class RunDeadline(KeyboardInterrupt):
    """The whole run passed ``$EXPLAINER_RUN_TIMEOUT`` seconds (raised like Ctrl-C, so no
    partial set is written); the command line reports it with exit status 3."""

    exit_code = 3


RUN_TIMEOUT_ENV = "EXPLAINER_RUN_TIMEOUT"


def settings_hash(settings: Mapping[str, Any]) -> str:
    """sha256 of the settings (JSON, keys sorted; other values by their ``str``)."""
    text = json.dumps(dict(settings), sort_keys=True, default=str, allow_nan=True)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _bytes(content: bytes | np.ndarray) -> bytes:
    if isinstance(content, np.ndarray):
        buf = io.BytesIO()
        np.save(buf, content, allow_pickle=False)
        return buf.getvalue()
    return bytes(content)


def write_output_set(files: Mapping[Path, bytes | np.ndarray], record: Path | None = None,
                     record_data: Mapping[str, Any] | None = None,
                     settings: Mapping[str, Any] | None = None) -> list[Path]:
    """Write ``files`` and then ``record`` (a JSON of ``record_data`` plus the set's manifest).

    Every file goes to a temporary name in its folder first; the renames happen with
    SIGINT/SIGTERM/SIGHUP held back, the record last; if any write or rename fails, the
    files already renamed are removed again. ``.json`` text is redacted.

    Returns
    -------
    paths : list of Path, ``files`` then ``record``
    """
    data = {Path(p): _bytes(c) for p, c in files.items()}
    if record is not None:
        manifest = {p.name: {"bytes": len(b), "sha256": hashlib.sha256(b).hexdigest()} for p, b in data.items()}
        body = dict(record_data or {})
        body[KEY] = {"settings_sha256": settings_hash(settings or {}), "files": manifest}
        data[Path(record)] = json.dumps(body, indent=2, allow_nan=False, default=_jsonable).encode()
    return _commit(data)


def _jsonable(v: Any) -> Any:
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, (np.ndarray, tuple)):
        return list(np.asarray(v).tolist())
    raise TypeError(f"not JSON serialisable: {type(v).__name__}")


def _commit(data: dict[Path, bytes]) -> list[Path]:
    temps: list[tuple[str, Path]] = []
    done: list[Path] = []
    path = next(iter(data), Path("."))
    try:
        for path, content in data.items():
            if path.suffix == ".json":
                content = redact(content.decode("utf-8")).encode("utf-8")
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=path.suffix)
            temps.append((tmp, path))
            with os.fdopen(fd, "wb") as f:
                f.write(content)
        mode = 0o666 & ~_umask()
        with _signals_held():
            try:
                for tmp, path in temps:
                    os.chmod(tmp, mode)
                    os.replace(tmp, path)
                    done.append(path)
            except BaseException:
                for written in done:  # all or nothing
                    with contextlib.suppress(OSError):
                        written.unlink()
                raise
    except OSError as e:
        raise InputError(f"cannot write {path}: {e.strerror or type(e).__name__}") from None
    finally:
        for tmp, _ in temps:
            if os.path.exists(tmp):
                os.unlink(tmp)
    return list(data)


def _umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current


@contextlib.contextmanager
def _signals_held() -> Iterator[None]:
    """Hold SIGINT/SIGTERM/SIGHUP back for the block (main thread); each is then handled as it
    would have been (its previous handler called, or the default action taken)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    pending: list[int] = []
    old = {s: signal.signal(s, lambda signum, frame: pending.append(signum)) for s in _SIGNALS}
    try:
        yield
    finally:
        for s, handler in old.items():
            signal.signal(s, handler)
        for s in dict.fromkeys(pending):
            if callable(old[s]):
                old[s](s, None)
            elif old[s] == signal.SIG_DFL:
                os.kill(os.getpid(), s)


def is_complete(record: Path, settings: Mapping[str, Any]) -> bool:
    """Whether ``record`` is a readable JSON made with ``settings`` whose listed files all exist
    beside it with their recorded sizes and sha256 (a truncated, missing, empty or foreign
    file, or other settings, mean: compute again)."""
    try:
        body = json.loads(Path(record).read_text(encoding="utf-8"))
        entry = body[KEY]
        if entry["settings_sha256"] != settings_hash(settings) or not entry["files"]:
            return False
        for name, meta in entry["files"].items():
            path = Path(record).parent / name
            if Path(name).name != name or path.stat().st_size != meta["bytes"]:
                return False
            h = hashlib.sha256()
            with open(path, "rb") as f:
                for chunk in iter(lambda: f.read(1 << 20), b""):
                    h.update(chunk)
            if h.hexdigest() != meta["sha256"]:
                return False
        return True
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return False


def check_out_dir(out: str | Path, needed_bytes: int = 0) -> Path:
    """The output folder, once it is known to be usable (created later, by the first write).

    Raises
    ------
    InputError
        An empty name, a file or device, a path under a file, a folder that cannot be
        written, or less free space than ``needed_bytes``.
    """
    if str(out).strip() == "":
        raise InputError("--out is empty; name an output folder")
    path = Path(out)
    if path.exists() and not path.is_dir():
        raise InputError(f"--out {path}: exists and is not a folder")
    existing = next(p for p in [path, *path.absolute().parents] if p.exists())
    if not existing.is_dir():
        raise InputError(f"--out {path}: {existing} is not a folder")
    try:
        if existing == path:  # a real write: os.access does not know every reason (quotas, ACLs)
            fd, probe = tempfile.mkstemp(dir=path, prefix=".tmp-probe-")
            os.close(fd)
            os.unlink(probe)
        elif not os.access(existing, os.W_OK | os.X_OK):
            raise PermissionError(13, "Permission denied")
        free = shutil.disk_usage(existing).free
    except OSError as e:
        raise InputError(f"--out {path}: cannot write there ({e.strerror or type(e).__name__})") from None
    if free < needed_bytes:
        raise InputError(f"--out {path}: {free / 1e6:.1f} MB free, the outputs need about "
                         f"{needed_bytes / 1e6:.1f} MB")
    return path


@contextlib.contextmanager
def signals_as_interrupt(run_timeout: float | None = None) -> Iterator[None]:
    """In the main thread: SIGTERM and SIGHUP raise :class:`Terminated` (a KeyboardInterrupt), and
    after ``run_timeout`` seconds (default ``$EXPLAINER_RUN_TIMEOUT``) :class:`RunDeadline`."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old = {}

    def handler(signum: int, frame: Any) -> None:
        raise Terminated(signum)

    for name in ("SIGTERM", "SIGHUP"):
        if hasattr(signal, name):
            old[name] = signal.signal(getattr(signal, name), handler)
    from .validation import number

    limit = _run_timeout() if run_timeout is None else \
        number("--run-timeout", float(run_timeout), low=0.0, open_low=True, high=365 * 24 * 3600.0)
    if limit and hasattr(signal, "setitimer"):
        def expired(signum: int, frame: Any) -> None:
            raise RunDeadline(f"the run did not finish within {limit:g} s (--run-timeout / ${RUN_TIMEOUT_ENV})")

        old["SIGALRM"] = signal.signal(signal.SIGALRM, expired)
        signal.setitimer(signal.ITIMER_REAL, limit)
    try:
        yield
    finally:
        if "SIGALRM" in old:
            signal.setitimer(signal.ITIMER_REAL, 0)
        for name, h in old.items():
            signal.signal(getattr(signal, name), h)


def _run_timeout() -> float | None:
    """$EXPLAINER_RUN_TIMEOUT in seconds (None when unset): a deadline for the whole run."""
    from .validation import env_seconds

    return env_seconds(RUN_TIMEOUT_ENV, None, 365 * 24 * 3600.0)


def explain_settings(model: Any, method: str, options: Mapping[str, Any], target: Any, source: Any,
                     save_input: bool = False) -> dict[str, Any]:
    """What decides an explanation's files: the model (sha256 of its file and external data, its
    preprocessing, its source), the method and its options, the target, the input file's sha256."""
    from dataclasses import asdict

    from .backends.onnx_safety import file_sha256

    spec = model.spec
    path = Path(str(source)) if isinstance(source, (str, Path)) else None
    return {"method": method, "options": dict(options), "target": target, "save_input": bool(save_input),
            "model": spec.sha256, "model_source": spec.source, "preprocessing": asdict(spec.preprocessing),
            "model_files": spec.extra.get("external_data_sha256", {}),
            "input": file_sha256(path) if path is not None and path.is_file() else str(source)}


def output_bytes(spec: Any, arrays: int = 3) -> int:
    """An estimate of one image's output set: ``arrays`` float32 maps of the input size (the map,
    extras) plus 256 KiB for the PNG and the JSON. Sets are written one at a time, so a run
    needs room for the next one; a disk that fills later fails that set alone, cleanly."""
    h, w = spec.preprocessing.size
    return arrays * 4 * int(h) * int(w) + (256 << 10)
