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


def model_config(rep: Any, name: str, headers: dict[str, str], version: str = "") -> dict:
    """The model's configuration as a JSON dict."""
    if _grpc(rep):
        return rep.client().get_model_config(name, version, headers=dict(headers), as_json=True)["config"]
    return rep.client().get_model_config(name, version, headers=dict(headers))


def repository_index(rep: Any, headers: dict[str, str]) -> list[dict]:
    """The server's model repository index: one dict (name, version, state) per model."""
    if _grpc(rep):
        return rep.client().get_model_repository_index(headers=dict(headers), as_json=True).get("models", [])
    return rep.client().get_model_repository_index(headers=dict(headers))


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
