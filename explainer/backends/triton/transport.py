"""Talking to Triton replicas: per-thread clients, load spreading, safe retries (URLs: .endpoints).

Retries happen only where they are safe: a connection failure (the replica is set
aside for a while and the request goes to another one; its clients are rebuilt so a
restarted server is reached at once) and UNAVAILABLE from a live server (queue full,
model not ready: back off with capped exponential delays and full jitter, and halve
that replica's requests in flight), for at most ``retry_seconds`` after a request's
first failure (30 s by default: long enough for a server restart). NOT_FOUND,
INVALID_ARGUMENT, a request past its timeout and every other error fail at once, except
NOT_FOUND for the model from a server that is not ready (starting or stopping: its
models are not loaded yet), which is treated as UNAVAILABLE.
"""

from __future__ import annotations

import contextlib
import random
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence, TypeVar

from ...errors import ExplainerError, InputError, ServerError
from .client import server_ready
from .endpoints import Endpoint, Tls

T = TypeVar("T")
REQUEST_BYTES = 32 << 20  # under Triton's default 64 MiB HTTP input limit


def request_step(n: int, item_bytes: int, max_batch_size: int | None, fixed: int | None = None) -> int:
    """Inputs per request: the fixed batch size, else at most ``max_batch_size`` and 32 MiB."""
    if fixed:
        return fixed
    return max(1, min(max_batch_size or n or 1, REQUEST_BYTES // max(1, item_bytes)))
_DOWN_WORDS = ("failed to connect", "connection refused", "connection reset", "socket closed",
               "broken pipe", "name resolution", "connection aborted", "end of tcp stream")


class TritonError(InputError):
    """Connecting to an endpoint failed at load time (no server there, no such model): exit 2.

    Once the model is loaded, a failed request raises :class:`ServerError` (exit 3).
    """


def classify(exc: BaseException) -> tuple[str, str]:
    """("down" | "busy" | "timeout" | "fatal", one-line reason) for a client exception."""
    from tritonclient.utils import InferenceServerException

    if isinstance(exc, ExplainerError):
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
    if type(exc).__name__ == "HTTPConnectionClosed":  # geventhttpclient: the server went away
        return "down", "connection closed"
    if isinstance(exc, OSError):
        return "down", (exc.strerror or str(exc) or type(exc).__name__).lower()
    return "fatal", f"{type(exc).__name__}: {str(exc).splitlines()[0][:300] if str(exc) else ''}"


@contextlib.contextmanager
def request_deadline(rep: "Replica") -> Any:
    """The whole request ends within ``rep.timeout`` seconds, however the server dribbles its
    answer: the HTTP client's own timeouts are per socket read, so its calls run under a gevent
    Timeout (raised where the client waits; ``classify`` calls it "timeout"); gRPC calls carry
    their own deadline (``client_timeout``)."""
    if rep.endpoint.protocol != "http":
        yield
        return
    import gevent

    with gevent.Timeout(rep.timeout):
        yield


@dataclass(eq=False)
class Replica:
    """One endpoint, with a tritonclient per thread (the HTTP client is not thread-safe)."""

    endpoint: Endpoint
    tls: Tls
    timeout: float
    limit: float = 1.0
    active: int = 0
    aside_until: float = 0.0
    headers: dict[str, str] = field(default_factory=dict, repr=False)  # may hold a token
    generation: int = 0  # bumped when the server went away: every thread then makes a fresh client
    _local: threading.local = field(default_factory=threading.local, repr=False)

    def client(self) -> Any:
        c = getattr(self._local, "client", None)
        if c is None or self._local.generation != self.generation:
            if c is not None:
                with contextlib.suppress(Exception):
                    c.close()
            c = self._local.client = self._make_client()
            self._local.generation = self.generation
        return c

    def _make_client(self) -> Any:
        e, t = self.endpoint, self.tls
        if e.protocol == "grpc":
            import tritonclient.grpc as grpcclient

            # tritonclient's message limits, and a subchannel of its own: a client made after the
            # server went away connects at once instead of waiting out a shared reconnect backoff
            args = [("grpc.max_send_message_length", 2**31 - 1), ("grpc.max_receive_message_length", 2**31 - 1),
                    ("grpc.use_local_subchannel_pool", 1)]
            return grpcclient.InferenceServerClient(
                e.address, ssl=e.tls, root_certificates=t.ca_cert, private_key=t.client_key,
                certificate_chain=t.client_cert, channel_args=args)
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
    retries : int, optional
        Retries of one request before giving up (default: as many as ``retry_seconds`` allows).
    retry_seconds : float
        Give up on a request this many seconds after its first failure, or after the
        first failure of any request since the last success (no delay is started that
        would end later).
    backoff, backoff_max : float
        First delay and cap (s) of the exponential backoff; each delay is drawn
        uniformly from [0, min(backoff_max, backoff * 2**attempt)].
    set_aside : float
        Seconds a replica that failed to connect is left out while others are up.
    """

    def __init__(self, replicas: Sequence[Replica], *, concurrency: int, retries: int | None = None,
                 retry_seconds: float = 30.0, backoff: float = 0.05, backoff_max: float = 2.0,
                 set_aside: float = 5.0) -> None:
        self.replicas = list(replicas)
        self.concurrency, self.retries, self.retry_seconds = concurrency, retries, float(retry_seconds)
        self.backoff, self.backoff_max, self.set_aside = backoff, backoff_max, set_aside
        for r in self.replicas:
            r.limit = float(concurrency)
        self._cond = threading.Condition()
        self._rng = random.Random()
        self._turn = 0
        self.retried = 0
        self.busy_replies = 0
        self._outage: float | None = None  # when the current run of failures began (None after a success)

    def call(self, fn: Callable[[Replica], T]) -> T:
        """``fn(replica)`` on the least loaded replica, retried where safe."""
        attempt, first_failure = 0, 0.0
        while True:
            rep = self._acquire()
            try:
                with request_deadline(rep):
                    result = fn(rep)
            except BaseException as e:  # gevent's Timeout is a BaseException
                if isinstance(e, (KeyboardInterrupt, SystemExit)):
                    self._release(rep, "fatal")
                    raise
                kind, reason = classify(e)
                if kind == "fatal" and _model_missing(e) and not _server_ready(rep):
                    kind = "busy"  # a server starting or stopping: its models come and go
                self._release(rep, kind)
                if isinstance(e, ExplainerError):
                    raise
                now = time.monotonic()
                if kind in ("fatal", "timeout"):
                    raise ServerError(_message(rep, kind, reason, attempt, now - (first_failure or now))) from None
                with self._cond:  # requests queued behind a failing one share its deadline
                    self._outage = now if self._outage is None else self._outage
                    first_failure = min(first_failure or now, self._outage)
                delay = self._rng.uniform(0, min(self.backoff_max, self.backoff * 2 ** (attempt + 1)))
                if kind == "down" and self._others_up(rep):
                    delay = 0.0  # another replica takes it at once
                if (self.retries is not None and attempt >= self.retries) \
                        or now + delay - first_failure > self.retry_seconds:
                    raise ServerError(_message(rep, kind, reason, attempt, now - first_failure)) from None
                attempt += 1
                with self._cond:
                    self.retried += 1
                time.sleep(delay)
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
                self._outage = None
            elif kind == "busy":
                rep.limit = max(1.0, rep.limit / 2)
                self.busy_replies += 1
            elif kind == "down":
                rep.aside_until = time.monotonic() + self.set_aside
                rep.generation += 1
            elif kind == "timeout":
                rep.generation += 1  # its connection may hold half an answer: fresh clients
            self._cond.notify_all()

    def _others_up(self, rep: Replica) -> bool:
        now = time.monotonic()
        return any(r is not rep and r.aside_until <= now for r in self.replicas)


def _model_missing(exc: BaseException) -> bool:
    """NOT_FOUND for the model ("unknown model", "has no available versions")."""
    status = str(getattr(exc, "status", lambda: "")() or "")
    return status in ("StatusCode.NOT_FOUND", "404") or "unknown model" in str(exc).lower()


def _server_ready(rep: Replica) -> bool:
    """Whether the server says it is ready (False while it starts, stops, or cannot be reached)."""
    try:
        with request_deadline(rep):
            return server_ready(rep, rep.headers)
    except BaseException as e:  # gevent's Timeout is a BaseException
        if isinstance(e, (KeyboardInterrupt, SystemExit)):
            raise
        return False


def _message(rep: Replica, kind: str, reason: str, attempts: int, waited: float) -> str:
    endpoint = rep.endpoint
    tried = f" after {attempts + 1} attempts over {waited:.1f} s" if attempts else ""
    if kind == "timeout":
        return f"{endpoint}: no answer within the request timeout of {rep.timeout:g} s (--timeout)"
    if kind == "down":
        return f"cannot reach the Triton server at {endpoint}{tried} ({reason}); is it running?"
    if kind == "busy":
        return f"{endpoint}: the server stayed unavailable{tried} ({reason})"
    return f"{endpoint}: {reason}"
