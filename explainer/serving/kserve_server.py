"""A KServe-compatible explanation server (V1 protocol), built on the KServe Python SDK.

``POST /v1/models/NAME:explain`` with ``{"instances": [{"image": {"b64": "<PNG or JPEG
bytes, base64>"}}], "parameters": {"method": "occlusion", "target": ..., ...options}}``
answers ``{"explanations": [{"map": ARRAY, "record": {...}, "arrays": {name: ARRAY}}]}``
where ARRAY is ``{"b64": "<little-endian bytes, base64>", "dtype": "float32", "shape": [H, W]}``.
``:predict`` answers the top-5 classes of each instance, ``GET /v1/models`` the model names.

Limits: the request body (413 beyond ``max_body_bytes``), instances per request, option
values and forward passes (400, one message), explanations at once (``max_concurrency``;
up to ``max_queue`` more wait, beyond that 503). Unknown models get 404 from KServe.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
from dataclasses import dataclass
from typing import Any

import kserve
import numpy as np
from kserve.errors import InvalidInput

from ..api import classify
from ..errors import InputError
from ..imaging import decode_image
from ..methods.common import load_input
from .requests import DEFAULT_MAX_PASSES, check_request, encode_array, explain_tensor, record


@dataclass(frozen=True)
class Limits:
    """What one server accepts."""

    max_body_bytes: int = 16 * 2**20
    max_instances: int = 4
    max_concurrency: int = 1
    max_queue: int = 8
    max_forward_passes: int = DEFAULT_MAX_PASSES
    data: str | None = None  # the folder of images prediction difference draws from


class Busy(Exception):
    """More explanations waiting than the queue holds (HTTP 503)."""


def instance_images(payload: Any, max_instances: int) -> list[np.ndarray]:
    """The (H, W, 3) uint8 pixels of each ``{"image": {"b64": ...}}`` instance."""
    if not isinstance(payload, dict) or not isinstance(payload.get("instances"), list):
        raise InputError('the body must be a JSON object with an "instances" list')
    items = payload["instances"]
    if not 1 <= len(items) <= max_instances:
        raise InputError(f"send 1 to {max_instances} instances per request, got {len(items)}")
    images = []
    for i, item in enumerate(items):
        data = item.get("image", {}).get("b64") if isinstance(item, dict) and isinstance(item.get("image"), dict) else None
        if not isinstance(data, str):
            raise InputError(f'instances[{i}] must be {{"image": {{"b64": "<base64 PNG or JPEG>"}}}}')
        try:
            raw = base64.b64decode(data, validate=True)
        except (binascii.Error, ValueError):
            raise InputError(f"instances[{i}].image.b64 is not valid base64") from None
        images.append(decode_image(raw, f"instances[{i}].image"))
    return images


class ExplainerService(kserve.Model):
    """One model's ``:predict`` and ``:explain`` (a ``kserve.Model``)."""

    def __init__(self, name: str, model: Any, limits: Limits = Limits()) -> None:
        super().__init__(name)
        self.model, self.limits = model, limits
        self._slots = asyncio.Semaphore(limits.max_concurrency)
        self._admitted = 0
        self.ready = True

    def preprocess(self, payload: Any, headers: dict[str, str] | None = None) -> Any:
        """A body sent without ``Content-Type: application/json`` arrives as bytes: parse it."""
        if isinstance(payload, (bytes, str)):
            try:
                return json.loads(payload)
            except ValueError:
                raise InvalidInput("the body is not JSON") from None
        return payload

    async def predict(self, payload: Any, headers: dict[str, str] | None = None, *_: Any) -> dict[str, Any]:
        images = _invalid_input(instance_images, payload, self.limits.max_instances)
        top = [await asyncio.to_thread(_invalid_input, classify, self.model, im) for im in images]
        return {"predictions": top}

    async def explain(self, payload: Any, headers: dict[str, str] | None = None) -> dict[str, Any]:
        images = _invalid_input(instance_images, payload, self.limits.max_instances)
        params = dict(payload.get("parameters") or {}) if isinstance(payload.get("parameters", {}), dict) else None
        if params is None:
            raise InvalidInput('"parameters" must be a JSON object')
        method, target = params.pop("method", "occlusion"), params.pop("target", None)
        options = _invalid_input(check_request, method, params, max_forward_passes=self.limits.max_forward_passes,
                                 shape=self.model.spec.preprocessing.size)
        if self._admitted >= self.limits.max_concurrency + self.limits.max_queue:
            raise Busy(f"the server is busy ({self._admitted} explanations running or waiting); retry later")
        self._admitted += 1
        try:
            async with self._slots:
                out = [await asyncio.to_thread(self._one, im, method, target, options) for im in images]
        finally:
            self._admitted -= 1
        return {"explanations": out}

    def _one(self, pixels: np.ndarray, method: str, target: Any, options: dict[str, Any]) -> dict[str, Any]:
        x = _invalid_input(load_input, self.model, pixels).x
        e = _invalid_input(explain_tensor, self.model, method, x, target, options, data=self.limits.data)
        return {"map": encode_array(e.map), "record": record(e),
                "arrays": {k: encode_array(np.asarray(v)) for k, v in e.arrays.items()}}


def _invalid_input(fn: Any, *args: Any, **kwargs: Any) -> Any:
    """``fn(...)`` with an InputError turned into KServe's InvalidInput (HTTP 400, one message)."""
    try:
        return fn(*args, **kwargs)
    except InputError as e:
        raise InvalidInput(str(e).splitlines()[0]) from None


class BodyLimit:
    """ASGI middleware: a request body over ``max_bytes`` gets 413 before anything parses it."""

    def __init__(self, app: Any, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope.get("headers") or []).get(b"content-length", b"0")
        if not declared.isdigit():
            return await _reply(send, 400, "the Content-Length header is not a number")
        too_big = f"the request body is larger than {self.max_bytes} bytes"
        if int(declared) > self.max_bytes:
            if int(declared) <= 4 * self.max_bytes:  # read and drop it: a plain client then sees the 413, not a reset
                while (m := await receive())["type"] == "http.request" and m.get("more_body"):
                    pass
            return await _reply(send, 413, too_big)
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > self.max_bytes:
                return await _reply(send, 413, too_big)
            if not message.get("more_body"):
                break
        body, done = b"".join(chunks), False

        async def replay() -> dict:
            nonlocal done
            if done:
                return await receive()
            done = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)


async def _reply(send: Any, status: int, message: str) -> None:
    body = json.dumps({"error": message}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


def run(model: Any, name: str, *, host: str = "127.0.0.1", port: int = 8080, limits: Limits = Limits()) -> None:
    """Serve ``model`` as ``name`` on ``host:port`` until interrupted (V1 REST only, no gRPC)."""
    from fastapi.responses import JSONResponse
    from kserve.model_server import ModelServer, app
    from kserve.protocol.rest.server import RESTServer

    server = ModelServer(http_port=port, enable_grpc=False, workers=1, enable_latency_logging=False)
    server.register_model(ExplainerService(name, model, limits))
    rest = RESTServer("kserve.model_server:app", server.dataplane, server.model_repository_extension, port,
                      timeout_keep_alive=5, grace_period=5)
    rest.config.host = host
    app.add_middleware(BodyLimit, max_bytes=limits.max_body_bytes)
    app.add_exception_handler(Busy, lambda request, exc: JSONResponse({"error": str(exc)}, status_code=503))
    asyncio.run(rest.start())
