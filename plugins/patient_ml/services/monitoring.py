"""Monitoring of a deployed champion: its reference profile, the monitor check, the events.

- `build_reference` (at deploy): the image statistics and descriptors of one image per
  independent cluster (patient, or copy group where larger) of the snapshot's confirmed
  examples in every split (images of one cluster are not independent draws: a test split of
  130 images may hold 40 clusters, and comparing a window with its copies raised false
  alarms), and the outputs the evaluation already got for the confirmed test split (less the
  examples with a copy in train, as in evaluation; its report's challenger answers: nothing is
  scored twice), with the
  run's test metrics and their 95 % intervals, which resample the test set's independent
  clusters (patients, or copy groups where larger).
- `check_model` (the monitor DAG's task): the newest predictions of the champion in the
  window (`monitoring.windowHours`, at most `windowSize`) against the reference:
  input drift per statistic (KS or PSI), prediction drift (chi-square of the predicted-label
  shares, KS and mean drop of the top confidence), and live performance on predictions whose
  images have confirmed labels in the dataset's newest snapshot (not in the champion's train or
  validation split), with a bootstrap 95% interval against the champion's test value. That
  interval resamples predictions, not patients: the prediction log keeps no patient ids (by
  design), so images of one patient cannot be grouped and the interval can be too narrow when
  a patient is imaged many times; the event says so. Fewer
  than `minSamples` predictions (or `livePerformance.minLabelled` labelled ones) give no
  verdict. Each site's and device's window (`monitoring.subgroups`) is also checked on its own
  against its part of the reference (`services.monitoring_subgroups`). Every check is
  recorded as a monitoring event; a breach is also an audit event.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import orjson
from pydantic import ValidationError
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from patient_ml.config.monitoring import MonitoringSettings
from patient_ml.db.engine import session_scope
from patient_ml.db.models import (
    Model,
    MonitoringEvent,
    PredictionRecord,
    ReferenceProfile,
    Run,
    Snapshot,
)
from patient_ml.db.require import present
from patient_ml.evaluation.evaluate import TestExample, TestSet, load_splits, with_test_examples
from patient_ml.evaluation.intervals import ClassificationStatistic, ClusterBootstrap
from patient_ml.monitoring import drift, estimated_performance
from patient_ml.monitoring.features import NAMES as FEATURE_NAMES
from patient_ml.monitoring.image_stats import STATISTICS, image_statistics
from patient_ml.services import audit, monitoring_subgroups, prediction_log
from patient_ml.services.common import get_by_id_or_name, to_millis
from patient_ml.services.snapshots import list_snapshots
from patient_ml.storage import ArtifactStore
from patient_ml.training.channels import iter_manifest, manifest_key, snapshot_prefix

log = logging.getLogger("patient_ml.monitoring")

DEFAULT_METRIC = "balancedAccuracy"
# A reference with fewer descriptors (one per independent cluster) gives the feature-drift
# test no verdict; the window needs `minSamples` descriptors as every other test does.
MIN_REFERENCE_DESCRIPTORS = 5
# The drift reference keeps one image of at most this many independent clusters.
MAX_REFERENCE_CLUSTERS = 600
LIVE_INTERVAL_NOTE = (
    "The live interval resamples predictions: the prediction log keeps no patient ids, so "
    "images of one patient cannot be grouped and the interval may be too narrow. The "
    "champion's test interval resamples independent clusters (patients, or copy groups)."
)


def settings_of(model: Model) -> MonitoringSettings:
    try:
        return MonitoringSettings.model_validate(model.monitoring or {})
    except ValidationError:  # a config stored by an older version: its defaults
        return MonitoringSettings()


# ----------------------------------------------------------------------------- reference


def build_reference(engine: Engine, store: ArtifactStore, run_id: str) -> dict[str, Any]:
    """Store the reference profile of `run_id` (idempotent: an existing one is kept)."""
    with session_scope(engine) as session:
        existing = session.get(ReferenceProfile, run_id)
        if existing is not None:
            return existing.profile
        run = session.get(Run, run_id)
        run = present(run, f"run {run_id}")
        snapshot = session.get(Snapshot, run.snapshot_id) if run.snapshot_id else None
        if snapshot is None:
            raise ValueError(f"run {run_id} has no snapshot, so it has no test split")
        model_id, dataset_id, snapshot_id = run.model_id, snapshot.dataset_id, snapshot.id
        report_uri = (run.evaluation or {}).get("reportUri")
        model = session.get(Model, model_id)
        subgroups = settings_of(model).subgroups if model is not None else []
    report = _evaluation_report(store, run_id, report_uri)
    answers = {a["id"]: a for a in (report.get("challenger") or {}).get("answers") or []}
    prefix = snapshot_prefix(dataset_id)
    splits = load_splits(store, dataset_id, snapshot_id, ("train", "validation", "test"))
    test = with_test_examples(splits["test"])
    examples = len(test.examples)
    population = _one_per_cluster(splits)
    items: list[dict[str, Any]] = [
        *({"statistics": image_statistics(store.read_bytes(f"{prefix}/{e.image_key}")),
           "attributes": dict(e.attributes)} for e in population),
        *({"output": _top(answers.get(e.id)), "attributes": dict(e.attributes)}
          for e in test.examples),
    ]  # fmt: skip
    metrics = (report.get("challenger") or {}).get("metrics") or {}
    profile = {
        "problemType": test.problem_type,
        "labels": [index for index, _ in test.labels],
        **_profile_part(items),
        "metrics": {k: v for k, v in metrics.items() if isinstance(v, int | float)},
        "intervals": _test_intervals(report, test, answers),
        "testSetSha256": report.get("testSetSha256"),
        "subgroups": monitoring_subgroups.reference_parts(items, subgroups, _profile_part),
    }
    with session_scope(engine) as session:
        if session.get(ReferenceProfile, run_id) is None:
            session.add(ReferenceProfile(run_id=run_id, model_id=model_id,
                                         snapshot_id=snapshot_id, examples=examples,
                                         profile=profile))  # fmt: skip
    log.info("run %s: reference profile stored: the outputs of %d test examples, the images of "
             "%d independent clusters", run_id, examples, len(population))  # fmt: skip
    return profile


def _one_per_cluster(splits: dict[str, TestSet]) -> list[TestExample]:
    """The images a window is compared with: one per independent cluster (patient, or copy
    group where larger; the first by id) of the snapshot's confirmed examples in every split,
    so that a cluster of copies weighs as one image and the reference is the population the
    champion learnt from, not only its small test split; at most MAX_REFERENCE_CLUSTERS
    (a seeded choice)."""
    chosen: dict[str, TestExample] = {}
    for split in ("train", "validation", "test"):
        for example in splits[split].examples:
            chosen.setdefault(example.cluster, example)
    found = sorted(chosen.values(), key=lambda e: e.id)
    if len(found) > MAX_REFERENCE_CLUSTERS:
        picked = np.random.default_rng(0).choice(len(found), MAX_REFERENCE_CLUSTERS, replace=False)
        found = [found[i] for i in sorted(picked)]
    return found


def _top(answer: dict[str, Any] | None) -> tuple[str, float] | None:
    """The evaluation's answer for a test example: its top label and that label's share."""
    if not answer or not answer.get("confidences"):
        return None
    total = sum(answer["confidences"].values()) or 1.0
    label, top = max(answer["confidences"].items(), key=lambda kv: kv[1])
    return label, round(top / total, 6)


def _profile_part(items: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The comparable part of a reference profile over `items` (the whole reference, or one
    subgroup's): the images' statistics and descriptors (items with `statistics`: one per
    independent cluster) and the evaluation's outputs (items with an `output`)."""
    statistics: dict[str, list[float]] = {name: [] for name in STATISTICS}
    features: list[list[float]] = []
    labels: Counter[str] = Counter()
    confidence: list[float] = []
    clusters = 0
    for item in items:
        stats = item.get("statistics")
        if stats is not None:
            clusters += 1
            for name in STATISTICS:
                if stats.get(name) is not None:
                    statistics[name].append(stats[name])
            if stats.get("features"):
                features.append(stats["features"])
        if item.get("output") is not None:
            label, top = item["output"]
            labels[label] += 1
            confidence.append(top)
    return {
        "clusters": clusters,
        "statistics": statistics,
        "features": features,
        "outputs": {"labels": dict(labels), "confidence": confidence} if labels else None,
    }


