"""Record a run's test-split evaluation: metrics of challenger and champion (reference shape,
stage `evaluation`) with the ends of their cluster-bootstrap intervals (`low`, `high`), their
paired differences, how many test images and independent clusters were scored, and the run's
end as `succeeded`. Idempotent: a retried evaluation replaces the evaluation metrics of the
earlier attempt."""

from __future__ import annotations

from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from patient_ml.config.platform_metrics import (
    AT_OPERATING_POINT,
    description_of,
    direction_of,
)
from patient_ml.db.models import Metric
from patient_ml.services import audit, provenance
from patient_ml.services.runs import finish_run, get_run

FIRST_RUN_NOTE = "No champion at run time: this is the model's first run, scored alone."


def flat_metrics(metrics: dict[str, Any], labels: dict[int, str]) -> dict[str, float]:
    """Scalar metrics plus per-label ones (`recall:<label>`, `dice:<label>`, ...) and those at
    the operating point (`sensitivity:<label>`, ...; undefined ones left out)."""
    flat = {k: float(v) for k, v in metrics.items() if isinstance(v, int | float)}
    for index, values in (metrics.get("perClass") or {}).items():
        name = labels.get(int(index), index)
        flat[f"precision:{name}"] = float(values["precision"])
        flat[f"recall:{name}"] = float(values["recall"])
    for index, values in (metrics.get("atOperatingPoint") or {}).items():
        name = labels.get(int(index), index)
        for family in AT_OPERATING_POINT:
            if values.get(family) is not None:
                flat[f"{family}:{name}"] = float(values[family])
    for index, values in (metrics.get("perLabel") or {}).items():
        name = labels.get(int(index), index)
        flat[f"dice:{name}"] = float(values["dice"])
        flat[f"iou:{name}"] = float(values["iou"])
    return flat


