"""Model runs: create (one per Airflow DAG run, idempotently), finish, read, wire shape."""

from __future__ import annotations

import hashlib
import uuid
from collections import defaultdict
from collections.abc import Callable
from typing import Any, Literal

from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from patient_ml import settings
from patient_ml.config.limits import MAX_TRIALS_LIMIT
from patient_ml.db.engine import session_scope
from patient_ml.db.models import Approval, Dataset, Metric, Model, Run, Snapshot, utcnow
from patient_ml.db.require import present
from patient_ml.exceptions import (
    ConfigValidationError,
    ConflictError,
    FieldError,
    NotFoundError,
    PatientMLError,
)
from patient_ml.naming import dag_id_of
from patient_ml.services import audit
from patient_ml.services.approval_state import approval_status
from patient_ml.services.common import get_by_id_or_name, to_millis
from patient_ml.services.gate import gate_for
from patient_ml.services.provenance import provenance_wire

_ADJECTIVES = (
    "amber", "brisk", "calm", "deft", "eager", "fair", "gentle", "hardy", "keen", "lucid",
    "mellow", "nimble", "patient", "quiet", "rapid", "steady", "tidy", "vivid", "wise", "zesty",
)  # fmt: skip
_NOUNS = (
    "alder", "birch", "cedar", "delta", "ember", "fjord", "grove", "heron", "iris", "juniper",
    "kestrel", "lagoon", "maple", "nebula", "otter", "pine", "quartz", "raven", "spruce", "tern",
)  # fmt: skip


def run_slug(run_id: str) -> str:
    """Human-readable name for a run (not unique by itself, as in the reference API)."""
    digest = hashlib.sha256(run_id.encode()).digest()
    return f"{_ADJECTIVES[digest[0] % 20]}-{_NOUNS[digest[1] % 20]}-{digest[2] * 256 + digest[3]}"


def create_run(
    session: Session,
    model_ref: str,
    *,
    actor: str,
    airflow_dag_id: str | None = None,
    airflow_run_id: str | None = None,
) -> Run:
    """Start a run of a model. With Airflow ids, a retry returns the run already created."""
    model = get_by_id_or_name(session, Model, model_ref)
    if airflow_dag_id and airflow_run_id:
        existing = session.scalars(
            select(Run).where(
                Run.airflow_dag_id == airflow_dag_id, Run.airflow_run_id == airflow_run_id
            )
        ).one_or_none()
        if existing is not None:
            return existing
    dataset = session.get(Dataset, model.dataset_id)
    dataset = present(dataset, f"dataset of model {model.id}")
    run_id = str(uuid.uuid4())
    run = Run(
        id=run_id,
        slug=run_slug(run_id),
        model_id=model.id,
        status="running",
        champion_id=model.champion_id,
        model_revision=model.revision,
        config={
            "problemDefinition": dataset.problem_definition,
            "trainingApproach": model.training_approach,
            "deployApproach": model.deploy_approach,
            **({"operatingPoint": model.operating_point} if model.operating_point else {}),
        },
        airflow_dag_id=airflow_dag_id,
        airflow_run_id=airflow_run_id,
        triggered_by=actor,
    )
    session.add(run)
    session.flush()
    audit.record(
        session,
        actor=actor,
        action="run.create",
        entity_type="run",
        entity_id=run.id,
        after={"modelId": model.id, "championId": model.champion_id, "slug": run.slug},
    )
    return run


