"""Near-duplicate images (copies of one slice: flipped or turned, re-windowed, re-contrasted,
re-scaled, re-encoded, sharpened, padded): candidates found without misses, links made only
for verified copies.

Signature (stored per image, 2 KB): two 32x32 grayscale thumbnails made with an antialiasing
(box) filter — one of the whole image and one of its content box (the image cropped to where
the anatomy is, so a pad or a cut of the dark margin does not move the content) — each
stretched to 0..255.

Similarity of two images: the Pearson correlation of their thumbnails, the best over the two
views (whole with whole, content box with content box) and the orientations the dataset links
(`Transforms`: by default all eight flips and quarter turns of the square). With `intensity`
each thumbnail is compared as the sum of its z-scored and its rank-transformed values (`views`):
ranks ignore any increasing change of intensity (gamma, windowing, equalisation), z-scores
any linear one and most of what sharpening does. Two images are linked when the similarity is
at least `minCorrelation` (0.94); look-alike slices of different people stay below it (on
Br35H tumour / no-tumour pairs at most 0.912: benchmarks/leakage.py), so groups do not chain.

Candidates (`near_candidates`): every pair that can reach the threshold in some orientation,
by two lower bounds of the best-orientation distance (invariant points for all pairs, then the
exact bound on projections for what passes) computed in the coordinates of the orientation
group (`dihedral`), where every orientation's dot product is a combination of eight numbers.
"""

from __future__ import annotations

import math
import time
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, ClassVar

import numpy as np

from patient_ml.curation.dihedral import Coordinates, coordinates
from patient_ml.curation.near_candidates import candidate_pairs

if TYPE_CHECKING:
    from PIL import Image

KIND = "thumb32-v2"  # the signature curation stores and links on; bump when it changes
SIDE = 32
SIGNATURE_BYTES = 2 * SIDE * SIDE
DEFAULT_MIN_CORRELATION = 0.94  # measured: benchmarks/leakage.py, README
# pairs compared at a time by `similarities`: each chunk gathers both members' views, 8 MB
# per side (8,192 pairs took 64 MB per side: the curation's peak RSS, and 3x slower on Br35H's
# 33,000 candidate pairs, from page faults and cache misses); the values do not depend on it
_CHUNK = 1_024


def signature(image: Image.Image) -> bytes:
    """2,048 bytes for a Pillow image: whole-image and content-box 32x32 thumbnails."""
    from PIL import Image

    gray = image.convert("F") if image.mode in ("I", "I;16", "F") else image.convert("L")
    box = Image.Resampling.BOX
    whole = np.asarray(gray.resize((SIDE, SIDE), box), dtype=np.float32)
    content = np.asarray(gray.resize((SIDE, SIDE), box, box=_content_box(gray)), dtype=np.float32)
    return _to_bytes(whole) + _to_bytes(content)


def _content_box(gray: Image.Image) -> tuple[float, float, float, float]:
    """The box (in pixels) of the rows and columns holding at least a tenth of the busiest
    row's (column's) pixels above a quarter of the way from the background (1st percentile)
    to the brightest (99th), on a view of at most 256 pixels a side: a dark margin added or
    cut away does not move it."""
    from PIL import Image

    width, height = gray.size
    factor = min(1.0, 256 / max(width, height))
    view_w, view_h = max(1, round(width * factor)), max(1, round(height * factor))
    small = gray.resize((view_w, view_h), Image.Resampling.BOX)
    whole = (0.0, 0.0, float(width), float(height))
    if small.mode == "L":  # 8-bit levels: the percentiles from their histogram, same bits
        view = np.asarray(small)
        low, high = level_percentiles(view)
    else:
        view = np.asarray(small, dtype=np.float32)
        low, high = np.percentile(view, [1, 99])
    if high - low < 1e-6:
        return whole
    mask = view > low + 0.25 * (high - low)
    per_row, per_col = mask.sum(axis=1), mask.sum(axis=0)
    rows = np.flatnonzero(per_row >= 0.1 * per_row.max())
    cols = np.flatnonzero(per_col >= 0.1 * per_col.max())
    if len(rows) < 4 or len(cols) < 4:
        return whole
    sx, sy = width / view_w, height / view_h
    return (cols[0] * sx, rows[0] * sy, (cols[-1] + 1) * sx, (rows[-1] + 1) * sy)


