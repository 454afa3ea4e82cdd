"""A TCP proxy on 127.0.0.1 that counts and paces bytes: a slow link between client and server.

Each direction is one shared link (all connections together) of ``rate`` bytes/s: a chunk
leaves when the chunks before it have been "on the wire" for their size / rate. Used by
bench_served.py to put 1 Gbit/s or 100 Mbit/s between the explainer and a local Triton.
"""

from __future__ import annotations

import socket
import threading
import time


class Link:
    """One direction: bytes counted, and paced to ``rate`` bytes/s (None: not paced)."""

    def __init__(self, rate: float | None) -> None:
        self.rate, self.bytes, self._next, self._lock = rate, 0, 0.0, threading.Lock()

    def send(self, sock: socket.socket, data: bytes) -> None:
        with self._lock:
            self.bytes += len(data)
            if self.rate:
                now = time.monotonic()
                self._next = max(now, self._next) + len(data) / self.rate
                due = self._next
        if self.rate:
            time.sleep(max(0.0, due - time.monotonic()))
        sock.sendall(data)


class Throttle:
    """``127.0.0.1:port`` forwarding to ``target`` (host, port) at ``mbit`` Mbit/s each way."""

    def __init__(self, target: tuple[str, int], mbit: float | None = None) -> None:
        rate = mbit * 1e6 / 8 if mbit else None
        self.target, self.up, self.down = target, Link(rate), Link(rate)
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def total(self) -> int:
        return self.up.bytes + self.down.bytes

    def reset(self) -> None:
        self.up.bytes = self.down.bytes = 0

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.target)
            for s in (client, upstream):
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            threading.Thread(target=self._pump, args=(client, upstream, self.up), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, self.down), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket, link: Link) -> None:
        try:
            while data := src.recv(256 * 1024):
                link.send(dst, data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self) -> None:
        self.server.close()
