"""The per-pair step of the near-duplicate candidate search, compiled (numba): what the blocked
matrix product of `near_candidates` lets through is narrowed pair by pair, without holding it.

A block of products holds -|f_x - f_y|²/2 on the first dimensions of the invariant points. For
each entry above the bound: the distance on the remaining invariant dimensions (stopping as
soon as it exceeds the radius), then the exact distance in the best relative orientation on the
projections (`dihedral.Projection`): the dot product within each block and the cross terms of
the pair block, combined by the orientations' coefficients. In numpy the same per-pair work
costs microseconds (gathers and temporaries); here tens of nanoseconds, and it runs beside the
other bands with the GIL released.
"""

from __future__ import annotations

import numpy as np
from numba import njit


@njit(nogil=True, cache=True)
def refine_block(
    products: np.ndarray,  # (rows, cols) float32 block
    bound: float,  # products below this are beyond the radius on the first dimensions
    top: int,  # first row of the block (sorted order)
    start: int,  # first column of the block (sorted order)
    same: bool,  # left and right are one set: only i < j
    row_ids: np.ndarray,  # sorted position -> original index (left)
    col_ids: np.ndarray,  # (right)
    left: np.ndarray,  # (n, k) float32 invariant points
    right: np.ndarray,
    first_dims: int,  # dimensions the products covered
    limit: float,  # radius²
    projected: np.ndarray,  # (n, d) float32 projections
    lengths: np.ndarray,  # (n,) float32 squared lengths of the projections
    starts: np.ndarray,  # (blocks + 1,) int64 block boundaries of the projections
    pair_block: int,  # index of the pair block's first half, -1 without one
    coefficients: np.ndarray,  # (orientations, sums) float32
    negation: bool,  # also the negated thumbnail (absolute products)
    out: np.ndarray,  # (capacity, 2) int64
) -> int:
    """Writes the surviving pairs (original indices) to `out`; returns their number, or -1 when
    `out` is too small (the caller retries with a larger one)."""
    rows, cols = products.shape
    blocks = len(starts) - 1
    n_sums = coefficients.shape[1]
    sums = np.zeros(n_sums, dtype=np.float32)
    count = 0
    for a in range(rows):
        for b in range(cols):
            value = products[a, b]
            if value < bound:
                continue
            if same and start + b <= top + a:
                continue
            i = row_ids[top + a]
            j = col_ids[start + b]
            distance = -2.0 * value
            for k in range(first_dims, left.shape[1]):
                t = left[i, k] - right[j, k]
                distance += t * t
                if distance > limit:
                    break
            if distance > limit:
                continue
            for s in range(blocks):
                total = 0.0
                for k in range(starts[s], starts[s + 1]):
                    total += projected[i, k] * projected[j, k]
                sums[s] = total
            if pair_block >= 0:
                # the pair's halves share their axes: equal widths (dihedral.fit_projection)
                first, second = starts[pair_block], starts[pair_block + 1]
                width = second - first
                uw = 0.0
                wu = 0.0
                for k in range(width):
                    uw += projected[i, first + k] * projected[j, second + k]
                    wu += projected[i, second + k] * projected[j, first + k]
                sums[blocks] = uw
                sums[blocks + 1] = wu
            best = -1e30
            for g in range(coefficients.shape[0]):
                total = 0.0
                for s in range(n_sums):
                    total += coefficients[g, s] * sums[s]
                if negation and total < 0:
                    total = -total
                if total > best:
                    best = total
            if lengths[i] + lengths[j] - 2.0 * best <= limit:
                if count >= out.shape[0]:
                    return -1
                out[count, 0] = i
                out[count, 1] = j
                count += 1
    return count
