"""Candidate pairs of near-duplicates without misses: every pair of thumbnails whose correlation
in their best relative orientation (of the group the dataset links: all eight, the left-right
mirror, or none) can reach a threshold, and few others.

For z-scored unit vectors, correlation >= t is distance <= sqrt(2 (1 - t)). Per view (whole
image, content box):

1. each thumbnail's invariant point (`dihedral.Projection.invariants`): no orientation moves
   it and its distance to another's bounds the distance in their best relative orientation
   from below. That bound for every pair, block by block as one float32 matrix product on all
   cores (`close_pairs`; a few nanoseconds a pair, sorted on the first dimension so a band of
   rows skips the columns beyond the radius on it);
2. what passes, pair by pair in compiled code (`near_kernels.refine_block`) as each block is
   computed: the exact distance in the best orientation on the projections — orientation
   changes the signs and turns of the projections' blocks, and folding them into invariants
   loses how they go together, so on look-alike slices the first bound lets through a few
   percent of all pairs and the second keeps about what will verify.

Only the rest is verified on the thumbnails (`near_duplicates.similarities`). The work is
quadratic with a small constant that hardly depends on the data (`benchmarks/leakage.py
--scale-only`). With `negation` a second search compares the points with the negated ones (a
negative image only changes the sign of the fixed block's invariants).
"""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace

import numpy as np

from patient_ml.curation.dihedral import FIRST, Coordinates, Projection, fit_projection

DIMS = 208  # projected dimensions of each view: their invariants and the exact bound
BLOCK_DIMS = 208  # invariant dimensions of the blocked product: all (the kernel's step then
# starts from the exact bound; fewer dimensions there let through more than they save)
_BLOCK = (512, 4_096)  # rows x columns of one product: 8 MB per thread
_MAX_THREADS = 4
_BASIS_SAMPLE = 20_000
_CHUNK = 16_384


def radius_of(min_correlation: float) -> float:
    """The distance between unit vectors that correlate `min_correlation`, with float32 slack."""
    return float(np.sqrt(max(2.0 * (1.0 - min_correlation), 0.0))) + 1e-4


def candidate_pairs(
    views: np.ndarray, min_correlation: float, coords: Coordinates, *, negation: bool = False
) -> np.ndarray:
    """(m, 2) index pairs i < j whose thumbnails may correlate >= `min_correlation` in one of
    the views (n, v, 1,024 coordinates of unit vectors) in some orientation of `coords`' group,
    also negated when `negation`: every such pair is among them.

    Per view: the invariant points' distance on their first `BLOCK_DIMS` dimensions for every
    pair (`close_pairs`), then, for what passes, the exact bound in the best orientation on all
    `DIMS` projected dimensions (`Projection.best_products`). A negated thumbnail only changes
    the sign of the fixed block's invariants, so the negated comparison is a second search
    between the points and their negations."""
    from threadpoolctl import threadpool_limits

    radius = radius_of(min_correlation)
    rng = np.random.default_rng(0)
    found = []
    # one BLAS thread: BLAS's own threads synchronise on every call (every block of the
    # product, every step of the eigendecomposition), several times the CPU on a busy machine
    with threadpool_limits(1, user_api="blas"):
        for v in range(views.shape[1]):
            view = views[:, v]
            sample = view[rng.choice(len(view), min(len(view), _BASIS_SAMPLE), replace=False)]
            projection = fit_projection(sample, coords, DIMS)
            projected = projection.project(view)
            lengths = np.einsum("ij,ij->i", projected, projected)

            points = projection.invariants(projected)
            refine = Refinement(projection, projected, lengths, points, points, radius, negation)
            found.append(close_pairs(refine))
            if negation:
                flipped = projection.invariants(projected, negated=True)
                found.append(close_pairs(replace(refine, right=flipped, negation=True)))
    pairs = np.sort(np.concatenate(found), axis=1)
    pairs = pairs[pairs[:, 0] != pairs[:, 1]]
    return np.unique(pairs, axis=0) if len(pairs) else pairs.reshape(0, 2)


