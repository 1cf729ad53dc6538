"""Non-inferiority rules over strata: the lower end of the paired interval (oriented so higher
is better) must be strictly above -margin; a missing interval fails; `overallAndSubgroups`
rules are checked in every stratum, `overall` ones only in the whole test set."""

from __future__ import annotations

import pytest

from patient_ml.config.models import NonInferiorityRule
from patient_ml.config.platform_metrics import direction_of
from patient_ml.evaluation.noninferiority import Stratum, check_rule, check_rules


def stratum(name: str = "overall", kind: str = "overall", **differences: tuple) -> Stratum:
    diffs = {m: {"value": v, "low": lo, "high": hi} for m, (v, lo, hi) in differences.items()}
    return Stratum(
        name=name,
        kind=kind,  # type: ignore[arg-type]
        challenger={m: 0.9 for m in differences},
        champion={m: 0.9 for m in differences},
        differences=diffs,
    )


def rule(metric: str, margin: float, scope: str = "overall") -> NonInferiorityRule:
    return NonInferiorityRule.model_validate({"metric": metric, "margin": margin, "scope": scope})


@pytest.mark.parametrize(
    ("metric", "difference", "margin", "passed", "worst"),
    [
        ("recall:tumor", (-0.01, -0.04, 0.02), 0.05, True, -0.04),  # within the margin
        ("recall:tumor", (-0.01, -0.04, 0.02), 0.03, False, -0.04),  # lower end past it
        ("recall:tumor", (-0.01, -0.05, 0.02), 0.05, False, -0.05),  # on -margin: not above
        ("recall:tumor", (0.0, 0.0, 0.0), 0.0, False, 0.0),  # margin 0: must be shown better
        ("balancedAccuracy", (0.03, 0.01, 0.05), 0.0, True, 0.01),
        # lower is better: the worst case is the upper end of challenger - champion
        ("logLoss", (0.01, -0.02, 0.04), 0.05, True, -0.04),
        ("logLoss", (0.01, -0.02, 0.06), 0.05, False, -0.06),
    ],
)
def test_the_oriented_lower_end_must_be_above_minus_margin(
    metric: str, difference: tuple, margin: float, passed: bool, worst: float
) -> None:
    found = check_rule(rule(metric, margin), stratum(**{metric: difference}), direction_of)
    assert found.passed is passed
    assert found.worst_plausible == pytest.approx(worst)
    assert ("is above" if passed else "is not above") in found.detail
    assert found.wire()["worstPlausible"] == pytest.approx(worst)


def test_a_rule_without_a_paired_interval_fails_and_says_why() -> None:
    found = check_rule(
        rule("sensitivity:tumor", 0.1), stratum(**{"sensitivity:tumor": (0.0, None, None)}),
        direction_of,
    )  # fmt: skip
    assert not found.passed and "could not be estimated" in found.detail
    missing = check_rule(rule("auroc", 0.1), stratum(), direction_of)
    assert not missing.passed and "the challenger has no value" in missing.detail


def test_scope_decides_which_strata_a_rule_is_checked_in() -> None:
    strata = [
        stratum(balancedAccuracy=(0.0, -0.01, 0.01)),
        stratum("site=B", "subgroup", balancedAccuracy=(-0.2, -0.3, -0.1)),
    ]
    overall = check_rules([rule("balancedAccuracy", 0.05)], strata, direction_of)
    assert [(r.stratum, r.passed) for r in overall] == [("overall", True)]
    both = check_rules(
        [rule("balancedAccuracy", 0.05, "overallAndSubgroups")], strata, direction_of
    )
    assert [(r.stratum, r.passed) for r in both] == [("overall", True), ("site=B", False)]
    assert "in site=B" in both[1].detail
