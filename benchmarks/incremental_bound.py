"""A hard bound on the speed-up of any exact incremental (Krypton-style) inference.

Run from the repository root::

    .venv/bin/python benchmarks/incremental_bound.py [--model PATH] [--no-time]

For an input that differs from a cached base input in one square box of side ``b``, an
exact method must recompute, at every node, every output position whose receptive field
meets the box (nothing can be reused there) and nothing else. The box is propagated
through each node's geometry (kernel, stride, pads, dilation of Conv and pooling nodes;
element-wise nodes keep the region) with the prefix geometry of
``explainer/graph/incremental.py``; from the first node that reduces over space
(GlobalAveragePool, Flatten, Gemm, ...) every output changes. So, per box position,

    minimum work = sum over nodes of (work per output position) x (changed positions)

and the bound on the speed-up is ``full work / mean over positions of minimum work``.
Positions: every position of the grid (``0, s, 2s, ..., H - b`` per axis, as occlusion
with clipping off and prediction difference place them); the changed count is a product
of per-axis counts, so the mean over the grid is exact, not sampled.

Two measures of work:

- operations: multiply-adds of Conv / Gemm (per output: ``C_in / group * kh * kw``), one
  per input value of a pooling window, one per output of an element-wise node;
- time: each node's kernel time in an ONNX Runtime profile of a full pass (one intra-op
  thread, optimisations on, so Conv+Clip are fused and run in NCHWc blocks), scaled by the
  node's changed fraction. Depthwise convolutions are memory-bound: their multiply-adds
  understate their time, which is why the time bound is the one to read. It assumes a
  kernel's time scales with its output area (crops at full efficiency, no reorders, no
  per-call overhead), so it too is an upper bound for real schemes.

Prints a markdown table.
"""

from __future__ import annotations

import argparse
import collections
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import onnx
from onnx import helper, shape_inference

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from explainer.graph.incremental import Geometry, prefix, relative  # noqa: E402
from explainer.graph.incremental_plan import changed_range, plan  # noqa: E402

MODEL = ROOT / "models/efficientnet_lite0/model.onnx"
CASES = (("occlusion, mask 16, stride 4", 16, 4), ("prediction difference, window 10, stride 1", 10, 1))


