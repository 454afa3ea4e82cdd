"""A real local Triton Inference Server for the demo and the tests.

The ``tritonserver`` binary shipped in the PyPI package nvidia-pytriton (Triton 2.51,
Python backend only; it pins numpy < 2) is installed on first use into a virtual
environment of its own (:func:`explainer.paths.triton_venv_dir`: the platform's
per-user data folder, or ``$EXPLAINER_TRITON_VENV``), created by the explicit,
announced step ``explainer triton-server --setup`` (:func:`ensure_venv`). The production repository is turned into a
python-backend copy (:func:`explainer.backends.triton.repo.python_backend_repo`) and served
on 127.0.0.1 only.
"""

from __future__ import annotations

import contextlib
import hashlib
import fcntl
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Sequence

from ...errors import InputError
from ...paths import default_triton_repo, triton_venv_dir
from .repo import python_backend_repo

PROJECT = Path(__file__).resolve().parents[3]
PACKAGES = ["nvidia-pytriton==0.7.0", "onnxruntime>=1.18", "numpy<2"]
_READY = ".explainer-ready"


def venv_dir() -> Path:
    """Where the server's virtual environment lives."""
    return triton_venv_dir()


def _server_root(venv: Path) -> Path:
    found = sorted(venv.glob("lib/python3*/site-packages/pytriton/tritonserver"))
    if not found:
        raise InputError(f"{venv}: nvidia-pytriton is not installed in this environment")
    return found[0]


def is_ready(venv: Path | None = None) -> bool:
    """Whether the server's environment has been set up."""
    return ((venv or venv_dir()) / _READY).is_file()


