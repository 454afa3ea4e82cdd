"""The options every model-using subcommand takes: the model, its preprocessing, Triton's."""

from __future__ import annotations

import argparse

from .backends.onnx_safety import DEFAULT_MAX_MODEL_BYTES


def model_options(p: argparse.ArgumentParser) -> None:
    """Add --model, the preprocessing overrides and the Triton endpoint options to ``p``."""
    p.add_argument("--model", help="ONNX file (default: the bundled EfficientNet-Lite0)")
    p.add_argument("--size", type=int, nargs=2, metavar=("H", "W"), help="override the input size")
    p.add_argument("--mean", type=float, nargs="+", help="override the per-channel mean")
    p.add_argument("--std", type=float, nargs="+", help="override the per-channel std")
    p.add_argument("--scale", type=float, help="override the pixel scale (e.g. 0.00392156862745098)")
    p.add_argument("--layout", choices=["NCHW", "NHWC"], help="override the input layout")
    p.add_argument("--device", choices=["auto", "cpu", "gpu"], default="auto")
    p.add_argument("--max-model-bytes", type=int, default=DEFAULT_MAX_MODEL_BYTES,
                   help="refuse larger model files (default 4 GiB)")
    p.add_argument("--run-timeout", type=float, metavar="SECONDS",
                   help="end the whole run after this long, like Ctrl-C: exit 3, no partial output set "
                        "(default: $EXPLAINER_RUN_TIMEOUT, else none)")
    t = p.add_argument_group("Triton endpoints (--model grpc://HOST:PORT/MODEL[@VERSION], http://, "
                             "grpcs://, https://; several separated by commas)")
    t.add_argument("--concurrency", type=int, help="requests in flight (default 4 per endpoint)")
    t.add_argument("--header", action="append", metavar="KEY:VALUE",
                   help="send this header with every request (repeatable; never logged or saved)")
    t.add_argument("--timeout", type=float, help="seconds one request may take (default 60)")
    t.add_argument("--retry-seconds", type=float,
                   help="retry a request this long after a connection failure or UNAVAILABLE (default 30)")
    t.add_argument("--gradient-model", metavar="NAME",
                   help="the deployed gradient model for gradient methods (default: MODEL_grad_RELU[__LAYER])")
    t.add_argument("--layers-model", metavar="NAME",
                   help="the deployed layers model for activations (default: MODEL_layers)")
    t.add_argument("--tls-ca-cert", metavar="PEM", help="CA certificates for grpcs:// and https://")
    t.add_argument("--tls-client-cert", metavar="PEM", help="client certificate (mutual TLS)")
    t.add_argument("--tls-client-key", metavar="PEM", help="client private key (mutual TLS)")
    t.add_argument("--tls-insecure", action="store_true", help="https://: do not verify the server")