def level_percentiles(levels: np.ndarray) -> tuple[np.float64, np.float64]:
    """`np.percentile(levels.astype(np.float32), [1, 99])` of 8-bit `levels`, bit for bit, from
    their histogram: the two order statistics it interpolates between are read off the
    cumulative counts (one pass) instead of partitioning the values (numpy's introselect was
    half of a signature's time). The interpolation is numpy's "linear" method step by step
    (index (n - 1) * q; the index past the end taken as -1, so its weight is index + 1; `_lerp`
    from the lower bound below a weight of 0.5, from the upper bound above), in float64 as
    numpy computes it: the bounds are small integers, exact in float32 and float64.
    tests/curation/test_near_duplicates.py checks it against np.percentile."""
    n = levels.size
    cumulative = np.cumsum(np.bincount(levels.ravel(), minlength=256))
    ranks, weights = [], []
    for q in (1 / 100, 99 / 100):  # np.true_divide([1, 99], 100)
        virtual = (n - 1) * q
        if virtual >= n - 1:
            ranks += [n - 1, n - 1]
            weights.append(virtual + 1)
        else:
            below = math.floor(virtual)
            ranks += [below, below + 1]
            weights.append(virtual - below)
    bounds = np.searchsorted(cumulative, ranks, side="right").tolist()
    out = []
    for a, b, gamma in zip(bounds[::2], bounds[1::2], weights, strict=True):
        difference = float(b - a)
        out.append(b - difference * (1 - gamma) if gamma >= 0.5 else a + difference * gamma)
    return np.float64(out[0]), np.float64(out[1])


def _to_bytes(thumb: np.ndarray) -> bytes:
    low, high = float(thumb.min()), float(thumb.max())
    scaled = (thumb - low) * (255.0 / (high - low)) if high > low else np.zeros_like(thumb)
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8).tobytes()


def unit_vectors(signatures: Sequence[bytes]) -> np.ndarray:
    """(n, 2, 1024) float32: each thumbnail z-scored and scaled to length 1 (flat ones: 0)."""
    raw = np.frombuffer(b"".join(signatures), dtype=np.uint8).reshape(len(signatures), 2, -1)
    return _unit(raw.astype(np.float32))


def _unit(out: np.ndarray) -> np.ndarray:
    out -= out.mean(axis=2, keepdims=True)
    # np.linalg.norm's arithmetic with one 4-byte-per-value temporary fewer (same bits)
    norms = np.sqrt(np.add.reduce(np.square(out), axis=2, keepdims=True))
    np.divide(out, norms, out=out, where=norms > 1e-6)
    out[norms[..., 0] <= 1e-6] = 0.0
    return out


def rank_vectors(signatures: Sequence[bytes]) -> np.ndarray:
    """(n, 2, 1024) float32: each thumbnail's pixels replaced by their rank within it (ties
    get their mean rank), z-scored, length 1. Any increasing change of intensity (gamma,
    windowing, equalisation) keeps the ranks, so copies under it correlate as if unchanged."""
    raw = np.frombuffer(b"".join(signatures), dtype=np.uint8).reshape(len(signatures) * 2, -1)
    rows = len(raw)
    index = raw.astype(np.int32)
    index += (np.arange(rows, dtype=np.int32) * 256)[:, None]  # level of row r at r * 256
    counts = np.bincount(index.ravel(), minlength=rows * 256).reshape(rows, 256)
    below = np.cumsum(counts, axis=1) - counts  # pixels darker than each level
    mean_rank = (below + (counts + 1) / 2.0).astype(np.float32).ravel()
    return _unit(np.take(mean_rank, index).reshape(len(signatures), 2, -1))


@dataclass(frozen=True)
class Transforms:
    """Which edits of a slice count as copies of it (`curation.nearDuplicates.transforms`).

    Always: re-encoding, resampling filters, brightness and contrast (linear), sharpening and
    blur (the thumbnails average them away), a margin padded or cut (the content-box view).
    `mirror`: the left-right flip (the radiological and neurological display conventions).
    `orientation`: all 8 flips and quarter turns of the square (implies `mirror`).
    `intensity`: any increasing change of intensity (gamma, windowing, equalisation).
    `inversion`: a negative image (MONOCHROME1 against MONOCHROME2, an inverted export)."""

    mirror: bool = True
    orientation: bool = True
    intensity: bool = True
    inversion: bool = False

    NAMES: ClassVar[tuple[str, ...]] = ("mirror", "orientation", "intensity", "inversion")

    @classmethod
    def of(cls, names: Iterable[str]) -> Transforms:
        chosen = set(names)
        unknown = chosen - set(cls.NAMES)
        if unknown:
            raise ValueError(f"unknown transforms {sorted(unknown)}; use some of {cls.NAMES}")
        return cls(**{name: name in chosen for name in cls.NAMES})

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(name for name in self.NAMES if getattr(self, name))

    @property
    def group(self) -> str:
        """The orientation group compared: "d4", "mirror" or "identity"."""
        return "d4" if self.orientation else "mirror" if self.mirror else "identity"

    @property
    def coordinates(self) -> Coordinates:
        return coordinates(self.group)


