"""``explainer export-explainer``: deploy the Triton explainer model ``M_explain`` next to ``M``.

Writes into a model repository ``M_explain/config.pbtxt`` (Python backend, the served
model's description in the ``explainer.served`` parameter), ``M_explain/1/model.py``
(:mod:`explainer.backends.triton.explain_model`) and a copy of this ``explainer``
package beside it: the server runs the client's own mask and aggregation code, of the
same version, whatever is installed there. Only its third-party imports must be in the
server's Python (see :data:`SERVER_PACKAGES`).
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path
from typing import Any

from ...errors import InputError
from ...serving.requests import DEFAULT_MAX_PASSES, MODULES
from .naming import companion_name

SERVER_PACKAGES = ["numpy", "onnx>=1.16", "platformdirs>=3", "scipy>=1.10", "Pillow>=10", "tqdm>=4.66",
                   "scikit-image>=0.22", "scikit-learn>=1.3"]
PACKAGE = Path(__file__).resolve().parents[2]
_INIT = '"""explainer, as shipped with a Triton explainer model: import the modules you need."""\n'


def _sources_only(folder: str, names: list[str]) -> list[str]:
    """``copytree``'s ignore: everything but the package's Python sources (no bundled model, no caches)."""
    return [n for n in names if n in ("__pycache__", "data") or not (n.endswith(".py") or Path(folder, n).is_dir())]


def explain_model_name(forward: str) -> str:
    """The conventional name of ``forward``'s explainer model (:mod:`.naming`)."""
    return companion_name(forward, "explainer")


def served_config(repo: Path, model: str) -> str:
    """``explainer.served`` JSON for ``model`` from its ``config.pbtxt`` in ``repo``."""
    from google.protobuf.json_format import MessageToDict

    from ..onnxruntime import _preprocessing
    from .model import _FORMATS, _image_input
    from .repo import _model_config
    from .served import served_description

    path = repo / model / "config.pbtxt"
    if not path.is_file():
        raise InputError(f"{repo}: no model {model!r} (no {model}/config.pbtxt)")
    config = MessageToDict(_model_config(path.read_text(encoding="utf-8"), path), preserving_proto_field_name=True)
    mbs = int(config.get("max_batch_size", 0) or 0)
    if mbs < 1:
        raise InputError(f"{path}: the served model must take batches (max_batch_size >= 1) to be explained in-server")
    image = _image_input(config, str(path), mbs)
    dims = [None] + [None if int(d) < 0 else int(d) for d in image["dims"]]
    params = {k: str(v.get("string_value", "")) for k, v in (config.get("parameters") or {}).items()}
    layout = {"layout": _FORMATS[image["format"]]} if image.get("format") in _FORMATS else {}
    pre, _ = _preprocessing(dims, params, layout, path)
    labels = params["explainer.labels"].split("\n") if "explainer.labels" in params else None
    return served_description(config, model, pre.to_json(), labels, params.get("explainer.output", ""))


def _config(name: str, served: str, shape: tuple[int, int, int], *, instances: int, in_flight: int,
            max_forward_passes: int, execution_env: str | None, data: bool) -> str:
    c, h, w = shape
    params = {"explainer.served": served, "explainer.in_flight": str(in_flight),
              "explainer.max_forward_passes": str(max_forward_passes),
              "explainer.explain": json.dumps({"of": json.loads(served)["model"], "methods": sorted(MODULES)})}
    if execution_env:
        params["EXECUTION_ENV_PATH"] = execution_env
    if data:
        params["explainer.data"] = "data"
    lines = [f"name: {json.dumps(name)}", 'backend: "python"', "max_batch_size: 0",
             f'input [{{ name: "image" data_type: TYPE_FP32 dims: [ 1, {c}, {h}, {w} ] }}, '
             '{ name: "request" data_type: TYPE_STRING dims: [ 1 ] }]',
             f'output [{{ name: "map" data_type: TYPE_FP32 dims: [ {h}, {w} ] }}, '
             '{ name: "record" data_type: TYPE_STRING dims: [ 1 ] }, '
             '{ name: "arrays" data_type: TYPE_STRING dims: [ 1 ] }]',
             f"instance_group [{{ count: {instances} kind: KIND_CPU }}]"]
    lines += [f"parameters {{ key: {json.dumps(k)} value {{ string_value: {json.dumps(v)} }} }}"
              for k, v in params.items()]
    return "\n".join(lines) + "\n"


