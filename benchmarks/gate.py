"""Cost of the operating point and error rates of the non-inferiority gate.

Cost (median of `--repeat`): `operating_point.choose` on 1,000 validation answers (each rule);
`ClusterBootstrap.compare` of challenger and champion with and without the metrics at the
operating point joined in (500 test images in 125 clusters x 2,000 resamples, 2 and 3 labels).

Error rates: `--sets` simulated test sets of 100 patients x 4 images (a patient's images share
a random effect, and the challenger a patient effect of its own, so neither the images nor the
differences are independent), two models deciding at threshold 0.5 (champion sensitivity
0.85), and the rule "sensitivity may be worse by less than 0.02" checked as the gate does
(lower end of the paired 95 % interval above -0.02), with patients resampled (the product) and
with images resampled (what ignoring clusters gives):

- a challenger truly worse by exactly the margin: how often the rule wrongly passes (the
  gate's false pass rate; the one-sided 2.5 % of a 95 % interval is the aim);
- truly worse by 0.06: the same, far from the boundary;
- exactly as good: how often the rule passes (its power at this size: a small margin needs a
  large test set).

    .venv/bin/python benchmarks/gate.py [--sets 300] [--repeat 5]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import smoke
from patient_ml.config.models import NonInferiorityRule
from patient_ml.config.platform_metrics import direction_of
from patient_ml.evaluation.intervals import ClassificationStatistic, ClusterBootstrap, Joined
from patient_ml.evaluation.noninferiority import Stratum, check_rule
from patient_ml.evaluation.operating_point import (
    LabelRef,
    OperatingPoint,
    OperatingPointStatistic,
    Wanted,
    choose,
)

POSITIVE = LabelRef(index=1, name="tumor")


def timed(work: Callable[[], object], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        work()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def classifier(rng: np.random.Generator, n: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    y = rng.integers(0, k, n)
    p = rng.dirichlet(np.ones(k), n)
    p[np.arange(n), y] += rng.random(n)
    return y, p / p.sum(axis=1, keepdims=True)


def cost(repeat: int) -> None:
    rng = np.random.default_rng(0)
    y, p = classifier(rng, 1000, 2)
    print("choose() on 1,000 validation answers (median of", repeat, "runs):")
    for rule, target in (("youden", None), ("targetSensitivity", 0.95)):
        wanted = Wanted(rule, POSITIVE, target, False)  # type: ignore[arg-type]
        seconds = timed(lambda w=wanted: choose(w, [0, 1], y, p), repeat)
        print(f"  {rule}: {seconds * 1000:.1f} ms")
    boot = ClusterBootstrap([f"c{i // 4}" for i in range(500)])
    print("500 test images, 125 clusters, 2,000 resamples, challenger + champion + paired:")
    for k in (2, 3):
        labels = list(range(k))
        pairs = [(i, str(i)) for i in labels]
        y, p = classifier(rng, 500, k)
        q = np.roll(p, 7, axis=0)
        base = [ClassificationStatistic.of(labels, y, x) for x in (p, q)]
        point = OperatingPoint(rule="youden", positive_label=POSITIVE, threshold=0.5)
        at = [OperatingPointStatistic.of(point, pairs, y.tolist(), x) for x in (p, q)]
        joined = [Joined((b, a)) for b, a in zip(base, at, strict=True)]
        plain = timed(lambda b=base: boot.compare(b[0], b[1]), repeat)
        both = timed(lambda j=joined: boot.compare(j[0], j[1]), repeat)
        print(f"  {k} labels: {len(base[0].names)} metrics in {plain:.3f} s; with the "
              f"{len(at[0].names)} at the operating point {both:.3f} s")  # fmt: skip


MODEL_EFFECT = 0.8  # sd of the challenger's own patient effect


def population(
    rng: np.random.Generator, patients: int, signal: float, noise_seed: int, model_effect: float
) -> tuple:
    """Labels, patient ids and one model's tumour confidence for `patients` x 4 images."""
    images = patients * 4
    cluster = np.repeat(np.arange(patients), 4)
    y = rng.integers(0, 2, images)
    effect = rng.normal(0, 1.0, patients)[cluster]  # shared by a patient's images, both models
    mine = np.random.default_rng(noise_seed)
    own = mine.normal(0, model_effect, patients)[cluster] + mine.normal(0, 1.0, images)
    logit = np.where(y == 1, signal, -1.5) + effect + own
    return y, cluster, 1 / (1 + np.exp(-logit))


def signal_for(sensitivity: float, model_effect: float = 0.0) -> float:
    """The positive-class signal giving this population sensitivity at threshold 0.5."""
    sd = np.sqrt(2 + model_effect**2)
    draws = np.random.default_rng(99).normal(0, sd, 400_000)
    low, high = -3.0, 6.0
    for _ in range(60):
        mid = (low + high) / 2
        if (mid + draws > 0).mean() < sensitivity:
            low = mid
        else:
            high = mid
    return (low + high) / 2


def error_rates(sets: int) -> None:
    rule = NonInferiorityRule(metric="sensitivity:tumor", margin=0.02)
    point = OperatingPoint(rule="youden", positive_label=POSITIVE, threshold=0.5)
    champion_signal = signal_for(0.85)
    print(f"{sets} simulated test sets of 100 patients x 4 images, sensitivity 0.85 (champion); "
          "rule: sensitivity worse by less than 0.02")  # fmt: skip
    scenarios = (
        ("truly worse by 0.02 (the margin)", 0.83),
        ("truly worse by 0.06", 0.79),
        ("exactly as good", 0.85),
    )
    for name, sensitivity in scenarios:
        challenger_signal = signal_for(sensitivity, MODEL_EFFECT)
        passed = {"patients resampled": 0, "images resampled": 0}
        for s in range(sets):
            rng = np.random.default_rng(1000 + s)
            state = rng.bit_generator.state
            y, cluster, champ = population(rng, 100, champion_signal, 2 * s, 0.0)
            rng.bit_generator.state = state  # the same patients and labels for the challenger
            _, _, chall = population(rng, 100, challenger_signal, 2 * s + 1, MODEL_EFFECT)
            stats = [
                OperatingPointStatistic.of(
                    point, [(0, "normal"), (1, "tumor")], y.tolist(), np.column_stack([1 - x, x])
                )
                for x in (chall, champ)
            ]
            for unit, ids in (("patients resampled", cluster.astype(str).tolist()),
                              ("images resampled", None)):  # fmt: skip
                boot = ClusterBootstrap(ids, images=len(y), resamples=1000, seed=s)
                found = boot.compare(stats[0], stats[1])
                stratum = Stratum(
                    "overall", "overall",
                    {k: v.value for k, v in found.challenger.items() if v.value is not None},
                    {k: v.value for k, v in found.champion.items() if v.value is not None}
                    if found.champion else {},
                    {k: v.model_dump() for k, v in found.differences.items()},
                )  # fmt: skip
                passed[unit] += check_rule(rule, stratum, direction_of).passed
        shares = ", ".join(f"{unit}: {n / sets:.1%}" for unit, n in passed.items())
        print(f"  challenger {name}: the rule passes in {shares}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sets", type=int, default=300)
    parser.add_argument("--repeat", type=int, default=5)
    args = smoke.parse(parser, sets=20, repeat=1)
    cost(args.repeat)
    error_rates(args.sets)


if __name__ == "__main__":
    main()
