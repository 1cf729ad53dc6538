"""The operating point of a classifier: the decision threshold the platform chooses on the
validation split, by the rule in the model config, and the metrics at it.

Why. Accuracy-type metrics at "the most confident label" describe a decision nobody makes in
the clinic: a screening model is run at a threshold chosen for a sensitivity, a rule-in model
for a specificity. The operating point says which, the threshold is chosen by the platform
(from the served model's validation answers, not by the user's code), stored with the run,
applied by the endpoint, and the test metrics at it (sensitivity, specificity, PPV, NPV, each
with its cluster-bootstrap interval) are what the approver reads. The champion is scored at its
own stored threshold, so the comparison is between the two decisions that would be deployed.

Rules (`operatingPoint.rule` of the model config; see `config.models.OperatingPointConfig`):

- `youden`: the threshold that maximises Youden's J = sensitivity + specificity - 1 of the
  positive label on validation (ties: the lowest such threshold, the more sensitive one);
- `targetSensitivity`: the highest threshold whose validation sensitivity reaches `target`;
- `targetSpecificity`: the lowest threshold whose validation specificity reaches `target`;
- `argmax`: no threshold; the most confident label decides.

Left out of the config: `youden` on the higher-index label for two labels, `argmax` for more.

Deciding with a threshold t for positive label P: an image is called P when P's confidence
(the model's confidences normalised over the dataset's labels) is at least t, else the most
confident other label. The rule compares the cuts at each distinct validation confidence of P
(and one above the highest: nothing called P); the stored threshold is the midpoint between the
chosen cut and the next lower validation confidence (0 below the lowest, 1 above the highest),
which calls exactly the same validation images (so `chosenOn` is what the stored threshold gives
there) and does not sit on one validation image's confidence: a model that separates
validation perfectly with saturated confidences (1.0) gets a threshold between the classes, not
1.0.

When validation cannot support the rule (no validation image of P, or none of the other
labels), an explicitly configured rule fails the evaluation with what is missing; the default
rule falls back to the most confident label and says so in `note`.

Metrics at the point, per label one-vs-rest (two labels: the positive label only): sensitivity
= TP/(TP+FN), specificity = TN/(TN+FP), PPV = TP/(TP+FP), NPV = TN/(TN+FN). A rate whose
denominator is 0 (no image called P: no PPV) is undefined, reported as missing, and left out
of the resamples in which it is (see `intervals.Interval.undefined`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from patient_ml.config.models import OperatingPointConfig
from patient_ml.config.platform_metrics import AT_OPERATING_POINT
from patient_ml.evaluation.intervals import Prepared, _divide, _per_cluster
from patient_ml.evaluation.metrics import EPS
from patient_ml.exceptions import PatientMLError

Rule = Literal["youden", "targetSensitivity", "targetSpecificity", "argmax"]


class OperatingPointError(PatientMLError):
    """The validation split cannot support the operating point's rule."""


class _Wire(BaseModel):
    model_config = ConfigDict(
        alias_generator=to_camel,
        validate_by_name=True,
        validate_by_alias=True,
        serialize_by_alias=True,
        frozen=True,
        extra="ignore",
    )


class LabelRef(_Wire):
    index: int
    name: str


class ChosenOn(_Wire):
    """What the stored threshold gave on the split it was chosen on."""

    split: Literal["validation"] = "validation"
    images: int
    positives: int = Field(description="Validation images of the positive label.")
    negatives: int
    sensitivity: float
    specificity: float


