"""Near-duplicate images (re-windowed, re-scaled, re-encoded, sharpened, cropped or mirrored
copies of one slice): candidates found generously, links made only for verified copies.

Signature (stored per image, 2 KB): two 32x32 grayscale thumbnails made with an antialiasing
(box) filter — one of the whole image and one of its content box (the image cropped to where
the anatomy is, so a crop or a pad of the dark margin does not move the content) — each
stretched to 0..255.

Similarity of two images: the Pearson correlation of their z-scored thumbnails (invariant to
brightness, contrast and window; close to 1 for copies after gamma, JPEG, rescaling filters and
sharpening), taken as the best of: whole vs whole, content box vs content box, and each against
the other's mirror image (a left-right flip is the other display convention of one slice:
radiological vs neurological). Two images are linked when the similarity is at least
`minCorrelation`; look-alike slices of different people stay below it (measured on Br35H, see
README), so groups do not chain.

Candidates without misses: for z-scored unit vectors, correlation >= t is
distance <= sqrt(2 (1 - t)). Projecting on a few orthonormal axes (principal axes of the
thumbnails — a perceptual hash without the binarisation) can only shrink distances, so the pairs
within that radius in the projected space hold every pair that can pass, and few others; a
binary hash at a Hamming distance cannot promise that (re-windowed copies of one Br35H slice lie
up to 34 of 256 bits apart). The mirrored comparison needs no second point per image: the
thumbnail splits into a mirror-symmetric and an antisymmetric part, and the absolute values of
the antisymmetric projections give one feature whose distances bound both the plain and the
mirrored distance from below. That bound is computed for every pair on 96 such axes, block by
block as one float32 matrix product on all cores; the plain-or-mirrored bounds on those axes
and then on 208 drop most of what it keeps; only the rest is verified on the full thumbnails.
The work is quadratic with a small constant (nanoseconds a pair, benchmarks/leakage.py
--scale-only) that hardly depends on the data: a k-d tree radius query (the first version) has
less to do on spread-out images, but look-alike brain slices put a large share of all pairs
within its radius on a few axes, and 100,000 of them took it several times longer.
"""

from __future__ import annotations

import os
import threading
import time
from collections import defaultdict
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

KIND = "thumb32-v2"  # the signature curation stores and links on; bump when it changes
SIDE = 32
SIGNATURE_BYTES = 2 * SIDE * SIDE
DEFAULT_MIN_CORRELATION = 0.94  # measured: benchmarks/leakage.py, README
_INDEX_DIMS = 64
# candidates: a blocked matrix product bounds every pair on 80 symmetric + 16 |antisymmetric|
# principal axes, then exact lower bounds on 80 + 16 and on 160 + 48 axes, then the thumbnails
_SYM_DIMS, _ANTI_DIMS = 160, 48
_BLOCK_DIMS = (80, 16)
_BLOCK = (512, 4_096)  # rows x columns of one product: 8 MB per thread
_MAX_THREADS = 4
_BASIS_SAMPLE = 20_000
_CHUNK = 8_192


def signature(image: Any) -> bytes:
    """2,048 bytes for a Pillow image: whole-image and content-box 32x32 thumbnails."""
    from PIL import Image

    gray = image.convert("F") if image.mode in ("I", "I;16", "F") else image.convert("L")
    box = Image.Resampling.BOX
    whole = np.asarray(gray.resize((SIDE, SIDE), box), dtype=np.float32)
    content = np.asarray(gray.resize((SIDE, SIDE), box, box=_content_box(gray)), dtype=np.float32)
    return _to_bytes(whole) + _to_bytes(content)


