"""Balanced random on/off designs: fewer samples for the same sampling map (RISE's grids).

Sampling methods draw binary vectors z (here the cells of RISE's grids), each entry on
with probability 1/2, and average the model's scores weighted by z. Drawn
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
ROW_CHUNK = 256  # rows computed at a time: temporaries stay (256, F) whatever the block size


def block_size(num_entries: int) -> int:
    """B, the smallest power of two with B - 1 >= ``num_entries`` (B >= 4)."""
    b = 4
    while b - 1 < num_entries:
        b *= 2
    return b


def hadamard_entries(rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """Entries of a Sylvester Hadamard matrix as booleans (entry > 0).

    Parameters
    ----------
    rows : (R,) int ndarray of row indices
    cols : (F,) int ndarray of column indices

    Returns
    -------
    h : (R, F) bool ndarray, h[r, k] = popcount(rows[r] & cols[k]) is even
    """
    both = np.asarray(rows, np.int32)[:, None] & np.asarray(cols, np.int32)[None, :]
    parity = np.zeros(both.shape, np.uint8)
    top = int(max(np.max(rows, initial=0), np.max(cols, initial=0)))
    for bit in range(max(1, top.bit_length())):  # popcount parity (numpy < 2 lacks bitwise_count)
        parity ^= ((both >> bit) & 1).astype(np.uint8)
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
    z : (N, F) bool ndarray; rows [jB, (j + 1)B) form block j, B = ``block_size(F)``;
        a last partial block is a random subset of a whole one's rows
    """
    b = block_size(num_entries)
    z = np.empty((num_rows, num_entries), bool)
    for start in range(0, num_rows, b):
        cols = rng.permutation(b - 1)[:num_entries] + 1  # the non-constant columns 1..B-1
        flip = rng.random(num_entries) < 0.5
        rows = rng.permutation(b)[:min(b, num_rows - start)]  # shuffled; only those needed
        for r in range(0, len(rows), ROW_CHUNK):
            part = rows[r:r + ROW_CHUNK]
            z[start + r:start + r + len(part)] = hadamard_entries(part, cols) ^ flip
    return z


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
