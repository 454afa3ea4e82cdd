"""The GPU device path (CuPy batch -> IOBinding -> CUDA provider) and the host path it must match.

The CPU tests run everywhere: the engine hands host arrays to CPU models, and the IOBinding
plumbing of ``onnx_device`` (padding, layout, cast, bind by pointer) is exercised with a CPU
buffer. The GPU tests need CuPy with a CUDA device and onnxruntime-gpu; they run on a GPU
machine (see benchmarks/README.md) and are skipped elsewhere.
"""

import numpy as np
import pytest

import explainer
from explainer.backends.base import to_layout
from explainer.backends.onnx_device import cuda_device_id, is_device_array, prepare_feed, run_bound
from explainer.backends.onnxruntime import OnnxModel
from explainer.methods.lime import lime
from explainer.methods.rise import rise
from explainer.perturbation.engine import RunStats, stream, timed_predict
from tiny import linear_classifier


def _gpu_available() -> bool:
    try:
        import cupy
        import onnxruntime as ort

        return cupy.cuda.runtime.getDeviceCount() > 0 and \
            "CUDAExecutionProvider" in ort.get_available_providers()
    except Exception:
        return False


GPU = _gpu_available()
needs_gpu = pytest.mark.skipif(
    not GPU, reason="needs CuPy with a CUDA device and onnxruntime-gpu: these run on a GPU machine "
                    "(pip install -e '.[gpu,test]'; see benchmarks/README.md)")


class Recording(OnnxModel):
    """A real OnnxModel that remembers the type of every batch ``predict`` receives."""

    def predict(self, batch):
        self.seen = getattr(self, "seen", []) + [type(batch)]
        return super().predict(batch)


class DeviceRecording(Recording):
    """As Recording, but claiming the device path, so the engine must not copy its batches."""

    accepts_device_arrays = True


class Tagged(np.ndarray):
    """A host array of a type of its own: ``to_numpy`` turns it into a plain ndarray."""


def _weights(rng, k=3, c=3, h=12, w=10):
    return (rng.normal(size=(k, c, h, w)) * 0.2).astype(np.float32)


def _logits(w, x):
    return np.einsum("kchw,nchw->nk", w.astype(np.float64), x.astype(np.float64))


def test_cpu_session_does_not_accept_device_arrays(tmp_path, rng):
    model = explainer.load_model(linear_classifier(tmp_path / "m.onnx", _weights(rng)), device="cpu")
    assert model.session.get_providers()[0] == "CPUExecutionProvider"
    assert model.accepts_device_arrays is False and cuda_device_id(model.session) is None
    assert not is_device_array(np.zeros((1, 3, 12, 10), np.float32))


def test_engine_copies_to_host_unless_model_accepts_device_arrays(tmp_path, rng):
    w = _weights(rng)
    path = linear_classifier(tmp_path / "m.onnx", w)
    x = rng.normal(size=(5, 3, 12, 10)).astype(np.float32)
    host, device = Recording(path, device="cpu"), DeviceRecording(path, device="cpu")
    for model in (host, device):
        out = timed_predict(model, x.view(Tagged), RunStats())
        np.testing.assert_allclose(out, _logits(w, x), rtol=1e-4, atol=1e-5)
    assert host.seen == [np.ndarray] and device.seen == [Tagged]