class OperatingPoint(_Wire):
    """A decision rule with its threshold, as stored with the run (`pml_runs.operating_point`)
    and shown on the wire."""

    rule: Rule
    positive_label: LabelRef | None = Field(
        None, description="The label the threshold is for (None: argmax)."
    )
    threshold: float | None = Field(
        None, description="Call positiveLabel when its confidence is at least this."
    )
    target: float | None = None
    default: bool = Field(False, description="The rule is the default (the config names none).")
    chosen_on: ChosenOn | None = None
    note: str | None = Field(None, description="Why the rule could not be applied as stated.")

    def wire(self) -> dict[str, Any]:
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)

    def decide(self, p: np.ndarray, indices: Sequence[int]) -> np.ndarray:
        """The decided label's position (in `indices`) for each row of normalised confidences
        `p` (n x len(indices))."""
        if p.shape[0] == 0:
            return np.zeros(0, dtype=np.int64)
        top = p.argmax(axis=1)
        if self.threshold is None or self.positive_label is None:
            return top
        positions = {int(c): k for k, c in enumerate(indices)}
        pos = positions.get(self.positive_label.index)
        if pos is None:
            return top
        others = p.copy()
        others[:, pos] = -np.inf
        return np.where(p[:, pos] >= self.threshold, pos, others.argmax(axis=1))

    def decide_one(self, confidences: dict[int, float]) -> int:
        """The decided label index of one answer (label index -> confidence)."""
        indices = sorted(confidences)
        row = np.array([[max(float(confidences[i]), 0.0) for i in indices]])
        row = row / max(float(row.sum()), EPS)
        return indices[int(self.decide(row, indices)[0])]

    def describe(self) -> str:
        """One line: "youden on tumor: threshold 0.412 (validation sensitivity 0.950, ...)"."""
        if self.threshold is None or self.positive_label is None:
            text = "the most confident label (no threshold)"
        else:
            target = f"{self.target:g}" if self.target is not None else "?"
            what = {
                "youden": "Youden's J",
                "targetSensitivity": f"sensitivity >= {target}",
                "targetSpecificity": f"specificity >= {target}",
            }.get(self.rule, self.rule)
            text = f"{self.positive_label.name} at confidence >= {self.threshold:.3f} ({what}"
            if self.chosen_on is not None:
                text += (
                    f"; validation sensitivity {self.chosen_on.sensitivity:.3f}, specificity "
                    f"{self.chosen_on.specificity:.3f}"
                )
            text += ")"
        return text + (f"; {self.note}" if self.note else "")


def stored(value: dict[str, Any] | None) -> OperatingPoint | None:
    """The operating point stored with a run (None: none stored)."""
    return OperatingPoint.model_validate(value) if value else None


ARGMAX = OperatingPoint(rule="argmax")


@dataclass(frozen=True)
class Wanted:
    """A rule resolved against the dataset's labels, before its threshold is chosen."""

    rule: Rule
    positive: LabelRef | None
    target: float | None
    default: bool

    @property
    def needs_validation(self) -> bool:
        return self.rule != "argmax"


def resolve(config: dict[str, Any] | None, labels: Sequence[tuple[int, str]]) -> Wanted:
    """The rule of a run's `operatingPoint` config (None: the default) for its labels."""
    ordered = sorted(labels)
    if not config:
        if len(ordered) == 2:
            index, name = ordered[-1]
            return Wanted("youden", LabelRef(index=index, name=name), None, True)
        return Wanted("argmax", None, None, True)
    cfg = OperatingPointConfig.model_validate(config)
    if cfg.rule == "argmax":
        return Wanted("argmax", None, None, False)
    names = {name: index for index, name in ordered}
    if cfg.positive_label is None:
        if len(ordered) != 2:
            raise OperatingPointError(
                f"operatingPoint rule {cfg.rule!r} needs positiveLabel with {len(ordered)} labels.",
                fix="name the label the threshold is for in operatingPoint.positiveLabel",
            )
        index, name = ordered[-1]
    elif cfg.positive_label not in names:
        raise OperatingPointError(
            f"operatingPoint.positiveLabel {cfg.positive_label!r} is not a label of the run's "
            f"dataset ({', '.join(repr(n) for _, n in ordered)}).",
            fix="name one of the dataset's labels in operatingPoint.positiveLabel",
        )
    else:
        name, index = cfg.positive_label, names[cfg.positive_label]
    return Wanted(cfg.rule, LabelRef(index=index, name=name), cfg.target, False)


