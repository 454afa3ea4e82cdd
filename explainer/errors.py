"""The package's exception types and the exit status the command line gives each.

===================  ======  =====================================================
exception            exit    meaning
===================  ======  =====================================================
``InputError``       2       the user gave something we cannot use (a missing file,
                             a non-classifier model, a bad option)
``CapabilityError``  2       an ``InputError``: the model lacks a capability the
                             method needs; the message names the fix
``ModelError``       3       the model failed while running (a runtime error, NaN
                             or a wrongly shaped output)
``ServerError``      3       a server (Triton) could not be reached or failed a
                             request after its retries; a ``ModelError``
===================  ======  =====================================================

Library callers tell them apart by type: ``except InputError`` (also a ``ValueError``)
versus ``except ModelError`` (also a ``RuntimeError``).

Secrets: :func:`add_secret` registers a configured value (a request header's value, a
URL's credentials or query); :func:`redact` replaces every registered value, and the
credentials and query of any URL, in a text. Every error this package raises is redacted
when it is made, and the command line redacts all it prints and every JSON it writes,
whatever produced the text (a client library's error, a server echoing headers).
"""

from __future__ import annotations

import json
import re
from typing import Any
from urllib.parse import quote

REDACTED = "<redacted>"
MIN_SECRET_CHARS = 4  # shorter values ("1", "on") are not secrets and would garble every message
_SECRETS: set[str] = set()
_URL_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^\s/?#@]*@")
_URL_QUERY = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://[^\s?#'\"]*)[?#][^\s'\"]*")


def add_secret(value: Any) -> None:
    """Register ``value`` (and its escaped, quoted and repr forms) for :func:`redact`."""
    text = str(value)
    if len(text.strip()) < MIN_SECRET_CHARS:
        return
    for form in (text, text.strip(), repr(text)[1:-1], text.encode("unicode_escape").decode("ascii"),
                 json.dumps(text)[1:-1], quote(text, safe=""), quote(text)):
        if len(form) >= MIN_SECRET_CHARS:
            _SECRETS.add(form)


def redact(text: str) -> str:
    """``text`` with every registered secret and every URL's credentials and query replaced."""
    for secret in sorted(_SECRETS, key=len, reverse=True):
        if secret in text:
            text = text.replace(secret, REDACTED)
    text = _URL_USERINFO.sub(lambda m: m.group(1) + REDACTED + "@", text)
    return _URL_QUERY.sub(lambda m: m.group(1) + "?" + REDACTED, text)


def redact_json(value: Any) -> Any:
    """A JSON-ready value with :func:`redact` applied to every string (keys included)."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {redact_json(k): redact_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [redact_json(v) for v in value]
    return value


class ExplainerError(Exception):
    """Base of every error the package raises on purpose; ``exit_code`` is the CLI's status."""

    exit_code = 1

    def __init__(self, *args: Any) -> None:
        super().__init__(*(redact(a) if isinstance(a, str) else a for a in args))


class InputError(ExplainerError, ValueError):
    """Bad input from the user: a missing file, a non-classifier model, a bad option.

    The command line prints its message on one line and exits with status 2.
    """

    exit_code = 2


class CapabilityError(InputError):
    """The model cannot do what a method asks (no gradients, no layers, no ONNX file...); the
    message names the fix (an export command, another method or backend). Exit status 2."""


class ModelError(ExplainerError, RuntimeError):
    """The model failed while running; the command line prints one line and exits with status 3."""

    exit_code = 3


class ServerError(ModelError):
    """A model server was unreachable or failed a request (after retries); exit status 3."""


EXIT_CODES = {"ok": 0, "internal": 1, "input": InputError.exit_code, "model": ModelError.exit_code,
              "interrupted": 130}
