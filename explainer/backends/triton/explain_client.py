"""The client's side of served explanations: use ``M_explain`` when it is deployed.

``explainer explain --model grpc://HOST/M --server-side auto`` sends the preprocessed
image and the options to ``M_explain`` (one request, through the same replica pool as
the model: retries, deadlines, headers, TLS) instead of streaming every perturbed image.
"""

from __future__ import annotations

import json
import time
from typing import Any, Mapping

import numpy as np

from ...errors import InputError
from ...explanation import Explanation
from ...methods.common import load_input
from ...serving.requests import check_request, unpack_arrays
from .client import infer
from .explain_export import explain_model_name

CHOICES = ("auto", "on", "off")


def deployed_explainer(model: Any, method: str, options: Mapping[str, Any], server_side: str) -> str | None:
    """The explainer model to use for this request, or None to explain client-side.

    ``server_side``: "off" never, "on" always (an error names what is missing), "auto"
    when ``M_explain`` is ready on the server and the method and options run there.
    """
    if server_side not in CHOICES:
        raise InputError(f"server_side must be one of {CHOICES}, got {server_side!r}")
    if server_side == "off":
        return None
    if getattr(model, "backend", "") != "triton":
        if server_side == "on":
            raise InputError("--server-side on needs a Triton endpoint (--model grpc://HOST:PORT/MODEL)")
        return None
    try:
        check_request(method, options, max_forward_passes=2**62, shape=model.spec.preprocessing.size)
    except InputError:
        if server_side == "on":
            raise
        return None
    from .gradients import ready_models

    name = explain_model_name(model.endpoints[0].model)
    if name in ready_models(model):
        return name
    if server_side == "on":
        raise InputError(f"{model.endpoints[0]}: no explainer model {name!r} on the server; deploy it with "
                         f"`explainer export-explainer --triton-repo REPO --model {model.endpoints[0].model}`")
    return None


def explain_served(model: Any, name: str, method: str, image: Any, target: int | str | None,
                   options: Mapping[str, Any]) -> Explanation:
    """Run ``method`` in the server's explainer model ``name``; the same Explanation as client-side.

    Parameters
    ----------
    model : TritonModel, the served model (its replica pool carries the request)
    image : str, Path, ndarray or ImageInput (see ``methods.common.load_input``)
    """
    started = time.perf_counter()
    inp = load_input(model, image)
    body = json.dumps({"method": method, "target": target, "options": dict(options)})
    outputs = model.pool.call(lambda rep: _infer(rep, name, inp.x, body, model._headers, model.timeout))
    explanation_map, text, packed = outputs
    try:
        rec = json.loads(text)
        arrays = unpack_arrays(packed)
    except ValueError as e:
        raise InputError(f"{model.endpoints[0]}: {name} sent an unreadable record ({e})") from None
    timings = {**rec.get("timings", {}), "server_wall_s": rec.get("timings", {}).get("wall_s", 0.0),
               "wall_s": time.perf_counter() - started}
    return Explanation(map=np.asarray(explanation_map, np.float32), target=int(rec["target"]), label=rec["label"],
                       score=float(rec["score"]), method=rec["method"], params=rec["params"], seed=rec.get("seed"),
                       backend=f"triton ({model.endpoints[0]}, server-side {name})",
                       model_sha256=rec.get("model_sha256", ""), model_files=rec.get("model_files", {}),
                       timings=timings, pixels=inp.pixels, input=inp.x, source=inp.source, arrays=arrays,
                       display=rec.get("display", "jet"), preprocessing=rec.get("preprocessing", {}),
                       crop_box=None if inp.crop_box is None else [round(v, 3) for v in inp.crop_box],
                       original=inp.original, image_size=None if inp.image_size is None else list(inp.image_size))


def _infer(rep: Any, name: str, x: np.ndarray, body: str, headers: Mapping[str, str],
           timeout: float) -> tuple[np.ndarray, str, bytes]:
    feeds = [("image", "FP32", np.ascontiguousarray(x, np.float32)),
             ("request", "BYTES", np.array([body.encode()], dtype=np.object_))]
    try:
        explanation_map, record, arrays = infer(rep, name, feeds, ["map", "record", "arrays"], dict(headers), timeout)
    except Exception as e:  # the server's one-line reason for a bad request is the user's error
        message = str(getattr(e, "message", lambda: "")() or e)
        if "invalid request:" in message:
            raise InputError(message[message.index("invalid request:") + 17:].strip().splitlines()[0]) from None
        raise
    return explanation_map, _text(record.reshape(-1)[0]), _bytes(arrays.reshape(-1)[0])


def _text(v: Any) -> str:
    return v.decode("utf-8") if isinstance(v, bytes) else str(v)


def _bytes(v: Any) -> bytes:
    return v if isinstance(v, bytes) else str(v).encode()

