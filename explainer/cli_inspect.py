"""The ``explainer inspect`` command: what a model is and what the methods will use."""

from __future__ import annotations

import argparse
import json
from typing import Any, Callable

from .backends.onnx_safety import read_onnx
from .console import shown
from .graph.feature_default import default_feature
from .graph.inspect import layers


def cmd_inspect(args: argparse.Namespace, load: Callable[[argparse.Namespace], Any]) -> None:
    """``explainer inspect``: the model's input, output, preprocessing, default feature layer,
    gradient coverage and layers (or, for a served model, its deployed companions)."""
    from .graph.gradients import uncovered_operators  # the gradient builder, imported when used

    model = load(args)
    spec = model.spec
    remote = model.backend == "triton"  # a served model: no graph, but the deployed companion models
    proto = None if remote else read_onnx(spec.source, max_bytes=args.max_model_bytes)
    all_layers = [] if remote else layers(proto)
    found = None if remote else default_feature(proto, spec.preprocessing.layout)
    feature = found[0] if found else None
    deployed = None
    if remote:
        deployed = model.deployed()
        default = next((c["layers"][0] for c in deployed if c.get("default_layer") and c["layers"]), None)
        feature = argparse.Namespace(name=default) if default else None
        named = dict.fromkeys(layer for c in deployed for layer in c["layers"])
        all_layers = [argparse.Namespace(name=n, op_type=None, output=None, shape=None) for n in named]
    info = {
        "model": spec.source, "sha256": spec.sha256, "backend": model.backend,
        "input": {"name": spec.input_name, "shape_nchw": list(spec.input_shape),
                  "max_batch_size": spec.max_batch_size},
        "output": {"name": spec.output_name, "classes": spec.num_classes, "kind": spec.output_kind},
        "preprocessing": json.loads(spec.preprocessing.to_json()),
        "preprocessing_source": spec.preprocessing_source,
        "default_feature_layer": feature.name if feature else None,
        "feature_view": found[1].describe() if found else None,
        "uncovered_operators": None if remote else uncovered_operators(proto),
        "layers": [{"name": lay.name, "op": lay.op_type, "output": lay.output,
                    "shape": list(lay.shape) if lay.shape is not None else None} for lay in all_layers],
    }
    if deployed is not None:
        info["deployed"] = deployed
    if args.json:
        print(json.dumps(info, indent=2))
        return
    for key in ("model", "sha256", "input", "output", "preprocessing", "preprocessing_source",
                "default_feature_layer"):
        print(f"{key}: {shown(info[key])}")
    if not remote:
        print(f"feature_view: {info['feature_view']}")
        missing = info["uncovered_operators"]
        print("gradient methods: " + (f"not available, no gradient rule for {', '.join(missing)}" if missing
                                      else "all operators on the input-to-output path are covered"))
    print(f"layers ({len(all_layers)}{', through the deployed models below' if remote else ''}):")
    for lay in info["layers"]:
        print(f"  {shown(lay['name']):40s} {shown(lay['op'] or ''):20s} {lay['shape'] or ''}")
    for c in deployed or []:
        print(f"deployed: {c['model']} ({c['kind']}{', relu ' + c['relu'] if 'relu' in c else ''})"
              f"{': ' + ', '.join(c['layers']) if c['layers'] else ''}")
