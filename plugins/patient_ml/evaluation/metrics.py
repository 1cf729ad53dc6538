"""Test-split metrics computed by the platform (never by the user's code), the same way for the
challenger and the champion.

imgClf: accuracy, balanced accuracy, macro F1, per-class precision and recall, AUROC (binary:
the positive label is the higher index; more labels: macro one-vs-rest), log loss, expected
calibration error (10 equal-width confidence bins), the reliability diagram's points (mean
confidence, accuracy and count of each non-empty bin) and the confusion matrix.
imgSeg: Dice and IoU per label (over all pixels of the split) and their means.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy.stats import rankdata

EPS = 1e-15


def classification_metrics(
    labels: Sequence[int], y_true: Sequence[int], probabilities: Sequence[Sequence[float]]
) -> dict[str, Any]:
    """`probabilities[i][k]` is the confidence of `labels[k]` for example i."""
    classes = list(labels)
    position = {c: k for k, c in enumerate(classes)}
    y = np.array([position[v] for v in y_true])
    p = np.asarray(probabilities, dtype=np.float64)
    if p.shape != (len(y), len(classes)):
        raise ValueError(f"probabilities have shape {p.shape}, expected {(len(y), len(classes))}")
    p = p / np.clip(p.sum(axis=1, keepdims=True), EPS, None)
    predicted = p.argmax(axis=1)
    k = len(classes)
    confusion = np.zeros((k, k), dtype=int)
    np.add.at(confusion, (y, predicted), 1)
    support = confusion.sum(axis=1)
    predicted_count = confusion.sum(axis=0)
    tp = np.diag(confusion)
    recall = np.divide(tp, support, out=np.zeros(k), where=support > 0)
    precision = np.divide(tp, predicted_count, out=np.zeros(k), where=predicted_count > 0)
    denom = precision + recall
    f1 = np.divide(2 * precision * recall, denom, out=np.zeros(k), where=denom > 0)
    present = support > 0
    metrics: dict[str, Any] = {
        "accuracy": float(tp.sum() / max(len(y), 1)),
        "balancedAccuracy": float(recall[present].mean()) if present.any() else 0.0,
        "macroF1": float(f1[present].mean()) if present.any() else 0.0,
        "logLoss": float(-np.mean(np.log(np.clip(p[np.arange(len(y)), y], EPS, 1.0)))),
        "expectedCalibrationError": expected_calibration_error(y, p),
        "auroc": _auroc(y, p),
        "confusionMatrix": {"labels": classes, "counts": confusion.tolist()},
        "reliability": reliability_bins(y, p),
        "perClass": {
            str(c): {
                "precision": float(precision[i]),
                "recall": float(recall[i]),
                "support": int(support[i]),
            }
            for i, c in enumerate(classes)
        },
    }
    return metrics


def _confidence_bins(
    y: np.ndarray, p: np.ndarray, bins: int
) -> list[tuple[float, float, float, int]]:
    """(share of examples, mean confidence, accuracy, count) of each non-empty bin of the top
    class's confidence (equal-width bins over [0, 1])."""
    confidence = p.max(axis=1)
    correct = (p.argmax(axis=1) == y).astype(float)
    which = confidence_bin(confidence, bins)
    found = []
    for b in range(bins):
        mask = which == b
        if mask.any():
            found.append(
                (
                    float(mask.mean()),
                    float(confidence[mask].mean()),
                    float(correct[mask].mean()),
                    int(mask.sum()),
                )
            )
    return found


def confidence_bin(confidence: np.ndarray, bins: int) -> np.ndarray:
    """The bin (0..bins-1) of each confidence among `bins` equal-width bins over [0, 1]; a
    confidence on an edge belongs to the lower bin."""
    edges = np.linspace(0.0, 1.0, bins + 1)
    return np.clip(np.digitize(confidence, edges[1:-1], right=True), 0, bins - 1)


def expected_calibration_error(y: np.ndarray, p: np.ndarray, bins: int = 10) -> float:
    return float(
        sum(share * abs(acc - conf) for share, conf, acc, _ in _confidence_bins(y, p, bins))
    )


def reliability_bins(y: np.ndarray, p: np.ndarray, bins: int = 10) -> list[dict[str, Any]]:
    """The reliability diagram: accuracy against mean confidence per bin (the same bins as the
    expected calibration error)."""
    return [
        {"confidence": conf, "accuracy": acc, "count": count}
        for _, conf, acc, count in _confidence_bins(y, p, bins)
    ]


def _binary_auroc(positive: np.ndarray, score: np.ndarray) -> float | None:
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    if n_pos == 0 or n_neg == 0:
        return None
    ranks = rankdata(score)  # ties get their average rank (Mann-Whitney U)
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def _auroc(y: np.ndarray, p: np.ndarray) -> float | None:
    if p.shape[1] == 2:
        return _binary_auroc(y == 1, p[:, 1])
    values = [_binary_auroc(y == k, p[:, k]) for k in range(p.shape[1])]
    known = [v for v in values if v is not None]
    return float(np.mean(known)) if known else None


def pixel_counts(labels: Sequence[int], truth: np.ndarray, predicted: np.ndarray) -> np.ndarray:
    """Per label (rows, in `labels`' order): pixels in both masks, in the true mask, in the
    predicted mask. Sums over images give the pooled Dice and IoU."""
    if truth.shape != predicted.shape:
        raise ValueError(f"mask shapes differ: {truth.shape} vs {predicted.shape}")
    counts = np.zeros((len(labels), 3), dtype=np.int64)
    for row, label in enumerate(labels):
        t, q = truth == label, predicted == label
        counts[row] = (int(np.logical_and(t, q).sum()), int(t.sum()), int(q.sum()))
    return counts


def segmentation_metrics(
    labels: Sequence[int], truths: Sequence[np.ndarray], predictions: Sequence[np.ndarray]
) -> dict[str, Any]:
    """Dice and IoU per label, pooled over every pixel of the split, and their means."""
    total = np.zeros((len(labels), 3), dtype=np.int64)
    for truth, predicted in zip(truths, predictions, strict=True):
        total += pixel_counts(labels, truth, predicted)
    return segmentation_metrics_of_counts(labels, total)


def segmentation_metrics_of_counts(labels: Sequence[int], counts: np.ndarray) -> dict[str, Any]:
    """`segmentation_metrics` from the pooled `pixel_counts` of the split."""
    per_label: dict[str, dict[str, float]] = {}
    for label, (inter, true_count, pred_count) in zip(labels, counts.tolist(), strict=True):
        union = true_count + pred_count - inter
        both = true_count + pred_count
        per_label[str(label)] = {
            "dice": 1.0 if both == 0 else 2 * inter / both,
            "iou": 1.0 if union == 0 else inter / union,
        }
    return {
        "meanDice": float(np.mean([v["dice"] for v in per_label.values()])),
        "meanIoU": float(np.mean([v["iou"] for v in per_label.values()])),
        "perLabel": per_label,
    }
