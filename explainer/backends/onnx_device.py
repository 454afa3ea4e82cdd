"""Device path for OnnxModel: CuPy batches bound to ONNX Runtime's CUDA provider by IOBinding.

The perturbed batch stays in GPU memory: padding to a fixed batch size, the NCHW -> NHWC
transpose and the cast to the model's input type run on the device (through the same
``xp`` functions as on the host), and the input is bound by its device pointer. Only the
(N, K) outputs come back to the host.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .base import batch_slices


def is_device_array(a: Any) -> bool:
    """True for a CUDA array (CuPy, or anything with ``__cuda_array_interface__``)."""
    return hasattr(a, "__cuda_array_interface__")


def cuda_device_id(session: Any) -> int | None:
    """The CUDA device ``session`` runs on; None unless its first provider is CUDA.

    ``session.get_providers()`` lists the providers actually registered, so a CUDA
    provider that failed to load (ONNX Runtime then falls back to CPU) gives None.
    """
    if list(session.get_providers()[:1]) != ["CUDAExecutionProvider"]:
        return None
    options = session.get_provider_options().get("CUDAExecutionProvider", {})
    return int(options.get("device_id", 0))


def prepare_feed(xp: Any, part: Any, *, fixed: int | None, layout: str, dtype: Any) -> Any:
    """Pad, lay out and cast one model call's input on ``xp`` (NumPy or CuPy).

    Parameters
    ----------
    xp : module
        ``numpy`` or ``cupy``; ``part`` lives there.
    part : (n, C, H, W) array
    fixed : int or None
        The model's fixed batch size; ``part`` is zero-padded to it when smaller.
    layout : {"NCHW", "NHWC"}
    dtype : numpy dtype of the model's input

    Returns
    -------
    feed : (max(n, fixed), C, H, W) or (max(n, fixed), H, W, C) C-contiguous array of ``dtype``
    """
    n = part.shape[0]
    if fixed and n < fixed:
        part = xp.concatenate([part, xp.zeros((fixed - n,) + tuple(part.shape[1:]), part.dtype)])
    if layout == "NHWC":
        part = part.transpose(0, 2, 3, 1)
    return xp.ascontiguousarray(part.astype(dtype, copy=False))


def run_bound(session: Any, input_name: str, output_name: str, feed: Any, *, device_type: str,
              device_id: int, buffer_ptr: int) -> np.ndarray:
    """One ``run_with_iobinding`` call: input bound by pointer, output returned on the host.

    ``feed`` (C-contiguous, on ``device_type``) must stay alive until this returns;
    ``buffer_ptr`` is its data pointer (``arr.data.ptr`` for CuPy). The output is bound
    to the CPU, so ONNX Runtime copies it back and synchronises before returning.

    Returns
    -------
    outputs : the model's first output, a host ndarray
    """
    binding = session.io_binding()
    binding.bind_input(input_name, device_type=device_type, device_id=device_id,
                       element_type=np.dtype(feed.dtype).type, shape=tuple(int(d) for d in feed.shape),
                       buffer_ptr=int(buffer_ptr))
    binding.bind_output(output_name, device_type="cpu")
    session.run_with_iobinding(binding)
    return binding.copy_outputs_to_cpu()[0]


def predict_device(model: Any, batch: Any) -> np.ndarray:
    """``OnnxModel.predict`` for a CuPy batch on a CUDA session, with no host copy of the batch.

    Parameters
    ----------
    model : OnnxModel whose ``session`` runs on the CUDA provider
    batch : (N, C, H, W) CuPy array (any float type)

    Returns
    -------
    outputs : (N, K) float32 host ndarray
    """
    import cupy as cp  # type: ignore[import-not-found]

    device_id = cuda_device_id(model.session)
    if device_id is None:
        raise ValueError("the device path needs an ONNX Runtime session on the CUDA provider")
    spec = model.spec
    n = batch.shape[0]
    if n == 0:
        return np.zeros((0, spec.num_classes), np.float32)
    step = spec.fixed_batch_size or n
    outs = []
    device = cp.cuda.Device(device_id)
    with device:
        batch = cp.asarray(batch)
        if batch.device.id != device_id:
            batch = batch.copy()  # ndarray.copy() copies onto the current device
        for s in batch_slices(n, step):
            feed = prepare_feed(cp, batch[s], fixed=spec.fixed_batch_size,
                                layout=spec.preprocessing.layout, dtype=model._dtype)
            # The batch was built on the caller's stream (often another thread's) and the
            # feed on this thread's; ONNX Runtime reads it on its own stream, so wait for both.
            device.synchronize()
            out = run_bound(model.session, spec.input_name, spec.output_name, feed,
                            device_type="cuda", device_id=device_id, buffer_ptr=feed.data.ptr)
            m = s.stop - s.start
            outs.append(np.asarray(out, dtype=np.float32).reshape(out.shape[0], -1)[:m])
    return np.concatenate(outs, axis=0)
