"""Cluster-bootstrap intervals: the same point estimates as the metrics, coverage on simulated
clustered data (where resampling images under-covers), paired differences, determinism and the
degenerate cases."""

from __future__ import annotations

import numpy as np
import pytest

from patient_ml.evaluation.intervals import (
    ClassificationStatistic,
    ClusterBootstrap,
    SegmentationStatistic,
)
from patient_ml.evaluation.metrics import (
    classification_metrics,
    pixel_counts,
    segmentation_metrics,
)


def _classifier(rng: np.random.Generator, n: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Truth and rounded (so, tied) probabilities of a fair classifier."""
    y = rng.integers(0, k, n)
    p = rng.dirichlet(np.ones(k), n)
    p[np.arange(n), y] += rng.random(n)
    return y, np.round(p / p.sum(axis=1, keepdims=True), 2)


@pytest.mark.parametrize("k", [2, 3])
def test_point_estimates_are_the_platform_metrics(k: int) -> None:
    rng = np.random.default_rng(k)
    y, p = _classifier(rng, 300, k)
    labels, names = [3, 7, 9][:k], ["no", "yes", "maybe"][:k]
    truth = [labels[v] for v in y]
    expected = classification_metrics(labels, truth, p.tolist())
    clusters = [f"patient-{i // 3}" for i in range(len(y))]
    found = ClusterBootstrap(clusters, resamples=50).estimate(
        ClassificationStatistic.of(labels, truth, p, names)
    )
    for name in ("accuracy", "balancedAccuracy", "macroF1", "auroc", "logLoss",
                 "expectedCalibrationError"):  # fmt: skip
        assert found[name].value == pytest.approx(expected[name], abs=1e-12), name
        assert found[name].low is not None and found[name].high is not None
        assert found[name].low <= found[name].value <= found[name].high, name
    for index, name in zip(labels, names, strict=True):
        per_class = expected["perClass"][str(index)]
        assert found[f"precision:{name}"].value == pytest.approx(per_class["precision"])
        assert found[f"recall:{name}"].value == pytest.approx(per_class["recall"])


def test_segmentation_point_estimates_and_intervals() -> None:
    rng = np.random.default_rng(5)
    truths = [rng.integers(0, 3, (8, 8)) for _ in range(40)]
    predicted = [
        np.where(rng.random(t.shape) < 0.7, t, rng.integers(0, 3, t.shape)) for t in truths
    ]
    expected = segmentation_metrics([1, 2], truths, predicted)
    counts = [pixel_counts([1, 2], t, q) for t, q in zip(truths, predicted, strict=True)]
    found = ClusterBootstrap([str(i // 4) for i in range(40)], resamples=200).estimate(
        SegmentationStatistic.of([1, 2], counts, ["lesion", "edema"])
    )
    assert found["meanDice"].value == pytest.approx(expected["meanDice"])
    assert found["meanIoU"].value == pytest.approx(expected["meanIoU"])
    assert found["dice:edema"].value == pytest.approx(expected["perLabel"]["2"]["dice"])
    assert found["iou:lesion"].value == pytest.approx(expected["perLabel"]["1"]["iou"])
    for interval in found.values():
        assert interval.low is not None and interval.high is not None
        assert interval.low < interval.value < interval.high


def _clustered_accuracy_data(
    rng: np.random.Generator, clusters: int, size: int, rho: float
) -> tuple[list[str], list[int], np.ndarray]:
    """Binary truth and probabilities whose correctness is correlated within clusters: each
    cluster's chance of being classified right is Beta-distributed around 0.8 (intra-cluster
    correlation `rho`), so the population accuracy is exactly 0.8."""
    a = 0.8 * (1 - rho) / rho
    b = 0.2 * (1 - rho) / rho
    chance = np.repeat(rng.beta(a, b, clusters), size)
    right = rng.random(clusters * size) < chance
    y = rng.integers(0, 2, clusters * size)
    predicted = np.where(right, y, 1 - y)
    confidence = rng.uniform(0.55, 0.95, y.size)
    p = np.column_stack([np.where(predicted == 0, confidence, 1 - confidence),
                         np.where(predicted == 1, confidence, 1 - confidence)])  # fmt: skip
    return [f"c{i // size}" for i in range(y.size)], y.tolist(), p


def test_cluster_intervals_cover_and_image_intervals_do_not_when_clusters_are_large() -> None:
    """250 simulated test sets of 100 clusters x 5 images: the 95 % cluster interval of the
    accuracy holds the population value about 95 % of the time, the image-level one far less
    (design effect 1 + (5 - 1) x 0.4 = 2.6: it is ~1/√2.6 as wide as it should be)."""
    rng = np.random.default_rng(2024)
    covered = {"cluster": 0, "image": 0}
    repetitions = 250
    for repetition in range(repetitions):
        clusters, y, p = _clustered_accuracy_data(rng, 100, 5, rho=0.4)
        statistic = ClassificationStatistic.of([0, 1], y, p)
        for unit, boot in (
            ("cluster", ClusterBootstrap(clusters, resamples=200, seed=repetition)),
            ("image", ClusterBootstrap(None, images=len(y), resamples=200, seed=repetition)),
        ):
            accuracy = boot.estimate(statistic)["accuracy"]
            assert accuracy.low is not None and accuracy.high is not None
            covered[unit] += accuracy.low <= 0.8 <= accuracy.high
    cluster, image = covered["cluster"] / repetitions, covered["image"] / repetitions
    # Measured over 4 x 250 sets: cluster 0.928-0.960, image 0.740-0.784.
    assert 0.90 <= cluster <= 0.985, cluster
    assert image <= 0.83, image
    assert cluster - image >= 0.10, (cluster, image)


def test_copies_add_no_evidence() -> None:
    """Four identical copies of every image: the cluster interval is the interval of the
    images without copies; the image-level interval shrinks by about half."""
    rng = np.random.default_rng(9)
    y, p = _classifier(rng, 200, 2)
    ids = [f"c{i}" for i in range(200)]
    alone = ClusterBootstrap(ids).estimate(ClassificationStatistic.of([0, 1], y, p))
    copied = ClassificationStatistic.of([0, 1], np.repeat(y, 4), np.repeat(p, 4, axis=0))
    by_cluster = ClusterBootstrap(np.repeat(ids, 4).tolist()).estimate(copied)
    by_image = ClusterBootstrap(None, images=800).estimate(copied)
    for name in ("accuracy", "balancedAccuracy", "auroc", "logLoss", "recall:1"):
        assert by_cluster[name].low == pytest.approx(alone[name].low, abs=1e-12), name
        assert by_cluster[name].high == pytest.approx(alone[name].high, abs=1e-12), name
    width = {
        name: (by_image[name].high - by_image[name].low)  # type: ignore[operator]
        / (alone[name].high - alone[name].low)  # type: ignore[operator]
        for name in ("accuracy", "auroc")
    }
    assert all(0.35 < w < 0.65 for w in width.values()), width
    assert ClusterBootstrap(np.repeat(ids, 4).tolist()).resampling.clusters == 200


def test_paired_difference_is_narrower_than_unpaired_when_models_agree_mostly() -> None:
    rng = np.random.default_rng(11)
    clusters, y, p = _clustered_accuracy_data(rng, 80, 5, rho=0.3)
    champion_p = p.copy()
    flip = rng.random(len(y)) < 0.08  # the champion differs on 8 % of the images
    champion_p[flip] = champion_p[flip][:, ::-1]
    challenger = ClassificationStatistic.of([0, 1], y, p)
    champion = ClassificationStatistic.of([0, 1], y, champion_p)
    paired = ClusterBootstrap(clusters).compare(challenger, champion)
    difference = paired.differences["accuracy"]
    assert difference.value == pytest.approx(
        paired.challenger["accuracy"].value - paired.champion["accuracy"].value  # type: ignore[index, operator]
    )
    # Unpaired: each model on its own resamples (as two separate intervals would treat them).
    draws_a = _resampled(ClusterBootstrap(clusters, seed=1), challenger, "accuracy")
    draws_b = _resampled(ClusterBootstrap(clusters, seed=2), champion, "accuracy")
    unpaired = np.quantile(draws_a - draws_b, [0.025, 0.975])
    assert difference.low is not None and difference.high is not None
    paired_width = difference.high - difference.low
    assert paired_width < 0.5 * (unpaired[1] - unpaired[0]), (paired_width, unpaired)
    assert difference.low <= difference.value <= difference.high


def _resampled(boot: ClusterBootstrap, statistic: ClassificationStatistic, name: str) -> np.ndarray:
    prepared = statistic.prepare(boot.index, boot.clusters)
    column = statistic.names.index(name)
    return np.concatenate([prepared(w)[:, column] for w in boot.weights()])


def test_same_input_same_interval_and_example_order_does_not_matter() -> None:
    rng = np.random.default_rng(3)
    y, p = _classifier(rng, 120, 2)
    clusters = [f"patient-{rng.integers(0, 40)}" for _ in range(120)]
    statistic = ClassificationStatistic.of([0, 1], y, p)
    first = ClusterBootstrap(clusters).estimate(statistic)
    assert ClusterBootstrap(clusters).estimate(statistic) == first
    order = rng.permutation(120)
    shuffled = ClusterBootstrap([clusters[i] for i in order]).estimate(
        ClassificationStatistic.of([0, 1], y[order], p[order])
    )
    for name, interval in first.items():
        assert shuffled[name].low == pytest.approx(interval.low, abs=1e-9), name
        assert shuffled[name].high == pytest.approx(interval.high, abs=1e-9), name
    other_seed = ClusterBootstrap(clusters, seed=1).estimate(statistic)
    assert other_seed["accuracy"] != first["accuracy"]


def test_one_cluster_gives_no_interval() -> None:
    y, p = [0, 1, 1, 0], [[0.8, 0.2], [0.3, 0.7], [0.6, 0.4], [0.4, 0.6]]
    found = ClusterBootstrap(["same"] * 4).estimate(ClassificationStatistic.of([0, 1], y, p))
    assert found["accuracy"].value == pytest.approx(0.5)
    assert found["accuracy"].low is None and found["accuracy"].high is None
    assert ClusterBootstrap(["same"] * 4).resampling.clusters == 1


def test_absent_and_rare_classes() -> None:
    rng = np.random.default_rng(4)
    y, p = _classifier(rng, 90, 3)
    y = np.where(y == 2, 0, y)  # class 2 is absent from the test set
    y[0] = 2  # ... except in one example: present in the point estimate, rare in resamples
    clusters = [f"c{i // 3}" for i in range(90)]
    found = ClusterBootstrap(clusters).estimate(ClassificationStatistic.of([0, 1, 2], y, p))
    rare = found["recall:2"]
    assert rare.value is not None and 0 < rare.undefined < 2000  # ~ (1 - 1/30)^30 ≈ 36 %
    assert rare.wire()["undefined"] == rare.undefined
    assert found["balancedAccuracy"].undefined == 0

    y = np.where(y == 2, 0, y)
    absent = ClusterBootstrap(clusters).estimate(ClassificationStatistic.of([0, 1, 2], y, p))
    assert absent["recall:2"].value is None and absent["recall:2"].low is None
    assert absent["recall:2"].undefined == 2000
    assert absent["balancedAccuracy"].low is not None  # over the classes present
    assert "undefined" not in absent["accuracy"].wire()

    one_class = ClassificationStatistic.of([0, 1], [1] * 30, np.tile([0.3, 0.7], (30, 1)))
    only = ClusterBootstrap([str(i) for i in range(30)]).estimate(one_class)
    assert only["auroc"].value is None and only["auroc"].low is None
    assert only["accuracy"].value == 1.0


def test_bad_arguments_say_what_to_use() -> None:
    with pytest.raises(ValueError, match="resamples is 0"):
        ClusterBootstrap(["a"], resamples=0)
    with pytest.raises(ValueError, match="level is 95"):
        ClusterBootstrap(["a"], level=95)
    with pytest.raises(ValueError, match="images is required"):
        ClusterBootstrap(None)
    with pytest.raises(ValueError, match=r"true labels \[5\]"):
        ClassificationStatistic.of([0, 1], [5], [[0.5, 0.5]])
    with pytest.raises(ValueError, match="probabilities have shape"):
        ClassificationStatistic.of([0, 1], [0, 1], [[1.0], [0.0]])