def _test_intervals(
    report: dict[str, Any], test: TestSet, answers: dict[str, Any]
) -> dict[str, Any] | None:
    """The champion's test metrics with their cluster intervals: the evaluation's own, or for a
    report from before intervals (imgClf), made here from its answers and the test clusters."""
    kept = (report.get("challenger") or {}).get("intervals")
    if kept:
        return {"clusters": kept.get("clusters"), "images": kept.get("images"),
                "metrics": kept.get("metrics") or {}}  # fmt: skip
    if test.problem_type != "imgClf" or not answers:
        return None
    scored = [e for e in test.examples if e.id in answers and e.label is not None]
    if not scored:
        return None
    indices = [index for index, _ in test.labels]
    statistic = ClassificationStatistic.of(
        indices,
        [int(e.label) for e in scored if e.label is not None],
        [[float(answers[e.id]["confidences"].get(str(i), 0.0)) for i in indices] for e in scored],
        [name for _, name in test.labels],
    )
    boot = ClusterBootstrap([e.cluster for e in scored])
    found = boot.estimate(statistic)
    return {"clusters": boot.resampling.clusters, "images": len(scored),
            "metrics": {name: i.wire() for name, i in found.items()}}  # fmt: skip


def _evaluation_report(store: ArtifactStore, run_id: str, report_uri: str | None) -> dict[str, Any]:
    key = f"runs/{run_id}/evaluation/report.json"
    try:
        report: dict[str, Any] = orjson.loads(store.read_bytes(key))
        return report
    except Exception as exc:  # no evaluation (e.g. an edge model): statistics only
        log.warning("run %s: no evaluation report at %s (%s); the reference profile has no "
                    "outputs", run_id, report_uri or key, type(exc).__name__)  # fmt: skip
        return {}