def start_run_for_dag_run(
    session: Session,
    model_ref: str,
    *,
    airflow_dag_id: str,
    airflow_run_id: str,
    actor: str,
    requested_run_id: str | None = None,
) -> Run:
    """The product run of an Airflow DAG run, whatever started it (idempotent on retries).

    A DAG run triggered from the product (`patient-ml runs create`, the REST API) names its run
    in `conf.runId`; it must belong to this model and to no other DAG run. Any other DAG run
    (schedule, Airflow UI, Airflow REST API) gets a new run, once.
    """
    model = get_by_id_or_name(session, Model, model_ref)
    if not requested_run_id:
        return create_run(
            session,
            model.id,
            actor=actor,
            airflow_dag_id=airflow_dag_id,
            airflow_run_id=airflow_run_id,
        )
    run = session.get(Run, requested_run_id, with_for_update=True)
    if run is None:
        raise NotFoundError(
            f"conf.runId {requested_run_id!r} names no run.",
            fix="trigger without runId (a run is then created), or create the run with "
            "`patient-ml runs create`",
        )
    if run.model_id != model.id:
        raise ConflictError(
            f"conf.runId {requested_run_id!r} is a run of model {run.model_id}, not of "
            f"{model.name!r} ({model.id}).",
            fix="trigger the DAG of the run's own model, or leave runId empty",
        )
    linked = (run.airflow_dag_id, run.airflow_run_id)
    if run.airflow_run_id is None:
        run.airflow_dag_id, run.airflow_run_id = airflow_dag_id, airflow_run_id
        session.flush()
        audit.record(
            session,
            actor=actor,
            action="run.link",
            entity_type="run",
            entity_id=run.id,
            after={"airflow": {"dagId": airflow_dag_id, "runId": airflow_run_id}},
        )
    elif linked != (airflow_dag_id, airflow_run_id):
        raise ConflictError(
            f"Run {run.id} already belongs to Airflow DAG run {linked[0]}/{linked[1]}.",
            fix="start a new run instead of reusing its runId",
        )
    if run.status != "running":
        raise ConflictError(f"Run {run.id} already ended as {run.status!r}.", fix="start a new run")
    return run


def find_run_for_dag_run(session: Session, airflow_dag_id: str, airflow_run_id: str) -> Run | None:
    return session.scalars(
        select(Run).where(
            Run.airflow_dag_id == airflow_dag_id, Run.airflow_run_id == airflow_run_id
        )
    ).one_or_none()


def start_run(
    engine: Engine,
    model_ref: str,
    *,
    actor: str,
    trigger: Callable[[str, str, dict[str, Any], str], Any],
    max_trials: int | None = None,
) -> tuple[Run, Any]:
    """The product's createRun: a run linked to a new DAG run of the model's DAG, then the DAG
    run triggered with `conf.runId` (and `maxTrials` when given).

    The run is saved before the trigger so the DAG run always finds it; when Airflow refuses the
    trigger the run ends `failed` with the reason and the error is raised.
    """
    if max_trials is not None and not 1 <= max_trials <= MAX_TRIALS_LIMIT:
        raise ConfigValidationError(
            "run request",
            [FieldError("maxTrials", f"must be between 1 and {MAX_TRIALS_LIMIT}", max_trials)],
        )
    with session_scope(engine) as session:
        model = get_by_id_or_name(session, Model, model_ref)
        dag_id = dag_id_of(model.slug)
        airflow_run_id = f"patient_ml__{uuid.uuid4().hex[:12]}"
        run = create_run(
            session, model.id, actor=actor, airflow_dag_id=dag_id, airflow_run_id=airflow_run_id
        )
        run_id = run.id
    conf: dict[str, Any] = {"runId": run_id}
    if max_trials is not None:
        conf["maxTrials"] = max_trials
    try:
        triggered = trigger(dag_id, airflow_run_id, conf, actor)
    except Exception as exc:
        with session_scope(engine) as session:
            finish_run(session, run_id, status="failed", actor=actor, error=f"not started: {exc}")
        raise
    with session_scope(engine) as session:
        run = get_run(session, run_id)
        session.expunge(run)
    return run, triggered


def finish_run(
    session: Session,
    run_id: str,
    *,
    status: Literal["succeeded", "failed"],
    actor: str,
    error: str | None = None,
) -> Run:
    """Mark a running run as ended. Finishing twice with the same status is a no-op (retries)."""
    run = get_run(session, run_id)
    if run.status != "running":
        if run.status == status:
            return run
        raise ConflictError(
            f"Run {run.id} already ended as {run.status!r}; it cannot become {status!r}.",
            fix="start a new run",
        )
    before = {"status": run.status}
    run.status = status
    run.error = error if status == "failed" else None
    run.ended_at = utcnow()
    session.flush()
    audit.record(
        session,
        actor=actor,
        action=f"run.{status}",
        entity_type="run",
        entity_id=run.id,
        before=before,
        after={"status": status, "error": run.error},
    )
    return run


def get_run(session: Session, run_id: str) -> Run:
    run = session.get(Run, run_id)
    if run is None:
        raise NotFoundError(
            f"No run has the id {run_id!r}.", fix="list runs with `patient-ml runs list`"
        )
    return run


