"""The model card's Markdown: metrics in plain words with their intervals, the paired
difference and its verdict, the test set counted in images and independent clusters, and a
metric without an interval (runs evaluated before intervals were recorded) shown without one."""

from __future__ import annotations

from typing import Any

from patient_ml.evaluation.model_card import (
    ApprovalPart,
    Calibration,
    CardModelRef,
    CardProblem,
    CardRun,
    DeploymentPart,
    Estimate,
    FailureGallery,
    FhirSource,
    IntendedUse,
    Lineage,
    MetricRow,
    ModelCardDocument,
    Performance,
    Population,
    Provenance,
    estimate_text,
    render_markdown,
)


def _card(performance: Performance) -> ModelCardDocument:
    parts: dict[str, Any] = {
        "title": "Model card: tumour — run r2",
        "generated_at": "2026-12-06T18:00:00Z",
        "model": CardModelRef(id="m", name="tumour", revision=3),
        "run": CardRun(
            id="r2",
            slug="calm-otter-2",
            status="succeeded",
            triggered_by="t",
            started="2026-12-05T08:00:00Z",
        ),
        "problem": CardProblem(problem_type="imgClf", title="Image classification", labels=[]),
        "intended_use": IntendedUse(summary="Flags tumours.", declared=False),
        "provenance": Provenance(
            dataset_name="brain",
            fhir_source=FhirSource(kind="fhirServer", name="FHIR server"),
            inclusion_codes=["http://loinc.org|24590-2"],
        ),
        "population": Population(subgroups_recorded=False, note="No subgroup attributes."),
        "performance": performance,
        "failure_gallery": FailureGallery(recorded=False, note="No failure cases recorded."),
        "calibration": Calibration(recorded=False, note="Calibration not recorded."),
        "limitations": [],
        "lineage": Lineage(
            training_image="i",
            inference_image="i",
            package_version="0.1.0",
            objective="maximize auroc",
        ),
        "approval": ApprovalPart(status="pending", min_approvers=1),
        "deployment": DeploymentPart(type="cloud", status="not deployed", is_champion=False),
    }
    return ModelCardDocument(**parts)


def test_metrics_with_intervals_and_the_clusters_they_count() -> None:
    row = MetricRow(
        name="balancedAccuracy", title="Balanced accuracy", direction="maximize",
        challenger=Estimate(value=0.912, low=0.88, high=0.939),
        champion=Estimate(value=0.903, low=0.87, high=0.93),
        difference=Estimate(value=0.009, low=0.001, high=0.028), verdict="shownBetter",
    )  # fmt: skip
    text = render_markdown(
        _card(
            Performance(
                evaluated=True,
                test_images=449,
                test_clusters=101,
                test_images_left_out=3,
                champion_run="calm-otter-1 (r1)",
                metrics=[row],
            )
        )
    )
    assert "Test set: 449 images · 101 independent clusters" in text
    assert "3 test images left out: a copy is in train" in text
    assert "Compared with the champion, run calm-otter-1 (r1), on exactly the same test" in text
    assert (
        "| Balanced accuracy | 0.912 [0.880, 0.939] | 0.903 [0.870, 0.930] | "
        "+0.009 [+0.001, +0.028] | better ✓ |" in text
    )
    assert "started 2026-12-05 08:00 UTC, not ended" in text
    assert "- Source commit: not recorded" in text and "None" not in text


def test_a_first_run_and_a_metric_without_an_interval() -> None:
    row = MetricRow(name="auroc", title="AUROC", direction="maximize",
                    challenger=Estimate(value=0.9))  # fmt: skip
    text = render_markdown(_card(Performance(evaluated=True, test_images=10, metrics=[row])))
    assert "| Metric | Value [95 % interval] |" in text and "| AUROC | 0.900 |" in text
    assert "independent clusters" not in text and "Compared with" not in text
    assert estimate_text(None) == "—"
    assert estimate_text(Estimate(value=-0.01, low=-0.02, high=None), signed=True) == "-0.010"
