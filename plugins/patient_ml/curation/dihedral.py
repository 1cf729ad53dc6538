"""The eight orientations of a square thumbnail (the dihedral group D4: four quarter turns,
each also mirrored) and what the near-duplicate search needs to compare two thumbnails in their
best relative orientation without trying all eight.

Coordinates (`coordinates`). The 1,024 pixel values split, orthogonally, into the isotypic
components of the group's irreducible representations, computed orbit by orbit (the 8 pixels,
or 4 on a diagonal, that one pixel visits under the group share one small local basis):

* four one-dimensional blocks, on which each orientation acts as +1 or -1: `A1` (fixed: every
  orientation +1, the fully symmetric part), `A2`, `B1`, `B2` (sign blocks: mirrors and/or
  quarter turns negate them);
* one two-dimensional component `E` (the part a half-turn negates), whose coordinates come in
  pairs (u_k, w_k) that every orientation turns by one and the same 2x2 orthogonal matrix.

So a . orient(b) in every orientation is a fixed combination (`Coordinates.coefficients`) of
six block dot products and two cross terms of the pair block: eight numbers per pair instead of
eight dot products of 1,024 values.

Projections (`fit_projection`). A few principal axes within each block (fitted on the data; a
pair block's axes act on both halves alike) keep the structure: an orientation acts on the
projections as on the coordinates, so the distance of two projections in their best relative
orientation (`Projection.best_products`) bounds the thumbnails' distance from below, exactly
on those dimensions. Folded (`Projection.invariants`: fixed block as is, sign blocks as absolute
values, each pair as its length) they become points that no orientation moves, whose plain
distance is a looser lower bound: the first, cheap stage of `near_candidates`.

The same construction for the left-right mirror alone ("mirror": a symmetric and an
antisymmetric block) or no orientation at all ("identity": one fixed block).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

SIDE = 32

# (quarter turns counter-clockwise, mirrored left-right first): the 8 orientations, identity first
ORIENTATIONS: tuple[tuple[int, bool], ...] = tuple(
    (turns, mirrored) for mirrored in (False, True) for turns in range(4)
)
MIRROR_ONLY: tuple[tuple[int, bool], ...] = ((0, False), (0, True))


def orient(thumbs: np.ndarray, turns: int, mirrored: bool) -> np.ndarray:
    """Thumbnails (..., SIDE * SIDE) in one orientation (a view for turns == 0)."""
    grid = thumbs.reshape(*thumbs.shape[:-1], SIDE, SIDE)
    if mirrored:
        grid = grid[..., ::-1]
    if turns:
        grid = np.rot90(grid, turns, axes=(-2, -1))
    return np.ascontiguousarray(grid).reshape(thumbs.shape)


def _permutation(turns: int, mirrored: bool) -> np.ndarray:
    """Index map p with orient(x)[i] == x[p[i]]."""
    return orient(np.arange(SIDE * SIDE), turns, mirrored)


GROUPS: dict[str, tuple[tuple[int, bool], ...]] = {
    "d4": ORIENTATIONS,
    "mirror": MIRROR_ONLY,
    "identity": ((0, False),),
}
# blocks of the coordinates: kind 0 fixed, 1 sign, 2 first half of a pair, 3 second half
FIXED, SIGN, FIRST, SECOND = 0, 1, 2, 3


def _range_basis(projector: np.ndarray) -> np.ndarray:
    values, vectors = np.linalg.eigh(projector)
    return np.ascontiguousarray(vectors[:, values > 0.5].T)


def _local_basis(
    reps: dict[tuple[int, bool], np.ndarray], group: str
) -> list[tuple[int, np.ndarray]]:
    """(block, rows) of an orthonormal basis of one orbit's pixel values, by isotypic
    component: block 0 fixed; 1, 2, 3 the sign components; 4 and 5 the pair halves (row k
    of 5 is the quarter turn of row k of 4)."""
    size = len(next(iter(reps.values())))
    eye = np.eye(size)
    if group == "identity":
        return [(0, eye)]
    if group == "mirror":
        mirror = reps[(0, True)]
        return [(0, _range_basis((eye + mirror) / 2)), (1, _range_basis((eye - mirror) / 2))]
    r = {t: reps[(t, False)] for t in range(4)}
    f = {t: reps[(t, True)] for t in range(4)}
    rotations = r[0] + r[1] + r[2] + r[3]
    reflections = f[0] + f[1] + f[2] + f[3]
    quarter = r[0] - r[1] + r[2] - r[3]  # character -1 on the quarter turns
    mirrors = f[0] - f[1] + f[2] - f[3]
    # A1 (all +1), A2 (reflections -1), B1 / B2 (quarter turns -1, reflections +1 / -1); E:
    # the part a half-turn negates, split by the mirror's sign, a quarter turn mapping the
    # mirror-symmetric half onto the antisymmetric one
    plus = _range_basis((eye - r[2]) / 2 @ (eye + f[0]) / 2)
    return [
        (0, _range_basis((rotations + reflections) / 8)),
        (1, _range_basis((rotations - reflections) / 8)),
        (2, _range_basis((quarter + mirrors) / 8)),
        (3, _range_basis((quarter - mirrors) / 8)),
        (4, plus),
        (5, plus @ r[1].T),
    ]


@dataclass(frozen=True)
class _OrbitClass:
    pixels: np.ndarray  # (orbits, size): pixel of each slot, slots in the same order for all
    local: np.ndarray  # (size, size): orthonormal rows of one orbit's basis
    targets: np.ndarray  # (orbits, size): the coordinate each (orbit, local row) goes to


@dataclass(frozen=True)
class Coordinates:
    """Thumbnails in an orthonormal basis of the isotypic components of an orientation group,
    computed orbit by orbit (the pixels one pixel visits under the group share a small local
    basis), ordered by block: fixed, sign blocks, then each pair block's first and second
    halves (`kinds` per coordinate; `starts` the block boundaries).

    With M the basis and P_g the permutation of an orientation, the coordinates of orient(b)
    are T_g (M b) with T_g = M P_g M^T: +1 on the fixed block, +-1 on each sign block, a 2x2
    rotation (alpha, beta; gamma, delta) times the identity on the pair block. So
    a . orient(b) = sum over blocks of T_g's entry x the block's dot product, plus beta x (a's
    first half . b's second) + gamma x (a's second half . b's first) (`products`)."""

    classes: tuple[_OrbitClass, ...]
    kinds: np.ndarray  # (1024,) FIXED | SIGN | FIRST | SECOND
    starts: np.ndarray  # (blocks + 1,)
    coefficients: np.ndarray  # (orientations, blocks + 2 if a pair block else blocks)
    orientations: tuple[tuple[int, bool], ...]

    def of(self, x: np.ndarray) -> np.ndarray:
        """(..., 1024) float32 coordinates of thumbnails x (..., 1024)."""
        flat = x.reshape(-1, x.shape[-1])
        out = np.empty(flat.shape, dtype=np.float32)
        for c in self.classes:
            local = np.take(flat, c.pixels, axis=1) @ c.local.T  # (n, orbits, size)
            out[:, c.targets.ravel()] = local.reshape(len(flat), -1)
        return out.reshape(x.shape)

    def products(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """(..., orientations): a . orient(b) in every orientation, from coordinates."""
        sums = [np.add.reduceat(a * b, self.starts[:-1], axis=-1)]
        if self.coefficients.shape[1] > len(self.starts) - 1:
            first, second, end = self.starts[-3], self.starts[-2], self.starts[-1]
            for x, y in ((a[..., first:second], b[..., second:end]),
                         (a[..., second:end], b[..., first:second])):  # fmt: skip
                sums.append(np.einsum("...d,...d->...", x, y)[..., None])
        return np.concatenate(sums, axis=-1) @ self.coefficients.T


@functools.cache
def coordinates(group: str) -> Coordinates:
    """The coordinates of `group` ("d4": eight orientations, "mirror": left-right, or
    "identity")."""
    if group not in GROUPS:
        raise ValueError(f"unknown orientation group {group!r}; use one of {sorted(GROUPS)}")
    members = GROUPS[group]
    perms = {g: _permutation(*g) for g in members}
    n = SIDE * SIDE
    seen = np.zeros(n, dtype=bool)
    by_size: dict[int, list[list[int]]] = {}
    for start in range(n):
        if seen[start]:
            continue
        slots = list(dict.fromkeys(int(perms[g][start]) for g in members))
        seen[slots] = True
        by_size.setdefault(len(slots), []).append(slots)
    built: list[tuple[np.ndarray, list[tuple[int, np.ndarray]]]] = []
    for orbits in by_size.values():
        pixels = np.array(orbits)
        first = {p: k for k, p in enumerate(pixels[0])}
        reps = {}
        for g in members:
            rep = np.zeros((pixels.shape[1],) * 2)
            for k, p in enumerate(pixels[0]):
                rep[k, first[int(perms[g][p])]] = 1.0
            reps[g] = rep
        # same slot order in every orbit of the class: one local basis serves them all
        for orbit in pixels[1:]:
            where = {p: k for k, p in enumerate(orbit)}
            if any(
                where[int(perms[g][orbit[0]])] != first[int(perms[g][pixels[0][0]])]
                for g in members
            ):
                raise AssertionError("orbit slots out of order")  # pragma: no cover
        built.append((pixels, _local_basis(reps, group)))
    # coordinate order: by block, then orbit class, orbit and local row
    kinds_of_block = {0: FIXED, 1: SIGN, 2: SIGN, 3: SIGN, 4: FIRST, 5: SECOND}
    blocks = sorted({block for _, rows in built for block, r in rows if len(r)})
    position = 0
    targets = [np.zeros(pixels.shape, dtype=int) for pixels, _ in built]
    locals_ = [np.zeros((pixels.shape[1],) * 2) for pixels, _ in built]
    kinds = np.zeros(n, dtype=np.int8)
    starts = [0]
    for block in blocks:
        for c, (pixels, rows) in enumerate(built):
            chosen = dict(rows)[block] if block in dict(rows) else np.zeros((0, pixels.shape[1]))
            offset = sum(len(r) for b, r in rows if b < block)
            locals_[c][offset : offset + len(chosen)] = chosen
            for k in range(len(chosen)):
                targets[c][:, offset + k] = position + np.arange(len(pixels)) * len(chosen) + k
            kinds[position : position + len(pixels) * len(chosen)] = kinds_of_block[block]
            position += len(pixels) * len(chosen)
        starts.append(position)
    coords = Coordinates(
        tuple(
            _OrbitClass(pixels, local.astype(np.float32), target)
            for (pixels, _), local, target in zip(built, locals_, targets, strict=True)
        ),
        kinds,
        np.array(starts),
        np.zeros((len(members), 0), dtype=np.float32),
        members,
    )
    # T_g's entries, read off the basis: the coordinates of orient(basis vector j)
    basis_rows = coords.of(np.eye(n, dtype=np.float32))  # row j: coordinates of pixel j
    matrix = basis_rows.T  # row i: basis vector i in pixels
    coefficient_rows: list[list[float]] = []
    for turns, mirrored in members:
        moved = coords.of(orient(matrix[coords.starts[:-1]], turns, mirrored))
        row = [float(moved[k, coords.starts[k]]) for k in range(len(blocks))]
        if FIRST in kinds:
            first_start, second_start = coords.starts[-3], coords.starts[-2]
            moved_first = coords.of(orient(matrix[first_start], turns, mirrored))
            moved_second = coords.of(orient(matrix[second_start], turns, mirrored))
            row += [float(moved_second[first_start]), float(moved_first[second_start])]
        coefficient_rows.append(row)
    return Coordinates(
        coords.classes,
        kinds,
        coords.starts,
        np.round(np.array(coefficient_rows), 6).astype(np.float32),
        members,
    )


@dataclass(frozen=True)
class Projection:
    """A few principal axes within each block of the coordinates (fitted on a sample): the
    projections keep the block structure, so an orientation acts on them as on the
    coordinates (`best_products`, an exact bound on the projected dimensions), and fold into
    invariant points (`invariants`: the fixed block signed, each sign block's values as
    absolute values, each pair's length), whose distances bound from below the distance in
    the best relative orientation. A pair block's axes act on its multiplicity (the same
    combination of both halves), which every orientation leaves alone."""

    axes: np.ndarray  # (d, 1024): rows in block order, the pair's halves with the same axes
    starts: np.ndarray  # block boundaries of the projections
    kinds: np.ndarray  # kind of each projected dimension (FIXED | SIGN | FIRST | SECOND)
    coefficients: np.ndarray  # of the coordinates' orientations (`Coordinates.coefficients`)
    order: np.ndarray  # invariants in order of decreasing variance

    def project(self, coords: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(coords @ self.axes.T, dtype=np.float32)

    def invariants(self, projected: np.ndarray, *, negated: bool = False) -> np.ndarray:
        """(n, k) float32 invariant points (of the negated thumbnails when `negated`: only the
        fixed block changes sign), ordered by variance."""
        first = self.kinds == FIRST
        out = projected[:, self.kinds != SECOND].copy()
        kinds = self.kinds[self.kinds != SECOND]
        if first.any():
            u, w = projected[:, first], projected[:, self.kinds == SECOND]
            out[:, kinds == FIRST] = np.sqrt(u * u + w * w)
        out[:, kinds == SIGN] = np.abs(out[:, kinds == SIGN])
        if negated:
            out[:, kinds == FIXED] *= -1
        return np.ascontiguousarray(out[:, self.order])

    @functools.cached_property
    def _blocks(self) -> np.ndarray:
        """(d, blocks): which block each projected dimension belongs to."""
        out = np.zeros((len(self.kinds), len(self.starts) - 1), dtype=np.float32)
        for k, (start, stop) in enumerate(zip(self.starts[:-1], self.starts[1:], strict=True)):
            out[start:stop, k] = 1.0
        return out

    def best_products(self, a: np.ndarray, b: np.ndarray, *, negation: bool = False) -> np.ndarray:
        """(m,) the largest a . orient(b) over the orientations (and signs, with `negation`)
        on the projected dimensions of pairs of rows a, b (m, d)."""
        sums = [(a * b) @ self._blocks]
        if (self.kinds == FIRST).any():
            first, second, end = self.starts[-3], self.starts[-2], self.starts[-1]
            sums.append(np.einsum("md,md->m", a[:, first:second], b[:, second:end])[:, None])
            sums.append(np.einsum("md,md->m", a[:, second:end], b[:, first:second])[:, None])
        products = np.concatenate(sums, axis=1) @ self.coefficients.T
        return (np.abs(products) if negation else products).max(axis=1)


def fit_projection(sample: np.ndarray, coords: Coordinates, dims: int) -> Projection:
    """The `dims` invariants (and their projections) that keep the most variance of `sample`
    (n, 1,024 coordinates): the principal axes of every block, taken in order of the variance
    each keeps."""
    x = sample.astype(np.float64)
    n = x.shape[1]
    bounds = list(zip(coords.starts[:-1], coords.starts[1:], strict=True))
    kinds_of = [int(coords.kinds[start]) for start, _ in bounds]
    # every block's principal axes with their variance; a pair block's on both halves at once
    found: list[tuple[float, int, int, np.ndarray]] = []  # (variance, block, kind, vector)
    for block, ((start, stop), kind) in enumerate(zip(bounds, kinds_of, strict=True)):
        if kind == SECOND:
            continue
        values = x[:, start:stop]
        if kind == FIRST:
            values = np.concatenate([values, x[:, stop : stop + (stop - start)]])
        eigen, vectors = np.linalg.eigh(values.T @ values)
        found += [
            (float(e), block, kind, v) for e, v in zip(eigen[::-1], vectors.T[::-1], strict=True)
        ]
    chosen = sorted(found, key=lambda item: -item[0])[:dims]
    rows: list[np.ndarray] = []
    kinds: list[int] = []
    starts = [0]
    variances: list[float] = []
    for block, ((start, _stop), kind) in enumerate(zip(bounds, kinds_of, strict=True)):
        source = block - 1 if kind == SECOND else block
        for value, b, _, vector in chosen:
            if b != source:
                continue
            row = np.zeros(n)
            row[start : start + len(vector)] = vector
            rows.append(row)
            kinds.append(kind)
            if kind != SECOND:
                variances.append(value)
        starts.append(len(rows))
    keep = np.array(starts)
    nonempty = np.diff(keep) > 0  # a block may get no axis at all
    block_starts = np.concatenate([[0], keep[1:][nonempty]])
    block_kinds = [k for k, ne in zip(kinds_of, nonempty, strict=True) if ne]
    coefficients = coords.coefficients
    if len(block_kinds) < len(kinds_of):  # a block without axes: drop its coefficient column
        columns = [i for i, ne in enumerate(nonempty) if ne]
        if FIRST in kinds_of:
            columns += [len(kinds_of), len(kinds_of) + 1] if FIRST in block_kinds else []
        coefficients = coefficients[:, columns]
    return Projection(
        np.array(rows, dtype=np.float32).reshape(-1, n),
        block_starts,
        np.array(kinds, dtype=np.int8),
        coefficients,
        np.argsort(-np.array(variances), kind="stable"),
    )
