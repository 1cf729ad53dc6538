"""Subgroup strata of a test set: each value of each attribute the snapshot keeps per example
(`attributes` in the manifest: sex, ageBand, site, manufacturer, custom ones; see
`patient_ml.curation.attributes`), and each pair of attributes (`sex=female & site=B`).

For every subgroup: n images and k independence clusters, the prevalence of each label (imgClf),
every metric of both models with its interval and the paired challenger - champion difference.
The intervals come from a cluster bootstrap *within the subgroup* (`ClusterBootstrap` over the
subgroup's own clusters: a patient with images in two sites is a cluster in each). A subgroup
with fewer than `min_clusters` clusters is flagged `small`: its percentile interval is rough
and too narrow, so it should not be read as a conclusion either way.

The entries have the shape the change-control gate reads (`services.gate.strata_of`):
`{name, images, clusters, small, challenger: {metric: value}, champion: {...}, differences:
{metric: {value, low, high}}}`, plus `attribute`, `value`, `attributes`, `prevalence` and
`intervals` for people and the UI. Examples without a value of an attribute are in no subgroup
of it (counted in `missing`). A manifest without attributes gives no subgroups.
"""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields, is_dataclass, replace
from typing import Any

import numpy as np

from patient_ml.evaluation.intervals import ClusterBootstrap, Interval, Joined, Statistic

DEFAULT_MIN_CLUSTERS = 30
PAIR_JOIN = " & "


@dataclass(frozen=True)
class SubgroupPlan:
    """How to stratify: the attributes in order (the dataset's `curation.subgroups`), the
    smallest number of clusters to conclude from, and whether to report pairs."""

    attributes: tuple[str, ...] = ()
    min_clusters: int = DEFAULT_MIN_CLUSTERS
    pairs: bool = True

    def wire(self) -> dict[str, Any]:
        return {
            "attributes": list(self.attributes),
            "minClusters": self.min_clusters,
            "pairs": self.pairs,
        }


def subset(statistic: Statistic, rows: np.ndarray) -> Statistic:
    """The statistic of the examples at `rows` only: every per-example array field (first axis
    = examples) is cut; a `Joined` statistic is cut part by part."""
    if isinstance(statistic, Joined):
        return Joined(tuple(subset(part, rows) for part in statistic.parts))
    if not is_dataclass(statistic):
        raise TypeError(f"{type(statistic).__name__} is not a dataclass statistic; cannot cut it")
    cut = {
        f.name: getattr(statistic, f.name)[rows]
        for f in fields(statistic)
        if isinstance(getattr(statistic, f.name), np.ndarray)
    }
    if not cut:
        raise TypeError(f"{type(statistic).__name__} has no per-example arrays to cut")
    return replace(statistic, **cut)  # type: ignore[type-var]


def groups_of(
    attributes: Sequence[Mapping[str, str]], plan: SubgroupPlan
) -> list[tuple[dict[str, str], np.ndarray]]:
    """(the subgroup's attribute values, the rows of its examples): single attributes first
    (in plan order, values sorted), then pairs of attributes."""
    found: list[tuple[dict[str, str], np.ndarray]] = []
    singles = [(a,) for a in plan.attributes]
    pairs = list(itertools.combinations(plan.attributes, 2)) if plan.pairs else []
    for names in [*singles, *pairs]:
        keys: dict[tuple[str, ...], list[int]] = {}
        for row, values in enumerate(attributes):
            if all(values.get(n) for n in names):
                keys.setdefault(tuple(values[n] for n in names), []).append(row)
        for key in sorted(keys):
            found.append((dict(zip(names, key, strict=True)), np.asarray(keys[key], np.int64)))
    return found


def subgroup_name(values: Mapping[str, str]) -> str:
    return PAIR_JOIN.join(f"{k}={v}" for k, v in values.items())


def missing_counts(attributes: Sequence[Mapping[str, str]], plan: SubgroupPlan) -> dict[str, int]:
    """How many test examples have no value for each attribute."""
    return {a: sum(1 for v in attributes if not v.get(a)) for a in plan.attributes}


def _values(found: Mapping[str, Interval]) -> dict[str, float]:
    return {k: i.value for k, i in found.items() if i.value is not None}


def _intervals(found: Mapping[str, Interval]) -> dict[str, dict[str, Any]]:
    return {k: i.wire() for k, i in found.items()}


def subgroup_strata(
    *,
    plan: SubgroupPlan,
    attributes: Sequence[Mapping[str, str]],
    clusters: Sequence[str],
    labels: Sequence[tuple[int, str]],
    truths: Sequence[int | None],
    challenger: Statistic,
    champion: Statistic | None,
    resamples: int,
    seed: int = 0,
) -> list[dict[str, Any]]:
    """The report's `subgroups`: one entry per subgroup (see the module doc). `attributes`,
    `clusters` and `truths` are per test example, in the statistics' order."""
    if not plan.attributes or not any(attributes):
        return []
    names = dict(labels)
    out = []
    for values, rows in groups_of(attributes, plan):
        ids = [clusters[r] for r in rows]
        boot = ClusterBootstrap(ids, resamples=resamples, seed=seed)
        compared = boot.compare(
            subset(challenger, rows), subset(champion, rows) if champion is not None else None
        )
        k = boot.resampling.clusters
        entry: dict[str, Any] = {
            "name": subgroup_name(values),
            "attribute": PAIR_JOIN.join(values),
            "value": PAIR_JOIN.join(values.values()),
            "attributes": values,
            "pair": len(values) > 1,
            "images": int(rows.size),
            "clusters": k,
            "small": k < plan.min_clusters,
            "challenger": _values(compared.challenger),
            "champion": _values(compared.champion) if compared.champion is not None else {},
            "intervals": {
                "challenger": _intervals(compared.challenger),
                **(
                    {"champion": _intervals(compared.champion)}
                    if compared.champion is not None
                    else {}
                ),
            },
            "differences": _intervals(compared.differences),
        }
        known = [truths[r] for r in rows if truths[r] is not None]
        if known:
            count = Counter(known)
            entry["prevalence"] = {
                names.get(int(c), str(c)): round(count.get(c, 0) / len(known), 6) for c, _ in labels
            }
        out.append(entry)
    return out