def test_stream_gives_cpu_model_host_batches(tmp_path, rng):
    w = _weights(rng)
    model = Recording(linear_classifier(tmp_path / "m.onnx", w), device="cpu")
    x = rng.normal(size=(7, 3, 12, 10)).astype(np.float32)
    out = stream(model, 7, 3, lambda a, b: x[a:b].view(Tagged), RunStats())
    assert model.seen == [np.ndarray] * 3
    np.testing.assert_allclose(out, _logits(w, x), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
@pytest.mark.parametrize("fixed, n", [(None, 5), (4, 3), (4, 4)])
def test_prepare_feed_pads_and_lays_out(rng, layout, fixed, n):
    part = rng.normal(size=(n, 3, 6, 5)).astype(np.float32)
    feed = prepare_feed(np, part, fixed=fixed, layout=layout, dtype=np.float16)
    padded = np.concatenate([part, np.zeros((max(fixed or 0, n) - n, 3, 6, 5), np.float32)])
    assert feed.dtype == np.float16 and feed.flags.c_contiguous
    np.testing.assert_array_equal(feed, to_layout(padded, layout).astype(np.float16))


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
@pytest.mark.parametrize("fixed, n", [(None, 5), (4, 3)])
def test_bound_run_on_cpu_buffer_matches_predict(tmp_path, rng, layout, fixed, n):
    # The device path's binding code with a CPU pointer: same outputs as session.run.
    w = _weights(rng)
    model = explainer.load_model(linear_classifier(tmp_path / "m.onnx", w, layout=layout, batch=fixed),
                                 device="cpu")
    x = rng.normal(size=(n, 3, 12, 10)).astype(np.float32)
    feed = prepare_feed(np, x, fixed=fixed, layout=layout, dtype=np.float32)
    out = run_bound(model.session, model.spec.input_name, model.spec.output_name, feed,
                    device_type="cpu", device_id=0, buffer_ptr=feed.ctypes.data)
    assert out.shape == (fixed or n, 3)
    np.testing.assert_allclose(out[:n], _logits(w, x), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(out[:n], model.predict(x), rtol=1e-6, atol=1e-6)


# ----------------------------------------------------------------------------- GPU only


def _gpu_model(tmp_path, rng, cls=None, **kw):
    path = linear_classifier(tmp_path / "g.onnx", _weights(rng), **kw)
    return (cls or OnnxModel)(path, device="gpu")


@needs_gpu
def test_cuda_session_accepts_device_arrays(tmp_path, rng):
    model = _gpu_model(tmp_path, rng)
    assert model.accepts_device_arrays is True and cuda_device_id(model.session) == 0


@needs_gpu
@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
@pytest.mark.parametrize("fixed, n", [(None, 9), (4, 10), (1, 3)])
def test_predict_cupy_batch_matches_numpy(tmp_path, rng, layout, fixed, n):
    import cupy as cp

    model = _gpu_model(tmp_path, rng, layout=layout, batch=fixed)
    x = rng.normal(size=(n, 3, 12, 10)).astype(np.float32)
    on_device = model.predict(cp.asarray(x))
    assert isinstance(on_device, np.ndarray) and on_device.dtype == np.float32 and on_device.shape == (n, 3)
    np.testing.assert_allclose(on_device, model.predict(x), rtol=1e-5, atol=1e-5)


@needs_gpu
def test_engine_keeps_gpu_batches_on_the_device(tmp_path, rng):
    import cupy as cp

    model = _gpu_model(tmp_path, rng, cls=Recording)
    x = rng.normal(size=(1, 3, 12, 10)).astype(np.float32)
    explainer.occlusion_sensitivity(model, x, 0, mask_size=4, stride=3, mini_batch_size=8,
                                    execution_environment="gpu")
    assert cp.ndarray in model.seen


def _maps(run, model, x):
    gpu, cpu = run(model, x, "gpu"), run(model, x, "cpu")
    assert gpu.params["execution_environment"] == "cupy" and cpu.params["execution_environment"] == "numpy"
    np.testing.assert_allclose(gpu.map, cpu.map, rtol=1e-5, atol=1e-5)
    return gpu, cpu


@needs_gpu
@pytest.mark.parametrize("layout, fixed", [("NCHW", None), ("NHWC", 4)])
def test_gpu_maps_match_cpu_maps(tmp_path, rng, layout, fixed):
    model = _gpu_model(tmp_path, rng, layout=layout, batch=fixed)
    x = rng.normal(size=(1, 3, 12, 10)).astype(np.float32)
    _maps(lambda m, im, env: explainer.occlusion_sensitivity(
        m, im, 1, mask_size=4, stride=2, mini_batch_size=7, output_upsampling="none",
        execution_environment=env), model, x)
    _maps(lambda m, im, env: rise(m, im, 1, num_masks=60, grid_size=3, mini_batch_size=16, seed=3,
                                  execution_environment=env), model, x)
    gpu, cpu = _maps(lambda m, im, env: lime(
        m, im, 1, num_features=6, num_samples=80, model_type="linear", segmentation="grid",
        mini_batch_size=16, seed=3, execution_environment=env), model, x)
    np.testing.assert_allclose(gpu.arrays["feature_importance"], cpu.arrays["feature_importance"],
                               rtol=1e-5, atol=1e-5)
