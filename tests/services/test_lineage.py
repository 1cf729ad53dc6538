"""What each stage reports to OpenLineage, built from the product DB (SQLite and PostgreSQL):
runs evaluated and decided by the product's own services, datasets named by OpenLineage's
naming, versions that are content hashes, and the same identity for an artifact in every
stage, so endpoint → artifact → snapshot → FHIR source can be walked."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import Engine

from patient_ml.db.engine import session_scope
from patient_ml.db.models import Dataset, Model, Run, Snapshot
from patient_ml.services import approvals
from patient_ml.services.endpoints import add_endpoint, mark_endpoint
from patient_ml.services.lineage import (
    approval_lineage,
    curate_lineage,
    deploy_lineage,
    evaluate_lineage,
    location,
    tune_lineage,
)
from tests.services.evaluated import evaluated_run, make_champion, model_with_policy

SNAPSHOT = "d" * 64


def test_locations_follow_openlineage_naming(tmp_path: Path) -> None:
    assert location("s3://bucket/runs/r1/model.tar.gz") == ("s3://bucket", "runs/r1/model.tar.gz")
    assert location("file:///srv/pml/a.jsonl") == ("file", "/srv/pml/a.jsonl")
    assert location(str(tmp_path / "x")) == ("file", str(tmp_path / "x"))
    assert location("http://127.0.0.1:8765/invocations") == (
        "http://127.0.0.1:8765",
        "/invocations",
    )
    assert location("https://fhir.example.org") == ("https://fhir.example.org", "/")


def _two_runs(engine: Engine, root: Path) -> tuple[str, str, str]:
    model_id = model_with_policy(engine, {})
    first = evaluated_run(engine, root, model_id, miss=0.1, snapshot_id=SNAPSHOT)
    with session_scope(engine) as session:
        approvals.decide(session, first, "approved", user="dr-a", reason="first", channel="api")
    make_champion(engine, first)
    second = evaluated_run(engine, root, model_id, miss=0.05, seed=3, snapshot_id=SNAPSHOT)
    with session_scope(engine) as session:
        approvals.decide(session, second, "approved", user="dr-b", reason="better", channel="ui")
    return model_id, first, second


def test_curate_reads_the_fhir_source_and_writes_the_snapshot(
    engine: Engine, tmp_path: Path
) -> None:
    model_id, _, _ = _two_runs(engine, tmp_path)
    asked: list[str] = []

    def base_url_of(conn_id: str) -> str:
        asked.append(conn_id)
        return "https://fhir.example.org:8443/r4/"

    with session_scope(engine) as session:
        model = session.get(Model, model_id)
        assert model is not None
        dataset = session.get(Dataset, model.dataset_id)
        assert dataset is not None
        dataset.source = {"type": "ndjson", "uri": str(tmp_path / "ndjson")}
        from_files = curate_lineage(session, dataset.id, SNAPSHOT, base_url_of)
        dataset.source = {"type": "fhirServer", "connId": "fhir_hospital"}
        stage = curate_lineage(session, dataset.id, SNAPSHOT, base_url_of)
    (files,) = from_files.inputs
    assert (files.namespace, files.name) == ("file", str(tmp_path / "ndjson"))
    assert "connId" not in files.facets["patientMl_fhirSource"].to_wire()
    (source,) = stage.inputs
    assert (source.namespace, source.name) == ("fhir://fhir.example.org:8443", "/r4")
    facet = source.facets["patientMl_fhirSource"].to_wire()
    assert facet["sourceType"] == "fhirServer" and facet["connId"] == "fhir_hospital"
    assert asked == ["fhir_hospital"]
    assert facet["codes"] and facet["labelSystem"] and facet["datasetId"] == model.dataset_id
    (snapshot,) = stage.outputs
    assert snapshot.version == SNAPSHOT
    assert (snapshot.namespace, snapshot.name) == ("file", f"/snapshots/{SNAPSHOT}/manifest.jsonl")
    assert snapshot.facets["patientMl_snapshot"].to_wire()["snapshotId"] == SNAPSHOT


def test_a_chained_snapshot_names_the_upstream_models_that_selected_its_images(
    engine: Engine, tmp_path: Path
) -> None:
    """source.fromModel: the curate stage also reads the artifacts of the runs whose
    predictions selected the images (the report's upstream batches); unknown runs are left
    out."""
    model_id, first, _ = _two_runs(engine, tmp_path)
    with session_scope(engine) as session:
        snapshot = session.get(Snapshot, SNAPSHOT)
        assert snapshot is not None
        snapshot.report = {**snapshot.report, "upstream": {"modelId": model_id, "batches": [
            {"batchId": "b1", "runId": first, "predictions": 10, "selected": 4},
            {"batchId": "b0", "runId": "gone", "predictions": 2, "selected": 0},
        ]}}  # fmt: skip
        model = session.get(Model, model_id)
        assert model is not None
        stage = curate_lineage(session, model.dataset_id, SNAPSHOT, lambda _c: None)
        run = session.get(Run, first)
        assert run is not None
        _, artifact = stage.inputs
    assert artifact.version == run.model_artifact_sha256
    assert artifact.facets["patientMl_modelArtifact"].to_wire()["runId"] == first


def test_evaluate_links_snapshot_and_champion_to_the_challenger_with_intervals(
    engine: Engine, tmp_path: Path
) -> None:
    _, first, second = _two_runs(engine, tmp_path)
    with session_scope(engine) as session:
        tuned = tune_lineage(session, second)
        stage = evaluate_lineage(session, second)
    assert [d.version for d in tuned.inputs] == [SNAPSHOT] and not tuned.outputs
    snapshot, champion = stage.inputs
    assert snapshot.version == SNAPSHOT
    assert champion.name == f"/runs/{first}/model.tar.gz" and champion.version == "0" * 64
    (artifact,) = stage.outputs
    assert artifact.name == f"/runs/{second}/model.tar.gz"
    facet = artifact.facets["patientMl_modelArtifact"].to_wire()
    assert facet["runId"] == second
    # provenance: the image that served it at evaluation (tuning recorded none in this test)
    assert facet["inferenceImageDigest"] == "local-sha256:" + "0" * 64
    assert "trainingImageDigest" not in facet and "sourceCommit" not in facet
    metrics = stage.run_facets["patientMl_metrics"].to_wire()["metrics"]
    subjects = {m["subject"] for m in metrics}
    assert subjects == {"challenger", "champion"}
    with_interval = [m for m in metrics if "low" in m]
    assert with_interval and all(m["low"] <= m["value"] <= m["high"] for m in with_interval)


def test_the_decision_and_the_endpoint_name_the_same_artifact(
    engine: Engine, tmp_path: Path
) -> None:
    model_id, _, second = _two_runs(engine, tmp_path)
    with session_scope(engine) as session:
        approval = approval_lineage(session, second)
        edge = deploy_lineage(session, second)  # no endpoint: the artifact is the deployment
        endpoint = add_endpoint(session, model_id, second, "local")
        mark_endpoint(session, endpoint.id, "healthy", actor="t",
                      url="http://127.0.0.1:9999", handle="42")  # fmt: skip
    with session_scope(engine) as session:
        cloud = deploy_lineage(session, second)
        evaluated = evaluate_lineage(session, second)
        run = session.get(Run, second)
        assert run is not None
    decision = approval.run_facets["patientMl_approval"].to_wire()
    assert decision["decision"] == "approved" and decision["user"] == "dr-b"
    assert decision["channel"] == "ui" and decision["justification"] == "better"
    own = evaluated.outputs[0]
    for stage in (approval, edge, cloud):
        assert [(d.namespace, d.name, d.version) for d in stage.inputs] == [
            (own.namespace, own.name, own.version)
        ]
    assert edge.outputs[0].facets["patientMl_endpoint"].to_wire()["deployType"] == "edge"
    (out,) = cloud.outputs
    assert (out.namespace, out.name) == ("http://127.0.0.1:9999", "/")
    assert out.facets["patientMl_endpoint"].to_wire() == {
        "modelId": model_id, "runId": second, "deployType": "cloud", "status": "healthy",
    }  # fmt: skip


def test_unknown_runs_report_nothing(engine: Engine) -> None:
    with session_scope(engine) as session:
        for build in (tune_lineage, evaluate_lineage, approval_lineage, deploy_lineage):
            stage = build(session, "no-such-run")
            assert not stage.inputs and not stage.outputs and not stage.run_facets