def curated_snapshot(
    session: Session, run: Run, without: str, error: type[PatientMLError] = PatientMLError
) -> Snapshot:
    """The snapshot run `run`'s curate task made; `error` when it has none yet (`without`
    says what cannot happen then, e.g. "there is nothing to train on")."""
    if not run.snapshot_id:
        raise error(
            f"Run {run.id} has no snapshot yet, so {without}.",
            fix="run the curate task of this run first",
        )
    snapshot = session.get(Snapshot, run.snapshot_id)
    return present(snapshot, f"snapshot {run.snapshot_id} of run {run.id}")


def list_runs(session: Session, model_ref: str | None = None, limit: int = 100) -> list[Run]:
    query = select(Run).order_by(Run.started_at.desc(), Run.id).limit(limit)
    if model_ref is not None:
        query = query.where(Run.model_id == get_by_id_or_name(session, Model, model_ref).id)
    return list(session.scalars(query))


def run_to_wire(session: Session, run: Run) -> dict[str, Any]:
    """The reference API's ModelRun shape, plus extensions (snapshotId, evaluation,
    approvalStatus, approvalDeadline, airflow; each evaluation metric's interval `low`/`high`;
    operatingPoint; the change-control `gate`, see `services.gate`; `provenance` with
    `tagMoved`, see `services.provenance`)."""
    wire = runs_to_wire(session, [run])[0]
    wire["gate"] = gate_for(session, run).wire()
    found = provenance_wire(session, run)
    if found is not None:
        wire["provenance"] = found
    return wire


def runs_to_wire(session: Session, runs: list[Run]) -> list[dict[str, Any]]:
    """`run_to_wire` of many runs (without their gate) with their metrics and approvals read in
    two queries."""
    ids = [run.id for run in runs]
    metrics_of: dict[str, list[Metric]] = defaultdict(list)
    approvals_of: dict[str, list[Approval]] = defaultdict(list)
    if ids:
        for metric in session.scalars(
            select(Metric).where(Metric.run_id.in_(ids)).order_by(Metric.id)
        ):
            metrics_of[metric.run_id].append(metric)
        for approval in session.scalars(
            select(Approval).where(Approval.run_id.in_(ids)).order_by(Approval.id)
        ):
            approvals_of[approval.run_id].append(approval)
    return [_run_wire(session, run, metrics_of[run.id], approvals_of[run.id]) for run in runs]


def _run_wire(
    session: Session, run: Run, metric_rows: list[Metric], approval_rows: list[Approval]
) -> dict[str, Any]:
    metrics: dict[str, list[dict[str, Any]]] = {"challenger": [], "champion": []}
    for metric in metric_rows:
        entry = {"name": metric.name, "value": metric.value, "stage": metric.stage}
        if metric.description:
            entry["description"] = metric.description
        if metric.direction:
            entry["direction"] = metric.direction
        if metric.low is not None and metric.high is not None:  # extension (not in reference)
            entry["low"], entry["high"] = metric.low, metric.high
        metrics[metric.subject].append(entry)
    approvals = [approval_to_wire(a) for a in approval_rows]
    wire: dict[str, Any] = {
        "id": run.id,
        "slug": run.slug,
        "modelId": run.model_id,
        "accountId": settings.account_id(),
        "modelArtifactUri": run.model_artifact_uri,
        "status": run.status,
        "error": run.error,
        "deployStatus": run.deploy_status,
        "deployError": run.deploy_error,
        "start": to_millis(run.started_at),
        "end": to_millis(run.ended_at),
        "isArchived": run.is_archived,
        "hyperparameters": run.hyperparameters,
        "championId": run.champion_id,
        "metrics": metrics,
        "approvals": approvals,
        **run.config,
        "snapshotId": run.snapshot_id,
        "operatingPoint": run.operating_point or run.config.get("operatingPoint"),
        "evaluation": run.evaluation,
        "approvalStatus": approval_status(session, run, decided=approval_rows),
        "approvalDeadline": to_millis(run.approval_deadline),
        "airflow": {"dagId": run.airflow_dag_id, "runId": run.airflow_run_id},
        "triggeredBy": run.triggered_by,
    }
    return {k: v for k, v in wire.items() if v is not None}


def approval_to_wire(approval: Approval) -> dict[str, Any]:
    wire: dict[str, Any] = {
        "decision": approval.decision,
        "actor": approval.actor,
        "timestamp": to_millis(approval.decided_at),
    }
    if approval.description is not None:
        wire["description"] = approval.description
    if approval.actor == "user":
        wire["user"] = approval.user
    if approval.criteria is not None:
        wire["criteria"] = approval.criteria
    if approval.channel is not None:
        wire["channel"] = approval.channel
    return wire
