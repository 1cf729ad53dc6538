"""Monitoring per subgroup (`monitoring.subgroups`, by default `site` and `manufacturer`): each
value of each attribute gets its own window and its own reference, so a drift at one site or on
one device is not diluted by the others' traffic.

- The reference (`reference_parts`, at deploy): the champion's reference (one image per
  independent cluster of its snapshot, the test split's outputs) cut by each attribute's
  values (the manifest's `attributes`, read from FHIR at curation).
- The window (`check`): the check's window cut by the attributes its predictions were served
  for (`PredictionRecord.attributes`: the example's own when predicted by example id, else
  those the caller named). Each value with at least `minSamples` predictions is checked with
  the same tests as the whole window, against its own reference when it holds at least
  `MIN_REFERENCE_CLUSTERS` independent clusters, else against the whole reference (a site the
  champion never saw is exactly what should be watched). Its breaches are named
  `subgroup.<attribute>=<value>.<breach>`.
- Multiple testing: with k subgroup windows tested, each runs at the check's levels divided
  by k (Bonferroni), and the feature test takes enough permutations to reach that level.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from patient_ml.config.monitoring import MonitoringSettings
from patient_ml.db.models import PredictionRecord

# A subgroup of the reference with fewer independent clusters is not used as its reference.
MIN_REFERENCE_CLUSTERS = 5
# At most this many values per attribute are checked in one window (the largest).
MAX_VALUES = 20
MAX_VALUE_LENGTH = 64
MAX_PERMUTATIONS = 10_000

Checks = Callable[
    [dict[str, Any], list[PredictionRecord], MonitoringSettings, list[str]], dict[str, Any]
]


def logged_value(value: object) -> str | None:
    """An attribute's value as the log and the reference keep it: short text, or None when
    it says nothing (missing or blank). One rule for both, so they always match."""
    text = str(value).strip() if value is not None else ""
    return text[:MAX_VALUE_LENGTH] or None


def served_attributes(
    names: Sequence[str], *sources: Mapping[str, Any] | None
) -> dict[str, str] | None:
    """The attributes a prediction keeps in the log: only `names`, as short text, the first
    source naming a value winning (the caller's, then the example's)."""
    kept: dict[str, str] = {}
    for name in names:
        for source in sources:
            value = logged_value((source or {}).get(name))
            if value is not None:
                kept[name] = value
                break
    return kept or None


def reference_parts(
    items: Sequence[Mapping[str, Any]],
    names: Sequence[str],
    part: Callable[[Sequence[Mapping[str, Any]]], dict[str, Any]],
) -> dict[str, dict[str, dict[str, Any]]]:
    """{attribute: {value: part(its items)}} over the reference items (each with its
    `attributes`), for each attribute of `names` that some item has."""
    found: dict[str, dict[str, list[Mapping[str, Any]]]] = defaultdict(lambda: defaultdict(list))
    for item in items:
        attributes = item.get("attributes") or {}
        for name in names:
            value = logged_value(attributes.get(name))
            if value is not None:
                found[name][value].append(item)
    return {name: {value: part(group) for value, group in sorted(values.items())}
            for name, values in sorted(found.items())}  # fmt: skip


def windows(
    rows: Iterable[PredictionRecord], names: Sequence[str]
) -> dict[tuple[str, str], list[PredictionRecord]]:
    """The window's predictions by (attribute, value), oldest first in each."""
    found: dict[tuple[str, str], list[PredictionRecord]] = defaultdict(list)
    for row in rows:
        attributes = row.attributes or {}
        for name in names:
            value = attributes.get(name)
            if value is not None:
                found[(name, str(value))].append(row)
    return dict(found)


def scaled(settings: MonitoringSettings, divisor: int) -> MonitoringSettings:
    """The settings with every test's level divided by `divisor` (and the feature test's
    permutations raised so that its smallest p-value can still fall below its level)."""
    if divisor <= 1:
        return settings
    feature_alpha = settings.feature_drift.alpha / divisor
    permutations = min(
        MAX_PERMUTATIONS,
        max(settings.feature_drift.permutations, math.ceil(2 / feature_alpha)),
    )
    return settings.model_copy(
        update={
            "input_drift": settings.input_drift.model_copy(
                update={"alpha": settings.input_drift.alpha / divisor}
            ),
            "prediction_drift": settings.prediction_drift.model_copy(
                update={"alpha": settings.prediction_drift.alpha / divisor}
            ),
            "feature_drift": settings.feature_drift.model_copy(
                update={"alpha": feature_alpha, "permutations": permutations}
            ),
        }
    )


def check(
    profile: dict[str, Any],
    rows: list[PredictionRecord],
    settings: MonitoringSettings,
    breaches: list[str],
    checks: Checks,
) -> dict[str, Any]:
    """Each subgroup window's checks (see the module docstring); appends to `breaches`."""
    names = list(settings.subgroups)
    if not names:
        return {"skipped": "monitoring.subgroups is empty"}
    found = windows(rows, names)
    if not found:
        return {"attributes": names, "tested": 0, "groups": [],
                "skipped": f"no prediction in the window names its {' or '.join(names)} "
                "(predict by example id, or name the attributes with the prediction)"}  # fmt: skip
    chosen: list[tuple[str, str]] = []
    for name in names:
        values = sorted((k for k in found if k[0] == name), key=lambda k: (-len(found[k]), k[1]))
        chosen.extend(values[:MAX_VALUES])
    tested = [k for k in chosen if len(found[k]) >= settings.min_samples]
    levels = scaled(settings, len(tested))
    parts = profile.get("subgroups") or {}
    groups: list[dict[str, Any]] = []
    for name, value in chosen:
        group = found[(name, value)]
        entry: dict[str, Any] = {"attribute": name, "value": value, "predictions": len(group)}
        if (name, value) not in tested:
            entry["skipped"] = (
                f"{len(group)} prediction(s) in the window, fewer than minSamples "
                f"({settings.min_samples})"
            )
            groups.append(entry)
            continue
        part = (parts.get(name) or {}).get(value)
        if part and part.get("clusters", 0) >= MIN_REFERENCE_CLUSTERS:
            reference = {**profile, **part}
            entry.update(reference="subgroup", referenceClusters=part["clusters"])
        else:
            reference = profile
            entry.update(
                reference="overall",
                referenceClusters=(part or {}).get("clusters", 0),
                referenceNote=f"the champion's snapshot holds "
                f"{(part or {}).get('clusters', 0)} independent cluster(s) with {name} "
                f"{value!r}, fewer than {MIN_REFERENCE_CLUSTERS}: checked against the whole "
                "reference",
            )
        own: list[str] = []
        entry.update(checks(reference, group, levels, own))
        entry["breaches"] = [f"subgroup.{name}={value}.{b}" for b in own]
        breaches.extend(entry["breaches"])
        groups.append(entry)
    result: dict[str, Any] = {"attributes": names, "tested": len(tested), "groups": groups}
    if len(tested) > 1:
        result["levelDivisor"] = len(tested)
    if not parts:
        result["referenceNote"] = (
            "the reference profile has no subgroups (made before subgroup monitoring, or its "
            "snapshot keeps none of these attributes): each is checked against the whole "
            "reference"
        )
    return result