DEFAULT_TRANSFORMS = Transforms()


def views(signatures: Sequence[bytes], transforms: Transforms = DEFAULT_TRANSFORMS) -> np.ndarray:
    """(n, 2, 1024) the thumbnails compared (whole image, content box) as coordinates of
    `transforms.coordinates`: z-scored, and with `intensity` the sum of the z-scored and the
    rank-transformed thumbnail, scaled to length 1.

    Ranks alone ignore any increasing change of intensity but move under sharpening (edges
    reorder the values nearby); z-scores alone stay under sharpening but move under gamma or
    windowing. Their sum keeps the most of both: on 200 Br35H slices and their copies, recall
    at 0.94 for gamma 2 is 94 % (z 50 %, ranks 88 %), for equalisation 96 % (72 %, 95 %), for
    a strong unsharp mask 98 % (99 %, 94 %); and different slices correlate less (tumour vs
    no-tumour pairs at most 0.912, against 0.930 and 0.937; benchmarks/leakage.py)."""
    z = unit_vectors(signatures)
    if transforms.intensity:
        z = _unit(z + rank_vectors(signatures))
    return transforms.coordinates.of(z)


def similarities(
    views_: np.ndarray, pairs: np.ndarray, transforms: Transforms = DEFAULT_TRANSFORMS
) -> np.ndarray:
    """Best correlation of each pair over its views (each with the same view of the other),
    in every allowed orientation (and sign, with `inversion`)."""
    out = np.empty(len(pairs), dtype=np.float32)
    coords = transforms.coordinates
    for start in range(0, len(pairs), _CHUNK):
        chunk = pairs[start : start + _CHUNK]
        products = coords.products(views_[chunk[:, 0]], views_[chunk[:, 1]])  # (m, v, g)
        if transforms.inversion:
            products = np.abs(products)
        out[start : start + len(chunk)] = products.reshape(len(chunk), -1).max(axis=1)
    return out


@dataclass(frozen=True)
class Link:
    a: int
    b: int
    similarity: float


@dataclass
class Grouping:
    groups: list[list[int]]  # indices, each group sorted, ≥ 2 members
    links: list[Link]
    candidates: int
    seconds: float
    _weakest: dict[int, float] | None = field(default=None, repr=False)

    def similarity_within(self, members: Sequence[int]) -> float:
        """The weakest verified link inside a group (how sure its least sure copy is)."""
        if self._weakest is None:  # once for all groups: linear in the links
            group_of = {i: g for g, group in enumerate(self.groups) for i in group}
            weakest: dict[int, float] = {}
            for link_ in self.links:
                g = group_of[link_.a]
                weakest[g] = min(weakest.get(g, 1.0), link_.similarity)
            self._weakest = {self.groups[g][0]: value for g, value in weakest.items()}
        return self._weakest.get(min(members), 1.0) if members else 1.0


def link(
    signatures: Sequence[bytes],
    min_correlation: float,
    transforms: Transforms = DEFAULT_TRANSFORMS,
) -> Grouping:
    """Verified near-duplicate links among `signatures` and their connected groups."""
    started = time.monotonic()
    n = len(signatures)
    if n < 2:
        return Grouping([], [], 0, time.monotonic() - started)
    compared = views(signatures, transforms)
    pairs = candidate_pairs(
        compared, min_correlation, transforms.coordinates, negation=transforms.inversion
    )
    sims = similarities(compared, pairs, transforms)
    keep = sims >= min_correlation
    links = [
        Link(int(i), int(j), round(float(s), 4))
        for (i, j), s in zip(pairs[keep], sims[keep], strict=True)
    ]
    return Grouping(_components(n, links), links, len(pairs), time.monotonic() - started)


