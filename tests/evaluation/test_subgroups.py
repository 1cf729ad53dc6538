"""Subgroup strata: each subgroup's numbers are the platform metrics of its own examples, its
intervals resample its own clusters, pairs of attributes are reported, small subgroups are
flagged, examples without a value are in no subgroup, and a worse site shows in the paired
difference of that site only."""

from __future__ import annotations

import numpy as np
import pytest

from patient_ml.evaluation.intervals import (
    ClassificationStatistic,
    ClusterBootstrap,
    Joined,
    SegmentationStatistic,
)
from patient_ml.evaluation.metrics import classification_metrics, pixel_counts
from patient_ml.evaluation.operating_point import (
    OperatingPointStatistic,
    choose,
    resolve,
)
from patient_ml.evaluation.subgroups import (
    SubgroupPlan,
    groups_of,
    missing_counts,
    subgroup_strata,
    subset,
)

LABELS = ((0, "negative"), (1, "positive"))


def _cohort(n_patients: int, seed: int) -> tuple[np.ndarray, list[str], list[dict[str, str]]]:
    """Two images per patient; site by patient (a, b, c), sex by patient; every 10th patient
    has no sex recorded."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, 2 * n_patients)
    clusters = [f"p{i // 2}" for i in range(len(y))]
    attributes = []
    for i in range(len(y)):
        p = i // 2
        found = {"site": "abc"[p % 3]}
        if p % 10:
            found["sex"] = ("female", "male")[(p // 3) % 2]
        attributes.append(found)
    return y, clusters, attributes


def _answers(y: np.ndarray, miss: np.ndarray, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    seen = (y == 1) & (rng.uniform(size=len(y)) >= miss)
    score = np.clip(np.where(seen, 0.75, 0.25) + rng.normal(0, 0.1, len(y)), 0.01, 0.99)
    return np.column_stack([1 - score, score])


def _statistic(y: np.ndarray, p: np.ndarray) -> Joined:
    point = choose(resolve(None, LABELS), [0, 1], y.tolist(), p)
    return Joined((
        ClassificationStatistic.of([0, 1], y.tolist(), p, ["negative", "positive"]),
        OperatingPointStatistic.of(point, LABELS, y.tolist(), p),
    ))  # fmt: skip


def test_each_subgroup_has_its_own_metrics_clusters_and_prevalence() -> None:
    y, clusters, attributes = _cohort(150, seed=1)
    p = _answers(y, np.full(len(y), 0.1), seed=2)
    plan = SubgroupPlan(("sex", "site"), min_clusters=30)
    strata = subgroup_strata(
        plan=plan, attributes=attributes, clusters=clusters, labels=LABELS,
        truths=y.tolist(), challenger=_statistic(y, p), champion=None, resamples=200,
    )  # fmt: skip
    names = [s["name"] for s in strata]
    assert names[:5] == ["sex=female", "sex=male", "site=a", "site=b", "site=c"]
    assert "sex=female & site=a" in names and len(names) == 5 + 6
    for stratum in strata:
        rows = [
            i for i, a in enumerate(attributes)
            if all(a.get(k) == v for k, v in stratum["attributes"].items())
        ]  # fmt: skip
        expected = classification_metrics([0, 1], y[rows].tolist(), p[rows].tolist())
        assert stratum["images"] == len(rows)
        assert stratum["clusters"] == len({clusters[i] for i in rows})
        assert stratum["small"] == (stratum["clusters"] < 30)
        for name in ("accuracy", "balancedAccuracy", "auroc"):
            assert stratum["challenger"][name] == pytest.approx(expected[name], abs=1e-12)
            found = stratum["intervals"]["challenger"][name]
            assert found["low"] <= found["value"] <= found["high"]
        share = float(np.mean(y[rows] == 1))
        assert stratum["prevalence"]["positive"] == pytest.approx(share, abs=1e-6)
        assert stratum["champion"] == {} and stratum["differences"] == {}
    by_name = {s["name"]: s for s in strata}
    # 150 patients: 50 per site (not small); a site and sex pair has about 22 (small).
    assert not by_name["site=a"]["small"] and by_name["site=a"]["clusters"] == 50
    assert by_name["sex=female & site=a"]["small"]
    # 15 patients without a sex are in no sex subgroup, but in their site's.
    assert missing_counts(attributes, plan) == {"sex": 30, "site": 0}
    assert by_name["sex=female"]["images"] + by_name["sex=male"]["images"] == 300 - 30


def test_subgroup_intervals_resample_clusters_not_images() -> None:
    """One subgroup where every patient has 6 identical answers: the interval must be as wide
    as with one image per patient (resampling images would make it ~sqrt(6) narrower)."""
    rng = np.random.default_rng(4)
    y1 = rng.integers(0, 2, 60)
    p1 = _answers(y1, np.full(60, 0.2), seed=5)
    y6, p6 = np.repeat(y1, 6), np.repeat(p1, 6, axis=0)
    attributes = [{"site": "a"}] * len(y6)
    plan = SubgroupPlan(("site",), pairs=False)
    six = subgroup_strata(
        plan=plan, attributes=attributes, clusters=[f"p{i // 6}" for i in range(len(y6))],
        labels=LABELS, truths=y6.tolist(), challenger=_statistic(y6, p6), champion=None,
        resamples=400,
    )[0]  # fmt: skip
    alone = ClusterBootstrap([f"p{i}" for i in range(60)], resamples=400).estimate(
        ClassificationStatistic.of([0, 1], y1.tolist(), p1)
    )["accuracy"]
    found = six["intervals"]["challenger"]["accuracy"]
    assert six["images"] == 360 and six["clusters"] == 60
    assert found["high"] - found["low"] == pytest.approx(alone.high - alone.low, rel=0.02)


def test_a_worse_site_shows_in_its_own_paired_difference() -> None:
    y, clusters, attributes = _cohort(180, seed=7)
    sites = np.array([a["site"] for a in attributes])
    champion = _answers(y, np.full(len(y), 0.2), seed=8)
    challenger = _answers(y, np.where(sites == "c", 0.6, 0.0), seed=9)
    strata = subgroup_strata(
        plan=SubgroupPlan(("site",)), attributes=attributes, clusters=clusters, labels=LABELS,
        truths=y.tolist(), challenger=_statistic(y, challenger),
        champion=_statistic(y, champion), resamples=500,
    )  # fmt: skip
    by_name = {s["name"]: s for s in strata}
    worse = by_name["site=c"]["differences"]["recall:positive"]
    assert worse["high"] < 0  # clearly worse at site c
    for site in ("site=a", "site=b"):
        assert by_name[site]["differences"]["recall:positive"]["low"] > 0  # better elsewhere
    assert (
        by_name["site=c"]["champion"]["recall:positive"]
        > by_name["site=c"]["challenger"]["recall:positive"]
    )


def test_no_attributes_no_subgroups_and_segmentation_is_cut_too() -> None:
    y, clusters, _ = _cohort(20, seed=3)
    p = _answers(y, np.full(len(y), 0.1), seed=2)
    none = subgroup_strata(
        plan=SubgroupPlan(("site",)), attributes=[{}] * len(y), clusters=clusters,
        labels=LABELS, truths=y.tolist(), challenger=_statistic(y, p), champion=None,
        resamples=50,
    )  # fmt: skip
    assert none == []
    rng = np.random.default_rng(1)
    truths = [rng.integers(0, 2, (6, 6)) for _ in range(8)]
    counts = [pixel_counts([1], t, t) for t in truths]
    cut = subset(SegmentationStatistic.of([1], counts), np.array([0, 3]))
    assert isinstance(cut, SegmentationStatistic) and cut.counts.shape == (2, 1, 3)
    assert groups_of([{"a": "x"}, {"a": "y"}, {}], SubgroupPlan(("a",)))[1][1].tolist() == [1]


def test_large_subgroups_scope_checks_only_subgroups_not_flagged_small() -> None:
    from patient_ml.config.models import NonInferiorityRule
    from patient_ml.config.platform_metrics import direction_of
    from patient_ml.evaluation.noninferiority import Stratum, check_rules

    def stratum(name: str, kind: str, low: float, small: bool = False) -> Stratum:
        return Stratum(
            name=name, kind=kind,  # type: ignore[arg-type]
            challenger={"auroc": 0.9}, champion={"auroc": 0.9},
            differences={"auroc": {"value": low + 0.05, "low": low, "high": low + 0.1}},
            small=small,
        )  # fmt: skip

    strata = [
        stratum("overall", "overall", 0.0),
        stratum("site=a", "subgroup", -0.2),
        stratum("site=b", "subgroup", -0.2, small=True),
    ]
    rule = NonInferiorityRule.model_validate(
        {"metric": "auroc", "margin": 0.05, "scope": "overallAndLargeSubgroups"}
    )
    found = check_rules([rule], strata, direction_of)
    assert [(r.stratum, r.passed) for r in found] == [("overall", True), ("site=a", False)]
    every = check_rules(
        [rule.model_copy(update={"scope": "overallAndSubgroups"})], strata, direction_of
    )
    assert [(r.stratum, r.small) for r in every][-1] == ("site=b", True)
    assert len(every) == 3
