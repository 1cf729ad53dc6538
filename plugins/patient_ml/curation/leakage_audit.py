"""An independent check of a split for copies of one image on both sides (issue 21's
criterion), deliberately not built on `near_duplicates`: two images are the same slice when
the 16x16 average hashes after a bilinear or a Lanczos resize are within 8 bits (of 256) and
the intensity-normalised (z-scored) 64x64 bilinear thumbnails correlate at least 0.95.

Brute force over hash pairs (vectorised; fine for a few thousand images), so it also serves as
a reference for the product's grouping in tests and benchmarks.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

HASH_DISTANCE = 8
MIN_CORRELATION = 0.95


@dataclass(frozen=True)
class AuditPrints:
    bilinear: np.ndarray  # (n, 4) uint64: 256-bit average hashes
    lanczos: np.ndarray
    thumbs: np.ndarray  # (n, 4096) float32 unit vectors (z-scored 64x64)


def audit_prints(images: Sequence[Any]) -> AuditPrints:
    """Hashes and thumbnails of Pillow images."""
    from PIL import Image

    def ahash(gray: Any, resample: Any) -> np.ndarray:
        pixels = np.asarray(gray.resize((16, 16), resample), dtype=np.float32)
        return np.packbits(pixels > pixels.mean()).view(np.uint64)

    bilinear, lanczos, thumbs = [], [], []
    for image in images:
        gray = image.convert("L")
        bilinear.append(ahash(gray, Image.Resampling.BILINEAR))
        lanczos.append(ahash(gray, Image.Resampling.LANCZOS))
        thumb = np.asarray(gray.resize((64, 64), Image.Resampling.BILINEAR), dtype=np.float32)
        thumb = thumb.ravel() - thumb.mean()
        thumbs.append(thumb / max(float(np.linalg.norm(thumb)), 1e-6))
    return AuditPrints(np.stack(bilinear), np.stack(lanczos), np.stack(thumbs))


def same_slice_pairs(prints: AuditPrints) -> list[tuple[int, int, float]]:
    """Every pair (i < j, correlation) that meets the criterion."""
    n = len(prints.thumbs)
    out: list[tuple[int, int, float]] = []
    for i in range(n - 1):
        near = np.zeros(n - i - 1, dtype=bool)
        for hashes in (prints.bilinear, prints.lanczos):
            dist = np.bitwise_count(hashes[i] ^ hashes[i + 1 :]).sum(axis=1)
            near |= dist <= HASH_DISTANCE
        js = np.flatnonzero(near) + i + 1
        if len(js):
            corr = prints.thumbs[js] @ prints.thumbs[i]
            out += [(i, int(j), float(c)) for j, c in zip(js, corr, strict=True)]
    return [(i, j, c) for i, j, c in out if c >= MIN_CORRELATION]


def cross_split_pairs(prints: AuditPrints, splits: Sequence[str]) -> list[tuple[int, int, float]]:
    """The criterion's pairs whose two images sit in different splits."""
    return [(i, j, c) for i, j, c in same_slice_pairs(prints) if splits[i] != splits[j]]


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
