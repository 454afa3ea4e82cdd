"""On-disk cache of derived ONNX graphs (gradient models), so a new process skips building them,
and of isolation-probe verdicts (a model file whose exact bytes already loaded and ran in the
isolated child with this runtime is not probed again: backends/onnxruntime.py).

Where: ``$EXPLAINER_GRAPH_CACHE`` when it names a folder, else ``graphs/`` in the user cache
folder (:func:`explainer.paths.cache_dir`: ``$EXPLAINER_CACHE_DIR`` or platformdirs' user
cache folder, e.g. ~/.cache/explainer/graphs on Linux). ``EXPLAINER_GRAPH_CACHE=off`` turns
the cache off. These files are written outside
``--out`` by design (documented in README.md).

An entry is ``<key>.onnx`` plus ``<key>.json``; the key is the sha256 of the source model's
sha256, the kind of graph, its settings (rule, layer) and CACHE_VERSION, so a changed model
or builder never meets an old entry. Before an entry is used: the folder and both files must
belong to this user and not be writable by group or others, and the graph's sha256 must
equal the one recorded in the .json. Anything else counts as a miss (the graph is rebuilt
and the entry rewritten). Writes are atomic (temporary file, then rename), mode 0600.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import tempfile
from pathlib import Path

CACHE_VERSION = 2  # 2: non-saturating softmax gradient (issue 20)
"""Bump when graph/gradients.py changes what it builds."""
ENV = "EXPLAINER_GRAPH_CACHE"


def cache_dir() -> Path | None:
    """The cache folder, or None when turned off."""
    value = os.environ.get(ENV, "")
    if value.lower() in ("off", "0", "false", "no"):
        return None
    if value:
        return Path(value)
    from ..paths import cache_dir as user_cache

    base = user_cache()
    return None if base is None else base / "graphs"


def cache_key(model_sha256: str, kind: str, **settings: object) -> str:
    """Hex key of a derived graph of the model with this sha256."""
    text = json.dumps({"version": CACHE_VERSION, "model": model_sha256, "kind": kind,
                       "settings": settings}, sort_keys=True)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _private(path: Path) -> bool:
    """Owned by this user and not writable by group or others (no symlinks)."""
    try:
        st = path.lstat()
    except OSError:
        return False
    if stat.S_ISLNK(st.st_mode):
        return False
    return (not hasattr(os, "getuid") or st.st_uid == os.getuid()) and not st.st_mode & 0o022


def load(key: str) -> tuple[bytes, dict] | None:
    """The cached graph's bytes and metadata, or None (missing, off, or failing a check)."""
    folder = cache_dir()
    if folder is None or not _private(folder):
        return None
    graph, meta = folder / f"{key}.onnx", folder / f"{key}.json"
    if not (_private(graph) and _private(meta)):
        return None
    try:
        info = json.loads(meta.read_text(encoding="utf-8"))
        data = graph.read_bytes()
    except (OSError, ValueError, UnicodeDecodeError):
        return None
    if not isinstance(info, dict) or hashlib.sha256(data).hexdigest() != info.get("sha256"):
        return None
    return data, info


def store(key: str, data: bytes, info: dict) -> bool:
    """Write an entry (best effort: False when the folder cannot be written)."""
    folder = cache_dir()
    if folder is None:
        return False
    try:
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        if not _private(folder):
            return False
        meta = dict(info, sha256=hashlib.sha256(data).hexdigest())
        _atomic(folder / f"{key}.onnx", data)
        _atomic(folder / f"{key}.json", json.dumps(meta, sort_keys=True).encode("utf-8"))
    except OSError:
        return False
    return True


def _atomic(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
