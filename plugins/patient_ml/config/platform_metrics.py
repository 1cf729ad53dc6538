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


PLATFORM_METRICS: dict[str, PlatformMetric] = {
    m.name: m
    for m in (
        PlatformMetric("accuracy", "imgClf", "maximize", "Share of test images classified right."),
        PlatformMetric(
            "balancedAccuracy",
            "imgClf",
            "maximize",
            "Mean of per-class recall (robust to imbalance).",
        ),
        PlatformMetric("macroF1", "imgClf", "maximize", "Unweighted mean of per-class F1."),
        PlatformMetric(
            "auroc", "imgClf", "maximize", "Area under the ROC curve (macro, one-vs-rest)."
        ),
        PlatformMetric(
            "logLoss", "imgClf", "minimize", "Cross-entropy of predicted probabilities."
        ),
        PlatformMetric(
            "expectedCalibrationError",
            "imgClf",
            "minimize",
            "Gap between confidence and accuracy over 10 confidence bins.",
        ),
        PlatformMetric("meanDice", "imgSeg", "maximize", "Dice coefficient averaged over labels."),
        PlatformMetric(
            "meanIoU", "imgSeg", "maximize", "Intersection over union averaged over labels."
        ),
    )
}