def _content_box(gray: Any) -> tuple[float, float, float, float]:
    """The box (in pixels) of the rows and columns holding at least a tenth of the busiest
    row's (column's) pixels above a quarter of the way from the background (1st percentile)
    to the brightest (99th), on a view of at most 256 pixels a side: a dark margin added or
    cut away does not move it."""
    from PIL import Image

    width, height = gray.size
    factor = min(1.0, 256 / max(width, height))
    view_w, view_h = max(1, round(width * factor)), max(1, round(height * factor))
    view = np.asarray(gray.resize((view_w, view_h), Image.Resampling.BOX), dtype=np.float32)
    whole = (0.0, 0.0, float(width), float(height))
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


def _to_bytes(thumb: np.ndarray) -> bytes:
    low, high = float(thumb.min()), float(thumb.max())
    scaled = (thumb - low) * (255.0 / (high - low)) if high > low else np.zeros_like(thumb)
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8).tobytes()


def unit_vectors(signatures: Sequence[bytes]) -> np.ndarray:
    """(n, 2, 1024) float32: each thumbnail z-scored and scaled to length 1 (flat ones: 0)."""
    raw = np.frombuffer(b"".join(signatures), dtype=np.uint8).reshape(len(signatures), 2, -1)
    out = raw.astype(np.float32)
    out -= out.mean(axis=2, keepdims=True)
    # np.linalg.norm's arithmetic with one 4-byte-per-value temporary fewer (same bits)
    norms = np.sqrt(np.add.reduce(np.square(out), axis=2, keepdims=True))
    np.divide(out, norms, out=out, where=norms > 1e-6)
    out[norms[..., 0] <= 1e-6] = 0.0
    return out


def _mirror(vectors: np.ndarray) -> np.ndarray:
    return vectors.reshape(*vectors.shape[:-1], SIDE, SIDE)[..., ::-1].reshape(vectors.shape)


def projection(points: np.ndarray, dims: int = _INDEX_DIMS) -> np.ndarray:
    """An orthonormal basis (dims, d) of the principal axes of `points` (a fixed-seed sample
    of them): projecting on it keeps the most of the distances in few dimensions and can only
    shrink them, so a radius query on the projections misses no pair."""
    rng = np.random.default_rng(0)
    sample = points[rng.choice(len(points), min(len(points), _BASIS_SAMPLE), replace=False)]
    centred = sample - sample.mean(axis=0)
    _, vectors = np.linalg.eigh(centred.T @ centred)
    return np.ascontiguousarray(vectors[:, ::-1][:, : min(dims, points.shape[1])].T)


