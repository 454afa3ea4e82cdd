"""Talking to Triton replicas: endpoint URLs, per-thread clients, load spreading, safe retries.

Retries happen only where they are safe: a connection failure (the replica is set
aside for a while and the request goes to another one) and UNAVAILABLE from a live
server (queue full, model not ready: back off with capped exponential delays and
full jitter, and halve that replica's requests in flight). NOT_FOUND,
INVALID_ARGUMENT and every other error fail at once.
"""

from __future__ import annotations

import random
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence, TypeVar
from urllib.parse import urlsplit

from ..errors import InputError

T = TypeVar("T")
SCHEMES = {"grpc": 8001, "grpcs": 443, "http": 8000, "https": 443}
_DOWN_WORDS = ("failed to connect", "connection refused", "connection reset", "socket closed",
               "broken pipe", "name resolution", "connection aborted", "end of tcp stream")


class TritonError(InputError):
    """A Triton server refused or failed a request; the CLI prints it on one line (exit 2)."""


@dataclass(frozen=True)
class Endpoint:
    """One replica's address and the model it serves: ``grpc://HOST:PORT/MODEL[@VERSION]``."""

    scheme: str
    host: str
    port: int
    model: str
    version: str = ""

    @property
    def address(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    @property
    def protocol(self) -> str:
        return "grpc" if self.scheme.startswith("grpc") else "http"

    @property
    def tls(self) -> bool:
        return self.scheme in ("grpcs", "https")

    def __str__(self) -> str:
        return f"{self.scheme}://{self.address}/{self.model}" + (f"@{self.version}" if self.version else "")


def is_remote(source: Any) -> bool:
    """Whether ``source`` names Triton endpoints rather than a file."""
    return isinstance(source, str) and any(source.strip().startswith(s + "://") for s in SCHEMES)


def parse_endpoints(source: str) -> list[Endpoint]:
    """Endpoints from a URL or several separated by commas (replicas of one model)."""
    endpoints = [_parse_one(part.strip()) for part in source.split(",") if part.strip()]
    if not endpoints:
        raise InputError(f"{source!r}: no Triton endpoint given")
    models = {(e.model, e.version) for e in endpoints}
    if len(models) > 1:
        raise InputError("all endpoints must serve the same model and version, got "
                         + ", ".join(f"{m}@{v}" if v else m for m, v in sorted(models)))
    if len({str(e) for e in endpoints}) != len(endpoints):
        raise InputError("the same endpoint is named twice")
    return endpoints


def _parse_one(url: str) -> Endpoint:
    parts = urlsplit(url)
    if parts.scheme not in SCHEMES:
        raise InputError(f"{url}: the scheme must be one of {', '.join(s + '://' for s in SCHEMES)}")
    if "@" in parts.netloc:
        raise InputError(f"{parts.scheme}://...: no credentials in the URL; pass them with --header")
    if parts.query or parts.fragment:
        raise InputError(f"{url}: a Triton URL takes no query or fragment")
    try:
        port = parts.port or SCHEMES[parts.scheme]
    except ValueError:
        raise InputError(f"{url}: the port is not a number between 0 and 65535") from None
    name, _, version = parts.path.strip("/").partition("@")
    if not parts.hostname or not name or "/" in name:
        raise InputError(f"{url}: expected {parts.scheme}://HOST:PORT/MODEL[@VERSION]")
    if version and not version.isdigit():
        raise InputError(f"{url}: the model version must be a number, got {version!r}")
    return Endpoint(parts.scheme, parts.hostname, port, name, version)


@dataclass(frozen=True)
class Tls:
    """TLS files for grpcs:// and https:// (PEM paths); ``insecure`` skips verification (https)."""

    ca_cert: str | None = None
    client_cert: str | None = None
    client_key: str | None = None
    insecure: bool = False


def classify(exc: BaseException) -> tuple[str, str]:
    """("down" | "busy" | "timeout" | "fatal", one-line reason) for a client exception."""
    from tritonclient.utils import InferenceServerException

    if isinstance(exc, InputError):
        return "fatal", str(exc)
    if isinstance(exc, InferenceServerException):
        status, msg = str(exc.status() or ""), str(exc.message() or exc)
        line = msg.splitlines()[0][:300] if msg else status
        if status in ("StatusCode.UNAVAILABLE", "503"):
            return ("down" if any(w in msg.lower() for w in _DOWN_WORDS) else "busy"), line
        if status == "StatusCode.DEADLINE_EXCEEDED":
            return "timeout", "the request timed out"
        if not status and any(w in msg.lower() for w in _DOWN_WORDS):
            return "down", line
        return "fatal", line
    if isinstance(exc, TimeoutError) or type(exc).__name__ == "Timeout":  # socket / gevent timeouts
        return "timeout", "the request timed out"
    if isinstance(exc, OSError):
        return "down", (exc.strerror or str(exc) or type(exc).__name__).lower()
    return "fatal", f"{type(exc).__name__}: {str(exc).splitlines()[0][:300] if str(exc) else ''}"


@dataclass(eq=False)
class Replica:
    """One endpoint, with a tritonclient per thread (the HTTP client is not thread-safe)."""

    endpoint: Endpoint
    tls: Tls
    timeout: float
    limit: float = 1.0
    active: int = 0
    aside_until: float = 0.0
    _local: threading.local = field(default_factory=threading.local, repr=False)

    def client(self) -> Any:
        c = getattr(self._local, "client", None)
        if c is None:
            c = self._local.client = self._make_client()
        return c

    def _make_client(self) -> Any:
        e, t = self.endpoint, self.tls
        if e.protocol == "grpc":
            import tritonclient.grpc as grpcclient

            return grpcclient.InferenceServerClient(
                e.address, ssl=e.tls, root_certificates=t.ca_cert, private_key=t.client_key,
                certificate_chain=t.client_cert)
        import tritonclient.http as httpclient

        options = {k: v for k, v in (("ca_certs", t.ca_cert), ("certfile", t.client_cert),
                                     ("keyfile", t.client_key)) if v}
        return httpclient.InferenceServerClient(
            e.address, ssl=e.tls, ssl_options=options or None, insecure=t.insecure,
            connection_timeout=self.timeout, network_timeout=self.timeout)


class ReplicaPool:
    """Spreads calls over replicas by load; retries only connection failures and UNAVAILABLE.

    Parameters
    ----------
    replicas : sequence of Replica
    concurrency : int
        The most requests in flight on one replica (lowered while it reports a full queue).
    retries : int
        Retries of one request before giving up.
    backoff, backoff_max : float
        First delay and cap (s) of the exponential backoff; each delay is drawn
        uniformly from [0, min(backoff_max, backoff * 2**attempt)].
    set_aside : float
        Seconds a replica that failed to connect is left out while others are up.
    """

    def __init__(self, replicas: Sequence[Replica], *, concurrency: int, retries: int = 6,
                 backoff: float = 0.05, backoff_max: float = 2.0, set_aside: float = 5.0) -> None:
        self.replicas = list(replicas)
        self.concurrency, self.retries = concurrency, retries
        self.backoff, self.backoff_max, self.set_aside = backoff, backoff_max, set_aside
        for r in self.replicas:
            r.limit = float(concurrency)
        self._cond = threading.Condition()
        self._rng = random.Random()
        self._turn = 0
        self.retried = 0
        self.busy_replies = 0

    def call(self, fn: Callable[[Replica], T]) -> T:
        """``fn(replica)`` on the least loaded replica, retried where safe."""
        attempt = 0
        while True:
            rep = self._acquire()
            try:
                result = fn(rep)
            except BaseException as e:  # gevent's Timeout is a BaseException
                if isinstance(e, (KeyboardInterrupt, SystemExit)):
                    self._release(rep, "fatal")
                    raise
                kind, reason = classify(e)
                self._release(rep, kind)
                if isinstance(e, InputError):
                    raise
                if kind in ("fatal", "timeout") or attempt >= self.retries:
                    raise TritonError(_message(rep.endpoint, kind, reason, attempt)) from None
                attempt += 1
                with self._cond:
                    self.retried += 1
                if kind == "busy" or not self._others_up(rep):
                    time.sleep(self._rng.uniform(0, min(self.backoff_max, self.backoff * 2 ** attempt)))
                continue
            self._release(rep, "ok")
            return result

    def _acquire(self) -> Replica:
        with self._cond:
            while True:
                now = time.monotonic()
                up = [r for r in self.replicas if r.aside_until <= now]
                if not up:  # every replica set aside: probe the one back soonest
                    up = [min(self.replicas, key=lambda r: r.aside_until)]
                room = [r for r in up if r.active < max(1, int(r.limit))]
                if room:
                    self._turn += 1
                    n = len(self.replicas)
                    rep = min(room, key=lambda r: (r.active / r.limit,
                                                   (self.replicas.index(r) - self._turn) % n))
                    rep.active += 1
                    return rep
                self._cond.wait(0.05)

    def _release(self, rep: Replica, kind: str) -> None:
        with self._cond:
            rep.active -= 1
            if kind == "ok":
                rep.limit = min(float(self.concurrency), rep.limit + 1.0 / rep.limit)
                rep.aside_until = 0.0
            elif kind == "busy":
                rep.limit = max(1.0, rep.limit / 2)
                self.busy_replies += 1
            elif kind == "down":
                rep.aside_until = time.monotonic() + self.set_aside
            self._cond.notify_all()

    def _others_up(self, rep: Replica) -> bool:
        now = time.monotonic()
        return any(r is not rep and r.aside_until <= now for r in self.replicas)


def _message(endpoint: Endpoint, kind: str, reason: str, attempts: int) -> str:
    tried = f" after {attempts + 1} attempts" if attempts else ""
    if kind == "down":
        return f"cannot reach the Triton server at {endpoint}{tried} ({reason}); is it running?"
    if kind == "busy":
        return f"{endpoint}: the server stayed unavailable{tried} ({reason})"
    return f"{endpoint}: {reason}"


def headers_dict(headers: Mapping[str, str] | Sequence[str] | None) -> dict[str, str]:
    """Headers from a mapping or "KEY:VALUE" strings (values are never shown in errors)."""
    if headers is None:
        return {}
    items = headers.items() if isinstance(headers, Mapping) else [_split_header(h) for h in headers]
    out = {}
    for k, v in items:
        if not k or any(c in k for c in " \t\r\n:") or any(c in str(v) for c in "\r\n"):
            raise InputError("a header must be KEY:VALUE with a plain key and a one-line value")
        out[str(k).lower()] = str(v)  # gRPC metadata keys must be lower case
    return out


def _split_header(text: str) -> tuple[str, str]:
    key, sep, value = str(text).partition(":")
    if not sep:
        raise InputError("a header must be KEY:VALUE")  # never echo it: it may be a token
    return key.strip(), value.strip()
