"""Perceptual fingerprints and near-duplicate groups (re-crops, re-scales, re-windowed or
re-encoded copies of one image), found in near-linear time.

Fingerprints are 256-bit hashes of a 16x16 thumbnail: `ahash16` (pixel above the mean; robust
to scaling, brightness, contrast and JPEG re-encoding) or `dhash16` (horizontal gradient signs;
stricter). Two images are near-duplicates when their Hamming distance is at most
`maxDistance`. Grouping uses multi-index hashing: the 256 bits are cut into `maxDistance + 1`
bands, and by the pigeonhole principle two fingerprints within the distance agree on at least
one whole band, so only images that share a band value are compared — not all pairs.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

KINDS = ("ahash16", "dhash16")
BITS = 256
MAX_BUCKET_PAIRS = 2_000_000  # one degenerate bucket (e.g. blank images) cannot explode


def fingerprint(image: Any, kind: str = "ahash16") -> bytes:
    """32 bytes for a Pillow image."""
    from PIL import Image

    gray = image.convert("L")
    if kind == "ahash16":
        pixels = np.asarray(gray.resize((16, 16), Image.Resampling.BOX), dtype=np.float32)
        bits = pixels > pixels.mean()
    elif kind == "dhash16":
        pixels = np.asarray(gray.resize((17, 16), Image.Resampling.BOX), dtype=np.int16)
        bits = pixels[:, 1:] > pixels[:, :-1]
    else:
        raise ValueError(f"unknown fingerprint kind {kind!r}; use one of {KINDS}")
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
