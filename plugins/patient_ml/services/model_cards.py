"""The model card of a run, built from the product DB (run, model and its declared
`modelCard`, dataset, snapshot and its curation report, evaluation metrics and report summary,
approval decisions, deployment) and written to the artifact store next to the run: the
document (`ModelCardDocument`, rendered as Markdown by `patient_ml.evaluation.model_card`) and
the flat machine-readable JSON. Rewritten after evaluation, decision and deployment, so it is
always current; the API builds it afresh on every read."""

from __future__ import annotations

from typing import Any

import orjson
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from patient_ml.db.engine import session_scope
from patient_ml.db.models import Model, Snapshot
from patient_ml.db.require import present
from patient_ml.evaluation.model_card import card_keys, render_markdown
from patient_ml.services.approval_state import approval_status, decisions_of
from patient_ml.services.common import to_millis
from patient_ml.services.evaluations import evaluation_intervals, evaluation_metrics
from patient_ml.services.model_card_document import build_model_card_document
from patient_ml.services.provenance import provenance_wire
from patient_ml.services.runs import approval_to_wire, get_run
from patient_ml.storage import ArtifactStore


def build_model_card(session: Session, run_id: str) -> dict[str, Any]:
    """The flat machine-readable card (`patient-ml-model-card/1`, `model-card.json`)."""
    run = get_run(session, run_id)
    model = session.get(Model, run.model_id)
    model = present(model, f"model of run {run_id}")
    snapshot = session.get(Snapshot, run.snapshot_id) if run.snapshot_id else None
    problem = run.config["problemDefinition"]
    evaluation = run.evaluation or {}
    challenger = evaluation_metrics(session, run_id, "challenger")
    champion = evaluation_metrics(session, run_id, "champion")
    return {
        "format": "patient-ml-model-card/1",
        "model": {"id": model.id, "name": model.name, "revision": run.model_revision},
        "run": {
            "id": run.id,
            "slug": run.slug,
            "status": run.status,
            "start": to_millis(run.started_at),
            "end": to_millis(run.ended_at),
            "triggeredBy": run.triggered_by,
        },
        "intendedUse": model.description or "(the model config has no description)",
        "problem": {
            "problemType": problem["problemType"],
            "labels": [
                {"index": x.get("index"), "name": x["name"]}
                for x in problem["labelDefinition"]["labels"]
            ],
        },
        "data": {
            "snapshotId": run.snapshot_id,
            "examplesBySplit": ((snapshot.counts or {}).get("bySplit") if snapshot else None),
            "patientsBySplit": ((snapshot.report or {}).get("patients") if snapshot else None),
            "testExamplesScored": evaluation.get("testExamples"),
            "testSetSha256": evaluation.get("testSetSha256"),
        },
        "training": {
            "image": run.config["trainingApproach"]["trainingImage"],
            "servedWith": evaluation.get("images", {}).get("challenger"),
            "objective": run.config["trainingApproach"]["objective"],
            "hyperparameters": {h["name"]: h["value"] for h in run.hyperparameters},
            "modelArtifactUri": run.model_artifact_uri,
            "modelArtifactSha256": run.model_artifact_sha256,
        },
        "provenance": provenance_wire(session, run, public=True),
        "evaluation": {
            "championId": evaluation.get("championId"),
            "note": evaluation.get("note"),
            "labelsChanged": evaluation.get("labelsChanged"),
            "testImages": evaluation.get("testExamples"),
            "testClusters": evaluation.get("testClusters"),
            "testImagesLeftOut": evaluation.get("testExamplesLeftOut") or 0,
            "resampling": evaluation.get("resampling"),
            "challenger": challenger,
            "champion": champion or None,
            "intervals": {
                "challenger": evaluation_intervals(session, run_id, "challenger"),
                "champion": evaluation_intervals(session, run_id, "champion") or None,
            },
            "deltas": evaluation.get("deltas") or {},
            "operatingPoints": evaluation.get("operatingPoints") or None,
            "reportUri": evaluation.get("reportUri"),
        },
        "approval": {
            "status": approval_status(session, run),
            "policy": model.approval_policy,
            "decisions": [approval_to_wire(a) for a in decisions_of(session, run_id)],
        },
        "deployment": {
            "type": run.config["deployApproach"]["type"],
            "status": run.deploy_status,
            "error": run.deploy_error,
            "isChampion": model.champion_id == run.id,
        },
    }


def write_model_card(engine: Engine, store: ArtifactStore, run_id: str) -> dict[str, str]:
    with session_scope(engine) as session:
        card = build_model_card(session, run_id)
        document = build_model_card_document(session, run_id)
    json_key, md_key = card_keys(run_id)
    store.put_bytes(json_key, orjson.dumps(card, option=orjson.OPT_INDENT_2))
    store.put_bytes(md_key, render_markdown(document).encode())
    return {"json": store.uri(json_key), "markdown": store.uri(md_key)}
