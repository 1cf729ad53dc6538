"""Non-inferiority rules of a change-control policy, checked over named strata of the test set.

A rule `{metric, margin, scope}` holds in a stratum when the lower end of the paired 95 %
interval of challenger - champion on `metric`, oriented so that higher is better, is above
-margin: for a metric where higher is better, `difference.low > -margin`; where lower is better
(log loss, calibration error), `-difference.high > -margin`. In words: with 95 % confidence the
challenger is worse by less than the margin. The pairing (both models on the same resamples of
the same clusters) is what makes the interval narrow enough to show this.

A stratum is the whole test set (`overall`) or one subgroup of it (`subgroup`, e.g.
`sex=female`), each with its own paired intervals; a rule with scope `overall` is checked on
the overall stratum, one with scope `overallAndSubgroups` on every stratum given, one with
`overallAndLargeSubgroups` on the overall stratum and every subgroup not flagged `small`. A
rule whose metric has no paired interval in a stratum (no champion value, fewer than two
clusters, the metric undefined there) fails: the gate is closed unless the evidence is there.
Strata flagged `small` keep their result and say so; whether a small subgroup should block is
the policy's choice (its scope).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from patient_ml.config.models import NonInferiorityRule
from patient_ml.config.platform_metrics import metric_text, plain_name

OVERALL = "overall"


@dataclass(frozen=True)
class Stratum:
    """One stratum's numbers: metric values of both models and the paired differences
    (challenger - champion) as `{"value", "low", "high"}`."""

    name: str
    kind: Literal["overall", "subgroup"]
    challenger: Mapping[str, float]
    champion: Mapping[str, float]
    differences: Mapping[str, Mapping[str, Any]]
    images: int | None = None
    clusters: int | None = None
    small: bool = False
    extra: Mapping[str, Any] = field(default_factory=dict)


class RuleResult(BaseModel):
    """One rule in one stratum."""

    model_config = ConfigDict(
        alias_generator=to_camel, validate_by_name=True, serialize_by_alias=True, frozen=True
    )

    metric: str
    title: str = Field(description="The metric in plain words.")
    margin: float
    scope: str
    stratum: str
    small: bool = False
    passed: bool
    challenger: float | None = None
    champion: float | None = None
    difference: float | None = Field(None, description="challenger - champion.")
    low: float | None = Field(None, description="Lower end of the paired 95 % interval.")
    high: float | None = Field(None, description="Upper end of the paired 95 % interval.")
    worst_plausible: float | None = Field(
        None,
        description="How much better the challenger is at worst (the oriented lower end): "
        "the rule holds when this is above -margin.",
    )
    detail: str

    def wire(self) -> dict[str, Any]:
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


def applies(rule: NonInferiorityRule, stratum: Stratum) -> bool:
    if stratum.kind == "overall" or rule.scope == "overallAndSubgroups":
        return True
    return rule.scope == "overallAndLargeSubgroups" and not stratum.small


def check_rule(
    rule: NonInferiorityRule, stratum: Stratum, direction: Callable[[str], str]
) -> RuleResult:
    name = rule.metric
    where = "" if stratum.kind == "overall" else f" in {stratum.name}"
    common: dict[str, Any] = {
        "metric": name,
        "title": plain_name(name),
        "margin": rule.margin,
        "scope": rule.scope,
        "stratum": stratum.name,
        "small": stratum.small,
        "challenger": stratum.challenger.get(name),
        "champion": stratum.champion.get(name),
    }
    found = stratum.differences.get(name) or {}
    value, low, high = found.get("value"), found.get("low"), found.get("high")
    if value is None or low is None or high is None:
        missing = (
            "the challenger has no value"
            if common["challenger"] is None
            else "the champion has no value"
            if common["champion"] is None
            else "the paired interval could not be estimated (fewer than 2 clusters, or the "
            "metric is undefined in every resample)"
        )
        return RuleResult(
            **common,
            difference=value,
            passed=False,
            detail=f"{plain_name(name)}{where}: no paired interval ({missing}), so "
            f"non-inferiority within {metric_text(rule.margin)} cannot be shown",
        )
    sign = 1.0 if direction(name) == "maximize" else -1.0
    worst = sign * low if sign > 0 else -high
    passed = worst > -rule.margin
    relation = "above" if passed else "not above"
    return RuleResult(
        **common,
        difference=value,
        low=low,
        high=high,
        worst_plausible=worst,
        passed=passed,
        detail=f"{plain_name(name)}{where}: challenger - champion "
        f"{metric_text(value, signed=True)} [{metric_text(low, signed=True)}, "
        f"{metric_text(high, signed=True)}]; worst plausible {metric_text(worst, signed=True)} "
        f"is {relation} -{metric_text(rule.margin)}"
        + (" (small group: a rough interval)" if stratum.small else ""),
    )


def check_rules(
    rules: Sequence[NonInferiorityRule],
    strata: Sequence[Stratum],
    direction: Callable[[str], str],
) -> list[RuleResult]:
    """Every rule in every stratum it applies to, in rule order, then stratum order."""
    return [
        check_rule(rule, stratum, direction)
        for rule in rules
        for stratum in strata
        if applies(rule, stratum)
    ]
