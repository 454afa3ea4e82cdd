"""Balanced random on/off designs: fewer samples for the same sampling map (RISE, LIME).

Sampling methods draw binary vectors z (cells of a RISE grid, LIME's features), each
entry on with probability 1/2, and average the model's scores weighted by z. Drawn
independently, the on-counts of two entries differ by chance, and that chance difference
is most of a small-sample map's noise. ``orthogonal`` draws the vectors in blocks of
B = 2^k rows from a Sylvester Hadamard matrix (H[i, j] = (-1)^popcount(i & j), the
matrix scipy.linalg.hadamard builds, computed here for the chosen columns only) instead: within a
block every entry is on in exactly B/2 rows and every pair of entries is on together in
exactly B/4 rows (a randomised orthogonal array of strength 2, Owen 1992). Each block
takes a random subset of the matrix's B - 1 non-constant columns, flips each column's
sign at random and shuffles its rows, so every single row is uniform on {0, 1}^F: each
sample has exactly the independent design's distribution and the maps' expectations are
unchanged; only the chance imbalance between entries is gone.
"""

from __future__ import annotations

import numpy as np

from ..errors import InputError

DESIGNS = ("orthogonal", "independent")


def block_size(num_entries: int) -> int:
    """B, the smallest power of two with B - 1 >= ``num_entries`` (B >= 4)."""
    b = 4
    while b - 1 < num_entries:
        b *= 2
    return b


def hadamard_columns(b: int, cols: np.ndarray) -> np.ndarray:
    """Columns ``cols`` of the B x B Sylvester Hadamard matrix as booleans (entry > 0).

    Parameters
    ----------
    b : int, B (a power of two)
    cols : (F,) int ndarray of column indices in [0, B)

    Returns
    -------
    h : (B, F) bool ndarray, h[i, k] = popcount(i & cols[k]) is even
    """
    both = np.arange(b, dtype=np.int64)[:, None] & np.asarray(cols, np.int64)[None, :]
    parity = np.zeros(both.shape, np.int64)
    for bit in range(max(1, int(b - 1).bit_length())):  # popcount parity (numpy < 2 lacks bitwise_count)
        parity ^= (both >> bit) & 1
    return parity == 0


def orthogonal(num_rows: int, num_entries: int, rng: np.random.Generator) -> np.ndarray:
    """Rows of randomised Hadamard blocks.

    Parameters
    ----------
    num_rows : int, N
    num_entries : int, F
    rng : the run's generator (the seed fixes every row)

    Returns
    -------
    z : (N, F) bool ndarray; rows [jB, (j + 1)B) form block j, B = ``block_size(F)``
    """
    b = block_size(num_entries)
    blocks = []
    for _ in range(-(-num_rows // b)):
        cols = rng.permutation(b - 1)[:num_entries] + 1  # the non-constant columns 1..B-1
        flip = rng.random(num_entries) < 0.5
        blocks.append((hadamard_columns(b, cols) ^ flip)[rng.permutation(b)])
    return np.concatenate(blocks)[:num_rows] if blocks else np.zeros((0, num_entries), bool)


def binary(design: str, num_rows: int, num_entries: int, rng: np.random.Generator) -> np.ndarray:
    """(N, F) bool rows, each entry on with probability 1/2, from ``design`` (module docstring)."""
    if design == "orthogonal":
        return orthogonal(num_rows, num_entries, rng)
    return rng.random((num_rows, num_entries)) < 0.5


def check_design(design: str) -> str:
    """Validate a ``design`` option other than "auto"."""
    if design not in DESIGNS:
        raise InputError(f"design must be 'auto' or one of {DESIGNS}, got {design!r}")
    return design
