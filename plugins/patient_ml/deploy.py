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
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.orm import Session

from patient_ml import settings
from patient_ml.db.engine import session_scope
from patient_ml.db.models import Model, Run
from patient_ml.db.require import present
from patient_ml.exceptions import ConflictError, PatientMLError
from patient_ml.services import audit, champion, endpoints
from patient_ml.services.approvals import settled_decision
from patient_ml.services.monitoring import build_reference
from patient_ml.services.runs import get_run
from patient_ml.serving.artifacts import fetch_model
from patient_ml.serving.base import ModelServing
from patient_ml.serving.client import ping
from patient_ml.serving.servers import server_for
from patient_ml.storage import ArtifactStore

log = logging.getLogger("patient_ml.deploy")


class DeployError(PatientMLError):
    """The new endpoint did not become healthy; the previous champion keeps serving."""

    http_status = 502


def endpoints_root() -> Path:
    return settings.home() / "endpoints"


def _set_deploy_status(
    session: Session, run: Run, status: str, *, actor: str, error: str | None = None
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
    mlflow_conn_id: str | None = None,
) -> dict[str, Any]:
    """Deploy an approved run (see the module docstring); returns what was done. Then, when an
    MLflow connection exists (`mlflow_conn_id`, default PATIENT_ML_MLFLOW_CONN_ID), the registry
    alias `champion` is set on the run's model version (docs/mlflow.md); an MLflow failure is
    reported (`result["mlflow"]`, the log, the run's audit trail), never raised."""
    from patient_ml.services.mlflow_mirror import mirror_with_connection

    result = _deploy_run(engine, store, run_id, actor=actor, server=server, root=root)
    report = mirror_with_connection(engine, store, run_id, mlflow_conn_id, actor=actor)
    if report is not None:
        result["mlflow"] = report.to_wire()
    return result


def _deploy_run(
    engine: Engine,
    store: ArtifactStore,
    run_id: str,
    *,
    actor: str,
    server: ModelServing | None,
    root: Path | None = None,
) -> dict[str, Any]:
    with session_scope(engine) as session:
        run = get_run(session, run_id)
        decision = settled_decision(session, run_id)
        if decision is None or decision.decision != "approved":
            state = (
                decision.decision if decision else "not decided (or not approved by enough people)"
            )
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


PIPELINE_ACTIVE = ("queued", "running")


