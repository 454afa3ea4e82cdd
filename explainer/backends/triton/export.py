"""Writing a classifier's gradient model into a Triton model repository, next to the forward model."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import onnx
from onnx import helper

from ...errors import InputError

DEFAULT_MAX_BATCH_SIZE = 128


def forward_name(model: str | Path) -> str:
    """The forward model's default repository name: the folder of ``.../NAME/model.onnx``, else the stem."""
    path = Path(model)
    return path.parent.name if path.name == "model.onnx" and path.parent.name else path.stem


def _forward_batch_size(repo: Path, name: str) -> int:
    """``max_batch_size`` of ``repo/name/config.pbtxt`` when it exists and batches, else 128."""
    cfg = repo / name / "config.pbtxt"
    if not cfg.is_file():
        return DEFAULT_MAX_BATCH_SIZE
    from .repo import _model_config

    value = _model_config(cfg.read_text(encoding="utf-8"), cfg).max_batch_size
    return int(value) if value > 0 else DEFAULT_MAX_BATCH_SIZE


def _flag_default(proto: onnx.ModelProto, forward: onnx.ModelProto, layer: str | None) -> None:
    """Record in ``explainer.gradient`` whether ``layer`` is the forward model's default feature layer."""
    from ...graph.gradients import gradient_info
    from ...graph.feature_default import default_layer as default_feature_layer

    if layer is not None:
        meta = {p.key: p.value for p in proto.metadata_props}
        layout = json.loads(meta.get("explainer.preprocessing", "{}")).get("layout", "NCHW")
        found = default_feature_layer(forward, layout)
        gradient_info(proto, default_layer=found is not None and layer in (found.name, found.output))


def export_to_repo(model: str | Path, repo: str | Path, *, name: str | None = None, layer: str | None = None,
                   relu: str = "standard", max_batch_size: int | None = None,
                   dream_layer: str | None = None) -> dict:
    """Write the gradient model of ``model`` into the Triton repository ``repo``.

    The model goes to ``repo/<name>_grad_<relu>[__<layer>]/1/model.onnx`` (a file, not a
    link: it exists nowhere else) with a ``config.pbtxt`` for Triton's ONNX Runtime
    backend: inputs (image, ``logit_weights``, ``probability_weights``), outputs (the
    forward output, ``gradient``, ``activations`` with a layer), dynamic batching,
    ``max_batch_size`` (default: the forward model's in ``repo/<name>``, else 128) and
    the ``explainer.*`` parameters, ``explainer.gradient`` recording wrt/layer/relu.

    Parameters
    ----------
    model : path
        The forward ONNX classifier.
    name : str, optional
        The forward model's name in the repository (default :func:`forward_name`).
    layer : str, optional
        A layer (see ``explainer inspect``), or "auto": Grad-CAM's default feature layer.
    dream_layer : str, optional
        Instead, the gradient of this layer's channel means, as ``<name>_dream__<layer>``
        (deep-dream on a hidden layer, :mod:`explainer.backends.triton.dream`).

    Returns
    -------
    dict
        ``model`` (the gradient model's name), ``folder``, ``wrt``, ``layer``, ``relu``, ``nodes``.
    """
    from ..onnx_derived import load_with_weights
    from .naming import dream_model_name, gradient_model_name
    from ...graph.outputs import objective_gradient_model
    from ...graph.gradients import gradient_model
    from ...graph.feature_default import default_layer as default_feature_layer

    repo, name = Path(repo), name or forward_name(model)
    if not repo.is_dir():
        raise InputError(f"--triton-repo {repo}: no such folder")
    if dream_layer is not None:
        proto, grad_name = objective_gradient_model(load_with_weights(Path(model)), layer, relu, dream_layer), dream_model_name(name, dream_layer)
        dims = next(i for i in proto.graph.input if i.name == "logit_weights").type.tensor_type.shape.dim
        if len(dims) != 2 or dims[1].dim_value < 1:
            raise InputError(f"--dream-layer {dream_layer}: its number of channels cannot be inferred, "
                             "and Triton needs it")
        return _write(repo, name, grad_name, proto, max_batch_size) | {"layer": dream_layer, "relu": relu}
    forward = load_with_weights(Path(model))
    if layer == "auto":
        layout = json.loads({p.key: p.value for p in forward.metadata_props}
                            .get("explainer.preprocessing", "{}")).get("layout", "NCHW")
        found = default_feature_layer(forward, layout)
        if found is None:
            raise InputError("--layer auto: this model has no default feature layer; name one")
        layer = found.name
    proto = gradient_model(forward, layer=layer, relu=relu)
    _flag_default(proto, forward, layer)
    return _write(repo, name, gradient_model_name(name, layer, relu), proto, max_batch_size) | \
        {"layer": layer, "relu": relu}


