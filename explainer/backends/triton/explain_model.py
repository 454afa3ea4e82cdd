"""Triton Python-backend model ``M_explain``: explanations computed next to the served model ``M``.

Written as ``M_explain/1/model.py`` by ``explainer export-explainer``, beside a copy of
the ``explainer`` package (``M_explain/1/explainer/``), so the server runs exactly the
mask and aggregation code of the client that exported it. The server's Python needs
numpy, scipy, Pillow and tqdm (scikit-image and scikit-learn for LIME; CuPy to build
masks on a GPU), e.g. from a custom execution environment (``EXECUTION_ENV_PATH``).

Inputs: ``image`` (1, C, H, W) FP32, the preprocessed image (NCHW); ``request`` (1,) BYTES,
JSON ``{"method": ..., "target": ..., "options": {...}}``. Outputs: ``map`` (H, W) FP32,
``record`` (1,) BYTES (the explanation's JSON record), ``arrays`` (1,) BYTES (``.npz``
of its extra arrays, empty when none). ``M`` (and for gradient methods its deployed
gradient model ``M_grad_<relu>``) is called through BLS in batches.
"""

import json
import os
import sys

import numpy as np
import triton_python_backend_utils as pb_utils

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # the shipped explainer package

from explainer.errors import InputError  # noqa: E402
from explainer.backends.triton.served import ServedModel  # noqa: E402
from explainer.serving.requests import check_request, explain_tensor, pack_arrays, record  # noqa: E402

_DTYPES = {"TYPE_FP32": np.float32, "TYPE_FP16": np.float16, "TYPE_FP64": np.float64}


def _to_numpy(tensor):
    """A BLS output as a host array, also when the served model left it on the GPU."""
    if tensor.is_cpu():
        return tensor.as_numpy()
    import cupy

    return cupy.asnumpy(cupy.from_dlpack(tensor.to_dlpack()))


def _has_gpu():
    try:
        import cupy

        return cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:
        return False


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        params = {k: v.get("string_value", "") for k, v in config.get("parameters", {}).items()}
        self.served = json.loads(params["explainer.served"])
        self.max_passes = int(params.get("explainer.max_forward_passes", "100000"))
        self.in_flight = int(params.get("explainer.in_flight", "2"))
        self.shape = tuple(json.loads(self.served["preprocessing"])["size"])
        data = params.get("explainer.data", "")
        self.data = os.path.join(os.path.dirname(os.path.abspath(__file__)), data) if data else None
        self.dtype = _DTYPES.get(self.served.get("datatype", "TYPE_FP32"), np.float32)
        self.gpu = _has_gpu()
        self.model = None  # built on the first request: BLS is not available in initialize

    def _infer(self, model_name, feeds, outputs):
        tensors = []
        for name, array in feeds.items():
            dtype = self.dtype if name == self.served["input"] else np.float32
            if hasattr(array, "toDlpack"):  # a CuPy batch stays on the GPU
                tensors.append(pb_utils.Tensor.from_dlpack(name, array.astype(dtype, copy=False).toDlpack()))
            else:
                tensors.append(pb_utils.Tensor(name, np.ascontiguousarray(array, dtype=dtype)))
        response = pb_utils.InferenceRequest(model_name=model_name, inputs=tensors,
                                             requested_output_names=list(outputs)).exec()
        if response.has_error():
            message = response.error().message()
            if model_name != self.served["model"] and ("unknown model" in message or "not found" in message):
                raise InputError(f"{model_name} is not deployed next to {self.served['model']}; export it with "
                                 f"`explainer export-gradients --triton-repo REPO`")
            raise RuntimeError(f"{model_name}: {message}")
        return [_to_numpy(pb_utils.get_output_tensor_by_name(response, o)) for o in outputs]

    def execute(self, requests):
        return [self._explain(r) for r in requests]

    def _explain(self, request):
        try:
            x = pb_utils.get_input_tensor_by_name(request, "image").as_numpy()
            text = pb_utils.get_input_tensor_by_name(request, "request").as_numpy().reshape(-1)[0]
            try:
                body = json.loads(text.decode("utf-8") if isinstance(text, bytes) else str(text))
            except ValueError as e:
                raise InputError(f"the request is not JSON ({e})") from None
            if not isinstance(body, dict):
                raise InputError("the request must be a JSON object")
            method = body.get("method")
            options = check_request(method, body.get("options", {}), max_forward_passes=self.max_passes,
                                    shape=self.shape)
            if self.model is None:
                self.model = ServedModel(self.served, self._infer, in_flight=self.in_flight,
                                         device_arrays=self.gpu)
            result = explain_tensor(self.model, method, np.asarray(x, np.float32), body.get("target"), options,
                                    data=self.data)
            out = [pb_utils.Tensor("map", np.ascontiguousarray(result.map, dtype=np.float32)),
                   pb_utils.Tensor("record", np.array([json.dumps(record(result)).encode()], dtype=np.object_)),
                   pb_utils.Tensor("arrays", np.array([pack_arrays(result.arrays)], dtype=np.object_))]
            return pb_utils.InferenceResponse(output_tensors=out)
        except InputError as e:
            return pb_utils.InferenceResponse(error=pb_utils.TritonError(f"invalid request: {e}"))
        except Exception as e:  # the served model or this server failed: one line back to the client
            first = str(e).splitlines()[0][:300] if str(e) else ""
            return pb_utils.InferenceResponse(error=pb_utils.TritonError(f"explainer failed: {type(e).__name__}: {first}"))
