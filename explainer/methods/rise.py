"""RISE: randomized input sampling for explanation (Petsiuk, Das, Saenko 2018)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from ..model import Model, logit_view
from ..errors import InputError
from ..validation import check_memory
from ..explanation import Explanation
from ..perturbation import masks
from ..perturbation.adaptive import check_quality, run_adaptive
from ..perturbation.designs import binary, block_size, check_design
from ..perturbation.engine import check_batch_size, perturb
from ..xp import array_module, to_numpy
from . import MethodInfo, Option
from .shared_options import DESIGN_OPTION, QUALITY_OPTION
from .common import auto_or_numbers, explanation, prepare
from .occlusion import _mask_value

FIRST_ROUND = 500  # masks in the first adaptive round (then 1000, 2000, ...); 8 shifts of 64-mask blocks at least
AGGREGATE_CHUNK = 256  # masks per aggregation GEMM; fixed so results do not depend on batch size


@dataclass(frozen=True)
class RisePlan:
    """Every mask's randomness, drawn up front from the seed (small: N * (s*s + 2)).

    Attributes
    ----------
    grids : (N, s, s) float32 ndarray of 0/1, the low-resolution binary grids
    shifts : (N, 2) int64 ndarray, (dy, dx) crop offsets in [0, cell)
    cell : (ch, cw), ceil(H / s), ceil(W / s)
    shape : (H, W)
    """

    grids: np.ndarray
    shifts: np.ndarray
    cell: tuple[int, int]
    shape: tuple[int, int]

    @property
    def upsampled(self) -> tuple[int, int]:
        """(Hup, Wup) = (s + 1) * cell, the size grids are resized to before cropping."""
        s = self.grids.shape[1]
        return (s + 1) * self.cell[0], (s + 1) * self.cell[1]


def rise_plan(shape: tuple[int, int], num_masks: int, grid_size: int, keep_probability: float,
              seed: int, design: str = "auto") -> RisePlan:
    """Draw the N grids (cell on with probability p) and shifts from ``seed``.

    "independent": every cell and shift drawn independently (the paper). "orthogonal"
    (p = 1/2 only): the grids come in balanced blocks of B masks (perturbation/designs.py)
    that share one random shift, so within a block every pixel is kept in exactly B/2
    masks; each mask alone is distributed as in the paper. "auto": ``_design``.
    """
    design = _design(design, keep_probability)
    rng = np.random.default_rng(seed)
    cell = (-(-shape[0] // grid_size), -(-shape[1] // grid_size))
    if design == "orthogonal":
        grids = binary(design, num_masks, grid_size * grid_size, rng).astype(np.float32)
        b = block_size(grid_size * grid_size)
        nb = -(-num_masks // b)
        block = np.stack([rng.integers(0, cell[0], nb), rng.integers(0, cell[1], nb)], axis=1)
        return RisePlan(grids.reshape(num_masks, grid_size, grid_size),
                        np.repeat(block, b, axis=0)[:num_masks].astype(np.int64), cell, tuple(shape))
    grids = (rng.random((num_masks, grid_size, grid_size)) < keep_probability).astype(np.float32)
    shifts = np.stack([rng.integers(0, cell[0], num_masks), rng.integers(0, cell[1], num_masks)], axis=1)
    return RisePlan(grids, shifts.astype(np.int64), cell, tuple(shape))


class MaskMaker:
    """Builds masks start..stop-1 of a plan on ``xp`` (bilinear resize, shift, crop)."""

    def __init__(self, plan: RisePlan, xp: Any):
        s = plan.grids.shape[1]
        up = plan.upsampled
        self.plan, self.xp = plan, xp
        self.rows = masks.linear_resize_matrix(s, up[0], xp)
        self.cols = masks.linear_resize_matrix(s, up[1], xp)
        self.grids, self.shifts = xp.asarray(plan.grids), xp.asarray(plan.shifts)

    def __call__(self, start: int, stop: int) -> Any:
        """(stop - start, H, W) float32 masks with values in [0, 1]."""
        return masks.shifted_upsample(self.grids[start:stop], self.shifts[start:stop], self.rows,
                                      self.cols, self.plan.shape, self.xp)


def rise_masks(shape: tuple[int, int], num_masks: int = 4000, grid_size: int = 7,
               keep_probability: float = 0.5, seed: int = 0, design: str = "auto") -> np.ndarray:
    """All N masks of a ``rise`` run with these settings: (N, H, W) float32 (for tests, small N)."""
    plan = rise_plan(shape, num_masks, grid_size, keep_probability, seed, design)
    return MaskMaker(plan, np)(0, num_masks)


def _check(num_masks: Any, grid_size: Any, keep_probability: Any, seed: Any,
           shape: tuple[int, int]) -> None:
    for name, v, least in (("num_masks", num_masks, 1), ("grid_size", grid_size, 1), ("seed", seed, 0)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < least:
            raise InputError(f"{name} must be an integer >= {least}, got {v!r}")
    if grid_size > min(shape):
        raise InputError(f"grid_size {grid_size} is larger than the {shape[0]}x{shape[1]} input")
    if isinstance(keep_probability, bool) or not isinstance(keep_probability, (int, float, np.floating)) \
            or not 0 < keep_probability <= 1:
        raise InputError(f"keep_probability must be in (0, 1], got {keep_probability!r}")


def rise(model: Model, image: Any, target: int | str | None = None, *, num_masks: int = 4000,
         grid_size: int = 7, keep_probability: float = 0.5,
         mask_value: float | Sequence[float] | str = "auto", mini_batch_size: int = 128,
         seed: int = 0, score: str = "probability", execution_environment: str = "auto",
         quality: str = "best", design: str = "auto", progress: bool = False) -> Explanation:
    """Saliency as the score-weighted mean of random smooth masks.

    Each mask is a random ``grid_size`` x ``grid_size`` binary grid (cells kept
    with probability p) resized bilinearly to (s + 1) * cell and cropped at a
    random shift; masked input = fill + mask * (x - fill). The map is the paper's
    ``sum_i score_i * mask_i / (N * p)`` (scores^T masks, one GEMM per chunk); with the
    orthogonal design it is ``mean(score) + sum_i (score_i - mean(score)) mask_i / (N p)``,
    the same for whole design blocks (each pixel kept in exactly p N masks) and without
    the chance imbalance of a partial block.

    Parameters
    ----------
    model : Model
    image : str, Path or ndarray
        File, (H0, W0, 3) uint8 pixels, or a (1, C, H, W) float32 input tensor.
    target : int, str or None
    num_masks : int
        N (forward passes: N + 1).
    grid_size : int
        s, cells per side of the low-resolution grid.
    keep_probability : float
        p, the chance that a cell is kept.
    mask_value : float, (C,) floats or "auto"
        Fill for removed pixels in the input's units; "auto" = per-channel mean
        of the input (the paper multiplies by the mask, i.e. 0).
    mini_batch_size, score, execution_environment, progress
        As for occlusion.
    seed : int
        Fixes every mask, whatever ``mini_batch_size``.
    quality : {"best", "balanced", "fast"}
        "best" evaluates all N masks. "balanced" / "fast" evaluate 500, 1000, 2000, ...
        masks and stop once the map's agreement with the full-budget map, predicted from
        its two halves, reaches 0.95 / 0.90 (perturbation/adaptive.py);
        ``params["stopping"]`` records where.
    design : {"auto", "orthogonal", "independent"}
        How the grids are drawn (``rise_plan``): "auto" is "orthogonal" when p = 1/2,
        else "independent" (the paper's). Both give maps with the same expectation;
        the orthogonal one needs about 4x fewer masks for the same agreement with the
        converged map (benchmarks/RESULTS.md).

    Returns
    -------
    Explanation
        ``map`` : (H, W) float32, unnormalised (its mean is about E[score]).
    """
    check_batch_size(mini_batch_size)
    check_quality(quality)
    xp = array_module(execution_environment)
    model = logit_view(model, score)  # a Softmax-ended ONNX model: the logits before the Softmax
    prep = prepare(model, image, target, score)
    shape = prep.x.shape[2:]
    _check(num_masks, grid_size, keep_probability, seed, shape)
    check_memory(f"rise with num_masks={num_masks}", num_masks * (grid_size ** 2 * 8.0 + 64))
    fill = _mask_value(mask_value, prep.x)
    design = _design(design, float(keep_probability))
    plan = rise_plan(shape, int(num_masks), int(grid_size), float(keep_probability), int(seed), design)
    make = MaskMaker(plan, xp)
    x_dev, fill_dev = xp.asarray(prep.x), xp.asarray(fill)

    def fill_batch(out: Any, start: int, stop: int) -> Any:
        return masks.blend(x_dev, make(start, stop), fill_dev, xp, out=out)

    blocks: list[tuple[int, int, np.ndarray, Any, Any]] = []  # start, stop, scores, scores^T masks, mask sum

    def evaluate(start: int, stop: int) -> None:
        y = perturb(model, prep.x, stop - start, lambda out, a, b: fill_batch(out, a + start, b + start),
                    mini_batch_size, prep.stats, xp, score=score, target=prep.target, progress=progress,
                    desc="rise")
        blocks.append((start, stop, y) + _weighted_sum(y, make, start, xp))

    def halves(n: int) -> tuple[np.ndarray, np.ndarray]:
        """The two half maps, each the same estimator as the returned map (``_estimate``), so
        their agreement measures the noise of the map the run returns."""
        return tuple(_estimate(part, keep_probability, design) for part in (
            [b for b in blocks if b[1] <= n // 2], [b for b in blocks if b[0] >= n // 2 and b[1] <= n]))

    stopping = run_adaptive(int(num_masks), FIRST_ROUND, quality, evaluate, halves)
    saliency = _estimate(blocks, keep_probability, design).reshape(shape)
    params = dict(num_masks=int(num_masks), grid_size=int(grid_size),
                  keep_probability=float(keep_probability), cell=list(plan.cell),
                  mask_value=fill.tolist(), mini_batch_size=int(mini_batch_size), score=score,
                  execution_environment=xp.__name__, quality=quality, design=design,
                  stopping=stopping.params())
    return explanation(model, prep, "rise", saliency, params, seed=int(seed))


def _design(design: str, keep_probability: float) -> str:
    """Resolve the ``design`` option: "auto" -> "orthogonal" when p = 1/2."""
    if design == "auto":
        return "orthogonal" if keep_probability == 0.5 else "independent"
    if check_design(design) == "orthogonal" and keep_probability != 0.5:
        raise InputError(f"design 'orthogonal' needs keep_probability 0.5, got {keep_probability!r}")
    return design


def _estimate(blocks: list[tuple[int, int, np.ndarray, Any, Any]], p: float, design: str) -> np.ndarray:
    """The map from evaluated blocks (start, stop, scores, scores^T masks, mask sum): (H*W,)
    float64; the paper's estimator, or for the orthogonal design the centred one (``rise``)."""
    n = sum(b[1] - b[0] for b in blocks)
    total = to_numpy(sum(b[3] for b in blocks))
    if design != "orthogonal":
        return total / (n * p)
    mean = float(sum(float(np.sum(b[2], dtype=np.float64)) for b in blocks)) / n
    return mean + (total - mean * to_numpy(sum(b[4] for b in blocks))) / (n * p)


def _weighted_sum(y: np.ndarray, make: MaskMaker, offset: int, xp: Any) -> tuple[Any, Any]:
    """scores^T masks and the sum of the masks, (H*W,) float64 each, for masks
    offset..offset+len(y)-1, rebuilt chunk by chunk (never all in memory)."""
    n = len(y)
    h, w = make.plan.shape
    total, masks_sum = xp.zeros(h * w, xp.float64), xp.zeros(h * w, xp.float64)
    y_dev = xp.asarray(y, dtype=xp.float64)
    for start in range(0, n, AGGREGATE_CHUNK):
        stop = min(start + AGGREGATE_CHUNK, n)
        m = make(offset + start, offset + stop).reshape(stop - start, h * w).astype(xp.float64)
        total += y_dev[start:stop] @ m
        masks_sum += m.sum(axis=0)
    return total, masks_sum


METHODS = [MethodInfo("rise", rise, (
    Option("--num-masks", "num_masks", dict(type=int, help="RISE: number of random masks N")),
    Option("--grid-size", "grid_size", dict(type=int, help="RISE: cells per side s of the random grids")),
    Option("--keep-probability", "keep_probability", dict(type=float, help="RISE: chance p a cell is kept")),
    Option("--mask-value", "mask_value", dict(type=auto_or_numbers(float),
                                              help="'auto' (per-channel mean), a number or 'R,G,B'")),
    Option("--mini-batch-size", "mini_batch_size", dict(type=int)),
    Option("--score", "score", dict(choices=["probability", "logit"])),
    Option("--seed", "seed", dict(type=int)),
    QUALITY_OPTION,
    DESIGN_OPTION,
), help="RISE (Petsiuk et al. 2018)")]
