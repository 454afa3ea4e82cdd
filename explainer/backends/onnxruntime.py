"""ONNX Runtime backend: an ONNX classifier file run in-process (CPU or CUDA)."""

from __future__ import annotations

import hashlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import onnx

from ..errors import InputError, ModelError
from ..imaging import Preprocessing
from ..xp import to_numpy
from ..runtime_check import check_onnxruntime
from . import graph_cache
from .isolation import probe_inputs, probe_session, run_isolated, run_with_deadline
from .onnx_device import cuda_device_id, is_device_array, predict_device
from .onnx_safety import DEFAULT_MAX_MODEL_BYTES, file_sha256, load_checked, read_onnx
from . import onnx_derived
from .cpu_parallel import cpu_cores, session_options
from .base import (OUTPUT_KINDS, Layer, ModelBase, ModelSpec, batch_slices, check_batch, default_labels,
                   to_layout)
from .feed import feed_array, pad_rows
from .onnx_spec import _DTYPES, _dims, _image_input, _labels, _metadata, _preprocessing  # noqa: F401

PIECE = 8
"""Inputs per call of a data-parallel CPU forward pass. On the 2-core machine the bundled
model runs 363 images/s as pieces of 8 on two one-thread sessions against 306 as batches of
128 on one two-thread session (the activations of 8 images stay in cache); outputs are
bitwise the same (benchmarks/RESULTS.md)."""
MAX_PIECE_WORKERS = 8
PIECE_MAX_BYTES = 256 * 2**20  # larger models keep to their one session (no extra copies in memory)


def _providers(device: str) -> list[str]:
    import onnxruntime as ort

    if device not in ("auto", "cpu", "gpu"):
        raise InputError(f"device must be auto, cpu or gpu, got {device!r}")
    available = ort.get_available_providers()
    if device != "cpu" and "CUDAExecutionProvider" in available:
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    if device == "gpu":
        raise InputError("device='gpu' but this onnxruntime has no CUDA provider (install explainer[gpu])")
    return ["CPUExecutionProvider"]


