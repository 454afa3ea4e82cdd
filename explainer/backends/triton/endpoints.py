"""Triton endpoint URLs (``grpc://HOST:PORT/MODEL[@VERSION]`` and friends), TLS files and headers."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence
from urllib.parse import urlsplit

from ...errors import InputError, add_secret

SCHEMES = {"grpc": 8001, "grpcs": 443, "http": 8000, "https": 443}


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
    for secret in (parts.netloc.rpartition("@")[0], parts.query, parts.fragment):
        add_secret(secret)  # never echoed, whatever message shows the URL
    if parts.scheme not in SCHEMES:
        raise InputError(f"{url}: the scheme must be one of {', '.join(s + '://' for s in SCHEMES)}")
    if "@" in parts.netloc:
        raise InputError(f"{parts.scheme}://...: no credentials in the URL; pass them with --header")
    if parts.query or parts.fragment:
        raise InputError(f"{url}: a Triton URL takes no query or fragment")
    try:
        port = SCHEMES[parts.scheme] if parts.port is None else parts.port
    except ValueError:
        port = 0
    if not 0 < port < 65536:
        raise InputError(f"{url}: the port must be a number between 1 and 65535")
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

    def __post_init__(self) -> None:
        from pathlib import Path

        for name in ("ca_cert", "client_cert", "client_key"):
            value = getattr(self, name)
            if value is not None and not Path(value).is_file():
                raise InputError(f"--tls-{name.replace('_', '-')} {value}: no such file")


def headers_dict(headers: Mapping[str, str] | Sequence[str] | None) -> dict[str, str]:
    """Headers from a mapping or "KEY:VALUE" strings (values are never shown in errors)."""
    if headers is None:
        return {}
    items = headers.items() if isinstance(headers, Mapping) else [_split_header(h) for h in headers]
    items = list(items)
    for _, v in items:
        add_secret(v)  # every configured value is redacted from every message, log and JSON
    out = {}
    for k, v in items:
        if not k or any(c in k for c in " \t\r\n:") or any(ord(c) < 32 or ord(c) == 127 for c in str(v)):
            raise InputError("a header must be KEY:VALUE with a plain key and a value without control "
                             "characters")
        out[str(k).lower()] = str(v)  # gRPC metadata keys must be lower case
    return out


def _split_header(text: str) -> tuple[str, str]:
    key, sep, value = str(text).partition(":")
    add_secret(value if sep else text)
    if not sep:
        raise InputError("a header must be KEY:VALUE")  # never echo it: it may be a token
    return key.strip(), value.strip()