def deploy_on_request(
    engine: Engine,
    store: ArtifactStore,
    run_id: str,
    *,
    user: str,
    channel: str,
    server: ModelServing | None,
    rollback_reason: str | None = None,
    pipeline_state: Callable[[Run], str | None] | None = None,
    detail: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Deploy a run because a person asked (REST API, web UI), with the checks of a decision:
    `user` must be one of the model's approvers (when it names them; the caller checks the
    decision right in Airflow), the request is audited (`run.deploy.requested`, with the
    channel), and then `deploy_run` does the work (same audit, same champion swap as the
    deploy task and `patient-ml runs deploy`).

    - `rollback_reason` given: the run must be an earlier champion; it is approved again
      (recorded as a rollback, with this justification, through `approvals.decide`) and
      deployed in the same request. Returns `{"approvalDecision": ..., "deployment": ...}`.
    - otherwise the run must be approved and not deployed by its own pipeline: while its
      Airflow DAG run (`pipeline_state(run)`) is queued or running, the deploy task does it.
    - a run being deployed (`deployStatus: deploying`) is refused (409) either way.
    """
    from patient_ml.services.approvals import decide
    from patient_ml.services.model_cards import write_model_card
    from patient_ml.services.runs import approval_to_wire

    result: dict[str, Any] = {}
    rollback = rollback_reason is not None
    with session_scope(engine) as session:
        run = get_run(session, run_id)
        check_deploy_request(session, run, user=user, rollback=rollback,
                             pipeline_state=pipeline_state)  # fmt: skip
        if rollback_reason is not None:
            approval = decide(
                session,
                run.id,
                "approved",
                user=user,
                reason=rollback_reason,
                channel=channel,  # type: ignore[arg-type]
                detail=detail,
            )
            result["approvalDecision"] = approval_to_wire(approval)
        audit.record(
            session,
            actor=user,
            action="run.deploy.requested",
            entity_type="run",
            entity_id=run.id,
            after={
                "channel": channel,
                "rollback": rollback_reason is not None,
                **({"detail": detail} if detail else {}),
            },
        )
    try:
        result["deployment"] = deploy_run(engine, store, run_id, actor=user, server=server)
    finally:
        write_model_card(engine, store, run_id)
    return result


def check_deploy_request(
    session: Session,
    run: Run,
    *,
    user: str,
    rollback: bool,
    pipeline_state: Callable[[Run], str | None] | None = None,
) -> None:
    """Refuse (403/409, saying why and what to do) a deployment or rollback `user` asked for;
    the rules of `deploy_on_request`. Also answers the web UI's question which buttons to
    offer (`deploy_options`)."""
    from patient_ml.services.approvals import check_may_decide

    model = present(session.get(Model, run.model_id), f"model {run.model_id!r} of run {run.id!r}")
    check_may_decide(model, user)
    if run.status != "succeeded":
        raise ConflictError(
            f"Run {run.id} is {run.status!r}; only an evaluated (succeeded) run is deployed.",
            fix="deploy an evaluated, approved run",
        )
    if run.deploy_status == "deploying":
        raise ConflictError(
            f"Run {run.id} is being deployed right now; a second deployment is refused.",
            fix="wait for it to finish and reload the page; if the deploying process died, "
            f"deploy it with `patient-ml runs deploy --run {run.id}`",
        )
    if rollback:
        if model.champion_id == run.id:
            raise ConflictError(
                f"Run {run.id} is the current champion of model {model.name!r}; there is "
                "nothing to roll back to.",
                fix="roll back to an earlier champion (the Deployments tab lists them)",
            )
        if not champion.was_champion(session, model.id, run.id):
            raise ConflictError(
                f"Run {run.id} was never champion of model {model.name!r}; a rollback "
                "restores an earlier champion.",
                fix="approve the run through its pipeline (the approval form of a waiting "
                "run), or roll back to a run listed in the Deployments tab",
            )
        return
    decision = settled_decision(session, run.id)
    if decision is None or decision.decision != "approved":
        state = decision.decision if decision else "not decided (or not approved by enough people)"
        raise ConflictError(
            f"Run {run.id} is {state}; only an approved run is deployed.",
            fix="approve it first (a waiting run), or roll back to an earlier champion",
        )
    if model.champion_id == run.id and run.deploy_status == "succeeded":
        return  # deploy_run checks the endpoint and redeploys only when it stopped answering
    own = not (decision.criteria or {}).get("rollback")
    if own and champion.was_champion(session, model.id, run.id):
        raise ConflictError(
            f"Run {run.id} was champion of model {model.name!r} before; deploying it again is "
            "a rollback, which needs its own approval with a justification.",
            fix="roll back to it (POST .../rollback with a description; the Roll back button)",
        )
    dag_state = pipeline_state(run) if pipeline_state and own else None
    if dag_state in PIPELINE_ACTIVE:
        raise ConflictError(
            f"Run {run.id}'s pipeline (Airflow DAG run {run.airflow_run_id}, {dag_state}) "
            "deploys it after the approval; a second deployment is refused.",
            fix="wait for the pipeline's deploy task; deploy from here when the DAG "
            "run has ended without deploying it",
        )


def deploy_options(
    session: Session,
    run: Run,
    *,
    user: str,
    pipeline_state: Callable[[Run], str | None] | None = None,
) -> dict[str, Any]:
    """Whether `user` may deploy the run, or roll back to it, now: `{"deploy": {"allowed",
    "reason"?}, "rollback": {...}}` with the refusal `deploy_on_request` would give."""
    options: dict[str, Any] = {}
    for name, rollback in (("deploy", False), ("rollback", True)):
        try:
            check_deploy_request(session, run, user=user, rollback=rollback,
                                 pipeline_state=pipeline_state)  # fmt: skip
            options[name] = {"allowed": True}
        except PatientMLError as refused:
            options[name] = {"allowed": False, "reason": refused.message}
    return options


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
