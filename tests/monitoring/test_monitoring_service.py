"""Monitoring on a real deployed model (a real sweep, a real local `serve` endpoint): the
reference profile made at deploy from the evaluation, the prediction log written by every
prediction, the monitor check (no alarm on unshifted images, a breach on shifted ones, live
performance on labelled predictions), retention, and the config's validation."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image
from pydantic import ValidationError
from sqlalchemy import func, select

from patient_ml.db import schema
from patient_ml.db.engine import get_engine, session_scope
from patient_ml.db.models import AuditEvent, PredictionRecord, ReferenceProfile
from patient_ml.deploy import stop_old_endpoints
from patient_ml.evaluation.evaluate import load_split, load_test_set
from patient_ml.exceptions import ConfigValidationError
from patient_ml.services import monitoring, prediction_log
from patient_ml.services.models import create_model, get_model, model_to_wire
from patient_ml.services.predictions import predict
from tests.curation.cohort import png
from tests.operators.lifecycle import Project, model_config

# Feature drift at 0.001 (2,000 permutations): each run's test split is a fresh draw, so at the
# default 0.01 an unshifted window alarms in about 1 run in 60 (measured: 1 of 60 draws).
MONITORING = {
    "minSamples": 10,
    "windowSize": 20,
    "livePerformance": {"minLabelled": 5},
    "featureDrift": {"alpha": 0.001, "permutations": 2000},
}


@pytest.fixture
def deployed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    yield from _deployed(tmp_path, monkeypatch, MONITORING)


@pytest.fixture
def deployed_at_two_sites(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    """The cohort's images come from two sites (DocumentReference.custodian): even patients
    from North, odd ones from South."""

    def sites(p: Project) -> None:
        for doc in p.cohort.docs:
            number = int(doc["subject"]["reference"].rsplit("p", 1)[-1])
            doc["custodian"] = {"display": "North" if number % 2 == 0 else "South"}

    yield from _deployed(tmp_path, monkeypatch, {**MONITORING, "windowSize": 100}, sites)


def _deployed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, settings: dict[str, Any], prepare: Any = None
) -> Any:
    url = f"sqlite:///{tmp_path / 'product.db'}"
    schema.upgrade(get_engine(url, check_schema=False))
    monkeypatch.setenv("PATIENT_ML_DATABASE_URL", url)
    engine = get_engine(url)
    p = Project(engine, tmp_path / "p", monitoring=settings)
    if prepare is not None:
        prepare(p)
    monkeypatch.setenv("PATIENT_ML_ARTIFACT_URI", p.artifacts)
    run_id = p.deployed_run(reason="monitoring test")
    try:
        yield p, run_id
    finally:
        stop_old_endpoints(engine, p.model_id, keep=None, actor="test-cleanup")


def _shifted(seed: int) -> bytes:
    """A synthetic image of the cohort's kind with its contrast halved and darkened."""
    pixels = np.asarray(Image.open(io.BytesIO(png(seed)))).astype(np.float32)
    out = io.BytesIO()
    Image.fromarray((pixels * 0.5).astype(np.uint8), mode="L").save(out, format="PNG")
    return out.getvalue()


