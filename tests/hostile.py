"""A generated corpus of malformed and hostile ONNX files and images (no binaries committed)."""

from __future__ import annotations

import os
import struct
import zlib
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from PIL import Image

from tiny import feature_map_model, linear_classifier


def _graph_model(path: Path, in_type=TensorProto.FLOAT, in_dims=("N", 3, 8, 8), out_dims=("N", 2),
                 op="MatMul", opset=17, ir=8, extra_input=False) -> Path:
    flat = 3 * 8 * 8  # the weight fits the usual input; odd inputs make odd models
    k = out_dims[-1] if isinstance(out_dims[-1], int) else 2
    w = helper.make_tensor("W", TensorProto.FLOAT, [flat, k], np.ones(flat * k, np.float32).tolist())
    nodes = [helper.make_node("Flatten", ["input"], ["flat"], axis=1), helper.make_node(op, ["flat", "W"], ["out"])]
    inputs = [helper.make_tensor_value_info("input", in_type, list(in_dims))]
    if extra_input:
        inputs.append(helper.make_tensor_value_info("second", TensorProto.FLOAT, ["N", 3, 8, 8]))
    g = helper.make_graph(nodes, "g", inputs, [helper.make_tensor_value_info("out", TensorProto.FLOAT, list(out_dims))],
                          [w])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = ir
    path.write_bytes(m.SerializeToString())
    return path


def _external(folder: Path, name: str, **fields) -> Path:
    sub = folder / name
    sub.mkdir()
    linear_classifier(sub / "plain.onnx", np.ones((2, 3, 8, 8), np.float32))
    m = onnx.load(str(sub / "plain.onnx"))
    onnx.save(m, str(sub / "m.onnx"), save_as_external_data=True, location="w.bin", size_threshold=0)
    m = onnx.load(str(sub / "m.onnx"), load_external_data=False)
    for entry in m.graph.initializer[0].external_data:
        if entry.key in fields:
            entry.value = str(fields[entry.key])
    onnx.save(m, str(sub / "m.onnx"))
    return sub / "m.onnx"


def onnx_corpus(folder: Path, canary: Path, seed: int = 0) -> list[Path]:
    """At least 100 bad ONNX files: truncated, mutated, traversal, symlink, odd graphs."""
    rng = np.random.default_rng(seed)
    good = linear_classifier(folder / "good.onnx", rng.normal(size=(2, 3, 8, 8)).astype(np.float32))
    data = good.read_bytes()
    cases = []
    for i, cut in enumerate(sorted(rng.choice(np.arange(1, len(data)), 30, replace=False))):
        cases.append(folder / f"trunc{i}.onnx")
        cases[-1].write_bytes(data[:cut])
    for i in range(45):
        b = bytearray(data)
        for pos in rng.choice(len(b), int(rng.integers(1, 9)), replace=False):
            b[pos] = int(rng.integers(0, 256))
        cases.append(folder / f"mut{i}.onnx")
        cases[-1].write_bytes(bytes(b))
    rel = os.path.relpath(canary, folder / "x")
    for name, loc in [("up", rel), ("abs", str(canary)), ("deep", "a/../../" + canary.name),
                      ("win", "C:\\canary"), ("missing", "nope.bin")]:
        cases.append(_external(folder, name, location=loc))
    link = _external(folder, "symlink")
    (link.parent / "w.bin").unlink()
    os.symlink(canary, link.parent / "w.bin")
    cases.append(link)
    cases.append(_external(folder, "offset", offset=1 << 40))
    cases.append(_external(folder, "length", length=1 << 40))
    odd = [dict(in_dims=("N", 3, 1_000_000_000, 8)), dict(in_dims=(0, 3, 8, 8)), dict(in_dims=("N", 3, 8)),
           dict(in_type=TensorProto.INT64), dict(in_type=TensorProto.STRING), dict(out_dims=("N", 1)),
           dict(op="FooBar"), dict(opset=999), dict(ir=99), dict(extra_input=True),
           dict(in_dims=("N", 5, 8, 8)), dict(in_dims=(100_000, 3, 8, 8))]
    for i, kw in enumerate(odd):
        cases.append(_graph_model(folder / f"odd{i}.onnx", **kw))
    cases.append(feature_map_model(folder / "features.onnx"))
    for name, content in [("empty", b""), ("text", b"hello world\n"), ("zeros", bytes(4096)),
                          ("random", rng.bytes(3000)), ("gzip", zlib.compress(data))]:
        cases.append(folder / f"{name}.onnx")
        cases[-1].write_bytes(content)
    (folder / "dir.onnx").mkdir()
    cases.append(folder / "dir.onnx")
    return cases + hidden_corpus(folder / "hidden", canary)


