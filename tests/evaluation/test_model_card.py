"""The model card's Markdown: metrics in plain words with their intervals, the paired
difference, and the test set counted in images and independent clusters."""

from __future__ import annotations

from typing import Any

from patient_ml.evaluation.model_card import render_markdown


def _card(**evaluation: Any) -> dict[str, Any]:
    return {
        "model": {"name": "tumour"},
        "run": {"id": "r2", "slug": "tumour-2", "status": "succeeded", "triggeredBy": "t"},
        "intendedUse": "Flags tumours.",
        "problem": {"problemType": "imgClf", "labels": [{"index": 1, "name": "tumour"}]},
        "data": {
            "snapshotId": "s",
            "examplesBySplit": {},
            "patientsBySplit": {},
            "testExamplesScored": 449,
            "testSetSha256": "ab",
        },
        "training": {
            "image": "i",
            "servedWith": None,
            "objective": {},
            "hyperparameters": {},
            "modelArtifactUri": None,
            "modelArtifactSha256": None,
        },
        "evaluation": {
            "note": None,
            "challenger": {"balancedAccuracy": 0.912, "recall:tumour": 0.9},
            "champion": {"balancedAccuracy": 0.903},
            "deltas": {},
            **evaluation,
        },
        "approval": {"status": "pending", "decisions": []},
        "deployment": {"type": "cloud", "status": None, "error": None, "isChampion": False},
    }


def test_metrics_with_intervals_and_the_clusters_they_count() -> None:
    text = render_markdown(
        _card(
            testImages=449,
            testClusters=101,
            testImagesLeftOut=3,
            intervals={
                "challenger": {"balancedAccuracy": [0.88, 0.939]},
                "champion": {"balancedAccuracy": [0.87, 0.93]},
            },
            deltas={
                "balancedAccuracy": {"delta": 0.009, "low": -0.01, "high": 0.028, "improved": True}
            },
        )
    )
    assert "Test set: 449 images · 101 independent clusters" in text
    assert "3 test images left out: a copy is in train" in text
    assert (
        "| Balanced accuracy | 0.9120 [0.8800, 0.9390] | 0.9030 [0.8700, 0.9300] | "
        "+0.0090 [-0.0100, +0.0280] ✓ |" in text
    )
    assert "| Recall (sensitivity) of tumour | 0.9000 | — | — |" in text


def test_a_card_from_before_intervals_still_renders() -> None:
    text = render_markdown(_card())
    assert "| Balanced accuracy | 0.9120 | 0.9030 | — |" in text
    assert "independent clusters" not in text