def deltas(
    challenger: dict[str, float],
    champion: dict[str, float],
    differences: dict[str, dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """challenger - champion per shared metric, and whether that is better for the metric;
    with `differences` (the report's paired intervals), the interval of the difference
    (`low`, `high`: None when it cannot be estimated)."""
    out: dict[str, Any] = {}
    for name in sorted(set(challenger) & set(champion)):
        delta = challenger[name] - champion[name]
        sign = 1 if direction_of(name) == "maximize" else -1
        out[name] = {
            "challenger": challenger[name],
            "champion": champion[name],
            "delta": delta,
            "improved": sign * delta > 0,
        }
        if differences is not None and name in differences:
            out[name]["low"] = differences[name].get("low")
            out[name]["high"] = differences[name].get("high")
    return out


def interval_of(report_subject: dict[str, Any], name: str) -> tuple[float | None, float | None]:
    """The (low, high) ends of a metric's interval in a report's challenger/champion part."""
    found = ((report_subject.get("intervals") or {}).get("metrics") or {}).get(name) or {}
    return found.get("low"), found.get("high")


def failure_cases_summary(section: dict[str, Any]) -> dict[str, Any]:
    """The report's `failureCases` for the run's evaluation summary: the cases with their
    faithfulness figures, without the maps' grids and deletion curves (those stay in the
    report). Pictures are served by the API by case number and name, never by storage path."""
    cases = []
    for case in section.get("cases") or []:
        maps = {
            name: {
                "method": found.get("method"),
                "faithfulness": {
                    k: v
                    for k, v in (found.get("faithfulness") or {}).items()
                    if k not in ("curve", "randomCurve")
                },
            }
            for name, found in (case.get("maps") or {}).items()
        }
        cases.append({**{k: v for k, v in case.items() if k != "maps"}, "maps": maps})
    return {**section, "cases": cases}


def record_evaluation(
    session: Session, run_id: str, report: dict[str, Any], *, report_uri: str, actor: str
) -> dict[str, Any]:
    run = get_run(session, run_id)
    labels = {int(x["index"]): str(x["name"]) for x in report["labels"]}
    flats = {
        subject: flat_metrics(report[subject]["metrics"], labels)
        for subject in ("challenger", "champion")
        if subject in report
    }
    session.execute(delete(Metric).where(Metric.run_id == run_id, Metric.stage == "evaluation"))
    for subject, values in flats.items():
        for name, value in values.items():
            low, high = interval_of(report[subject], name)
            session.add(
                Metric(
                    run_id=run_id,
                    subject=subject,
                    stage="evaluation",
                    name=name,
                    value=value,
                    direction=direction_of(name),
                    description=description_of(name),
                    low=low,
                    high=high,
                )
            )
    compared = (
        deltas(flats["challenger"], flats["champion"], report.get("differences"))
        if "champion" in flats
        else {}
    )
    summary: dict[str, Any] = {
        "snapshotId": report["snapshotId"],
        "testExamples": report["testExamples"],
        "testClusters": report.get("testClusters"),
        "clusterField": report.get("clusterField"),
        "testExamplesLeftOut": report.get("testExamplesLeftOut", 0),
        "resampling": report.get("resampling"),
        "testSetSha256": report["testSetSha256"],
        "championId": report["championId"],
        "labelsChanged": report["labelsChanged"],
        "reportUri": report_uri,
        "deltas": compared,
        "confusionMatrix": {
            subject: report[subject]["metrics"]["confusionMatrix"]
            for subject in flats
            if "confusionMatrix" in report[subject]["metrics"]
        },
        "reliability": {
            subject: report[subject]["metrics"]["reliability"]
            for subject in flats
            if "reliability" in report[subject]["metrics"]
        },
        "images": {
            subject: {"image": report[subject]["image"], "digest": report[subject]["imageDigest"]}
            for subject in flats
        },
        "operatingPoints": {
            subject: {
                **report[subject]["metrics"]["operatingPoint"],
                "counts": report[subject]["metrics"].get("atOperatingPoint") or {},
            }
            for subject in flats
            if "operatingPoint" in report[subject]["metrics"]
        },
    }
    if "failureCases" in report:
        summary["failureCases"] = failure_cases_summary(report["failureCases"])
    if report.get("subgroups") is not None:
        summary["subgroups"] = report["subgroups"]
        summary["subgroupSettings"] = report.get("subgroupSettings")
    if report["championId"] is None:
        summary["note"] = FIRST_RUN_NOTE
    run.evaluation = summary
    provenance.record_inference(run, report["challenger"])
    run.operating_point = summary["operatingPoints"].get("challenger")
    if run.operating_point is not None:
        run.operating_point = {k: v for k, v in run.operating_point.items() if k != "counts"}
    session.flush()
    finish_run(session, run_id, status="succeeded", actor=actor)
    audit.record(
        session,
        actor=actor,
        action="run.evaluated",
        entity_type="run",
        entity_id=run_id,
        after={
            "testSetSha256": summary["testSetSha256"],
            "testExamples": summary["testExamples"],
            "testClusters": summary["testClusters"],
            "testExamplesLeftOut": summary["testExamplesLeftOut"],
            "championId": summary["championId"],
            "operatingPoint": run.operating_point,
        },
    )
    return summary


def evaluation_metrics(session: Session, run_id: str, subject: str) -> dict[str, float]:
    return {
        m.name: m.value
        for m in session.scalars(
            select(Metric).where(
                Metric.run_id == run_id, Metric.stage == "evaluation", Metric.subject == subject
            )
        )
    }


def evaluation_intervals(
    session: Session, run_id: str, subject: str
) -> dict[str, tuple[float, float]]:
    """The (low, high) interval of each evaluation metric of `subject` that has one."""
    return {
        m.name: (m.low, m.high)
        for m in session.scalars(
            select(Metric).where(
                Metric.run_id == run_id, Metric.stage == "evaluation", Metric.subject == subject
            )
        )
        if m.low is not None and m.high is not None
    }