def choose(
    wanted: Wanted,
    indices: Sequence[int],
    y: Sequence[int],
    probabilities: Sequence[Sequence[float]] | np.ndarray,
    *,
    where: str = "the validation split",
) -> OperatingPoint:
    """The operating point of `wanted` on validation answers: `y` the true label indices,
    `probabilities[i][k]` the confidence of `indices[k]` for image i."""
    if wanted.rule == "argmax" or wanted.positive is None:
        return OperatingPoint(rule="argmax", default=wanted.default)
    positive = wanted.positive
    order = list(indices)
    p = np.asarray(probabilities, dtype=np.float64).reshape(len(y), len(order))
    p = p / np.clip(p.sum(axis=1, keepdims=True), EPS, None)
    score = p[:, order.index(positive.index)] if len(y) else np.zeros(0)
    is_positive = np.asarray(y, dtype=np.int64) == positive.index
    n_pos, n_neg = int(is_positive.sum()), int((~is_positive).sum())
    if n_pos == 0 or n_neg == 0:
        problem = (
            f"rule {wanted.rule!r} needs images of {positive.name!r} and of the other labels in "
            f"{where}, which has {n_pos} and {n_neg}"
        )
        if wanted.default:
            return OperatingPoint(
                rule="argmax",
                default=True,
                note=f"the default {problem}: the most confident label decides",
            )
        raise OperatingPointError(
            f"The operating point cannot be chosen: {problem}.",
            fix="confirm labels of validation images of both kinds (or add data), or use "
            "operatingPoint rule 'argmax'",
        )
    distinct = np.unique(score)
    candidates = np.append(distinct, np.nextafter(distinct[-1], np.inf))  # the cuts
    pos_sorted, neg_sorted = np.sort(score[is_positive]), np.sort(score[~is_positive])
    tp = n_pos - np.searchsorted(pos_sorted, candidates, side="left")
    fp = n_neg - np.searchsorted(neg_sorted, candidates, side="left")
    sensitivity, specificity = tp / n_pos, 1.0 - fp / n_neg
    if wanted.rule == "youden":
        # the first maximum (the lowest threshold); sums that tie but for rounding
        # (0.4 + 0.8 against 0.6 + 0.6) are one maximum
        youden = sensitivity + specificity
        at = int(np.flatnonzero(youden >= youden.max() - 1e-12).min())
    elif wanted.rule == "targetSensitivity":
        at = int(np.flatnonzero(sensitivity >= float(wanted.target or 0) - 1e-12).max())
    else:
        at = int(np.flatnonzero(specificity >= float(wanted.target or 0) - 1e-12).min())
    return OperatingPoint(
        rule=wanted.rule,
        positive_label=positive,
        threshold=_between(distinct, at),
        target=wanted.target,
        default=wanted.default,
        chosen_on=ChosenOn(
            images=len(y),
            positives=n_pos,
            negatives=n_neg,
            sensitivity=float(sensitivity[at]),
            specificity=float(specificity[at]),
        ),
    )


def _between(distinct: np.ndarray, at: int) -> float:
    """The threshold of the cut at `distinct[at]` (`at == len(distinct)`: above every score):
    midway to the next lower distinct score (0 below the lowest; the top cut midway to 1), never
    at or below that lower score, so it calls exactly the images the cut calls."""
    below = float(distinct[at - 1]) if at > 0 else 0.0
    cut = float(distinct[at]) if at < len(distinct) else max(1.0, below)
    middle = (below + cut) / 2
    if at > 0 and middle <= below:  # adjacent floats (or a top score of 1): step just above
        return float(np.nextafter(below, np.inf))
    return middle


def for_champion(value: dict[str, Any] | None, labels: Sequence[tuple[int, str]]) -> OperatingPoint:
    """The champion's own stored operating point; the most confident label (with a note) when
    it has none or its positive label is not among the labels any more."""
    point = stored(value)
    if point is None:
        return OperatingPoint(
            rule="argmax",
            note="no operating point is stored with the champion (evaluated before operating "
            "points were): its most confident label decides",
        )
    if point.positive_label is not None and point.positive_label.index not in {
        i for i, _ in labels
    }:
        return OperatingPoint(
            rule="argmax",
            note=f"the champion's positive label {point.positive_label.name!r} is not among "
            "the labels any more: its most confident label decides",
        )
    return point