class OnnxModel(ModelBase):
    """An ONNX image classifier run by ONNX Runtime.

    Parameters
    ----------
    path : str or Path
        The .onnx file.
    device : {"auto", "cpu", "gpu"}
        "auto" uses the CUDA provider when available.
    labels : sequence of str, optional
        Class names; default from metadata ``explainer.labels``, else a
        ``labels.txt`` beside the model, else "class i".
    size, layout, scale, mean, std : optional
        Override the preprocessing read from the model's metadata.
    max_model_bytes : int
        Refuse model files (and their external data) larger than this.
    isolate : bool
        First load and run the model in a child process with memory and time
        limits, so a runtime crash on a hostile file becomes a message (the CLI
        does this; it costs about a second).
    """

    backend = "onnxruntime"
    has_gradients = True

    def __init__(self, path: str | Path, *, device: str = "auto", labels: Sequence[str] | None = None,
                 max_model_bytes: int = DEFAULT_MAX_MODEL_BYTES, isolate: bool = False,
                 **overrides: Any) -> None:
        check_onnxruntime()  # exactly one of onnxruntime / onnxruntime-gpu, else the fix
        import onnxruntime as ort

        ort.set_default_logger_severity(4)  # no warning lines for ordinary models; errors are ours
        self.path = Path(path)
        self.derived: dict[tuple, Any] = {}  # every session derived from the file, by what it computes
        self._options = dict(device=device, labels=None if labels is None else list(labels),
                             max_model_bytes=max_model_bytes, **overrides)
        proto, external = load_checked(self.path, max_bytes=max_model_bytes)
        image = _image_input(proto, self.path)
        dims = _dims(image)
        meta = _metadata(proto)
        preprocessing, pre_source = _preprocessing(dims, meta, overrides, self.path)
        self.providers = _providers(device)
        self._dtype = _DTYPES[image.type.tensor_type.elem_type]
        fixed = dims[0] if dims[0] else None
        sha256 = file_sha256(self.path)
        if isolate:
            c, (h, w) = preprocessing.channels, preprocessing.size
            shape = to_layout(np.zeros((1, c, h, w), np.float32), preprocessing.layout).shape
            out_name = proto.graph.output[0].name if proto.graph.output else ""
            job = (self.providers, image.name, (fixed or 1,) + shape[1:], np.dtype(self._dtype).name, out_name)
            verdict = graph_cache.cache_key(sha256, "probe", job=repr(job), external=external,
                                            inputs="zeros,normal",
                                            runtime=ort.__version__)
            if graph_cache.load(verdict) is None:  # these exact bytes never passed the probe here
                run_isolated(probe_session, (str(self.path),) + job, str(self.path))
                graph_cache.store(verdict, b"passed", {"kind": "probe"})
        try:
            self.session = ort.InferenceSession(str(self.path), session_options(), providers=self.providers)
        except Exception as e:
            reason = str(e).splitlines()[0][:200]
            raise InputError(f"{self.path}: ONNX Runtime cannot load this model ({reason})") from None
        output = self.session.get_outputs()[0]
        k, kind = self._probe(preprocessing, fixed, output.name, proto, meta)
        given = labels if labels is not None else _labels(meta, self.path)
        self.spec = ModelSpec(
            source=str(self.path), input_name=image.name, output_name=output.name,
            preprocessing=preprocessing, num_classes=k, labels=default_labels(k, given),
            output_kind=kind, max_batch_size=fixed, fixed_batch_size=fixed,
            sha256=sha256, preprocessing_source=pre_source,
            extra={"external_data_sha256": external})

    def _probe(self, pre: Preprocessing, fixed: int | None, out_name: str, proto: onnx.ModelProto,
               meta: dict[str, str]) -> tuple[int, str]:
        c, (h, w) = pre.channels, pre.size
        shape = to_layout(np.zeros((fixed or 1, c, h, w), dtype=np.float32), pre.layout).shape
        try:
            for x in probe_inputs(shape, np.dtype(self._dtype).name):
                out = run_with_deadline(self.session, [out_name], {self.session.get_inputs()[0].name: x},
                                        str(self.path))[0]
        except Exception as e:
            reason = str(e).splitlines()[0][:200]
            raise InputError(f"{self.path}: the model does not run on a {h}x{w} input ({reason})") from None
        out = np.asarray(out)
        if out.ndim < 2 or out.shape[0] != (fixed or 1) or int(np.prod(out.shape[1:])) != max(out.shape[1:]) \
                or max(out.shape[1:]) < 2:
            raise InputError(f"{self.path}: not an image classifier: output {out_name!r} has shape "
                             f"{list(out.shape)} (expected N x K class scores)")
        kind = meta.get("explainer.output", "")
        if kind not in OUTPUT_KINDS:
            producers = [n.op_type for n in proto.graph.node if out_name in n.output]
            kind = "probabilities" if producers and producers[0] == "Softmax" else "logits"
        return int(max(out.shape[1:])), kind

    def gradients(self, batch: np.ndarray, logit_weights: np.ndarray, probability_weights: np.ndarray,
                  *, layer: str | None = None,
                  relu: str = "standard") -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """Outputs, gradient and layer activations: see ``onnx_gradients.gradients``."""
        from .onnx_gradients import gradients

        return gradients(self, batch, logit_weights, probability_weights, layer=layer, relu=relu)

    @property
    def _gradient_sessions(self) -> dict[tuple, Any]:
        """The gradient sessions in :attr:`derived`, by (layer, relu)."""
        return {k[1:]: v for k, v in self.derived.items() if k[0] == "gradients"}

    def activations(self, batch: np.ndarray, layers: Sequence[str]) -> dict[str, np.ndarray]:
        """The named layers' tensors {layer: (N, ...) float32} (a derived session with extra outputs)."""
        return onnx_derived.activations(self, batch, layers)

    def layer_mean_gradients(self, batch: np.ndarray, weights: np.ndarray,
                             layer: str) -> tuple[np.ndarray, np.ndarray]:
        """Channel means of ``layer`` (N, C') and d sum(weights * means) / d input (N, C, H, W)."""
        return onnx_derived.layer_mean_gradients(self, batch, weights, layer)

    def layer_channels(self, layer: str) -> int:
        """C', the channels of ``layer`` by shape inference."""
        return onnx_derived.layer_channels(self, layer)

    def default_feature_layer(self) -> str:
        """MATLAB's default feature layer of the graph."""
        return onnx_derived.feature_layer(self)

    def linear_head(self) -> tuple[str, np.ndarray]:
        """The tensor before global average pooling and the FC weights (K, C) float64."""
        return onnx_derived.linear_head(self)

    def attention(self) -> Any:
        """The attention Softmax tensors and token grid of the graph (graph/feature_default.py)."""
        return onnx_derived.attention(self)

    def logits_tensor(self) -> str | None:
        """The input of the final Softmax over the classes (None when the output is not a Softmax's)."""
        return onnx_derived.logits_tensor(self)

    def feature_view(self, layer: str) -> Any:
        """How ``layer``'s tensor maps to (N, C, h, w) maps, read from the graph (features.py)."""
        return onnx_derived.feature_view(self, layer)

    def layers(self) -> list[Layer]:
        """Every node of the graph with its output tensor and inferred shape."""
        from ..graph.inspect import layers

        return layers(read_onnx(self.path))

    def hidden_unit_model(self, layer: str) -> "OnnxModel":
        """An OnnxModel whose outputs are the feature-map means of ``layer`` (N, C)."""
        return onnx_derived.hidden_unit_model(self, layer)

    def incremental(self, x: np.ndarray, box: tuple[int, int]) -> tuple[Any, dict[str, Any]]:
        """Incremental inference around ``x`` for boxes up to ``box`` (backends/incremental.py)."""
        from .incremental import incremental_model

        return incremental_model(self, x, box)

    def describe(self) -> dict[str, Any]:
        """``{"backend": "onnxruntime", "source": path, "options": {...}}``: picklable, rebuilt by
        :func:`explainer.api.model_from_description` (the file must be readable there too)."""
        return {"backend": self.backend, "source": str(self.path), "options": dict(self._options)}

    @property
    def accepts_device_arrays(self) -> bool:
        """True when the session runs on CUDA: ``predict`` then takes CuPy batches as they are."""
        return cuda_device_id(self.session) is not None

    def predict(self, batch: np.ndarray) -> np.ndarray:
        """Run the model.

        Parameters
        ----------
        batch : (N, C, H, W) float32 ndarray (NCHW whatever the model's layout)

        Returns
        -------
        outputs : (N, K) float32 ndarray

        A CuPy batch on a CUDA session is bound on the device (``onnx_device``); on a
        CPU session it is copied to the host first.
        """
        if is_device_array(batch):
            if self.accepts_device_arrays:
                return predict_device(self, batch)
            batch = to_numpy(batch)
        check_batch(batch, self.spec)
        n = batch.shape[0]
        sessions = self._piece_sessions() if n > PIECE and not self.spec.fixed_batch_size else []
        if sessions:  # data-parallel: pieces dealt round-robin to one one-thread session per core
            pieces = batch_slices(n, PIECE)

            def work(j: int) -> list[np.ndarray]:
                return [self._run(batch[s], sessions[j]) for s in pieces[j::len(sessions)]]

            with ThreadPoolExecutor(len(sessions)) as pool:
                done = list(pool.map(work, range(len(sessions))))
            outs = [done[i % len(sessions)][i // len(sessions)] for i in range(len(pieces))]
        else:
            outs = [self._run(batch[s]) for s in batch_slices(n, self.spec.fixed_batch_size or n or 1)]
        return np.concatenate(outs, axis=0) if outs else np.zeros((0, self.spec.num_classes), np.float32)

    def _piece_sessions(self) -> list[Any]:
        """One one-thread CPU session per core for data-parallel batches, built on first use
        from the file's bytes when they still hash to ``spec.sha256``; empty (the main session
        runs whole batches) on a GPU, a single core, external weights, a file over
        ``PIECE_MAX_BYTES``, or a file that changed or went away since it was checked."""
        if not hasattr(self, "_pieces"):
            self._pieces: list[Any] = []
            if self.providers[0] != "CPUExecutionProvider" or cpu_cores() < 2 \
                    or self.spec.extra.get("external_data_sha256"):
                return self._pieces
            try:
                data = self.path.read_bytes() if self.path.stat().st_size <= PIECE_MAX_BYTES else b""
            except OSError:
                return self._pieces
            if data and hashlib.sha256(data).hexdigest() == self.spec.sha256:
                import onnxruntime as ort

                self._pieces = [ort.InferenceSession(data, session_options(1), providers=self.providers)
                                for _ in range(min(cpu_cores(), MAX_PIECE_WORKERS))]
        return self._pieces

    def _run(self, part: np.ndarray, session: Any = None) -> np.ndarray:
        n = part.shape[0]
        feed = feed_array(self, pad_rows(part, self.spec.fixed_batch_size))
        out = np.asarray(run_with_deadline(session or self.session, [self.spec.output_name],
                                           {self.spec.input_name: feed}, str(self.path))[0])
        if out.ndim < 1 or out.shape[0] != feed.shape[0] or out.size != feed.shape[0] * self.spec.num_classes:
            raise ModelError(f"{self.path}: the model returned an output of shape {list(out.shape)} for a batch "
                             f"of {feed.shape[0]} inputs (expected [{feed.shape[0]}, {self.spec.num_classes}]; "
                             "does it ignore the batch size?)")
        return np.asarray(out, dtype=np.float32).reshape(out.shape[0], -1)[:n]