def export_explainer(repo: str | Path, model: str, *, instances: int = 1, in_flight: int = 2,
                     max_forward_passes: int = DEFAULT_MAX_PASSES, execution_env: str | None = None,
                     data: str | Path | None = None) -> Path:
    """Write ``<model>_explain`` into ``repo``; returns its folder.

    Parameters
    ----------
    repo : path, a Triton model repository holding ``model``
    instances : int, explanations run at once (model instances)
    in_flight : int, BLS requests to ``model`` in flight per explanation
    max_forward_passes : int, larger requests are refused
    execution_env : str, optional
        ``EXECUTION_ENV_PATH`` of a packed Python environment (conda-pack) holding
        :data:`SERVER_PACKAGES`, e.g. ``$$TRITON_MODEL_DIRECTORY/explainer-env.tar.gz``.
    data : path, optional
        A folder of images, copied to ``1/data/``: prediction difference draws its window
        replacements from them (the request cannot name a server folder).
    """
    from ...perturbation.sampling import image_files

    from ...imaging import parse_preprocessing

    for name, v in (("instances", instances), ("in_flight", in_flight), ("max_forward_passes", max_forward_passes)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise InputError(f"{name} must be a positive integer, got {v!r}")
    repo = Path(repo)
    served = served_config(repo, model)
    pre = parse_preprocessing(json.loads(served)["preprocessing"])
    name = explain_model_name(model)
    folder = repo / name
    version = folder / "1"
    files = image_files(data) if data is not None else []
    shutil.rmtree(version / "explainer", ignore_errors=True)
    shutil.rmtree(version / "data", ignore_errors=True)
    version.mkdir(parents=True, exist_ok=True)
    shutil.copytree(PACKAGE, version / "explainer", ignore=_sources_only)
    (version / "explainer" / "__init__.py").write_text(_INIT, encoding="utf-8")
    shutil.copyfile(Path(__file__).with_name("explain_model.py"), version / "model.py")
    if files:
        (version / "data").mkdir()
        for f in files:
            shutil.copyfile(f, version / "data" / f.name)
    text = _config(name, served, (pre.channels, *pre.size), instances=instances, in_flight=in_flight,
                   max_forward_passes=max_forward_passes, execution_env=execution_env, data=bool(files))
    (folder / "config.pbtxt").write_text(text, encoding="utf-8")
    return folder


def add_parser(sub: Any) -> None:
    """The ``export-explainer`` command's options."""
    p = sub.add_parser("export-explainer", help="deploy the Triton explainer model M_explain next to M")
    p.add_argument("--triton-repo", required=True, type=Path, help="the model repository holding --model")
    p.add_argument("--model", required=True, help="the served model's name in the repository")
    p.add_argument("--instances", type=int, default=1, help="explanations run at once (default 1)")
    p.add_argument("--in-flight", type=int, default=2, help="batches in flight per explanation (default 2)")
    p.add_argument("--max-forward-passes", type=int, default=DEFAULT_MAX_PASSES,
                   help=f"refuse larger requests (default {DEFAULT_MAX_PASSES})")
    p.add_argument("--execution-env", metavar="PATH",
                   help="EXECUTION_ENV_PATH of a packed Python environment for the server")
    p.add_argument("--data", type=Path, metavar="FOLDER",
                   help="images for prediction difference's samples, copied into the model")


def cmd_export_explainer(args: argparse.Namespace) -> None:
    folder = export_explainer(args.triton_repo, args.model, instances=args.instances, in_flight=args.in_flight,
                              max_forward_passes=args.max_forward_passes, execution_env=args.execution_env,
                              data=args.data)
    print(f"wrote {folder} (serve it with the repository; explain with --model URL/{args.model})")
