"""Triton backend: a classifier served by one or more Triton Inference Servers (HTTP or gRPC)."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from ...errors import InputError, ModelError
from ..base import OUTPUT_KINDS, ModelSpec, batch_slices, check_batch, default_labels, to_layout
from ..onnxruntime import _preprocessing
from .capabilities import TritonCapabilities
from .client import infer, model_config, model_ready, server_ready
from .endpoints import Tls, headers_dict, parse_endpoints
from .transport import Replica, ReplicaPool, TritonError, classify, request_deadline, request_step
from ...validation import number

MAX_SECONDS = 7 * 24 * 3600.0
MAX_CONCURRENCY = 1024

_DTYPES = {"TYPE_FP32": ("FP32", np.float32), "TYPE_FP16": ("FP16", np.float16),
           "TYPE_FP64": ("FP64", np.float64)}
_FORMATS = {"FORMAT_NCHW": "NCHW", "FORMAT_NHWC": "NHWC"}


class TritonModel(TritonCapabilities):
    """An image classifier behind Triton: ``grpc://HOST:PORT/MODEL[@VERSION]`` (or http, https, grpcs).

    Parameters
    ----------
    source : str
        One endpoint URL, or several separated by commas (replicas of the same model:
        requests go to the least loaded one; one that fails to connect is set aside).
    labels : sequence of K str, optional
        Class names; default the config's ``explainer.labels`` parameter, else "class i".
    concurrency : int, optional
        Requests in flight in all (default 4 per replica); also ``in_flight``, the
        number of batches the perturbation engine keeps running.
    timeout : float
        Seconds one request may take.
    headers : mapping or sequence of "KEY:VALUE", optional
        Sent with every request (e.g. an auth token); never logged or saved.
    tls : Tls, optional
        Certificates for grpcs:// and https://.
    retry_seconds : float
        How long one request is retried after a connection failure or UNAVAILABLE
        (capped exponential backoff with jitter; 30 s bridges a server restart).
    retries : int, optional
        At most this many retries of one request (default: no limit but the time).
    size, layout, scale, mean, std : optional
        Preprocessing when the config has no ``explainer.preprocessing`` parameter
        (or to override it).
    """

    backend = "triton"
    has_gradients = True
    gradient_model: str | None = None  # a deployed gradient model's name, else by convention (.naming)
    layers_model: str | None = None  # a deployed layers model's name, else MODEL_layers (.naming)

    def __init__(self, source: str, *, labels: Sequence[str] | None = None, concurrency: int | None = None,
                 timeout: float = 60.0, headers: Mapping[str, str] | Sequence[str] | None = None,
                 tls: Tls | None = None, retry_seconds: float = 30.0, retries: int | None = None,
                 **overrides: Any) -> None:
        self.endpoints = parse_endpoints(source)
        self._source = source
        self._options = dict(labels=None if labels is None else list(labels), concurrency=concurrency,
                             timeout=timeout, headers=headers, tls=tls, retry_seconds=retry_seconds,
                             retries=retries, **overrides)
        try:
            import tritonclient.grpc  # noqa: F401  (and tritonclient.http: both come with the extra)
            import tritonclient.http  # noqa: F401
        except ImportError:
            raise InputError("Triton endpoints need tritonclient: pip install 'explainer[triton]'") from None
        if concurrency is None:
            concurrency = 4 * len(self.endpoints)
        if isinstance(concurrency, bool) or not isinstance(concurrency, (int, np.integer)) or concurrency < 1:
            raise InputError(f"concurrency must be a positive integer, got {concurrency!r}")
        number("concurrency", concurrency, low=1, high=MAX_CONCURRENCY, integer=True)
        timeout = number("timeout (seconds)", timeout, low=0.0, open_low=True, high=MAX_SECONDS)
        retry_seconds = number("retry_seconds", retry_seconds, low=0.0, high=MAX_SECONDS)
        self._headers = headers_dict(headers)
        self.in_flight = int(concurrency)
        self.timeout = float(timeout)
        replicas = [Replica(e, tls or Tls(), self.timeout, headers=self._headers) for e in self.endpoints]
        self.pool = ReplicaPool(replicas,
                                concurrency=self.in_flight, retries=retries, retry_seconds=retry_seconds)
        self.providers = [", ".join(str(e) for e in self.endpoints)]  # shown as "triton (URL)"
        self._executor: ThreadPoolExecutor | None = None
        self._known_k = False  # until the probe has told the number of classes
        config = self._discover()
        self._configure(config, labels, overrides)

    def __repr__(self) -> str:
        return f"TritonModel({self.providers[0]!r}, concurrency={self.in_flight})"

    # -- discovery -------------------------------------------------------------------------------

    def _discover(self) -> dict:
        """Check readiness of every replica, then read the model config from one that is ready."""
        first = self.endpoints[0]
        unreachable: list[str] = []
        for rep in self.pool.replicas:
            try:
                self._wait_ready(rep)
            except TritonError as e:
                if not str(e).startswith("cannot reach"):
                    raise
                unreachable.append(str(e))
                rep.aside_until = time.monotonic() + self.pool.set_aside
        if len(unreachable) == len(self.pool.replicas):
            raise TritonError(unreachable[0])
        config = self.pool.call(lambda r: _get_config(r, self._headers))
        if config.get("name") and config["name"] != first.model:
            raise TritonError(f"{first}: the server answered for model {config['name']!r}")
        return config

    def _wait_ready(self, rep: Replica, wait: float = 10.0) -> None:
        e, deadline = rep.endpoint, time.monotonic() + min(wait, self.timeout)
        while True:
            try:
                with request_deadline(rep):
                    live = server_ready(rep, self._headers, live=True)
                    ready = live and model_ready(rep, e.model, self._headers, e.version)
            except BaseException as exc:
                if isinstance(exc, (KeyboardInterrupt, SystemExit)):
                    raise
                kind, reason = classify(exc)
                if kind == "fatal":
                    raise TritonError(f"{e}: {reason}") from None
                raise TritonError(f"cannot reach the Triton server at {e} ({reason}); is it running?") from None
            if ready:
                return
            if live and not _model_known(rep, self._headers):
                raise TritonError(f"{e}: the server has no model {e.model!r}"
                                  + (f" version {e.version}" if e.version else ""))
            if time.monotonic() > deadline:
                raise TritonError(f"{e}: the model is not ready on the server")
            time.sleep(0.2)

    def _configure(self, config: dict, labels: Sequence[str] | None, overrides: dict[str, Any]) -> None:
        where = str(self.endpoints[0])
        params = {k: str(v.get("string_value", "")) for k, v in (config.get("parameters") or {}).items()}
        self.max_batch_size = int(config.get("max_batch_size", 0) or 0)
        image = _image_input(config, where, self.max_batch_size)
        self._datatype, self._dtype = _DTYPES[image["data_type"]]
        dims = [int(d) for d in image["dims"]]
        full = dims if len(dims) == 4 else [None] + dims
        full = [None if d is not None and d < 0 else d for d in full]
        fmt = _FORMATS.get(image.get("format", ""))
        if fmt and not overrides.get("layout"):
            overrides = {**overrides, "layout": fmt}
        self._unbatched = self.max_batch_size == 0 and len(dims) == 3
        fixed = full[0] if self.max_batch_size == 0 and len(dims) == 4 else None
        given = {k: v for k, v in overrides.items() if v is not None}
        if "explainer.preprocessing" not in params and not {"scale", "mean", "std"} & set(given):
            raise InputError(f"{where}: the model config has no explainer.preprocessing parameter; "
                             "give the preprocessing with --scale, --mean and --std (and --size, --layout)")
        pre, pre_source = _preprocessing(full, params, overrides, where)
        outputs = config.get("output") or []
        if not outputs:
            raise InputError(f"{where}: the model config lists no outputs")
        self._output = outputs[0]["name"]
        # K is known once the probe below has run; until then a placeholder spec
        self.spec = ModelSpec(source=where, input_name=image["name"], output_name=self._output,
                              preprocessing=pre, num_classes=2, labels=("class 0", "class 1"),
                              max_batch_size=self.max_batch_size or fixed, fixed_batch_size=fixed,
                              sha256="", preprocessing_source=pre_source)
        probe = self.predict(np.zeros((1,) + self.spec.input_shape, np.float32))
        k = probe.shape[1]
        if k < 2:
            raise InputError(f"{where}: not an image classifier: output {self._output!r} has {k} value(s)")
        kind = params.get("explainer.output", "")
        if kind not in OUTPUT_KINDS:
            sums = probe.sum(axis=1)
            kind = "probabilities" if probe.min() >= 0 and np.allclose(sums, 1, atol=1e-4) else "logits"
        names = labels if labels is not None else (
            params["explainer.labels"].split("\n") if "explainer.labels" in params else None)
        self.spec = replace(self.spec, num_classes=k, labels=default_labels(k, names), output_kind=kind)
        self._known_k = True

    # -- inference -------------------------------------------------------------------------------

    def predict(self, batch: np.ndarray) -> np.ndarray:
        """Run the model on the servers.

        The batch is split to respect the config's ``max_batch_size`` and a 32 MiB
        request size; the parts run concurrently and come back in order.

        Parameters
        ----------
        batch : (N, C, H, W) float32 ndarray (NCHW whatever the model's layout)

        Returns
        -------
        outputs : (N, K) float32 ndarray
        """
        n = check_batch(batch, self.spec).shape[0]
        data = to_layout(np.asarray(batch, dtype=self._dtype), self.spec.preprocessing.layout)
        step = 1 if self._unbatched and not self.spec.fixed_batch_size else \
            request_step(n, data[:1].nbytes, self.max_batch_size, self.spec.fixed_batch_size)
        outs = self.run_parts(lambda p: self._send(data[p]), batch_slices(n, step) if n else [])
        return np.concatenate(outs, axis=0) if outs else np.zeros((0, self.spec.num_classes), np.float32)

    def run_parts(self, send: Callable[[slice], Any], parts: list[slice]) -> list[Any]:
        """``send(part)`` for every part, in order; several at once (``in_flight``) when split."""
        if len(parts) <= 1:
            return [send(p) for p in parts]
        if self._executor is None:
            self._executor = ThreadPoolExecutor(max_workers=self.in_flight, thread_name_prefix="triton")
        return list(self._executor.map(send, parts))

    def _send(self, part: np.ndarray) -> np.ndarray:
        n = part.shape[0]
        fixed = self.spec.fixed_batch_size
        if fixed and n < fixed:
            part = np.concatenate([part, np.zeros((fixed - n,) + part.shape[1:], part.dtype)])
        payload = part[0] if self._unbatched else part
        feeds = [(self.spec.input_name, self._datatype, payload)]
        out = self.pool.call(lambda rep: infer(rep, rep.endpoint.model, feeds, [self._output], self._headers,
                                               self.timeout, rep.endpoint.version)[0])
        expected = 1 if self._unbatched else part.shape[0]
        out = np.asarray(out, dtype=np.float32)
        k = self.spec.num_classes if self._known_k else None
        rows_ok = self._unbatched or (out.ndim >= 1 and out.shape[0] == expected)
        if not rows_ok or not out.size or out.size % expected or (k and out.size != expected * k):
            want = f"({expected}, {k})" if k else f"{expected} rows"
            raise ModelError(f"{self.endpoints[0]}: the server returned an output of shape "
                              f"{tuple(out.shape)} for {expected} inputs, expected {want}")
        return out.reshape(expected, -1)[:n]

    def close(self) -> None:
        """Release the worker threads used for split batches."""
        if self._executor is not None:
            self._executor.shutdown(wait=False)
            self._executor = None


def _image_input(config: dict, where: str, max_batch_size: int) -> dict:
    inputs = config.get("input") or []
    want = (3,) if max_batch_size > 0 else (3, 4)  # (C, H, W) after the batch dim, or a fixed batch
    images = [i for i in inputs if len(i.get("dims", [])) in want]
    if len(inputs) != 1 or not images:
        shapes = {i.get("name"): [int(d) for d in i.get("dims", [])] for i in inputs}
        raise InputError(f"{where}: not an image classifier: expected one image input, found {shapes}")
    if images[0].get("data_type") not in _DTYPES:
        raise InputError(f"{where}: not an image classifier: input {images[0]['name']!r} is not a float tensor")
    return images[0]


def _get_config(rep: Replica, headers: dict[str, str]) -> dict:
    return model_config(rep, rep.endpoint.model, headers, rep.endpoint.version)


def _model_known(rep: Replica, headers: dict[str, str]) -> bool:
    e = rep.endpoint
    try:
        with request_deadline(rep):
            rep.client().get_model_metadata(e.model, e.version, headers=dict(headers))
        return True
    except BaseException as exc:
        if isinstance(exc, (KeyboardInterrupt, SystemExit)):
            raise
        kind, reason = classify(exc)
        return kind != "fatal" or "unknown model" not in reason.lower() and "not found" not in reason.lower()
