"""The one place that speaks Triton's gRPC or HTTP client: configs, the repository index, inference.

Each function takes a :class:`~.transport.Replica` (its endpoint says the protocol) and
is called through the model's replica pool (``model.pool.call``), which retries it.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from ...errors import ModelError


def _grpc(rep: Any) -> bool:
    return rep.endpoint.protocol == "grpc"


def _deadline(rep: Any) -> dict[str, float]:
    """gRPC calls carry their own deadline, the request timeout (``rep.timeout``); HTTP calls
    get theirs from ``transport.request_deadline`` (the HTTP client's timeouts are per read)."""
    return {"client_timeout": float(rep.timeout)} if _grpc(rep) else {}


def model_config(rep: Any, name: str, headers: dict[str, str], version: str = "") -> dict:
    """The model's configuration as a JSON dict."""
    if _grpc(rep):
        return rep.client().get_model_config(name, version, headers=dict(headers), as_json=True,
                                             **_deadline(rep))["config"]
    return rep.client().get_model_config(name, version, headers=dict(headers))


def repository_index(rep: Any, headers: dict[str, str]) -> list[dict]:
    """The server's model repository index: one dict (name, version, state) per model."""
    if _grpc(rep):
        return rep.client().get_model_repository_index(headers=dict(headers), as_json=True,
                                                       **_deadline(rep)).get("models", [])
    return rep.client().get_model_repository_index(headers=dict(headers))


def server_ready(rep: Any, headers: dict[str, str], *, live: bool = False) -> bool:
    """Whether the server is ready (``live``: only alive), within the request's deadline."""
    call = rep.client().is_server_live if live else rep.client().is_server_ready
    return bool(call(headers=dict(headers), **_deadline(rep)))


def model_ready(rep: Any, name: str, headers: dict[str, str], version: str = "") -> bool:
    """Whether model ``name`` (``version``) is loaded and ready, within the request's deadline."""
    return bool(rep.client().is_model_ready(name, version, headers=dict(headers), **_deadline(rep)))


def infer(rep: Any, model_name: str, feeds: Sequence[tuple[str, str, np.ndarray]], outputs: Sequence[str],
          headers: dict[str, str], timeout: float, version: str = "") -> list[np.ndarray]:
    """Run ``model_name`` on ``feeds`` ((input name, Triton datatype, array), ...); the ``outputs`` arrays.

    Raises ModelError when the response lacks an output.
    """
    grpc = _grpc(rep)
    if grpc:
        import tritonclient.grpc as client_lib
    else:
        import tritonclient.http as client_lib
    binary = {} if grpc else {"binary_data": True}
    inputs = []
    for name, datatype, array in feeds:
        inp = client_lib.InferInput(name, list(array.shape), datatype)
        inp.set_data_from_numpy(np.ascontiguousarray(array), **binary)
        inputs.append(inp)
    wanted = [client_lib.InferRequestedOutput(o, **binary) for o in outputs]
    extra = {"client_timeout": timeout} if grpc else {}
    result = rep.client().infer(model_name, inputs, model_version=version, outputs=wanted,
                                headers=dict(headers), **extra)
    arrays = [result.as_numpy(o) for o in outputs]
    missing = [o for o, a in zip(outputs, arrays) if a is None]
    if missing:
        raise ModelError(f"{rep.endpoint}: the response of {model_name!r} has no output {missing[0]!r}")
    return arrays