def hidden_corpus(folder: Path, canary: Path) -> list[Path]:
    """Unsafe external data in every place a tensor can hide (issue 14): traversal and a symlink
    to the canary, a hard link out of the folder, malformed offset / length / location."""
    cases = []
    outside = folder.parent / "outside.bin"
    outside.write_bytes(b"\0" * 64)
    weights = np.arange(6, dtype=np.float32).reshape(3, 2)
    for place in PLACES:
        for attack in ("traversal", "symlink", "hardlink", "offset", "nul", "length"):
            sub = folder / f"{place}-{attack}"
            fields = {"traversal": {"location": os.path.relpath(canary, sub)}, "symlink": {"location": "link.bin"},
                      "hardlink": {"location": "hard.bin"}, "offset": {"offset": "1e3"},
                      "nul": {"location": "w.bin\0"}, "length": {"length": "-24"}}[attack]
            cases.append(hidden_weights_model(sub, place, weights, **fields))
            if attack == "symlink":
                os.symlink(canary, sub / "link.bin")
            elif attack == "hardlink":
                os.link(outside, sub / "hard.bin")
    return cases


def _png_chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def image_corpus(folder: Path, seed: int = 0) -> list[Path]:
    """At least 50 odd or hostile image files (some valid, most not)."""
    rng = np.random.default_rng(seed)
    rgb = rng.integers(0, 256, (20, 30, 3), dtype=np.uint8)
    cases: list[Path] = []

    def save(name: str, img: Image.Image, **kw) -> None:
        cases.append(folder / name)
        img.save(cases[-1], **kw)

    base = Image.fromarray(rgb)
    save("ok.png", base)
    save("ok.jpg", base)
    for mode in ["L", "LA", "RGBA", "P", "1", "I", "I;16", "CMYK", "F"]:
        img = base.convert(mode) if mode not in ("I;16",) else Image.fromarray(
            rng.integers(0, 65535, (20, 30), dtype=np.uint16))
        save(f"mode_{mode.replace(';', '_')}.{'jpg' if mode == 'CMYK' else 'tif' if mode in ('F', 'I') else 'png'}",
             img)
    for o in range(1, 9):
        exif = Image.Exif()
        exif[0x0112] = o
        save(f"exif{o}.jpg", base, exif=exif)
    frames = [Image.fromarray(np.full((10, 10, 3), v, np.uint8)) for v in (0, 255)]
    cases.append(folder / "anim.gif")
    frames[0].save(cases[-1], save_all=True, append_images=frames[1:])
    save("tiny.png", Image.fromarray(np.zeros((1, 1, 3), np.uint8)))
    save("thin.png", Image.fromarray(np.zeros((1, 3000, 3), np.uint8)))
    save("thin_tall.png", Image.fromarray(np.zeros((20000, 1, 3), np.uint8)))
    save("dark16.png", Image.fromarray(np.full((9, 9), 40, np.uint16)))
    png = (folder / "ok.png").read_bytes()
    jpg = (folder / "ok.jpg").read_bytes()
    for i, cut in enumerate([8, 16, 33, 60, len(png) // 2, len(png) - 12]):
        cases.append(folder / f"trunc{i}.png")
        cases[-1].write_bytes(png[:cut])
    for i, cut in enumerate([2, 100, len(jpg) // 2, len(jpg) - 2]):
        cases.append(folder / f"trunc{i}.jpg")
        cases[-1].write_bytes(jpg[:cut])
    for magic, ext in [(b"\x89PNG\r\n\x1a\n", "png"), (b"\xff\xd8\xff", "jpg"), (b"GIF89a", "gif"),
                       (b"BM", "bmp"), (b"II*\x00", "tif"), (b"RIFF\x00\x00\x00\x00WEBP", "webp")]:
        for j in range(2):
            cases.append(folder / f"junk{j}.{ext}")
            cases[-1].write_bytes(magic + rng.bytes(200))
    bomb = b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", struct.pack(">IIBBBBB", 200_000, 200_000, 8, 2, 0, 0, 0)) \
        + _png_chunk(b"IDAT", zlib.compress(b"\x00" * 100)) + _png_chunk(b"IEND", b"")
    cases.append(folder / "bomb.png")
    cases[-1].write_bytes(bomb)
    for name, content in [("empty.png", b""), ("text.png", b"not an image"), ("svg.svg", b"<svg xmlns='x'/>"),
                          ("pdf.pdf", b"%PDF-1.4\n"), ("noext", png)]:
        cases.append(folder / name)
        cases[-1].write_bytes(content)
    arrays = {"nan.npy": np.full((1, 3, 8, 8), np.nan, np.float32), "inf.npy": np.full((1, 3, 8, 8), np.inf),
              "shape.npy": np.zeros((2, 3, 8, 8), np.float32), "floatpix.npy": np.zeros((8, 8, 3)),
              "okpix.npy": np.zeros((8, 8, 3), np.uint8), "oktensor.npy": np.zeros((1, 3, 8, 8), np.float32),
              "str.npy": np.array(["a", "b"])}
    for name, arr in arrays.items():
        cases.append(folder / name)
        np.save(cases[-1], arr)
    cases.append(folder / "pickle.npy")
    np.save(cases[-1], np.array([{"a": 1}], dtype=object), allow_pickle=True)
    (folder / "dir.png").mkdir()
    cases.append(folder / "dir.png")
    os.symlink("/etc/passwd", folder / "passwd.png")
    cases.append(folder / "passwd.png")
    return cases


PLACES = ("initializer", "constant", "constant_of_shape", "sparse_initializer", "subgraph", "function")
HIDDEN_ONLY = ("training_info", "function_default")  # held by the format, not run by ONNX Runtime


def _to_external(t: TensorProto, fields: dict) -> bytes:
    data = t.raw_data
    t.ClearField("raw_data")
    t.data_location = TensorProto.EXTERNAL
    for k, v in {"location": "w.bin", "offset": "0", "length": str(len(data)), **fields}.items():
        e = t.external_data.add()
        e.key, e.value = k, str(v)
    return data


def hidden_weights_model(folder: Path, place: str, weights: np.ndarray, **fields) -> Path:
    """GlobalAveragePool -> Flatten -> MatMul(W) with W (C, K) kept in the external file
    ``folder/w.bin`` and held in ``place`` (one of PLACES; constant_of_shape fills W with
    W[0, 0]): logits[n, k] = sum_c mean(input[n, c]) * W[c, k]. ``fields`` override the
    reference's location / offset / length (hostile variants)."""
    c, k = weights.shape
    w = numpy_helper.from_array(weights.astype(np.float32), "W")
    if place == "sparse_initializer":
        w = numpy_helper.from_array(weights.astype(np.float32).reshape(-1), "W")
    if place == "constant_of_shape":
        w = numpy_helper.from_array(weights.astype(np.float32).reshape(-1)[:1], "value")
    data = _to_external(w, fields)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "w.bin").write_bytes(data)
    inits, sparse, nodes, functions = [], [], [], []
    if place == "initializer":
        inits.append(w)
    elif place == "constant":
        nodes.append(helper.make_node("Constant", [], ["W"], value=w))
    elif place == "constant_of_shape":
        inits.append(numpy_helper.from_array(np.array([c, k], np.int64), "Wshape"))
        nodes.append(helper.make_node("ConstantOfShape", ["Wshape"], ["W"], value=w))
    elif place == "sparse_initializer":
        idx = numpy_helper.from_array(np.arange(c * k, dtype=np.int64), "W_idx")
        sparse.append(helper.make_sparse_tensor(w, idx, [c, k]))
    elif place == "subgraph":
        def branch(n: str) -> onnx.GraphProto:
            return helper.make_graph([helper.make_node("Constant", [], [n], value=w)], n, [],
                                     [helper.make_tensor_value_info(n, TensorProto.FLOAT, [c, k])])
        inits.append(numpy_helper.from_array(np.array(True), "cond"))
        nodes.append(helper.make_node("If", ["cond"], ["W"], then_branch=branch("Wt"), else_branch=branch("We")))
    elif place == "function":
        functions.append(helper.make_function("local", "MakeW", [], ["out"],
                                              [helper.make_node("Constant", [], ["out"], value=w)],
                                              [helper.make_opsetid("", 17)]))
        nodes.append(helper.make_node("MakeW", [], ["W"], domain="local"))
    if place in HIDDEN_ONLY:  # the model itself uses an ordinary W
        inits.append(numpy_helper.from_array(weights.astype(np.float32), "W"))
    nodes += [helper.make_node("GlobalAveragePool", ["input"], ["pooled"]),
              helper.make_node("Flatten", ["pooled"], ["flat"], axis=1),
              helper.make_node("MatMul", ["flat", "W"], ["logits"])]
    graph = helper.make_graph(nodes, "hidden",
                              [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", c, 8, 8])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", k])], inits,
                              sparse_initializer=sparse)
    if place == "function_default":  # a function attribute's default value
        functions.append(helper.make_function("local", "Unused", [], ["o"], [], [helper.make_opsetid("", 17)]))
        functions[-1].attribute_proto.append(helper.make_attribute("w", w))
    opsets = [helper.make_opsetid("", 17)] + ([helper.make_opsetid("local", 1)] if functions else [])
    model = helper.make_model(graph, opset_imports=opsets, functions=functions)
    if place == "training_info":
        init = helper.make_graph([], "init", [], [], [w])
        model.training_info.append(onnx.TrainingInfoProto(initialization=init))
    model.ir_version = 8
    path = folder / "m.onnx"
    path.write_bytes(model.SerializeToString())
    return path


def looping_model(path: Path, threshold: float = 0.0) -> Path:
    """A (N, 3, 8, 8) -> (N, 2) model whose Loop runs 10**15 trips when |sum of the first
    input| > ``threshold`` (0: on any non-zero input, so a zero probe passes; -1: always)."""
    body = helper.make_graph(
        [helper.make_node("Identity", ["cond_in"], ["cond_out"]), helper.make_node("Identity", ["v_in"], ["v_out"])],
        "body", [helper.make_tensor_value_info("i", TensorProto.INT64, []),
                 helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
                 helper.make_tensor_value_info("v_in", TensorProto.FLOAT, ["N", 2])],
        [helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
         helper.make_tensor_value_info("v_out", TensorProto.FLOAT, ["N", 2])])
    nodes = [helper.make_node("Flatten", ["input"], ["flat"], axis=1), helper.make_node("MatMul", ["flat", "W"], ["z"]),
             helper.make_node("ReduceSum", ["flat", "ax"], ["s"], keepdims=0), helper.make_node("Abs", ["s"], ["a"]),
             helper.make_node("Greater", ["a", "zero"], ["nz"]),
             helper.make_node("Cast", ["nz"], ["nzi"], to=TensorProto.INT64), helper.make_node("Mul", ["nzi", "big"], ["m0"]),
             helper.make_node("Gather", ["m0", "idx0"], ["trips"], axis=0),
             helper.make_node("Loop", ["trips", "true", "z"], ["logits"], body=body)]
    inits = [helper.make_tensor("W", TensorProto.FLOAT, [192, 2], np.ones(384, np.float32).tolist()),
             helper.make_tensor("zero", TensorProto.FLOAT, [], [float(threshold)]),
             helper.make_tensor("big", TensorProto.INT64, [], [10 ** 15]),
             helper.make_tensor("true", TensorProto.BOOL, [], [True]),
             helper.make_tensor("idx0", TensorProto.INT64, [], [0]), helper.make_tensor("ax", TensorProto.INT64, [1], [1])]
    g = helper.make_graph(nodes, "loop", [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, 8, 8])],
                          [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 2])], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    onnx.save(m, str(path))
    return path
