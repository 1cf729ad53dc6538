"""Metrics the platform computes itself on the held-out test split (same code for champion and
challenger). A model config's objective may name one of these or one of its own
`metricDefinitions`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True)
class PlatformMetric:
    name: str
    problem_type: Literal["imgClf", "imgSeg"]
    direction: Literal["minimize", "maximize"]
    description: str
    title: str = ""  # its name in plain words


PLATFORM_METRICS: dict[str, PlatformMetric] = {
    m.name: m
    for m in (
        PlatformMetric(
            "accuracy", "imgClf", "maximize", "Share of test images classified right.", "Accuracy"
        ),
        PlatformMetric(
            "balancedAccuracy",
            "imgClf",
            "maximize",
            "Mean of per-class recall (robust to imbalance).",
            "Balanced accuracy",
        ),
        PlatformMetric(
            "macroF1", "imgClf", "maximize", "Unweighted mean of per-class F1.", "Macro F1"
        ),
        PlatformMetric(
            "auroc",
            "imgClf",
            "maximize",
            "Area under the ROC curve (macro, one-vs-rest).",
            "AUROC",
        ),
        PlatformMetric(
            "logLoss",
            "imgClf",
            "minimize",
            "Cross-entropy of predicted probabilities.",
            "Log loss",
        ),
        PlatformMetric(
            "expectedCalibrationError",
            "imgClf",
            "minimize",
            "Gap between confidence and accuracy over 10 confidence bins.",
            "Calibration error (ECE)",
        ),
        PlatformMetric(
            "meanDice",
            "imgSeg",
            "maximize",
            "Dice coefficient averaged over labels.",
            "Mean Dice",
        ),
        PlatformMetric(
            "meanIoU",
            "imgSeg",
            "maximize",
            "Intersection over union averaged over labels.",
            "Mean IoU",
        ),
    )
}

PER_LABEL_TITLES = {
    "precision": "Precision (positive predictive value)",
    "recall": "Recall (sensitivity)",
    "dice": "Dice",
    "iou": "IoU",
    "sensitivity": "Sensitivity",
    "specificity": "Specificity",
    "ppv": "Positive predictive value (PPV)",
    "npv": "Negative predictive value (NPV)",
}

AT_OPERATING_POINT = ("sensitivity", "specificity", "ppv", "npv")
"""Per-label metric families at the model's operating point (its stored threshold); precision
and recall are at the most confident label."""

PER_LABEL_PROBLEM: dict[str, Literal["imgClf", "imgSeg"]] = {
    "precision": "imgClf",
    "recall": "imgClf",
    "sensitivity": "imgClf",
    "specificity": "imgClf",
    "ppv": "imgClf",
    "npv": "imgClf",
    "dice": "imgSeg",
    "iou": "imgSeg",
}

_PER_LABEL_DESCRIPTIONS = {
    "precision": "Of the images whose most confident label is {label}, the share that are {label}.",
    "recall": "Of the {label} images, the share whose most confident label is {label}.",
    "sensitivity": "Of the {label} images, the share called {label} at the operating point.",
    "specificity": "Of the images that are not {label}, the share not called {label} at the "
    "operating point.",
    "ppv": "Of the images called {label} at the operating point, the share that are {label}.",
    "npv": "Of the images not called {label} at the operating point, the share that are not "
    "{label}.",
    "dice": "Overlap of the predicted and true {label} pixels (2 x both / sum of both).",
    "iou": "Pixels labelled {label} in both masks over those labelled {label} in either.",
}


def per_label(name: str) -> tuple[str, str] | None:
    """(family, label) of a per-label platform metric (`sensitivity:tumor`), else None."""
    family, sep, label = name.partition(":")
    if sep and label and family in PER_LABEL_PROBLEM:
        return family, label
    return None


def problem_type_of(name: str) -> Literal["imgClf", "imgSeg"] | None:
    """The problem type of a platform metric (headline or per-label); None: not one."""
    known = PLATFORM_METRICS.get(name)
    if known is not None:
        return known.problem_type
    found = per_label(name)
    return PER_LABEL_PROBLEM[found[0]] if found else None


def description_of(name: str) -> str | None:
    """A platform metric's one-line explanation (per-label ones name their label)."""
    known = PLATFORM_METRICS.get(name)
    if known is not None:
        return known.description
    found = per_label(name)
    return _PER_LABEL_DESCRIPTIONS[found[0]].format(label=found[1]) if found else None


def direction_of(name: str) -> str:
    """Whether a metric is better higher (`maximize`, also for names the platform does not
    know) or lower (`minimize`)."""
    known = PLATFORM_METRICS.get(name)
    return known.direction if known else "maximize"


METRIC_DECIMALS = 3


def metric_text(value: float, *, signed: bool = False) -> str:
    """A metric value (or a difference, signed) as every text of the product shows it: three
    decimals, so that an approver reads 0.038 next to 0.942, never 0.03804 next to 0.942."""
    return f"{value:+.{METRIC_DECIMALS}f}" if signed else f"{value:.{METRIC_DECIMALS}f}"


def plain_name(name: str) -> str:
    """A metric's name in plain words: `balancedAccuracy` is "Balanced accuracy",
    `recall:tumour` is "Recall (sensitivity) of tumour"; other names stay as they are."""
    known = PLATFORM_METRICS.get(name)
    if known is not None and known.title:
        return known.title
    family, _, label = name.partition(":")
    if label and family in PER_LABEL_TITLES:
        return f"{PER_LABEL_TITLES[family]} of {label}"
    return name