def _fixed_batch(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy with batch size 1 on every graph input, shapes inferred for every tensor."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    for i in out.graph.input:
        dims = i.type.tensor_type.shape.dim
        if dims and not dims[0].dim_value:
            dims[0].dim_value = 1
    return shape_inference.infer_shapes(out)


def node_work(model: onnx.ModelProto) -> list[tuple[str, str, float, tuple[int, ...]]]:
    """(op type, output tensor, operations per output position, output shape) per node.

    An output position is one (h, w) of an (N=1, C, H, W) output, or the whole output of a
    node without spatial axes.
    """
    m = _fixed_batch(model)
    g = m.graph
    shapes = {v.name: tuple(d.dim_value for d in v.type.tensor_type.shape.dim)
              for v in list(g.value_info) + list(g.input) + list(g.output)}
    shapes.update({i.name: tuple(i.dims) for i in g.initializer})
    rows = []
    for n in g.node:
        if n.op_type == "Constant":
            continue
        out = shapes[n.output[0]]
        a = {x.name: helper.get_attribute_value(x) for x in n.attribute}
        channels = out[1] if len(out) > 1 else 1
        if n.op_type == "Conv":
            w = shapes[n.input[1]]
            per = channels * float(np.prod(w[1:]))
        elif n.op_type in ("MaxPool", "AveragePool"):
            per = channels * float(np.prod(a["kernel_shape"]))
        elif n.op_type in ("Gemm", "MatMul"):
            per = float(np.prod(shapes[n.input[0]])) * out[-1]
        elif n.op_type.startswith("Global"):
            per = float(np.prod(shapes[n.input[0]]))
        elif n.op_type in ("Flatten", "Reshape", "Identity", "Squeeze", "Unsqueeze"):
            per = 0.0
        else:  # element-wise
            per = float(channels) if len(out) == 4 else float(np.prod(out))
        rows.append((n.op_type, n.output[0], per, out))
    return rows


def changed_fraction(geo: Geometry, size: tuple[int, int], full: tuple[int, int], box: int, stride: int) -> float:
    """Mean over the grid of box positions of the share of a tensor's positions the box reaches.

    Parameters
    ----------
    geo : the tensor's geometry measured from the input
    size : (H, W) of the tensor
    full : (H, W) of the input
    box, stride : side of the square box and step of the grid
    """
    mean = 1.0
    for axis in range(2):
        y0 = np.arange(0, full[axis] - box + 1, stride)
        g = Geometry(geo.stride[axis], geo.lo[axis], geo.hi[axis])
        lo, hi = changed_range(g, size[axis], y0, y0 + box)
        mean *= float(np.mean(hi - lo + 1)) / size[axis]
    return mean


def kernel_times(path: Path, batch: int = 8, repeats: int = 12) -> dict[str, float]:
    """Kernel microseconds per image of each node of a full pass (ONNX Runtime profile, one thread).

    Keys are the node's output tensor as ONNX Runtime names it after fusion and the NCHWc
    transform (the last output of a fused Conv+Clip, with ``_nchwc`` removed).
    """
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.enable_profiling = True
    options.profile_file_prefix = str(Path(tempfile.mkdtemp(prefix="explainer-bound-")) / "ort")
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    x = np.random.default_rng(0).random((batch, *session.get_inputs()[0].shape[1:]), np.float32)
    session.run(None, {name: x})  # warm-up, not counted: the profile starts after it
    session.end_profiling()
    options.profile_file_prefix += "2"
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    for _ in range(repeats):
        session.run(None, {name: x})
    events = json.loads(Path(session.end_profiling()).read_text())
    times: dict[str, float] = collections.defaultdict(float)
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
            times[e["name"][:-len("_kernel_time")].removesuffix("_nchwc")] += e["dur"] / (batch * repeats)
    return dict(times)


def median_kernel_times(path: Path, profiles: int, batch: int = 8) -> dict[str, float]:
    """Per-node median over ``profiles`` runs of :func:`kernel_times` (a shared machine's noise)."""
    runs = [kernel_times(path, batch, max(1, 96 // batch)) for _ in range(profiles)]
    return {k: float(np.median([r.get(k, 0.0) for r in runs])) for k in runs[0]}


def bound(model: onnx.ModelProto, box: int, stride: int, times: dict[str, float] | None) -> dict:
    """Full and minimum mean work per pass for one grid of boxes (see the module doc)."""
    name = model.graph.input[0].name
    pre = prefix(model, name)
    geo = relative(pre, pre.input)
    full_hw = pre.shapes[pre.input][1:]
    ops_full = ops_min = 0.0
    frac: dict[str, float] = {}
    stages: dict[tuple[int, ...], np.ndarray] = collections.defaultdict(lambda: np.zeros(4))
    names = {n.name: n.output[0] for n in model.graph.node}
    times = {names.get(k, k): t for k, t in (times or {}).items()}
    for op, tensor, per, shape in node_work(model):
        area = int(np.prod(shape[2:])) if len(shape) == 4 else 1
        f = changed_fraction(geo[tensor], shape[2:], full_hw, box, stride) if tensor in geo else 1.0
        frac[tensor] = f
        ops_full += per * area
        ops_min += per * area * f
        stages[tuple(shape[2:])] += [per * area, per * area * f, times.get(tensor, 0.0), times.get(tensor, 0.0) * f]
    out = dict(ops_full=ops_full, ops_min=ops_min, positions=len(range(0, full_hw[0] - box + 1, stride)) ** 2,
               plan_estimate=plan(pre, (box, box)).speedup, stages=dict(stages))
    if times:
        out["time_full"] = sum(times.values())
        out["time_min"] = sum(t * frac.get(k, 1.0) for k, t in times.items())
        out["unmatched"] = sum(t for k, t in times.items() if k not in frac)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=str(MODEL))
    ap.add_argument("--no-time", action="store_true", help="skip the ONNX Runtime profile")
    ap.add_argument("--profiles", type=int, default=5, help="profiles to take the per-node median of")
    ap.add_argument("--batch", type=int, default=8, help="batch size of the profiled passes")
    args = ap.parse_args()
    model = onnx.load(args.model)
    times = None if args.no_time else median_kernel_times(Path(args.model), args.profiles, args.batch)
    print("| boxes | positions | full pass, M ops | min. changed work, M ops (mean) | bound, ops "
          "| full pass kernel time, ms | min. kernel time, ms (mean) | bound, time | cost-model plan |")
    print("|---|---|---|---|---|---|---|---|---|")
    results = []
    for label, box, stride in CASES:
        b = bound(model, box, stride, times)
        results.append((label, b))
        t = (f"{b['time_full'] / 1e3:.2f} | {b['time_min'] / 1e3:.2f} | {b['time_full'] / b['time_min']:.2f}x"
             if times else "- | - | -")
        print(f"| {label} | {b['positions']} | {b['ops_full'] / 1e6:.0f} | {b['ops_min'] / 1e6:.0f} | "
              f"{b['ops_full'] / b['ops_min']:.2f}x | {t} | {b['plan_estimate']:.2f}x |")
    if times:
        print(f"\nKernel times: one thread, per image of a batch of {args.batch}, per-node median of "
              f"{args.profiles} profiles; profile entries without a graph "
              f"tensor (counted as changing everywhere): {results[-1][1]['unmatched']:.0f} us.")
    print("\nBy output resolution: share of the full pass, and the mean changed share per box "
          "(ops; kernel time):\n")
    print("| output H x W | full ops | full time | " + " | ".join(f"changed ops, time: {lab.split(',')[0]}"
                                                        for lab, _ in results) + " |")
    print("|---|---|---|" + "---|" * len(results))
    first = results[0][1]
    for hw in sorted(first["stages"], key=lambda k: -int(np.prod(k))):
        full = first["stages"][hw]
        cells = []
        for _, b in results:
            s = b["stages"][hw]
            cells.append(f"{s[1] / b['ops_full']:.1%}, {s[3] / b['time_full']:.1%}" if times
                         else f"{s[1] / b['ops_full']:.1%}")
        tshare = f"{full[2] / first['time_full']:.1%}" if times else "-"
        size = "x".join(map(str, hw)) or "no spatial axes"
        print(f"| {size} | {full[0] / first['ops_full']:.1%} | {tshare} | " + " | ".join(cells) + " |")

if __name__ == "__main__":
    main()
