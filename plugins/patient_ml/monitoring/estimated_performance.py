"""Performance estimated before labels arrive (confidence-based performance estimation, as
NannyML's CBPE): if the model's probabilities are calibrated, a prediction of label k with
probability p_ik for each true label i is right with probability p_ik, so the expected confusion
matrix of a window is the sum of each prediction's probabilities in the row of its predicted
label. Accuracy and balanced accuracy follow from it; their interval comes from drawing the
window's true labels from those probabilities (Monte Carlo), the spread a window of this size
would show if the probabilities were right.

What it cannot see: a shift that makes the model confidently wrong (its probabilities no longer
calibrated) leaves the estimate where it was; the feature-drift test is the check for that.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

DRAWS = 1_000


def _balanced(truth: np.ndarray, predicted: np.ndarray, labels: int) -> float:
    recalls = [
        float(np.mean(predicted[truth == k] == k)) for k in range(labels) if np.any(truth == k)
    ]
    return float(np.mean(recalls)) if recalls else float("nan")


def estimate(probabilities: Sequence[Sequence[float]], *, seed: int = 0) -> dict[str, Any]:
    """Expected accuracy and balanced accuracy of predictions with these probabilities (one
    row per prediction, one column per label, rows normalised here; the prediction is each
    row's most probable label), each with a 95 % interval of the window's own spread."""
    p = np.asarray(probabilities, dtype=np.float64)
    p = p / np.clip(p.sum(axis=1, keepdims=True), 1e-12, None)
    predicted = p.argmax(axis=1)
    rows = np.arange(len(p))
    expected_per_label = p.sum(axis=0)
    right_per_label = np.bincount(predicted, weights=p[rows, predicted], minlength=p.shape[1])
    present = expected_per_label > 1e-9
    balanced = float(np.mean(right_per_label[present] / expected_per_label[present]))
    accuracy = float(p[rows, predicted].mean())
    rng = np.random.default_rng(seed)
    cumulative = np.cumsum(p, axis=1)
    draws_accuracy, draws_balanced = [], []
    for _ in range(DRAWS):
        u = rng.random(len(p))[:, None]
        truth = np.minimum((u > cumulative).sum(axis=1), p.shape[1] - 1)
        draws_accuracy.append(float(np.mean(truth == predicted)))
        draws_balanced.append(_balanced(truth, predicted, p.shape[1]))
    return {
        "accuracy": _with_interval(accuracy, draws_accuracy),
        "balancedAccuracy": _with_interval(balanced, draws_balanced),
        "predictions": len(p),
        "method": "CBPE (expected confusion from the model's probabilities)",
    }


def _with_interval(value: float, draws: list[float]) -> dict[str, float]:
    finite = np.asarray([d for d in draws if np.isfinite(d)])
    low, high = np.percentile(finite, (2.5, 97.5)) if len(finite) else (np.nan, np.nan)
    return {"value": round(value, 4), "low": round(float(low), 4), "high": round(float(high), 4)}