def _blurred(seed: int) -> bytes:
    from PIL import ImageFilter

    image = Image.open(io.BytesIO(png(seed))).filter(ImageFilter.GaussianBlur(1.5))
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def test_reference_log_check_and_breach(deployed: Any) -> None:
    p, run_id = deployed
    engine = p.engine
    with session_scope(engine) as session:
        reference = session.get(ReferenceProfile, run_id)
        assert reference is not None and reference.examples >= 5
        profile = reference.profile
    report = json.loads(p.store.read_bytes(f"runs/{run_id}/evaluation/report.json"))
    assert reference.examples == report["testExamples"]
    # the images compared with a window: one per independent cluster of every split
    snapshot = report["snapshotId"]
    clusters = {
        e.cluster
        for split in ("train", "validation", "test")
        for e in load_split(p.store, p.dataset_id, snapshot, split).examples
    }
    assert len(profile["statistics"]["mean"]) == profile["clusters"] == len(clusters)
    assert len(clusters) > reference.examples  # more than the test split alone
    assert sum(profile["outputs"]["labels"].values()) == reference.examples  # the eval's answers
    assert (
        profile["metrics"]["balancedAccuracy"]
        == report["challenger"]["metrics"]["balancedAccuracy"]
    )
    # the champion's test interval resamples clusters (the evaluation's own, not recomputed)
    kept = profile["intervals"]
    assert kept["clusters"] == report["testClusters"] and kept["images"] == reference.examples
    assert kept["metrics"] == report["challenger"]["intervals"]["metrics"]
    # a report from before intervals: made from its answers and the manifest's clusters
    older = {**report, "challenger": {k: v for k, v in report["challenger"].items()
                                      if k != "intervals"}}  # fmt: skip
    answers = {a["id"]: a for a in report["challenger"]["answers"]}
    test = load_test_set(p.store, p.dataset_id, report["snapshotId"])
    remade = monitoring._test_intervals(older, test, answers)
    assert remade is not None and remade["clusters"] == kept["clusters"]
    for name in ("accuracy", "balancedAccuracy"):  # (the answers' rounding can tie scores)
        assert remade["metrics"][name] == pytest.approx(kept["metrics"][name], abs=1e-6)

    # too few predictions: no verdict
    first = monitoring.check_model(engine, p.store, p.model_id, actor="t")
    assert first["status"] == "insufficient" and first["breaches"] == []

    # unshifted: the labelled test examples (by id) and new images of the same kind
    for example_id in report["testExampleIds"]:
        predict(engine, p.store, p.model_id, example_id=example_id)
    for seed in range(20):
        predict(engine, p.store, p.model_id, image=png(50_000 + seed))
    with session_scope(engine) as session:
        rows = list(session.scalars(select(PredictionRecord)))
    assert len(rows) == len(report["testExampleIds"]) + 20
    row = rows[0]
    assert row.run_id == run_id and len(row.image_sha256) == 64 and row.width == 24
    assert set(row.statistics) == {"mean", "std", "p05", "p50", "p95", "features"}
    assert row.output["label"] in (0, 1) and 0 <= row.output["confidence"] <= 1
    assert not any(e in json.dumps([r.output, r.statistics]) for r in rows
                   for e in report["testExampleIds"])  # fmt: skip
    ok = monitoring.check_model(engine, p.store, p.model_id, actor="t")
    assert ok["status"] == "ok", ok
    assert ok["window"]["predictions"] == 20
    assert ok["details"]["inputDrift"]["statistics"]["mean"]["drifted"] is False
    assert ok["details"]["featureDrift"]["drifted"] is False
    assert len(profile["features"]) == profile["clusters"]
    estimated = ok["details"]["estimatedPerformance"]
    assert estimated["predictions"] == 20 and estimated["breached"] is False
    low, high = estimated["balancedAccuracy"]["low"], estimated["balancedAccuracy"]["high"]
    assert low <= estimated["balancedAccuracy"]["value"] <= high
    family = ok["details"]["familyWise"]
    assert family["method"] == "holm" and "featureDrift.images" in family["adjusted"]

    # live performance needs labelled predictions inside the window
    big = {**MONITORING, "windowSize": 100}
    with session_scope(engine) as session:
        model = get_model(session, p.model_id)
        model.monitoring = big
    labelled = monitoring.check_model(engine, p.store, p.model_id, actor="t")
    live = labelled["details"]["livePerformance"]
    assert live["labelled"] >= 5 and "value" in live and live["ci95"][0] <= live["ci95"][1]
    assert live["championTest"] == profile["metrics"]["balancedAccuracy"]
    # live windows have no patient ids: predictions are resampled, and the event says so
    assert live["resampled"] == "predictions" and "no patient ids" in live["note"]
    test_interval = kept["metrics"]["balancedAccuracy"]
    assert live["championTestCi95"] == [round(test_interval["low"], 4),
                                        round(test_interval["high"], 4)]  # fmt: skip
    assert live["championTestClusters"] == report["testClusters"]
    with session_scope(engine) as session:
        get_model(session, p.model_id).monitoring = MONITORING

    # shifted: darker, lower contrast → input drift breach, recorded and audited
    for seed in range(20):
        predict(engine, p.store, p.model_id, image=_shifted(60_000 + seed))
    breach = monitoring.check_model(engine, p.store, p.model_id, actor="t")
    assert breach["status"] == "breach"
    assert {"inputDrift.mean", "inputDrift.p50"} <= set(breach["breaches"])
    with session_scope(engine) as session:
        events = monitoring.list_events(session, p.model_id)
        audits = session.scalars(
            select(AuditEvent).where(AuditEvent.action == "model.monitoring.breach")
        ).all()
    assert [e["status"] for e in events] == ["breach", "ok", "ok", "insufficient"]
    assert len(audits) == 1 and audits[0].after["eventId"] == breach["id"]

    # blurred (a new scanner's softer images): same brightness, a feature-drift breach
    for seed in range(20):
        predict(engine, p.store, p.model_id, image=_blurred(70_000 + seed))
    soft = monitoring.check_model(engine, p.store, p.model_id, actor="t")
    assert "featureDrift.images" in soft["breaches"], soft["details"]["featureDrift"]
    assert soft["details"]["featureDrift"]["pValue"] < 0.01