def _components(n: int, links: Sequence[Link]) -> list[list[int]]:
    parent = list(range(n))

    def find(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for edge in links:
        ri, rj = find(edge.a), find(edge.b)
        if ri != rj:
            parent[max(ri, rj)] = min(ri, rj)
    members: dict[int, list[int]] = defaultdict(list)
    for index in range(n):
        members[find(index)].append(index)
    return sorted(m for m in members.values() if len(m) > 1)


def verified_groups(
    keys: Sequence[str],
    signatures: Sequence[bytes],
    min_correlation: float,
    transforms: Transforms = DEFAULT_TRANSFORMS,
) -> list[list[str]]:
    """Groups (≥ 2 members, sorted) of `keys` linked as verified near-duplicates."""
    found = link(signatures, min_correlation, transforms)
    return sorted(sorted(keys[i] for i in members) for members in found.groups)


# ---------------------------------------------------------------- binary hashes (exact copies)
# 256-bit hashes of a 16x16 thumbnail and a banded multi-index over them: the sample-data
# builder and the trainers' tools use them to find copies with (almost) equal hashes. Two
# fingerprints within `max_distance` agree on at least one of `max_distance + 1` bands, so only
# images sharing a band value are compared. Curation links on `link()` above instead.

KINDS = ("ahash16", "dhash16")
BITS = 256
MAX_BUCKET_PAIRS = 2_000_000  # one degenerate bucket (e.g. blank images) cannot explode


def fingerprint(image: Image.Image, kind: str = "ahash16") -> bytes:
    """32 bytes for a Pillow image (ahash16/dhash16), or the 2,048-byte signature (`KIND`)."""
    from PIL import Image

    if kind == KIND:
        return signature(image)
    gray = image.convert("L")
    if kind == "ahash16":
        pixels = np.asarray(gray.resize((16, 16), Image.Resampling.BOX), dtype=np.float32)
        bits = pixels > pixels.mean()
    elif kind == "dhash16":
        pixels = np.asarray(gray.resize((17, 16), Image.Resampling.BOX), dtype=np.int16)
        bits = pixels[:, 1:] > pixels[:, :-1]
    else:
        raise ValueError(f"unknown fingerprint kind {kind!r}; use one of {(KIND, *KINDS)}")
    return np.packbits(bits).tobytes()


def hamming(a: bytes, b: bytes) -> int:
    x = np.frombuffer(a, dtype=np.uint64) ^ np.frombuffer(b, dtype=np.uint64)
    return int(np.bitwise_count(x).sum())


def _bands(max_distance: int) -> list[tuple[int, int]]:
    count = min(max_distance + 1, BITS)
    edges = np.linspace(0, BITS, count + 1).astype(int)
    return [(int(edges[i]), int(edges[i + 1])) for i in range(count)]


def near_duplicate_pairs(
    fingerprints: Sequence[bytes], max_distance: int
) -> Iterable[tuple[int, int]]:
    """Index pairs (i < j) within `max_distance`, each reported once."""
    n = len(fingerprints)
    if n < 2:
        return []
    packed = np.frombuffer(b"".join(fingerprints), dtype=np.uint8).reshape(n, BITS // 8)
    bits = np.unpackbits(packed, axis=1)
    words = packed.view(np.uint64)
    seen: set[tuple[int, int]] = set()
    pairs: list[tuple[int, int]] = []
    for start, stop in _bands(max_distance):
        keys = np.packbits(bits[:, start:stop], axis=1)
        buckets: dict[bytes, list[int]] = defaultdict(list)
        for index, key in enumerate(keys):
            buckets[key.tobytes()].append(index)
        for members in buckets.values():
            if len(members) < 2:
                continue
            idx = np.asarray(members)
            if len(idx) * (len(idx) - 1) // 2 > MAX_BUCKET_PAIRS:
                idx = idx[: int((2 * MAX_BUCKET_PAIRS) ** 0.5)]
            block = words[idx]
            for offset, i in enumerate(idx[:-1]):
                rest = idx[offset + 1 :]
                dist = np.bitwise_count(block[offset] ^ block[offset + 1 :]).sum(axis=1)
                for j in rest[dist <= max_distance]:
                    pair = (int(i), int(j))
                    if pair not in seen:
                        seen.add(pair)
                        pairs.append(pair)
    return pairs


def group(keys: Sequence[str], fingerprints: Sequence[bytes], max_distance: int) -> list[list[str]]:
    """Groups (≥ 2 members, sorted) of `keys` linked by near-duplicate fingerprints."""
    parent = list(range(len(keys)))

    def find(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for i, j in near_duplicate_pairs(fingerprints, max_distance):
        ri, rj = find(i), find(j)
        if ri != rj:
            parent[max(ri, rj)] = min(ri, rj)
    members: dict[int, list[str]] = defaultdict(list)
    for index, key in enumerate(keys):
        members[find(index)].append(key)
    return sorted(sorted(m) for m in members.values() if len(m) > 1)
