"""Training records of a run: its trials (one row per Optuna trial, upserted so retries are
idempotent) and the tuning result (best hyperparameters, model artifact, training metrics)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from patient_ml.db.models import Metric, Run, Trial, utcnow
from patient_ml.exceptions import ConflictError
from patient_ml.services import audit
from patient_ml.services.runs import get_run


def record_trial(
    session: Session,
    run_id: str,
    number: int,
    *,
    state: str,
    params: dict[str, Any],
    worker: str,
    value: float | None = None,
    failure: str | None = None,
    artifact_uri: str | None = None,
    optuna_trial_id: int | None = None,
) -> Trial:
    trial = session.scalar(select(Trial).where(Trial.run_id == run_id, Trial.number == number))
    if trial is None:
        trial = Trial(run_id=run_id, number=number)
        session.add(trial)
    trial.state = state
    trial.params = {k: str(v) for k, v in params.items()}
    trial.worker = worker
    trial.value = value
    trial.failure = failure
    trial.artifact_uri = artifact_uri
    trial.optuna_trial_id = optuna_trial_id
    if state != "running":
        trial.ended_at = utcnow()
    session.flush()
    return trial


def list_trials(session: Session, run_id: str) -> list[Trial]:
    return list(session.scalars(select(Trial).where(Trial.run_id == run_id).order_by(Trial.number)))


def record_tuning_result(
    session: Session,
    run_id: str,
    *,
    hyperparameters: dict[str, Any],
    metrics: dict[str, float],
    directions: dict[str, str],
    artifact_uri: str,
    artifact_sha256: str,
    actor: str,
) -> Run:
    """Set the run's best hyperparameters, model artifact and training metrics (idempotent)."""
    run = get_run(session, run_id)
    if run.status != "running":
        raise ConflictError(
            f"Run {run_id} already ended as {run.status!r}; its tuning result is final.",
            fix="start a new run",
        )
    if run.model_artifact_sha256 == artifact_sha256 and run.model_artifact_uri == artifact_uri:
        return run
    before = {"modelArtifactSha256": run.model_artifact_sha256}
    run.hyperparameters = [{"name": k, "value": str(v)} for k, v in sorted(hyperparameters.items())]
    run.model_artifact_uri = artifact_uri
    run.model_artifact_sha256 = artifact_sha256
    session.execute(
        delete(Metric).where(
            Metric.run_id == run_id, Metric.subject == "challenger", Metric.stage == "training"
        )
    )
    for name, value in sorted(metrics.items()):
        session.add(
            Metric(
                run_id=run_id,
                subject="challenger",
                stage="training",
                name=name,
                value=float(value),
                direction=directions.get(name),
            )
        )
    session.flush()
    audit.record(
        session,
        actor=actor,
        action="run.tuned",
        entity_type="run",
        entity_id=run_id,
        before=before,
        after={
            "modelArtifactSha256": artifact_sha256,
            "hyperparameters": run.hyperparameters,
            "metrics": metrics,
            "trainingImage": ((run.provenance or {}).get("training") or {}).get("digest"),
        },
    )
    return run