def _mirror_features(view: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Projections of the mirror-symmetric and -antisymmetric parts of unit vectors.

    x = s + a with s = (x + mirror x) / 2, a = (x - mirror x) / 2 (orthogonal), so
    |x - y|^2 = |s_x - s_y|^2 + |a_x - a_y|^2 and |x - mirror y|^2 = |s_x - s_y|^2 +
    |a_x + a_y|^2: one point per image serves the plain and the mirrored comparison.

    Each part is fixed by its left half: (left ± mirrored right) / sqrt(2) are its coordinates
    in an orthonormal basis of the symmetric (antisymmetric) subspace, 512 numbers instead of
    1,024, so the principal axes and projections cost a half to a quarter."""
    grid = view.reshape(len(view), SIDE, SIDE)
    left, right = grid[:, :, : SIDE // 2], grid[:, :, : SIDE // 2 - 1 : -1]
    sym = np.add(left, right).reshape(len(view), -1)
    anti = np.subtract(left, right).reshape(len(view), -1)
    sym *= np.float32(np.sqrt(0.5))
    anti *= np.float32(np.sqrt(0.5))
    return (
        np.ascontiguousarray(sym @ projection(sym, _SYM_DIMS).T),
        np.ascontiguousarray(anti @ projection(anti, _ANTI_DIMS).T),
    )


def _within(
    sym: np.ndarray, anti: np.ndarray, pairs: np.ndarray, dims: tuple[int, int], radius: float
) -> np.ndarray:
    """The pairs whose projected distance (plain or mirrored, on the first `dims` symmetric
    and antisymmetric axes: a lower bound of the true one) is within `radius`."""
    keep = []
    s_dims, a_dims = dims
    for start in range(0, len(pairs), _CHUNK * 32):
        chunk = pairs[start : start + _CHUNK * 32]
        i, j = chunk[:, 0], chunk[:, 1]
        ds = sym[i, :s_dims] - sym[j, :s_dims]
        ai, aj = anti[i, :a_dims], anti[j, :a_dims]
        plain, flipped = ai - aj, ai + aj
        dist = np.einsum("ij,ij->i", ds, ds) + np.minimum(
            np.einsum("ij,ij->i", plain, plain), np.einsum("ij,ij->i", flipped, flipped)
        )
        keep.append(chunk[dist <= radius * radius])
    return np.concatenate(keep) if keep else pairs[:0]


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


def candidate_pairs(vectors: np.ndarray, min_correlation: float) -> np.ndarray:
    """(m, 2) index pairs i < j that may correlate ≥ `min_correlation` in some view (whole,
    content box, either mirrored): every such pair is among them.

    Per view, one point per image: the projections of its mirror-symmetric part and the
    absolute projections of its antisymmetric part, a feature whose distance is a lower bound
    of the distance to the other image plain and mirrored (|u - v| and |u + v| are both at
    least ||u| - |v||). That bound for every pair on a few axes (`_close_pairs`), then exact
    lower bounds on more axes, keep every pair that can pass."""
    from threadpoolctl import threadpool_limits

    radius = float(np.sqrt(max(2.0 * (1.0 - min_correlation), 0.0))) + 1e-4
    found = []
    # one BLAS thread: BLAS's own threads synchronise on every call (every block of the
    # product, every step of the eigendecomposition), several times the CPU on a busy machine
    with threadpool_limits(1, user_api="blas"):
        for view in (0, 1):
            sym, anti = _mirror_features(vectors[:, view])
            pairs = _close_pairs(sym, anti, radius)
            found.append(_within(sym, anti, pairs, (_SYM_DIMS, _ANTI_DIMS), radius))
    pairs = np.sort(np.concatenate(found), axis=1)
    return np.unique(pairs, axis=0) if len(pairs) else pairs.reshape(0, 2)


def _close_pairs(sym: np.ndarray, anti: np.ndarray, radius: float) -> np.ndarray:
    """The pairs within `radius`, plain or mirrored, on the first `_BLOCK_DIMS` symmetric and
    antisymmetric axes: the feature (symmetric, |antisymmetric|) of every pair, block by block,
    as one float32 matrix product, then the plain-or-mirrored bound for what passes.

    With (f, -|f|²/2, 1) on the left and (f, 1, -|f|²/2) on the right, a product is
    f_x·f_y - |f_x|²/2 - |f_y|²/2 = -|f_x - f_y|²/2, so a block of products is a block of
    distances: a few nanoseconds a pair, hardly more where many pairs lie close (quadratic in
    the images), and memory stays within a block. Sorted on the first axis, a band of rows
    skips the columns beyond `radius` on it; only the upper triangle is computed. Bands of
    rows run on all cores (numpy lets go of the GIL)."""
    s_dims, a_dims = _BLOCK_DIMS
    feature = np.concatenate([sym[:, :s_dims], np.abs(anti[:, :a_dims])], axis=1)
    order = np.argsort(feature[:, 0], kind="stable")
    feature = feature[order]
    half = -0.5 * np.einsum("ij,ij->i", feature, feature)[:, None]
    ones = np.ones_like(half)
    left = np.concatenate([feature, half, ones], axis=1)
    right = np.concatenate([feature, ones, half], axis=1)
    signed = anti[order, :a_dims]
    # float32 rounding of a product is well under 1e-4 (lengths <= 1, < 100 terms)
    first, bound = feature[:, 0], np.float32(-0.5 * radius * radius - 1e-4)
    rows, cols = _BLOCK
    buffers = threading.local()

    def band(top: int) -> np.ndarray:
        if not hasattr(buffers, "products"):  # one block's products and mask per thread
            buffers.products = np.empty(rows * cols, dtype=np.float32)
            buffers.close = np.empty(rows * cols, dtype=bool)
        bottom = min(top + rows, len(feature))
        end = int(np.searchsorted(first, first[bottom - 1] + radius, side="right"))
        found = [np.empty((0, 2), dtype=np.int64)]
        for start in range(top, end, cols):
            stop = min(start + cols, end)
            size = (bottom - top) * (stop - start)
            block = buffers.products[:size].reshape(bottom - top, stop - start)
            np.matmul(left[top:bottom], right[start:stop].T, out=block)
            close = np.greater_equal(buffers.products[:size], bound, out=buffers.close[:size])
            i, j = np.divmod(np.flatnonzero(close), stop - start)
            i += top
            j += start
            found.append(np.stack([i[j > i], j[j > i]], axis=1))
        return _within(feature, signed, np.concatenate(found), _BLOCK_DIMS, radius)

    workers = min(os.cpu_count() or 1, _MAX_THREADS)
    with ThreadPoolExecutor(workers) as pool:
        bands = list(pool.map(band, range(0, len(feature), rows)))
    return order[np.concatenate([np.empty((0, 2), dtype=np.int64), *bands])]


def similarities(vectors: np.ndarray, pairs: np.ndarray) -> np.ndarray:
    """Best correlation of each pair over whole/content views, plain or mirrored."""
    out = np.empty(len(pairs), dtype=np.float32)
    for start in range(0, len(pairs), _CHUNK):
        chunk = pairs[start : start + _CHUNK]
        a = vectors[chunk[:, 0]]  # (m, 2, d): whole, content box
        b = vectors[chunk[:, 1]]
        b = np.concatenate([b, _mirror(b)], axis=1)  # (m, 4, d): plain, mirrored
        products = np.matmul(a, b.transpose(0, 2, 1))  # (m, 2, 4): view of a x view of b
        # whole with whole (plain, mirrored) and content box with content box (plain, mirrored)
        out[start : start + len(chunk)] = products[:, [0, 0, 1, 1], [0, 2, 1, 3]].max(axis=1)
    return out


def link(signatures: Sequence[bytes], min_correlation: float) -> Grouping:
    """Verified near-duplicate links among `signatures` and their connected groups."""
    started = time.monotonic()
    n = len(signatures)
    if n < 2:
        return Grouping([], [], 0, time.monotonic() - started)
    vectors = unit_vectors(signatures)
    pairs = candidate_pairs(vectors, min_correlation)
    sims = similarities(vectors, pairs)
    keep = sims >= min_correlation
    links = [
        Link(int(i), int(j), round(float(s), 4))
        for (i, j), s in zip(pairs[keep], sims[keep], strict=True)
    ]
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
    groups = sorted(m for m in members.values() if len(m) > 1)
    return Grouping(groups, links, len(pairs), time.monotonic() - started)


def verified_groups(
    keys: Sequence[str], signatures: Sequence[bytes], min_correlation: float
) -> list[list[str]]:
    """Groups (≥ 2 members, sorted) of `keys` linked as verified near-duplicates."""
    found = link(signatures, min_correlation)
    return sorted(sorted(keys[i] for i in members) for members in found.groups)


# ---------------------------------------------------------------- binary hashes (exact copies)
# 256-bit hashes of a 16x16 thumbnail and a banded multi-index over them: the sample-data
# builder and the trainers' tools use them to find copies with (almost) equal hashes. Two
# fingerprints within `max_distance` agree on at least one of `max_distance + 1` bands, so only
# images sharing a band value are compared. Curation links on `link()` above instead.

KINDS = ("ahash16", "dhash16")
BITS = 256
MAX_BUCKET_PAIRS = 2_000_000  # one degenerate bucket (e.g. blank images) cannot explode


def fingerprint(image: Any, kind: str = "ahash16") -> bytes:
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