# ----------------------------------------------------------------------------- check


def check_model(
    engine: Engine, store: ArtifactStore, model_ref: str, *, actor: str
) -> dict[str, Any]:
    """Run one monitor check of the model's champion; the recorded event (wire shape)."""
    with session_scope(engine) as session:
        model = get_by_id_or_name(session, Model, model_ref)
        settings = settings_of(model)
        prediction_log.prune(session, model.id, settings.to_wire())
        run_id = model.champion_id
        if run_id is None:  # nothing deployed: nothing to watch, nothing recorded
            return {"id": None, "modelId": model.id, "runId": None, "status": "no-champion",
                    "breaches": [], "window": {}, "details": {}}  # fmt: skip
        reference = session.get(ReferenceProfile, run_id) if run_id else None
        rows = prediction_log.window(
            session, model.id, hours=settings.window_hours, size=settings.window_size,
            run_id=run_id,
        )  # fmt: skip
        window = _window_info(rows)
        if reference is None:
            return _record(session, model, run_id, "no-reference", [], window, {
                "reason": "the champion has no reference profile (it is deployed to the edge, "
                "or was deployed before monitoring existed); deploy a run to create one"},
                actor=actor)  # fmt: skip
        profile = reference.profile
        if len(rows) < settings.min_samples:
            return _record(session, model, run_id, "insufficient", [], window, {
                "reason": f"{len(rows)} prediction(s) in the window, fewer than minSamples "
                f"({settings.min_samples})"}, actor=actor)  # fmt: skip
        dataset_id, snapshot_id = model.dataset_id, reference.snapshot_id
        breaches: list[str] = []
        details: dict[str, Any] = _window_checks(profile, rows, settings, breaches)
        details["subgroups"] = monitoring_subgroups.check(
            profile, rows, settings, breaches, _window_checks
        )
        snapshots = list_snapshots(session, dataset_id)
        newest = snapshots[-1].id if snapshots else None
    details["livePerformance"] = _live_performance(
        store, dataset_id, snapshot_id, newest, profile, rows, settings, breaches
    )
    details["familyWise"] = _family_wise(details)
    with session_scope(engine) as session:
        model = get_by_id_or_name(session, Model, model_ref)
        status = "breach" if breaches else "ok"
        return _record(session, model, run_id, status, breaches, window, details, actor=actor)


def _window_info(rows: list[PredictionRecord]) -> dict[str, Any]:
    return {
        "predictions": len(rows),
        "from": to_millis(rows[0].created_at) if rows else None,
        "to": to_millis(rows[-1].created_at) if rows else None,
        "firstId": rows[0].id if rows else None,
        "lastId": rows[-1].id if rows else None,
    }


def _window_checks(
    profile: dict[str, Any],
    rows: list[PredictionRecord],
    settings: MonitoringSettings,
    breaches: list[str],
) -> dict[str, Any]:
    """The tests that need no labels, of one window (the whole one, or a subgroup's) against
    its reference."""
    return {
        "inputDrift": _input_drift(profile, rows, settings, breaches),
        "predictionDrift": _prediction_drift(profile, rows, settings, breaches),
        "featureDrift": _feature_drift(profile, rows, settings, breaches),
        "estimatedPerformance": _estimated_performance(profile, rows, settings, breaches),
    }


