"""The model card of a run (JSON and Markdown, in the artifact store next to the run):
intended use, data (snapshot and counts per split), training image and digest,
hyperparameters, test metrics of challenger and champion with deltas, decisions and
deployment. Rewritten after evaluation, decision and deployment, so it is always current."""

from __future__ import annotations

from typing import Any

import orjson
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from patient_ml.config.platform_metrics import PLATFORM_METRICS
from patient_ml.db.engine import session_scope
from patient_ml.db.models import Model, Snapshot
from patient_ml.db.require import present
from patient_ml.services.approvals import approval_status, decisions_of
from patient_ml.services.common import to_millis
from patient_ml.services.evaluations import evaluation_metrics
from patient_ml.services.runs import approval_to_wire, get_run
from patient_ml.storage import ArtifactStore


def headline_metrics(problem_type: str) -> list[str]:
    """The platform's metrics of a problem type, in their documented order."""
    return [m.name for m in PLATFORM_METRICS.values() if m.problem_type == problem_type]


def card_keys(run_id: str) -> tuple[str, str]:
    return f"runs/{run_id}/model-card.json", f"runs/{run_id}/model-card.md"


def build_model_card(session: Session, run_id: str) -> dict[str, Any]:
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
        "evaluation": {
            "championId": evaluation.get("championId"),
            "note": evaluation.get("note"),
            "labelsChanged": evaluation.get("labelsChanged"),
            "challenger": challenger,
            "champion": champion or None,
            "deltas": evaluation.get("deltas") or {},
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


def _fmt(value: Any) -> str:
    return "—" if value is None else f"{value:.4f}" if isinstance(value, float) else str(value)


def render_markdown(card: dict[str, Any]) -> str:
    model, run, data, ev = card["model"], card["run"], card["data"], card["evaluation"]
    lines = [
        f"# Model card: {model['name']} — run {run['slug']}",
        "",
        f"Run `{run['id']}` (status {run['status']}, triggered by {run['triggeredBy']}).",
        "",
        "## Intended use",
        card["intendedUse"],
        "",
        "## Data",
        f"- Problem: {card['problem']['problemType']}, labels: "
        + ", ".join(f"{x['name']} ({x['index']})" for x in card["problem"]["labels"]),
        f"- Snapshot: `{data['snapshotId']}`",
        f"- Examples per split: {data['examplesBySplit']}",
        f"- Patients per split: {data['patientsBySplit']}",
        f"- Test examples scored: {data['testExamplesScored']} "
        f"(ids sha256 `{(data['testSetSha256'] or '')[:16]}`)",
        "",
        "## Training",
        f"- Image: `{card['training']['image']}`; served for evaluation as "
        f"{card['training']['servedWith']}",
        f"- Objective: {card['training']['objective']}",
        f"- Hyperparameters: {card['training']['hyperparameters']}",
        f"- Model artifact: `{card['training']['modelArtifactUri']}` "
        f"(sha256 `{(card['training']['modelArtifactSha256'] or '')[:16]}`)",
        "",
        "## Test metrics (computed by the platform)",
    ]
    if ev["note"]:
        lines += [ev["note"], ""]
    names = [n for n in headline_metrics(card["problem"]["problemType"]) if n in ev["challenger"]]
    names += sorted(n for n in ev["challenger"] if n not in names)
    lines += ["| Metric | Challenger | Champion | Delta |", "|---|---|---|---|"]
    for name in names:
        delta = ev["deltas"].get(name, {})
        lines.append(
            f"| {name} | {_fmt(ev['challenger'].get(name))} | "
            f"{_fmt((ev['champion'] or {}).get(name))} | "
            f"{_fmt(delta.get('delta'))}{' ✓' if delta.get('improved') else ''} |"
        )
    approval = card["approval"]
    lines += ["", "## Approval", f"Status: {approval['status']}."]
    for d in approval["decisions"]:
        lines.append(
            f"- {d['decision']} by {d.get('user') or d['actor']}: {d.get('description', '')}"
        )
    dep = card["deployment"]
    lines += [
        "",
        "## Deployment",
        f"Type {dep['type']}, status {dep['status'] or 'not deployed'}"
        + (f" ({dep['error']})" if dep["error"] else "")
        + (", current champion." if dep["isChampion"] else "."),
        "",
    ]
    return "\n".join(lines)


def write_model_card(engine: Engine, store: ArtifactStore, run_id: str) -> dict[str, str]:
    with session_scope(engine) as session:
        card = build_model_card(session, run_id)
    json_key, md_key = card_keys(run_id)
    store.put_bytes(json_key, orjson.dumps(card, option=orjson.OPT_INDENT_2))
    store.put_bytes(md_key, render_markdown(card).encode())
    return {"json": store.uri(json_key), "markdown": store.uri(md_key)}
