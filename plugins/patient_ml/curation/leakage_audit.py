"""An independent check of a split for copies of one slice on both sides, deliberately not
built on `near_duplicates` (other thumbnails, another filter, brute force, no index): two
images are the same slice when, in one of the eight orientations of the square (flips and
quarter turns), their 64x64 bilinear thumbnails correlate at least 0.95 — plainly (z-scored:
brightness, contrast, window) or after equalisation (ranks: gamma, windowing, any increasing
change of intensity).

Every pair is screened on 16x16 equalised thumbnails in all eight orientations (one matrix
product per orientation; exact, a few seconds for a few thousand images) and those correlating
at least 0.9 there are checked on the 64x64 ones. So it also serves as a reference for the
product's grouping in tests and benchmarks. `orientations=False` keeps the orientation of the
images (the first audit's criterion, which let flipped and turned copies through).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

MIN_CORRELATION = 0.95
SCREEN_CORRELATION = 0.9
_CHUNK = 20_000
_SMALL, _LARGE = 16, 64


@dataclass(frozen=True)
class AuditPrints:
    small: np.ndarray  # (n, 256) unit vectors: equalised 16x16 thumbnails
    plain: np.ndarray  # (n, 64, 64) unit-norm z-scored 64x64 thumbnails
    ranked: np.ndarray  # (n, 64, 64) the same, equalised


def _unit(x: np.ndarray) -> np.ndarray:
    flat = x.reshape(len(x), -1)
    flat = flat - flat.mean(axis=1, keepdims=True)
    norms = np.linalg.norm(flat, axis=1, keepdims=True)
    return (flat / np.maximum(norms, 1e-6)).reshape(x.shape).astype(np.float32)


def _ranks(x: np.ndarray) -> np.ndarray:
    from scipy.stats import rankdata

    flat = x.reshape(len(x), -1)
    return rankdata(flat, axis=1).reshape(x.shape)


def audit_prints(images: Sequence[Any]) -> AuditPrints:
    """Thumbnails of Pillow images."""
    from PIL import Image

    small, large = [], []
    for image in images:
        gray = image.convert("L")
        small.append(np.asarray(gray.resize((_SMALL, _SMALL), Image.Resampling.BILINEAR)))
        large.append(np.asarray(gray.resize((_LARGE, _LARGE), Image.Resampling.BILINEAR)))
    small_a = np.stack(small).astype(np.float32)
    large_a = np.stack(large).astype(np.float32)
    return AuditPrints(
        _unit(_ranks(small_a)).reshape(len(images), -1), _unit(large_a), _unit(_ranks(large_a))
    )


def _orientations(grid: np.ndarray, orientations: bool) -> list[np.ndarray]:
    if not orientations:
        return [grid]
    out = []
    for mirrored in (False, True):
        base = grid[..., ::-1] if mirrored else grid
        out += [np.rot90(base, turns, axes=(-2, -1)) for turns in range(4)]
    return out


def same_slice_pairs(
    prints: AuditPrints, *, orientations: bool = True
) -> list[tuple[int, int, float]]:
    """Every pair (i < j, best correlation) that meets the criterion."""
    n = len(prints.small)
    small = prints.small.reshape(n, _SMALL, _SMALL)
    screened = np.full((n, n), -1.0, dtype=np.float32)
    for turned in _orientations(small, orientations):
        np.maximum(screened, prints.small @ turned.reshape(n, -1).T, out=screened)
    i, j = np.nonzero(np.triu(screened >= SCREEN_CORRELATION, k=1))
    best = np.full(len(i), -1.0, dtype=np.float32)
    for start in range(0, len(i), _CHUNK):
        a, b = i[start : start + _CHUNK], j[start : start + _CHUNK]
        for thumbs in (prints.plain, prints.ranked):
            for turned in _orientations(thumbs[b], orientations):
                products = np.einsum("mxy,mxy->m", thumbs[a], turned)
                np.maximum(best[start : start + _CHUNK], products, out=best[start : start + _CHUNK])
    keep = best >= MIN_CORRELATION
    return [
        (int(a), int(b), float(c)) for a, b, c in zip(i[keep], j[keep], best[keep], strict=True)
    ]


def cross_split_pairs(
    prints: AuditPrints, splits: Sequence[str], *, orientations: bool = True
) -> list[tuple[int, int, float]]:
    """The criterion's pairs whose two images sit in different splits."""
    return [
        (i, j, c)
        for i, j, c in same_slice_pairs(prints, orientations=orientations)
        if splits[i] != splits[j]
    ]


def largest_linked_component(patient_keys: Sequence[str], groups: Iterable[Sequence[int]]) -> int:
    """Size of the largest component of the graph a split is drawn on: image i is linked to
    every image of its patient (`patient_keys[i]`) and to the members of its copy group
    (`groups`: lists of image indices)."""
    parent = list(range(len(patient_keys)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    first: dict[str, int] = {}
    for i, key in enumerate(patient_keys):
        parent[find(i)] = find(first.setdefault(key, i))
    for members in groups:
        for i in members[1:]:
            parent[find(i)] = find(members[0])
    return max(Counter(find(i) for i in range(len(parent))).values(), default=0)