def _write(repo: Path, name: str, grad_name: str, proto: onnx.ModelProto, max_batch_size: int | None) -> dict:
    """``repo/<grad_name>/1/model.onnx`` (a file) and its config.pbtxt; the model, folder, wrt and nodes."""
    from ...explanation import atomic_write_all
    from .repo import production_config
    from ...graph.gradients import gradient_info

    folder = repo / grad_name
    (folder / "1").mkdir(parents=True, exist_ok=True)
    target = folder / "1" / "model.onnx"
    if target.is_symlink():
        target.unlink()
    atomic_write_all({target: proto.SerializeToString()})
    config = production_config(target, grad_name, max_batch_size=max_batch_size or _forward_batch_size(repo, name))
    atomic_write_all({folder / "config.pbtxt": config.encode("utf-8")})
    return {"model": grad_name, "folder": str(folder), "wrt": gradient_info(proto)["wrt"],
            "nodes": len(proto.graph.node)}


def _layer_records(proto: onnx.ModelProto, layers: list[str]) -> list[dict]:
    """For each layer: the name given, its tensor and the node producing it (for ``explainer.layers``)."""
    from ...graph.outputs import resolve_tensor

    producer = {out: node.name for node in proto.graph.node for out in node.output if out}
    records = []
    for layer in dict.fromkeys(layers):
        tensor = resolve_tensor(proto, layer)
        records.append({"layer": layer, "tensor": tensor, "node": producer.get(tensor, "")})
    return records


def export_layers_to_repo(model: str | Path, repo: str | Path, layers: list[str], *, name: str | None = None,
                          max_batch_size: int | None = None) -> dict:
    """Write the layers model of ``model`` (it also outputs ``layers``) into the Triton repository ``repo``.

    The model goes to ``repo/<name>_layers/1/model.onnx`` (a file) with a ``config.pbtxt``
    for Triton's ONNX Runtime backend: the forward input, the forward output then one
    output per layer named as its tensor, dynamic batching, ``max_batch_size`` (default:
    the forward model's in ``repo/<name>``, else 128) and the ``explainer.*`` parameters,
    ``explainer.layers`` recording each layer's name, tensor and node.

    Returns
    -------
    dict
        ``model`` (the layers model's name), ``folder``, ``layers`` and ``tensors``.
    """
    from ..onnx_derived import load_with_weights
    from .layers import LAYERS_PARAMETER
    from .naming import layers_model_name
    from ...explanation import atomic_write_all
    from .repo import production_config
    from ...graph.activations import with_outputs

    repo, name = Path(repo), name or forward_name(model)
    if not repo.is_dir():
        raise InputError(f"--triton-repo {repo}: no such folder")
    forward = load_with_weights(Path(model))
    records = _layer_records(forward, list(layers))
    proto = with_outputs(forward, [r["tensor"] for r in records])
    for out in proto.graph.output:
        if not out.type.tensor_type.HasField("shape"):
            raise InputError(f"layer tensor {out.name!r}: its shape cannot be inferred, and Triton needs it")
    meta = {p.key: p.value for p in proto.metadata_props}
    meta[LAYERS_PARAMETER] = json.dumps({"layers": records})
    del proto.metadata_props[:]
    helper.set_model_props(proto, meta)
    try:
        data = proto.SerializeToString()
    except ValueError as e:  # protobuf's 2 GiB limit
        raise InputError(f"the layers model cannot be serialised ({e})") from None
    layers_name = layers_model_name(name)
    folder = repo / layers_name
    (folder / "1").mkdir(parents=True, exist_ok=True)
    target = folder / "1" / "model.onnx"
    if target.is_symlink():
        target.unlink()
    atomic_write_all({target: data})
    config = production_config(target, layers_name,
                               max_batch_size=max_batch_size or _forward_batch_size(repo, name))
    atomic_write_all({folder / "config.pbtxt": config.encode("utf-8")})
    return {"model": layers_name, "folder": str(folder), "layers": [r["layer"] for r in records],
            "tensors": [r["tensor"] for r in records]}


def add_repo_options(parser: Any, kind: str, folder: str) -> None:
    """The --triton-repo / --name / --max-batch-size options of an export command."""
    t = parser.add_argument_group("Triton (deploy next to the forward model)")
    t.add_argument("--triton-repo", type=Path, metavar="REPO",
                   help=f"write REPO/{folder}/ (model.onnx + config.pbtxt) instead of --out")
    t.add_argument("--name", help="the forward model's name in REPO (default: the folder of .../NAME/model.onnx, "
                                  "else the file's stem)")
    t.add_argument("--max-batch-size", type=int,
                   help=f"of the {kind} model (default: the forward model's in REPO, else 128)")