def ensure_venv(venv: Path | None = None, *, quiet: bool = False) -> Path:
    """Set up the server's environment once (about a minute); later calls return at once.

    The explicit set-up step (``explainer triton-server --setup``): creates the
    virtual environment, installs nvidia-pytriton, onnxruntime and numpy < 2 with
    pip, then copies the Python-backend stub for this Python version next to the
    backend library, announcing each step on stderr (unless ``quiet``). Concurrent
    callers wait on a lock file.
    """
    venv = venv or venv_dir()
    if is_ready(venv):
        return venv
    venv.parent.mkdir(parents=True, exist_ok=True)
    lock_path = Path(tempfile.gettempdir()) / f"explainer-venv-{hashlib.sha1(str(venv.resolve()).encode()).hexdigest()[:12]}.lock"
    with open(lock_path, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if is_ready(venv):
            return venv
        started = time.monotonic()

        def say(text: str) -> None:
            if not quiet:
                print(f"explainer: {text}", file=sys.stderr, flush=True)

        say(f"setting up the local Triton server's environment in {venv} (once; about a minute)")
        shutil.rmtree(venv, ignore_errors=True)
        say("  [1/3] python -m venv")
        _run([sys.executable, "-m", "venv", str(venv)], "python -m venv")
        say(f"  [2/3] pip install {' '.join(PACKAGES)} (about 450 MB)")
        _run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q", *PACKAGES], "pip install")
        root = _server_root(venv)
        version = f"{sys.version_info.major}.{sys.version_info.minor}"
        say(f"  [3/3] Python-backend stub for Python {version}")
        stub = root / "python_backend_stubs" / version / "triton_python_backend_stub"
        if not stub.is_file():
            raise InputError(f"nvidia-pytriton has no Python-backend stub for Python {version}")
        shutil.copy2(stub, root / "backends" / "python" / stub.name)
        (venv / _READY).write_text("ok\n")
        say(f"the local Triton server's environment is ready ({time.monotonic() - started:.0f} s)")
    return venv


def _require_venv(venv: Path | None) -> Path:
    """The set-up environment, or a one-line error naming the set-up command."""
    venv = venv or venv_dir()
    if not is_ready(venv):
        raise InputError(f"the local Triton server is not set up ({venv}): run `explainer triton-server "
                         f"--setup` once (about a minute), or call explainer.backends.triton.server.ensure_venv()")
    return venv


def _run(cmd: list[str], what: str) -> None:
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        tail = (r.stderr.strip() or r.stdout.strip() or "no output").splitlines()[-1]
        raise InputError(f"setting up the local Triton server: {what} failed ({tail[:200]})")


def _die_with_parent() -> None:
    """In the child: SIGTERM when the thread that started it ends (Linux), so no server is orphaned."""
    with contextlib.suppress(Exception):
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LocalTritonServer:
    """``tritonserver`` serving a repository's ONNX models on 127.0.0.1.

    Parameters
    ----------
    repo : path, optional
        A production repository (``platform: "onnxruntime_onnx"`` configs); default
        :func:`explainer.paths.default_triton_repo`.
    http_port, grpc_port : int
        0 picks free ports.
    extra_args : sequence of str
        More ``tritonserver`` options (e.g. ``--grpc-use-ssl=true`` and its certificates).
    """

    def __init__(self, repo: str | Path | None = None, *, http_port: int = 8000,
                 grpc_port: int = 8001, venv: Path | None = None, extra_args: Sequence[str] = ()) -> None:
        self.repo = Path(repo) if repo is not None else default_triton_repo()
        self.http_port = http_port or free_port()
        self.grpc_port = grpc_port or free_port()
        self.venv = venv
        self.extra_args = list(extra_args)
        self.process: subprocess.Popen | None = None
        self._work: tempfile.TemporaryDirectory | None = None
        self.models: list[str] = []

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def grpc_url(self) -> str:
        return f"grpc://127.0.0.1:{self.grpc_port}"

    @property
    def log_path(self) -> Path:
        return Path(self._work.name) / "tritonserver.log" if self._work else Path("tritonserver.log")

    def start(self, *, timeout: float = 120.0) -> "LocalTritonServer":
        """Start the server and wait until it and all its models are ready.

        The environment must have been set up (:func:`ensure_venv`); starting never installs.
        """
        venv = _require_venv(self.venv)
        root = _server_root(venv)
        self._work = tempfile.TemporaryDirectory(prefix="explainer-triton-")
        models = Path(self._work.name) / "models"
        self.models = python_backend_repo(self.repo, models)
        env = dict(os.environ, PATH=f"{venv / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}",
                   LD_LIBRARY_PATH=str(root.parent.parent / "nvidia_pytriton.libs"))
        env.pop("PYTHONPATH", None)
        cmd = [str(root / "bin" / "tritonserver"), f"--model-repository={models}",
               f"--backend-directory={root / 'backends'}", f"--cache-directory={root / 'caches'}",
               "--http-address=127.0.0.1", "--grpc-address=127.0.0.1",
               f"--http-port={self.http_port}", f"--grpc-port={self.grpc_port}",
               "--allow-metrics=false", "--exit-timeout-secs=3", "--log-verbose=0", *self.extra_args]
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env,
                                            stdin=subprocess.DEVNULL, start_new_session=True,
                                            preexec_fn=_die_with_parent)
        self._wait_ready(timeout)
        return self

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                tail = self.log_tail()
                self.stop()
                raise InputError(f"the local Triton server exited ({tail})")
            with contextlib.suppress(OSError):
                with urllib.request.urlopen(f"{self.http_url}/v2/health/ready", timeout=1) as r:
                    if r.status == 200:
                        return
            time.sleep(0.1)
        self.stop()
        raise InputError(f"the local Triton server was not ready after {timeout:.0f} s")

    def log_tail(self) -> str:
        """The last non-empty line of the server's log."""
        with contextlib.suppress(OSError):
            lines = [ln for ln in self.log_path.read_text(errors="replace").splitlines() if ln.strip()]
            return lines[-1][:300] if lines else "no output"
        return "no log"

    def stop(self, *, timeout: float = 15.0) -> None:
        """Stop the server (SIGTERM, then SIGKILL) and remove its working folder."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None
        if self._work is not None:
            self._work.cleanup()
            self._work = None

    def __enter__(self) -> "LocalTritonServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def serve(repo: str | Path, *, http_port: int = 8000, grpc_port: int = 8001) -> None:
    """Run the local server in the foreground until interrupted (the CLI command).

    The first run sets up the server's environment (:func:`ensure_venv`, announced).
    """
    def _exit(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)  # runs the finally below: the server never outlives us

    ensure_venv()
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _exit)
    server = LocalTritonServer(repo, http_port=http_port, grpc_port=grpc_port)
    try:
        server.start()
        print(f"Triton is serving {', '.join(server.models)} from {repo}")
        for m in server.models:
            print(f"  --model {server.grpc_url}/{m}   or   --model {server.http_url}/{m}")
        print(f"log: {server.log_path}; Ctrl-C stops it", flush=True)
        while server.process is not None and server.process.poll() is None:
            time.sleep(0.5)
        raise InputError(f"the local Triton server exited ({server.log_tail()})")
    finally:
        server.stop()
