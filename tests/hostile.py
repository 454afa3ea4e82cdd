"""A generated corpus of malformed and hostile ONNX files and images (no binaries committed)."""

from __future__ import annotations

import os
import struct
import zlib
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper
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