@dataclass(frozen=True)
class Refinement:
    """What one view's search compares: the invariant points (`left` against `right`: the
    same array, or the negated points), the projections and their squared lengths, and how an
    orientation acts on them (`near_kernels.refine_block`)."""

    projection: Projection
    projected: np.ndarray
    lengths: np.ndarray
    left: np.ndarray
    right: np.ndarray
    radius: float
    negation: bool

    def block(
        self, products: np.ndarray, bound: float, top: int, start: int, same: bool,
        row_ids: np.ndarray, col_ids: np.ndarray, out: np.ndarray,
    ) -> np.ndarray:  # fmt: skip
        """The pairs of a block of products that pass every bound (original indices)."""
        from patient_ml.curation.near_kernels import refine_block

        starts = self.projection.starts.astype(np.int64)
        kinds = self.projection.kinds
        pair_block = -1
        if (kinds == FIRST).any():
            pair_block = int(np.searchsorted(starts, int(np.flatnonzero(kinds == FIRST)[0])))
        while True:
            count = refine_block(
                products, bound, top, start, same, row_ids, col_ids, self.left, self.right,
                BLOCK_DIMS, self.radius * self.radius, self.projected, self.lengths, starts,
                pair_block, self.projection.coefficients, self.negation, out,
            )  # fmt: skip
            if count >= 0:
                return out[:count].copy()
            out = np.empty((2 * len(out), 2), dtype=np.int64)


def close_pairs(refine: Refinement) -> np.ndarray:
    """The pairs (i, j) with left i within the radius of right j on the first `BLOCK_DIMS`
    features (i < j when both are the same array), narrowed block by block by `refine` (so what
    the loose first bound lets through is never held all at once): every pair's distance,
    block by block, as one float32 matrix product.

    With (f, -|f|²/2, 1) on the left and (g, 1, -|g|²/2) on the right, a product is
    f·g - |f|²/2 - |g|²/2 = -|f - g|²/2, so a block of products is a block of distances: a few
    nanoseconds a pair, hardly more where many pairs lie close (quadratic in the images), and
    memory stays within a block. Sorted on the first feature, a band of rows skips the columns
    beyond `radius` on it; of one array with itself only the upper triangle is computed. Bands
    of rows run on all cores (numpy lets go of the GIL)."""
    left_points, right_points, radius = refine.left, refine.right, refine.radius
    same = left_points is right_points
    left_f = np.ascontiguousarray(left_points[:, :BLOCK_DIMS], dtype=np.float32)
    right_f = left_f if same else np.ascontiguousarray(right_points[:, :BLOCK_DIMS], np.float32)
    row_order = np.argsort(left_f[:, 0], kind="stable")
    col_order = row_order if same else np.argsort(right_f[:, 0], kind="stable")
    left_f, right_f = left_f[row_order], right_f[col_order]
    left_half = -0.5 * np.einsum("ij,ij->i", left_f, left_f)[:, None]
    right_half = -0.5 * np.einsum("ij,ij->i", right_f, right_f)[:, None]
    left = np.concatenate([left_f, left_half, np.ones_like(left_half)], axis=1)
    right = np.concatenate([right_f, np.ones_like(right_half), right_half], axis=1)
    # float32 rounding of a product is well under 1e-4 (lengths <= 1, < 100 terms)
    row_first, col_first = left_f[:, 0], right_f[:, 0]
    bound = np.float32(-0.5 * radius * radius - 1e-4)
    rows, cols = _BLOCK
    buffers = threading.local()

    def band(top: int) -> np.ndarray:
        if not hasattr(buffers, "products"):  # one block's products and pairs per thread
            buffers.products = np.empty(rows * cols, dtype=np.float32)
            buffers.pairs = np.empty((65_536, 2), dtype=np.int64)
        bottom = min(top + rows, len(left))
        begin = top if same else int(np.searchsorted(col_first, row_first[top] - radius))
        end = int(np.searchsorted(col_first, row_first[bottom - 1] + radius, side="right"))
        found = [np.empty((0, 2), dtype=np.int64)]
        for start in range(begin, end, cols):
            stop = min(start + cols, end)
            size = (bottom - top) * (stop - start)
            block = buffers.products[:size].reshape(bottom - top, stop - start)
            np.matmul(left[top:bottom], right[start:stop].T, out=block)
            pairs = refine.block(block, float(bound), top, start, same, row_order, col_order,
                                 buffers.pairs)  # fmt: skip
            if len(pairs) > len(buffers.pairs) // 2:
                buffers.pairs = np.empty((2 * len(pairs), 2), dtype=np.int64)
            found.append(pairs)
        return np.concatenate(found)

    workers = min(os.cpu_count() or 1, _MAX_THREADS)
    with ThreadPoolExecutor(workers) as pool:
        bands = list(pool.map(band, range(0, len(left), rows)))
    return np.concatenate([np.empty((0, 2), dtype=np.int64), *bands])