def _input_drift(
    profile: dict[str, Any],
    rows: list[PredictionRecord],
    settings: MonitoringSettings,
    breaches: list[str],
) -> dict[str, Any]:
    thresholds = settings.input_drift
    per_stat_alpha = thresholds.alpha / len(STATISTICS)
    result: dict[str, Any] = {"method": thresholds.method, "statistics": {}}
    for name in STATISTICS:
        reference = profile["statistics"].get(name) or []
        values = [float(v) for r in rows if (v := r.statistics.get(name)) is not None]
        if len(reference) < 2 or len(values) < settings.min_samples:
            result["statistics"][name] = {"skipped": "too few values"}
            continue
        test = drift.ks_test(reference, values)
        entry = {
            **test,
            "psi": drift.psi(reference, values),
            "referenceMean": round(float(np.mean(reference)), 4),
            "windowMean": round(float(np.mean(values)), 4),
        }
        if thresholds.method == "ks":
            entry["drifted"] = test["pValue"] < per_stat_alpha
        else:
            entry["drifted"] = entry["psi"] > thresholds.max_psi
        if entry["drifted"]:
            breaches.append(f"inputDrift.{name}")
        result["statistics"][name] = entry
    return result


def _prediction_drift(
    profile: dict[str, Any],
    rows: list[PredictionRecord],
    settings: MonitoringSettings,
    breaches: list[str],
) -> dict[str, Any]:
    outputs = profile.get("outputs")
    if profile.get("problemType") != "imgClf" or not outputs:
        return {"skipped": "the reference has no classification outputs"}
    thresholds = settings.prediction_drift
    counts = Counter(str(r.output.get("label")) for r in rows if r.output.get("label") is not None)
    labels = drift.label_chi_square(outputs["labels"], counts)
    labels["drifted"] = labels["pValue"] < thresholds.alpha
    if labels["drifted"]:
        breaches.append("predictionDrift.labels")
    confidences = [float(r.output["confidence"]) for r in rows
                   if r.output.get("confidence") is not None]  # fmt: skip
    result: dict[str, Any] = {"labels": labels}
    reference = outputs.get("confidence") or []
    if len(reference) >= 2 and len(confidences) >= 2:
        test = drift.ks_test(reference, confidences)
        drop = float(np.mean(reference) - np.mean(confidences))
        confidence = {**test, "referenceMean": round(float(np.mean(reference)), 4),
                      "windowMean": round(float(np.mean(confidences)), 4),
                      "drop": round(drop, 4)}  # fmt: skip
        confidence["drifted"] = (
            test["pValue"] < thresholds.alpha and drop > thresholds.max_confidence_drop
        )
        if confidence["drifted"]:
            breaches.append("predictionDrift.confidence")
        result["confidence"] = confidence
    return result


def _family_wise(details: dict[str, Any]) -> dict[str, Any]:
    """Every p-value of this check (the whole window's and each subgroup's), Holm-adjusted as
    one family: how surprising the most surprising test is given how many were run (each
    check's breach uses its own level)."""
    found = _p_values(details)
    for group in (details.get("subgroups") or {}).get("groups") or []:
        found.update(_p_values(group, f"subgroup.{group['attribute']}={group['value']}."))
    adjusted = drift.holm(found)
    return {"method": "holm", "tests": len(found),
            "adjusted": {k: round(v, 6) for k, v in adjusted.items()},
            "smallest": min(adjusted.values()) if adjusted else None}  # fmt: skip


def _p_values(checks: dict[str, Any], prefix: str = "") -> dict[str, float]:
    """The p-values of one window's checks, named as their breaches would be."""
    found: dict[str, float] = {}
    for name, entry in (checks.get("inputDrift") or {}).get("statistics", {}).items():
        if "pValue" in entry:
            found[f"{prefix}inputDrift.{name}"] = entry["pValue"]
    prediction = checks.get("predictionDrift") or {}
    for name in ("labels", "confidence"):
        if "pValue" in (prediction.get(name) or {}):
            found[f"{prefix}predictionDrift.{name}"] = prediction[name]["pValue"]
    if "pValue" in (checks.get("featureDrift") or {}):
        found[f"{prefix}featureDrift.images"] = checks["featureDrift"]["pValue"]
    return found


