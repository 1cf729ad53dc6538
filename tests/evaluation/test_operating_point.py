"""The operating point: each rule picks the threshold a brute-force search over every
threshold picks, the decision at it is what the docstring says, the metrics at it (counted by
hand) equal the bootstrap statistic's point values, and their intervals and paired differences
come from the shared cluster bootstrap."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from patient_ml.evaluation.intervals import ClassificationStatistic, ClusterBootstrap, Joined
from patient_ml.evaluation.operating_point import (
    ARGMAX,
    LabelRef,
    OperatingPoint,
    OperatingPointError,
    OperatingPointStatistic,
    Wanted,
    choose,
    for_champion,
    resolve,
    stored,
)

BINARY = ((0, "normal"), (1, "tumor"))
THREE = ((0, "normal"), (1, "glioma"), (4, "meningioma"))


def _binary(scores: list[float]) -> np.ndarray:
    s = np.asarray(scores, dtype=float)
    return np.column_stack([1 - s, s])


def _brute(score: np.ndarray, positive: np.ndarray) -> list[tuple[float, float, float]]:
    """(cut, sensitivity, specificity) for every observed score and one above all (inf)."""
    out = []
    for t in [*sorted(set(score.tolist())), np.inf]:
        called = score >= t
        out.append((t, called[positive].mean(), (~called[~positive]).mean()))
    return out


def test_the_default_rule_is_youden_for_two_labels_and_argmax_for_more() -> None:
    two = resolve(None, BINARY)
    assert (two.rule, two.positive, two.default) == ("youden", LabelRef(index=1, name="tumor"),
                                                     True)  # fmt: skip
    more = resolve(None, THREE)
    assert (more.rule, more.positive) == ("argmax", None)
    named = resolve({"rule": "targetSensitivity", "positiveLabel": "glioma", "target": 0.9}, THREE)
    assert named.positive == LabelRef(index=1, name="glioma") and named.target == 0.9
    assert not named.default
    with pytest.raises(OperatingPointError, match="'edema' is not a label"):
        resolve({"rule": "youden", "positiveLabel": "edema"}, THREE)
    with pytest.raises(OperatingPointError, match="needs positiveLabel with 3 labels"):
        resolve({"rule": "youden"}, THREE)


def _cut(point: OperatingPoint, score: np.ndarray) -> float:
    """The validation score the threshold cuts at: the lowest one called positive (above all:
    infinity)."""
    assert point.threshold is not None
    called = score[score >= point.threshold]
    return float(called.min()) if called.size else np.inf


@settings(max_examples=80, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, 1), st.integers(0, 20)), min_size=4, max_size=60).filter(
        lambda rows: len({y for y, _ in rows}) == 2
    ),
    st.sampled_from([0.5, 0.8, 0.9, 0.95, 1.0]),
)
def test_each_rule_picks_what_a_search_over_every_threshold_picks(
    rows: list[tuple[int, int]], target: float
) -> None:
    y = np.array([r[0] for r in rows])
    score = np.array([r[1] / 20 for r in rows])  # ties and saturated (1.0) scores on purpose
    p = _binary(score.tolist())
    table = _brute(score, y == 1)
    positive = LabelRef(index=1, name="tumor")

    youden = choose(Wanted("youden", positive, None, False), [0, 1], y, p)
    best = max(se + sp for _, se, sp in table)
    assert youden.chosen_on is not None
    assert youden.chosen_on.sensitivity + youden.chosen_on.specificity == pytest.approx(best)
    lowest = min(t for t, se, sp in table if se + sp == pytest.approx(best))
    assert _cut(youden, score) == lowest  # ties: the more sensitive cut

    sens = choose(Wanted("targetSensitivity", positive, target, False), [0, 1], y, p)
    assert sens.chosen_on is not None and sens.chosen_on.sensitivity >= target - 1e-12
    assert _cut(sens, score) == max(t for t, se, _ in table if se >= target - 1e-12)

    spec = choose(Wanted("targetSpecificity", positive, target, False), [0, 1], y, p)
    assert spec.chosen_on is not None and spec.chosen_on.specificity >= target - 1e-12
    assert _cut(spec, score) == min(t for t, _, sp in table if sp >= target - 1e-12)

    for point in (youden, sens, spec):
        assert point.chosen_on is not None and point.threshold is not None
        # the stored threshold lies between validation scores, never on one
        assert point.threshold not in set(score.tolist()) or point.threshold == score.min() / 2
        called = point.decide(p, [0, 1]) == 1  # what `chosenOn` says deciding at it gives
        assert called[y == 1].mean() == pytest.approx(point.chosen_on.sensitivity)
        assert (~called[y == 0]).mean() == pytest.approx(point.chosen_on.specificity)


def test_a_perfect_separation_with_saturated_confidences_gets_a_threshold_between() -> None:
    """A calibrated network may answer exactly 1.0 for every positive validation image: the
    threshold must not be 1.0 (a new positive at 0.9999 would be missed), but between."""
    y = np.array([0, 0, 0, 1, 1, 1])
    p = _binary([0.02, 0.3, 0.6, 1.0, 1.0, 1.0])
    point = choose(Wanted("youden", LabelRef(index=1, name="tumor"), None, False), [0, 1], y, p)
    assert point.threshold == pytest.approx(0.8)
    assert point.chosen_on is not None and point.chosen_on.sensitivity == 1.0
    nothing = choose(Wanted("targetSpecificity", LabelRef(index=1, name="tumor"), 1.0, False),
                     [0, 1], np.array([0, 1]), _binary([1.0, 1.0]))  # fmt: skip
    assert nothing.threshold is not None and nothing.threshold > 1.0  # nothing called positive


def test_a_stated_rule_needs_both_kinds_on_validation_and_the_default_falls_back() -> None:
    only_normal = ([0, 0, 0], _binary([0.1, 0.7, 0.4]))
    stated = Wanted("targetSensitivity", LabelRef(index=1, name="tumor"), 0.95, False)
    with pytest.raises(OperatingPointError, match=r"'tumor' and of the other labels .* 0 and 3"):
        choose(stated, [0, 1], *only_normal)
    fallback = choose(resolve(None, BINARY), [0, 1], *only_normal)
    assert fallback.rule == "argmax" and fallback.threshold is None and fallback.default
    assert fallback.note is not None and "most confident label decides" in fallback.note
    empty = choose(resolve(None, BINARY), [0, 1], [], np.zeros((0, 2)))
    assert empty.rule == "argmax" and "which has 0 and 0" in (empty.note or "")


def test_deciding_at_a_threshold_calls_the_positive_label_or_the_best_other() -> None:
    point = OperatingPoint(
        rule="targetSensitivity", positive_label=LabelRef(index=4, name="meningioma"),
        threshold=0.2, target=0.95,
    )  # fmt: skip
    p = np.array(
        [
            [0.5, 0.3, 0.2],  # meningioma at exactly the threshold: called meningioma
            [0.5, 0.31, 0.19],  # below: the most confident other label (normal)
            [0.1, 0.6, 0.3],  # above the threshold although glioma is more confident
            [0.2, 0.7, 0.1],  # below: glioma
        ]
    )
    assert point.decide(p, [0, 1, 4]).tolist() == [2, 0, 2, 1]
    assert ARGMAX.decide(p, [0, 1, 4]).tolist() == [0, 0, 1, 1]
    assert point.decide_one({0: 5, 1: 3, 4: 2}) == 4  # raw confidences are normalised first
    assert point.decide_one({0: 0.55, 1: 0.3, 4: 0.15}) == 0


def _statistic_values(stat: Any, n: int) -> dict[str, float]:
    values = stat.prepare(np.arange(n), n)(np.ones((1, n)))[0]
    return dict(zip(stat.names, values.tolist(), strict=True))


def test_metrics_at_the_point_equal_counting_by_hand_for_two_and_three_labels() -> None:
    rng = np.random.default_rng(3)
    y2 = rng.integers(0, 2, 80)
    p2 = _binary(np.clip(0.35 * y2 + rng.uniform(0, 0.65, 80), 0, 1).tolist())
    point = choose(resolve(None, BINARY), [0, 1], y2, p2)
    stat = OperatingPointStatistic.of(point, BINARY, y2.tolist(), p2)
    assert stat.names == ("sensitivity:tumor", "specificity:tumor", "ppv:tumor", "npv:tumor")
    called = p2[:, 1] >= point.threshold
    tp, fn = int((called & (y2 == 1)).sum()), int((~called & (y2 == 1)).sum())
    fp, tn = int((called & (y2 == 0)).sum()), int((~called & (y2 == 0)).sum())
    by_hand = {
        "sensitivity:tumor": tp / (tp + fn),
        "specificity:tumor": tn / (tn + fp),
        "ppv:tumor": tp / (tp + fp),
        "npv:tumor": tn / (tn + fn),
    }
    assert _statistic_values(stat, 80) == pytest.approx(by_hand)
    assert stat.counts()[1] == {**{k.split(":")[0]: v for k, v in by_hand.items()},
                                "tp": tp, "fn": fn, "fp": fp, "tn": tn}  # fmt: skip

    y3 = np.array([0, 1, 4, 4, 1, 0, 4, 1, 0, 4])
    p3 = rng.dirichlet(np.ones(3), 10)
    multi = OperatingPointStatistic.of(ARGMAX, THREE, y3.tolist(), p3)
    assert len(multi.names) == 12 and multi.names[-1] == "npv:meningioma"
    predicted = np.array([0, 1, 4])[p3.argmax(axis=1)]
    values = _statistic_values(multi, 10)
    for label, name in THREE:
        truth, call = y3 == label, predicted == label
        if call.any():
            assert values[f"ppv:{name}"] == pytest.approx((truth & call).sum() / call.sum())
        else:
            assert np.isnan(values[f"ppv:{name}"])  # nothing called: no PPV
        assert values[f"sensitivity:{name}"] == pytest.approx((truth & call).sum() / truth.sum())


def test_intervals_at_the_point_come_from_the_shared_bootstrap_and_pair() -> None:
    rng = np.random.default_rng(5)
    n = 120
    y = rng.integers(0, 2, n)
    p = _binary(np.clip(0.3 * y + rng.uniform(0, 0.7, n), 0, 1).tolist())
    point = choose(resolve(None, BINARY), [0, 1], y, p)
    both = Joined((ClassificationStatistic.of([0, 1], y, p, ["normal", "tumor"]),
                   OperatingPointStatistic.of(point, BINARY, y.tolist(), p)))  # fmt: skip
    clusters = [f"patient-{i // 3}" for i in range(n)]
    compared = ClusterBootstrap(clusters, resamples=400).compare(both, both)
    sens = compared.challenger["sensitivity:tumor"]
    assert sens.low is not None and sens.high is not None and sens.low < sens.value < sens.high
    assert compared.differences["sensitivity:tumor"].model_dump() == {
        "value": 0.0, "low": 0.0, "high": 0.0, "undefined": 0,
    }  # fmt: skip
    assert "auroc" in compared.challenger and "npv:tumor" in compared.differences


def test_the_champion_decides_at_its_own_stored_point_or_says_why_not() -> None:
    kept = OperatingPoint(rule="youden", positive_label=LabelRef(index=1, name="tumor"),
                          threshold=0.37)  # fmt: skip
    assert for_champion(kept.wire(), BINARY) == kept
    assert stored(kept.wire()) == kept and stored(None) is None
    old = for_champion(None, BINARY)
    assert old.rule == "argmax" and "evaluated before operating points" in (old.note or "")
    gone = for_champion(kept.wire(), ((0, "normal"), (2, "edema")))
    assert gone.rule == "argmax" and "'tumor' is not among the labels" in (gone.note or "")
    assert kept.wire() == {
        "rule": "youden", "positiveLabel": {"index": 1, "name": "tumor"}, "threshold": 0.37,
        "default": False,
    }  # fmt: skip