def reported_positions(point: OperatingPoint, indices: Sequence[int]) -> tuple[int, ...]:
    """Positions of the labels whose rates are reported: two labels, the positive one (argmax:
    the higher index); more, every label."""
    order = list(indices)
    if len(order) != 2:
        return tuple(range(len(order)))
    if point.positive_label is not None and point.positive_label.index in order:
        return (order.index(point.positive_label.index),)
    return (order.index(max(order)),)


def rates(
    y: np.ndarray, predicted: np.ndarray, k: int, reported: Sequence[int]
) -> dict[int, dict[str, float | int | None]]:
    """Plain counts and rates per reported label position (one-vs-rest at the decision)."""
    out: dict[int, dict[str, float | int | None]] = {}
    for c in reported:
        truth, called = y == c, predicted == c
        tp, fn = int((truth & called).sum()), int((truth & ~called).sum())
        fp, tn = int((~truth & called).sum()), int((~truth & ~called).sum())

        def share(top: int, bottom: int) -> float | None:
            return top / bottom if bottom else None

        out[c] = {
            "sensitivity": share(tp, tp + fn),
            "specificity": share(tn, tn + fp),
            "ppv": share(tp, tp + fp),
            "npv": share(tn, tn + fn),
            "tp": tp,
            "fn": fn,
            "fp": fp,
            "tn": tn,
        }
    return out


@dataclass(frozen=True)
class OperatingPointStatistic:
    """sensitivity:<label>, specificity:<label>, ppv:<label>, npv:<label> at a decision, for
    `intervals.ClusterBootstrap` (per-cluster confusion counts weighted by the resample)."""

    label_names: tuple[str, ...]
    reported: tuple[int, ...]  # positions of the labels reported
    y: np.ndarray  # true label position of each example
    predicted: np.ndarray  # decided label position of each example

    @classmethod
    def of(
        cls,
        point: OperatingPoint,
        labels: Sequence[tuple[int, str]],
        y_true: Sequence[int],
        probabilities: Sequence[Sequence[float]] | np.ndarray,
    ) -> OperatingPointStatistic:
        indices = [i for i, _ in labels]
        position = {c: k for k, c in enumerate(indices)}
        y = np.array([position[int(v)] for v in y_true], dtype=np.int64)
        p = np.asarray(probabilities, dtype=np.float64).reshape(len(y), len(indices))
        p = p / np.clip(p.sum(axis=1, keepdims=True), EPS, None)
        return cls(
            tuple(n for _, n in labels),
            reported_positions(point, indices),
            y,
            point.decide(p, indices),
        )

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(
            f"{family}:{self.label_names[c]}"
            for c in self.reported
            for family in AT_OPERATING_POINT
        )

    def counts(self) -> dict[int, dict[str, float | int | None]]:
        return rates(self.y, self.predicted, len(self.label_names), self.reported)

    def prepare(self, index: np.ndarray, clusters: int) -> Prepared:
        k = len(self.label_names)
        n = len(self.y)
        rows = np.zeros((n, k * k))
        rows[np.arange(n), self.y * k + self.predicted] = 1.0
        sums = _per_cluster(index, clusters, rows)
        reported = list(self.reported)

        def values(w: np.ndarray) -> np.ndarray:
            confusion = (w @ sums).reshape(w.shape[0], k, k)
            total = confusion.sum(axis=(1, 2))
            columns = []
            for c in reported:
                tp = confusion[:, c, c]
                fn = confusion[:, c, :].sum(axis=1) - tp
                fp = confusion[:, :, c].sum(axis=1) - tp
                tn = total - tp - fn - fp
                columns += [
                    _divide(tp, tp + fn, np.nan),
                    _divide(tn, tn + fp, np.nan),
                    _divide(tp, tp + fp, np.nan),
                    _divide(tn, tn + fn, np.nan),
                ]
            return np.column_stack(columns) if columns else np.zeros((w.shape[0], 0))

        return values