def _feature_drift(
    profile: dict[str, Any],
    rows: list[PredictionRecord],
    settings: MonitoringSettings,
    breaches: list[str],
) -> dict[str, Any]:
    """The window's texture and sharpness descriptors against the reference's (MMD test)."""
    thresholds = settings.feature_drift
    if not thresholds.enabled:
        return {"skipped": "featureDrift.enabled is false"}
    reference = profile.get("features") or []
    window = [r.statistics["features"] for r in rows if (r.statistics or {}).get("features")]
    if not reference:
        return {"skipped": "the reference profile has no image descriptors (made before "
                "feature drift existed): the next deployment makes one"}  # fmt: skip
    if len(reference) < MIN_REFERENCE_DESCRIPTORS:
        return {"skipped": f"the reference profile has {len(reference)} image descriptor(s), "
                f"fewer than {MIN_REFERENCE_DESCRIPTORS}"}  # fmt: skip
    if len(window) < settings.min_samples:
        return {"skipped": f"{len(window)} prediction(s) with a descriptor, fewer than "
                f"minSamples ({settings.min_samples})"}  # fmt: skip
    result = drift.mmd_test(reference, window, permutations=thresholds.permutations)
    ref, win = np.asarray(reference, float), np.asarray(window, float)
    spread = ref.std(axis=0)
    spread[spread <= 1e-9] = 1.0
    shift = (win.mean(axis=0) - ref.mean(axis=0)) / spread
    order = np.argsort(-np.abs(shift))[:3]
    result["largestShifts"] = {FEATURE_NAMES[i]: round(float(shift[i]), 2) for i in order}
    result["drifted"] = result["pValue"] < thresholds.alpha
    if result["drifted"]:
        breaches.append("featureDrift.images")
    return result


def _estimated_performance(
    profile: dict[str, Any],
    rows: list[PredictionRecord],
    settings: MonitoringSettings,
    breaches: list[str],
) -> dict[str, Any]:
    """The window's performance from the model's own probabilities (no labels needed)."""
    if not settings.estimate_performance:
        return {"skipped": "estimatePerformance is false"}
    if profile.get("problemType") != "imgClf":
        return {"skipped": "performance is estimated for imgClf models"}
    labels = [str(x) for x in profile.get("labels") or []]
    probabilities = [[float(r.output["confidences"].get(k, 0.0)) for k in labels]
                     for r in rows if r.output.get("confidences")]  # fmt: skip
    if len(probabilities) < settings.min_samples or len(labels) < 2:
        return {"skipped": f"{len(probabilities)} prediction(s) with probabilities, fewer "
                f"than minSamples ({settings.min_samples})"}  # fmt: skip
    found = estimated_performance.estimate(probabilities)
    metric = settings.live_performance.metric or DEFAULT_METRIC
    champion = profile.get("metrics", {}).get(metric)
    result: dict[str, Any] = {**found, "metric": metric, "championTest": champion}
    estimated = found.get(metric)
    if estimated is None or champion is None:
        result["breached"] = False
        return result
    floor = float(champion) - settings.live_performance.max_regression
    result["floor"] = round(floor, 4)
    result["breached"] = estimated["high"] < floor
    if result["breached"]:
        breaches.append(f"estimatedPerformance.{metric}")
    return result