def test_retention_bounds_the_log(deployed: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    p, run_id = deployed

    # a log that cannot be written never costs the prediction (failure injection)
    def broken(*args: Any, **kwargs: Any) -> None:
        raise OSError("disk full")

    with monkeypatch.context() as patched:
        patched.setattr(prediction_log, "record_prediction", broken)
        assert predict(p.engine, p.store, p.model_id, image=png(7))["predictions"]
    with session_scope(p.engine) as session:
        for i in range(30):
            prediction_log.record_prediction(
                session, model_id=p.model_id, run_id=run_id,
                statistics={"sha256": f"{i:064d}", "mean": 1.0}, output={"label": 0},
            )  # fmt: skip
        assert prediction_log.prune(session, p.model_id, {"maxLogRows": 100}) == 0
        assert prediction_log.prune(session, p.model_id, {"maxLogRows": 10}) == 20
        kept = session.scalars(select(PredictionRecord.image_sha256)).all()
        assert sorted(kept) == [f"{i:064d}" for i in range(20, 30)]  # the newest stay
        assert prediction_log.prune(session, p.model_id, {"retentionDays": 1e-9}) == 10
        assert session.scalar(select(func.count()).select_from(PredictionRecord)) == 0


def test_monitoring_config_is_validated_per_field(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'product.db'}"
    schema.upgrade(get_engine(url, check_schema=False))
    engine = get_engine(url)
    p = Project(engine, tmp_path / "p")
    with session_scope(engine) as session:
        wire = model_to_wire(get_model(session, p.model_id))
    assert wire["monitoring"]["schedule"] == "@hourly" and wire["monitoring"]["minSamples"] == 50
    bad = [
        ({"minSamples": 600, "windowSize": 500}, "monitoring.minSamples"),
        ({"schedule": "every hour"}, "monitoring.schedule"),
        ({"livePerformance": {"metric": "meanDice"}}, "monitoring.livePerformance.metric"),
        ({"inputDrift": {"alpha": 0}}, "monitoring.inputDrift.alpha"),
        ({"retentionDays": -1}, "monitoring.retentionDays"),
    ]
    for section, field in bad:
        with session_scope(engine) as session, pytest.raises(ConfigValidationError) as caught:
            create_model(session, model_config("m-bad", p.dataset_id, monitoring=section),
                         actor="t")  # fmt: skip
        assert field in str(caught.value.to_dict() if hasattr(caught.value, "to_dict")
                            else caught.value), (field, caught.value)  # fmt: skip


def test_feature_drift_needs_a_few_reference_descriptors_not_a_full_window() -> None:
    """A small test split (13 images) still gives a verdict: `minSamples` is the window's
    threshold, not the reference's (the e2e model's split is that small)."""
    from patient_ml.config.monitoring import MonitoringSettings

    settings = MonitoringSettings.model_validate({"minSamples": 15})
    rng = np.random.default_rng(0)
    rows = [
        PredictionRecord(statistics={"features": rng.normal(3, 1, 25).tolist()}, output={})
        for _ in range(20)
    ]
    reference = [rng.normal(0, 1, 25).tolist() for _ in range(13)]
    breaches: list[str] = []
    found = monitoring._feature_drift({"features": reference}, rows, settings, breaches)
    assert found["reference"] == 13 and found["drifted"] and breaches == ["featureDrift.images"]
    few = monitoring._feature_drift({"features": reference[:4]}, rows, settings, [])
    assert "fewer than 5" in few["skipped"]
    assert "no image descriptors" in monitoring._feature_drift({}, rows, settings, [])["skipped"]


def test_a_drift_at_one_site_is_caught_in_its_own_window(deployed_at_two_sites: Any) -> None:
    """Per-site windows: a new site's blurred images among a busy site's clean ones breach
    `subgroup.site=East.featureDrift.images`; the busy site's window stays clean, is checked
    against its own part of the test split, and every level is shared (Bonferroni)."""
    p, run_id = deployed_at_two_sites
    engine = p.engine
    with session_scope(engine) as session:
        profile = session.get(ReferenceProfile, run_id).profile
    parts = profile["subgroups"]["site"]
    assert set(parts) == {"North", "South"}
    assert sum(part["clusters"] for part in parts.values()) == profile["clusters"]
    assert len(parts["North"]["features"]) == parts["North"]["clusters"]

    report = json.loads(p.store.read_bytes(f"runs/{run_id}/evaluation/report.json"))
    for example_id in report["testExampleIds"][:4]:  # by id: the example's own site is kept
        predict(engine, p.store, p.model_id, example_id=example_id)
    for seed in range(30):
        predict(engine, p.store, p.model_id, image=png(60_000 + seed),
                attributes={"site": "North", "sex": "female"})  # fmt: skip
    for seed in range(12):
        predict(engine, p.store, p.model_id, image=_blurred(70_000 + seed),
                attributes={"site": "East"})  # fmt: skip
    with session_scope(engine) as session:
        rows = list(session.scalars(select(PredictionRecord).order_by(PredictionRecord.id)))
    assert all(r.attributes and set(r.attributes) == {"site"} for r in rows)  # never sex
    assert {r.attributes["site"] for r in rows[:4]} <= {"North", "South"}

    checked = monitoring.check_model(engine, p.store, p.model_id, actor="t")
    subgroups = checked["details"]["subgroups"]
    groups = {g["value"]: g for g in subgroups["groups"]}
    assert "subgroup.site=East.featureDrift.images" in checked["breaches"], checked["breaches"]
    east, north = groups["East"], groups["North"]
    assert east["predictions"] == 12 and east["reference"] == "overall"
    assert "0 independent cluster(s) with site 'East'" in east["referenceNote"]
    assert (
        north["reference"] == "subgroup"
        and north["referenceClusters"] == parts["North"]["clusters"]
    )
    assert north["breaches"] == [] and north["featureDrift"]["drifted"] is False
    assert "skipped" in groups.get("South", {"skipped": "absent"})  # too few predictions
    assert subgroups["tested"] == 2 and subgroups["levelDivisor"] == 2
    family = checked["details"]["familyWise"]["adjusted"]
    assert "subgroup.site=East.featureDrift.images" in family


def test_subgroup_levels_are_shared_and_reachable() -> None:
    """k subgroup windows run at alpha/k, with enough permutations for a p-value that small."""
    from patient_ml.config.monitoring import MonitoringSettings
    from patient_ml.services.monitoring_subgroups import (
        reference_parts,
        scaled,
        served_attributes,
    )

    settings = MonitoringSettings.model_validate({"featureDrift": {"permutations": 500}})
    assert scaled(settings, 1) is settings
    five = scaled(settings, 5)
    assert five.feature_drift.alpha == pytest.approx(0.002)
    assert five.input_drift.alpha == pytest.approx(settings.input_drift.alpha / 5)
    assert 1 / (five.feature_drift.permutations + 1) < five.feature_drift.alpha
    assert scaled(settings, 10**6).feature_drift.permutations == 10_000  # bounded
    assert served_attributes(["site", "manufacturer"], {"site": " East "}, {"site": "North",
                             "manufacturer": "GE", "sex": "male"}) == {
        "site": "East", "manufacturer": "GE"}  # fmt: skip
    assert served_attributes(["site"], None, {"site": ""}) is None
    assert served_attributes(["site"], {"site": "x" * 200})["site"] == "x" * 64
    # the reference is cut by the very values the log keeps (one rule for both)
    items = [{"attributes": {"site": " East ", "sex": "female"}}, {"attributes": {"site": " "}},
             {"attributes": {"site": "x" * 200}}, {}]  # fmt: skip
    parts = reference_parts(items, ["site"], lambda group: {"n": len(group)})
    assert parts == {"site": {"East": {"n": 1}, "x" * 64: {"n": 1}}}
    with pytest.raises(ValidationError):
        MonitoringSettings.model_validate({"subgroups": ["site", "Not A Name"]})
