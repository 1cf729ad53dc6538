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
}


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