def _live_performance(
    store: ArtifactStore,
    dataset_id: str,
    champion_snapshot: str | None,
    newest_snapshot: str | None,
    profile: dict[str, Any],
    rows: list[PredictionRecord],
    settings: MonitoringSettings,
    breaches: list[str],
) -> dict[str, Any]:
    if profile.get("problemType") != "imgClf":
        return {"skipped": "live performance is computed for imgClf models"}
    if newest_snapshot is None:
        return {"skipped": "the dataset has no snapshot with labels"}
    seen_in_training: set[str] = set()
    if champion_snapshot:
        for entry in _entries(store, dataset_id, champion_snapshot):
            if entry["split"] in ("train", "validation"):
                seen_in_training.add(entry["image"]["sha256"])
    truth: dict[str, int] = {}
    for entry in _entries(store, dataset_id, newest_snapshot):
        label = entry["label"]
        sha = entry["image"]["sha256"]
        if (
            label.get("status") == "confirmed"
            and label.get("classes")
            and (sha not in seen_in_training)
        ):
            truth[sha] = int(label["classes"][0])
    labels = [int(x) for x in profile["labels"]]
    matched = [(truth[r.image_sha256], r) for r in rows if r.image_sha256 in truth]
    matched = [(y, r) for y, r in matched if r.output.get("confidences")]
    lp = settings.live_performance
    metric = lp.metric or DEFAULT_METRIC
    result: dict[str, Any] = {"metric": metric, "labelled": len(matched),
                              "snapshotId": newest_snapshot}  # fmt: skip
    if len(matched) < lp.min_labelled:
        result["skipped"] = (
            f"{len(matched)} labelled prediction(s), fewer than minLabelled ({lp.min_labelled})"
        )
        return result
    y = [t for t, _ in matched]
    p = [[float(r.output["confidences"].get(str(k), 0.0)) for k in labels] for _, r in matched]
    # One unit per prediction: the log keeps no patient ids, so patients cannot be grouped.
    boot = ClusterBootstrap(None, images=len(y))
    found = boot.estimate(ClassificationStatistic.of(labels, y, p)).get(metric)
    observed = found.value if found and found.value is not None else float("nan")
    low = found.low if found and found.low is not None else float("nan")
    high = found.high if found and found.high is not None else float("nan")
    champion = profile.get("metrics", {}).get(metric)
    result.update(value=round(observed, 4), ci95=[round(low, 4), round(high, 4)],
                  championTest=champion)  # fmt: skip
    result["resampled"] = "predictions"
    result["note"] = LIVE_INTERVAL_NOTE
    kept = ((profile.get("intervals") or {}).get("metrics") or {}).get(metric)
    if kept and kept.get("low") is not None:
        result["championTestCi95"] = [round(kept["low"], 4), round(kept["high"], 4)]
        result["championTestClusters"] = (profile.get("intervals") or {}).get("clusters")
    result["breached"] = champion is not None and high < float(champion) - lp.max_regression
    if result["breached"]:
        breaches.append(f"livePerformance.{metric}")
    return result


def _entries(store: ArtifactStore, dataset_id: str, snapshot_id: str) -> Iterator[dict[str, Any]]:
    entries = iter_manifest(store, manifest_key(dataset_id, snapshot_id))
    next(entries)  # the header
    return entries


def _record(
    session: Session,
    model: Model,
    run_id: str | None,
    status: str,
    breaches: list[str],
    window: dict[str, Any],
    details: dict[str, Any],
    *,
    actor: str,
) -> dict[str, Any]:
    event = MonitoringEvent(model_id=model.id, run_id=run_id, status=status, breaches=breaches,
                            window=window, details=details, actor=actor)  # fmt: skip
    session.add(event)
    session.flush()
    if status == "breach":
        audit.record(session, actor=actor, action="model.monitoring.breach", entity_type="model",
                     entity_id=model.id, after={"eventId": event.id, "runId": run_id,
                                                "breaches": breaches})  # fmt: skip
    log.info("model %s: monitor check %s %s", model.name, status, breaches or "")
    return event_to_wire(event)


def event_to_wire(event: MonitoringEvent) -> dict[str, Any]:
    return {
        "id": event.id,
        "modelId": event.model_id,
        "runId": event.run_id,
        "status": event.status,
        "breaches": list(event.breaches or []),
        "window": event.window or {},
        "details": event.details or {},
        "actor": event.actor,
        "createdAt": to_millis(event.created_at),
    }


def list_events(
    session: Session, model_ref: str, *, limit: int = 50, status: str | None = None
) -> list[dict[str, Any]]:
    model = get_by_id_or_name(session, Model, model_ref)
    query = select(MonitoringEvent).where(MonitoringEvent.model_id == model.id)
    if status is not None:
        query = query.where(MonitoringEvent.status == status)
    events = session.scalars(query.order_by(MonitoringEvent.id.desc()).limit(limit))
    return [event_to_wire(e) for e in events]


def reference_summary(session: Session, run_id: str | None) -> dict[str, Any] | None:
    reference = session.get(ReferenceProfile, run_id) if run_id else None
    if reference is None:
        return None
    profile = reference.profile
    return {
        "runId": reference.run_id,
        "snapshotId": reference.snapshot_id,
        "examples": reference.examples,
        "clusters": profile.get("clusters"),
        "subgroups": {
            name: sorted(values) for name, values in (profile.get("subgroups") or {}).items()
        },
        "statistics": {
            k: {"mean": round(float(np.mean(v)), 4) if v else None, "n": len(v)}
            for k, v in profile.get("statistics", {}).items()
        },
        "labels": (profile.get("outputs") or {}).get("labels"),
        "metrics": profile.get("metrics"),
        "intervals": profile.get("intervals"),
        "createdAt": to_millis(reference.created_at),
    }
