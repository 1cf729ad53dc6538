"""Deploy an approved run, shared by the deploy operator and the CLI (rollbacks).

- `edge`: no endpoint; the run becomes champion and its model artifact is what devices
  download (`modelArtifactUri`).
- `cloud`: a new serving endpoint (local process or container) is started for the run and
  health-checked first. Only when it answers is the champion swapped (atomically, with an
  append-only deployment record); then the model's older endpoints are stopped. When the new
  endpoint fails, the old champion and its endpoint keep serving and the run records
  `deployStatus: failed` with the reason.
- A cloud champion gets its monitoring reference profile (`services.monitoring.build_reference`:
  its test split's image statistics and the evaluation's outputs); a failure there is logged
  and never undoes the deployment (the monitor then reports `no-reference`).
- Deploying the current champion again is a no-op when its endpoint still answers
  (idempotent retries); approving an earlier champion and deploying it is a rollback.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from sqlalchemy import Engine

from patient_ml import settings
from patient_ml.db.engine import session_scope
from patient_ml.db.models import Model, Run
from patient_ml.db.require import present
from patient_ml.exceptions import ConflictError, PatientMLError
from patient_ml.services import audit, champion, endpoints
from patient_ml.services.approvals import latest_decision
from patient_ml.services.monitoring import build_reference
from patient_ml.services.runs import get_run
from patient_ml.serving.artifacts import fetch_model
from patient_ml.serving.client import ping
from patient_ml.serving.servers import ModelServing, server_for
from patient_ml.storage import ArtifactStore

log = logging.getLogger("patient_ml.deploy")


class DeployError(PatientMLError):
    """The new endpoint did not become healthy; the previous champion keeps serving."""


def endpoints_root() -> Path:
    return settings.home() / "endpoints"


def _set_deploy_status(
    session: Any, run: Run, status: str, *, actor: str, error: str | None = None
) -> None:
    before = {"deployStatus": run.deploy_status}
    run.deploy_status = status
    run.deploy_error = error
    session.flush()
    audit.record(
        session,
        actor=actor,
        action=f"run.deploy.{status}",
        entity_type="run",
        entity_id=run.id,
        before=before,
        after={"deployStatus": status, "deployError": error},
    )


def deploy_run(
    engine: Engine,
    store: ArtifactStore,
    run_id: str,
    *,
    actor: str,
    server: ModelServing | None,
    root: Path | None = None,
) -> dict[str, Any]:
    """Deploy an approved run (see the module docstring); returns what was done."""
    with session_scope(engine) as session:
        run = get_run(session, run_id)
        decision = latest_decision(session, run_id)
        if decision is None or decision.decision != "approved":
            state = decision.decision if decision else "not decided"
            raise ConflictError(
                f"Run {run_id} is {state}; only an approved run is deployed.",
                fix=f"approve it first: patient-ml runs approve --run {run_id} --reason '...'",
            )
        model = session.get(Model, run.model_id)
        model = present(model, f"model of run {run_id}")
        kind = run.config["deployApproach"]["type"]
        image = run.config["deployApproach"]["inferenceImage"]
        if model.champion_id == run.id and run.deploy_status == "succeeded":
            live = [e for e in endpoints.live_endpoints(session, model.id) if e.run_id == run.id]
            if kind == "edge" or (live and live[-1].url and ping(live[-1].url)):
                log.info("run %s is already the deployed champion; nothing to do", run_id)
                return {"runId": run_id, "deployType": kind, "alreadyDeployed": True,
                        "endpoint": live[-1].url if live else None}  # fmt: skip
        _set_deploy_status(session, run, "deploying", actor=actor)
        model_id, slug, reason = model.id, model.slug, decision.description
        artifact = (run.model_artifact_uri, run.model_artifact_sha256)
    if kind == "edge":
        return _promote(engine, run_id, model_id, actor=actor, reason=reason, endpoint=None)
    if server is None:
        raise DeployError(
            f"Run {run_id} deploys to the cloud but no model server was given.",
            fix="pass a serving backend (auto, local or docker)",
        )
    folder = (root or endpoints_root()) / slug / run_id
    with session_scope(engine) as session:
        endpoint_id = endpoints.add_endpoint(session, model_id, run_id, server.kind).id
    try:
        model_dir = fetch_model(store, *artifact, folder / "model", who=f"Run {run_id}")
        handle = server.start(name=f"pml-endpoint-{slug}-{run_id[:8]}", image=image,
                              model_dir=model_dir)  # fmt: skip
    except PatientMLError as exc:
        with session_scope(engine) as session:
            endpoints.mark_endpoint(session, endpoint_id, "failed", actor=actor, error=exc.message)
            _set_deploy_status(session, get_run(session, run_id), "failed", actor=actor,
                               error=exc.message)  # fmt: skip
        raise DeployError(
            f"The new endpoint of run {run_id} did not become healthy, so the champion was not "
            f"changed and the old endpoint keeps serving. {exc.message}",
            fix=exc.fix,
        ) from None
    log.info("run %s: endpoint healthy at %s (%s %s)", run_id, handle.url, server.kind,
             handle.handle[:12])  # fmt: skip
    with session_scope(engine) as session:
        endpoints.mark_endpoint(
            session, endpoint_id, "healthy", actor=actor, url=handle.url, handle=handle.handle
        )
    result = _promote(engine, run_id, model_id, actor=actor, reason=reason, endpoint=handle.url)
    result["stoppedEndpoints"] = stop_old_endpoints(engine, model_id, keep=endpoint_id, actor=actor)
    _reference_profile(engine, store, run_id)
    return result


def _reference_profile(engine: Engine, store: ArtifactStore, run_id: str) -> None:
    try:
        build_reference(engine, store, run_id)
    except Exception as exc:  # monitoring must never undo a deployment
        log.warning("run %s: no monitoring reference profile: %s", run_id,
                    getattr(exc, "message", None) or f"{type(exc).__name__}: {exc}")  # fmt: skip


def _promote(
    engine: Engine,
    run_id: str,
    model_id: str,
    *,
    actor: str,
    reason: str | None,
    endpoint: str | None,
) -> dict[str, Any]:
    with session_scope(engine) as session:
        deployment = champion.promote(
            session, model_id, run_id, actor=actor, reason=reason, endpoint=endpoint
        )
        _set_deploy_status(session, get_run(session, run_id), "succeeded", actor=actor)
        result = {
            "runId": run_id,
            "deployType": deployment.deploy_type,
            "action": deployment.action,
            "previousChampionId": deployment.previous_champion_id,
            "endpoint": endpoint,
            "deploymentId": deployment.id,
        }
    if endpoint is None:
        stop_old_endpoints(engine, model_id, keep=None, actor=actor)  # e.g. cloud -> edge
    log.info("run %s is now the champion (%s)", run_id, result["action"])
    return result


def stop_old_endpoints(engine: Engine, model_id: str, *, keep: int | None, actor: str) -> list[int]:
    """Stop every healthy endpoint of the model except `keep`; their ids."""
    with session_scope(engine) as session:
        old = [(e.id, e.kind, e.handle) for e in endpoints.live_endpoints(session, model_id)
               if e.id != keep]  # fmt: skip
    stopped = []
    for endpoint_id, kind, handle in old:
        if handle:
            server_for(kind).stop(handle)
        with session_scope(engine) as session:
            endpoints.mark_endpoint(session, endpoint_id, "stopped", actor=actor)
        stopped.append(endpoint_id)
    return stopped
