"""What the command line prints, and how: redacted, one line per message, no terminal control.

Everything the ``explainer`` command writes to stdout or stderr passes through
:class:`SafeStream` while :func:`console` is active: registered secrets and URL
credentials/queries are redacted (:func:`explainer.errors.redact`), and control
characters other than newline and tab are shown escaped, so an ANSI escape in a label,
a file name or a server's error cannot drive the terminal. Values printed inside a
line (paths, labels, messages) go through :func:`shown`, which escapes newlines too.
Libraries that log to the process's stderr on their own (gRPC core, ONNX Runtime's
warnings) are told to stay quiet.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
from typing import Any, Iterator, TextIO

from .errors import redact

_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")
# what the stream lets through besides newline and tab: a progress bar's carriage return and
# cursor-up (tqdm); values inside a line go through shown(), which lets nothing through
_STREAM_CONTROL = re.compile(r"\x1b(?!\[A)|[\x00-\x08\x0b\x0c\x0e-\x1a\x1c-\x1f\x7f-\x9f]")
_LINE_BREAKS = re.compile(r"[\n\r\x0b\x0c\x1c-\x1e\x85\u2028\u2029]")


def _escape(match: re.Match) -> str:
    return ascii(match.group(0))[1:-1]


def shown(value: Any) -> str:
    """``value`` as one printable line: redacted, every control character and line break escaped."""
    text = redact(str(value))
    return _CONTROL.sub(_escape, _LINE_BREAKS.sub(_escape, text))


class SafeStream:
    """A text stream wrapper that redacts and escapes control characters (not newline, tab, and a
    progress bar's carriage return and cursor-up)."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream

    def write(self, text: str) -> int:
        self._stream.write(_STREAM_CONTROL.sub(_escape, redact(text)) if text else text)
        return len(text)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


QUIET_ENV = {"GRPC_VERBOSITY": "NONE", "GRPC_TRACE": "", "ORT_LOGGING_LEVEL": "3"}


def quiet_libraries() -> None:
    """Silence libraries that write to stderr themselves: gRPC core (read when it is first
    imported). ONNX Runtime's warnings are turned off where its sessions are made."""
    for key, value in QUIET_ENV.items():
        os.environ.setdefault(key, value)


@contextlib.contextmanager
def console() -> Iterator[None]:
    """Route ``sys.stdout`` and ``sys.stderr`` through :class:`SafeStream` for the block."""
    old = sys.stdout, sys.stderr
    quiet_libraries()
    sys.stdout, sys.stderr = SafeStream(old[0]), SafeStream(old[1])  # type: ignore[assignment]
    try:
        yield
    finally:
        sys.stdout, sys.stderr = old
