"""Platform metrics against values computed by hand on small fixed sets."""

from __future__ import annotations

import math

import numpy as np
import pytest

from patient_ml.evaluation.metrics import classification_metrics, segmentation_metrics

# 6 examples, labels 0/1. Predictions (argmax): 0,0,1,1,1,0 vs truth 0,0,0,1,1,1.
TRUTH = [0, 0, 0, 1, 1, 1]
PROBS = [[0.9, 0.1], [0.6, 0.4], [0.3, 0.7], [0.2, 0.8], [0.45, 0.55], [0.7, 0.3]]


def test_binary_classification_by_hand() -> None:
    m = classification_metrics([0, 1], TRUTH, PROBS)
    # confusion: true 0 -> [2 predicted 0, 1 predicted 1]; true 1 -> [1, 2]
    assert m["confusionMatrix"] == {"labels": [0, 1], "counts": [[2, 1], [1, 2]]}
    assert m["accuracy"] == pytest.approx(4 / 6)
    assert m["balancedAccuracy"] == pytest.approx((2 / 3 + 2 / 3) / 2)
    assert m["perClass"]["0"] == {"precision": pytest.approx(2 / 3), "recall": 2 / 3, "support": 3}
    assert m["macroF1"] == pytest.approx(2 / 3)
    # AUROC: positive scores 0.8, 0.55, 0.3 vs negative 0.1, 0.4, 0.7:
    # pairs won: 0.8>all 3, 0.55>0.1,0.4 (2), 0.3>0.1 (1) = 6 of 9
    assert m["auroc"] == pytest.approx(6 / 9)
    expected_log_loss = -np.mean(np.log([0.9, 0.6, 0.3, 0.8, 0.55, 0.3]))
    assert m["logLoss"] == pytest.approx(expected_log_loss)
    # ECE (10 bins by max confidence): bins 0.9 {0.9: correct}, 0.6 {0.6 ok}, 0.7 {0.7 wrong,
    # 0.7 wrong}, 0.8 {0.8 ok}, 0.55 {0.55 ok}:
    # |1-0.9|/6 + |1-0.6|/6 + 2*|0-0.7|/6 + |1-0.8|/6 + |1-0.55|/6
    expected_ece = (0.1 + 0.4 + 1.4 + 0.2 + 0.45) / 6
    assert m["expectedCalibrationError"] == pytest.approx(expected_ece)


def test_ties_count_half_in_auroc_and_perfect_scores() -> None:
    m = classification_metrics([0, 1], [0, 1], [[0.5, 0.5], [0.5, 0.5]])
    assert m["auroc"] == pytest.approx(0.5)
    perfect = classification_metrics([0, 1], [0, 1, 1], [[1, 0], [0, 1], [0.2, 0.8]])
    assert perfect["accuracy"] == perfect["balancedAccuracy"] == perfect["auroc"] == 1.0


def test_non_contiguous_label_indices_and_multiclass() -> None:
    labels = [2, 5, 7]
    truth = [2, 5, 7, 7]
    probs = [[0.8, 0.1, 0.1], [0.1, 0.8, 0.1], [0.1, 0.2, 0.7], [0.6, 0.2, 0.2]]
    m = classification_metrics(labels, truth, probs)
    assert m["confusionMatrix"]["counts"] == [[1, 0, 0], [0, 1, 0], [1, 0, 1]]
    assert m["balancedAccuracy"] == pytest.approx((1 + 1 + 0.5) / 3)
    assert m["perClass"]["7"]["recall"] == 0.5 and m["perClass"]["2"]["precision"] == 0.5
    assert 0.0 <= m["auroc"] <= 1.0


def test_one_class_only_has_no_auroc_and_shape_errors_are_clear() -> None:
    assert classification_metrics([0, 1], [1, 1], [[0.2, 0.8], [0.6, 0.4]])["auroc"] is None
    with pytest.raises(ValueError, match="shape"):
        classification_metrics([0, 1], [0, 1], [[1.0], [0.0]])


def test_segmentation_by_hand() -> None:
    truth = np.array([[0, 1, 1], [0, 1, 0]])
    pred = np.array([[0, 1, 0], [1, 1, 0]])
    m = segmentation_metrics([1], [truth], [pred])
    # label 1: truth 3 px, predicted 3 px, overlap 2 -> Dice 4/6, IoU 2/4
    assert m["perLabel"]["1"] == {"dice": pytest.approx(4 / 6), "iou": pytest.approx(0.5)}
    assert m["meanDice"] == pytest.approx(4 / 6) and m["meanIoU"] == pytest.approx(0.5)
    pooled = segmentation_metrics([1], [truth, np.zeros((2, 3), int)], [pred, np.ones((2, 3))])
    # second mask: truth 0 px, predicted 6 px -> pooled: overlap 2, truth 3, predicted 9
    assert pooled["perLabel"]["1"]["dice"] == pytest.approx(4 / 12)
    empty = segmentation_metrics([1], [np.zeros((2, 2))], [np.zeros((2, 2))])
    assert empty["meanDice"] == 1.0 and math.isclose(empty["meanIoU"], 1.0)
    with pytest.raises(ValueError, match="shapes differ"):
        segmentation_metrics([1], [truth], [np.zeros((3, 3))])


def test_reliability_bins_match_the_calibration_error() -> None:
    y_true = [0, 0, 1, 1, 1]
    probabilities = [[0.95, 0.05], [0.65, 0.35], [0.35, 0.65], [0.4, 0.6], [0.05, 0.95]]
    m = classification_metrics([0, 1], y_true, probabilities)
    bins = m["reliability"]
    assert [b["count"] for b in bins] == [1, 2, 2]  # bins (0.5, 0.6], (0.6, 0.7], (0.9, 1]
    assert bins[0] == {"confidence": pytest.approx(0.6), "accuracy": 1.0, "count": 1}
    assert bins[1] == {"confidence": pytest.approx(0.65), "accuracy": 1.0, "count": 2}
    assert bins[2] == {"confidence": pytest.approx(0.95), "accuracy": 1.0, "count": 2}
    ece = sum(b["count"] / 5 * abs(b["accuracy"] - b["confidence"]) for b in bins)
    assert m["expectedCalibrationError"] == pytest.approx(ece)
