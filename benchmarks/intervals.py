"""Cost and coverage of the evaluation's cluster-bootstrap intervals
(`patient_ml.evaluation.intervals`).

Cost: wall time of `ClusterBootstrap.compare(challenger, champion)` (both models' intervals
and their paired differences, every imgClf metric) for 500 test images in 125 clusters x 2,000
resamples, binary and 3 labels, and of the imgSeg metrics (2 labels), median of `--repeat`.

Coverage: `--sets` simulated test sets of 100 clusters x 5 images whose correctness is
correlated within a cluster (intra-cluster correlation 0.4, population accuracy exactly 0.8):
how often the 95 % interval of the accuracy holds 0.8 when clusters are resampled, and when
images are (what the product did before); and the mean width of each, and of the paired and
unpaired champion-challenger difference for two models that disagree on 8 % of the images.

    .venv/bin/python benchmarks/intervals.py [--sets 1000] [--repeat 5]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import smoke
from patient_ml.evaluation.intervals import (
    ClassificationStatistic,
    ClusterBootstrap,
    SegmentationStatistic,
)


def classifier(rng: np.random.Generator, n: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    y = rng.integers(0, k, n)
    p = rng.dirichlet(np.ones(k), n)
    p[np.arange(n), y] += rng.random(n)
    return y, p / p.sum(axis=1, keepdims=True)


def timed(work: object, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        work()  # type: ignore[operator]
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def cost(repeat: int) -> None:
    rng = np.random.default_rng(0)
    clusters = [f"c{i // 4}" for i in range(500)]
    boot = ClusterBootstrap(clusters)
    print("500 test images, 125 clusters, 2,000 resamples (median of", repeat, "runs):")
    for k in (2, 3):
        y, p = classifier(rng, 500, k)
        labels = list(range(k))
        a = ClassificationStatistic.of(labels, y, p)
        b = ClassificationStatistic.of(labels, y, np.roll(p, 7, axis=0))
        seconds = timed(lambda a=a, b=b: boot.compare(a, b), repeat)
        print(f"  imgClf, {k} labels: challenger + champion + paired differences "
              f"({len(a.names)} metrics each) in {seconds:.3f} s")  # fmt: skip
    counts = rng.integers(0, 400, (500, 2, 3))
    seg = SegmentationStatistic.of([1, 2], counts)
    seg2 = SegmentationStatistic.of([1, 2], np.roll(counts, 3, axis=0))
    seconds = timed(lambda: boot.compare(seg, seg2), repeat)
    print(f"  imgSeg, 2 labels: challenger + champion + paired differences in {seconds:.3f} s")


def clustered(rng: np.random.Generator, clusters: int, size: int, rho: float) -> tuple:
    a, b = 0.8 * (1 - rho) / rho, 0.2 * (1 - rho) / rho
    right = rng.random(clusters * size) < np.repeat(rng.beta(a, b, clusters), size)
    y = rng.integers(0, 2, clusters * size)
    predicted = np.where(right, y, 1 - y)
    confidence = rng.uniform(0.55, 0.95, y.size)
    p = np.column_stack([np.where(predicted == 0, confidence, 1 - confidence),
                         np.where(predicted == 1, confidence, 1 - confidence)])  # fmt: skip
    return [f"c{i // size}" for i in range(y.size)], y, p


def coverage(sets: int) -> None:
    rng = np.random.default_rng(7)
    hits = {"cluster": 0, "image": 0}
    widths: dict[str, list[float]] = {"cluster": [], "image": [], "paired": [], "unpaired": []}
    for i in range(sets):
        ids, y, p = clustered(rng, 100, 5, 0.4)
        challenger = ClassificationStatistic.of([0, 1], y, p)
        for unit, boot in (("cluster", ClusterBootstrap(ids, seed=i)),
                           ("image", ClusterBootstrap(None, images=len(y), seed=i))):  # fmt: skip
            found = boot.estimate(challenger)["accuracy"]
            assert found.low is not None and found.high is not None
            hits[unit] += found.low <= 0.8 <= found.high
            widths[unit].append(found.high - found.low)
        other = p.copy()
        flip = rng.random(len(y)) < 0.08
        other[flip] = other[flip][:, ::-1]
        champion = ClassificationStatistic.of([0, 1], y, other)
        paired = ClusterBootstrap(ids, seed=i).compare(challenger, champion)
        difference = paired.differences["accuracy"]
        assert difference.low is not None and difference.high is not None
        widths["paired"].append(difference.high - difference.low)
        mine, theirs = paired.challenger["accuracy"], paired.champion["accuracy"]  # type: ignore[index]
        # Unpaired: the two intervals' half-widths added in quadrature.
        half = [(x.high - x.low) / 2 for x in (mine, theirs)]  # type: ignore[operator]
        widths["unpaired"].append(2 * float(np.hypot(*half)))
    print(f"{sets} simulated test sets, 100 clusters x 5 images, intra-cluster correlation 0.4:")
    for unit in ("cluster", "image"):
        share, width = hits[unit] / sets, np.mean(widths[unit])
        print(f"  resampling {unit}s: 95 % interval of the accuracy covers 0.8 in {share:.1%} "
              f"of sets; mean width {width:.3f}")  # fmt: skip
    paired, unpaired = np.mean(widths["paired"]), np.mean(widths["unpaired"])
    print(f"  challenger - champion (8 % of answers differ): paired interval width "
          f"{paired:.3f}, unpaired {unpaired:.3f}")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sets", type=int, default=1000, help="simulated test sets")
    parser.add_argument("--repeat", type=int, default=5, help="timed runs per case")
    args = smoke.parse(parser, sets=20, repeat=1)
    cost(args.repeat)
    coverage(args.sets)


if __name__ == "__main__":
    main()
