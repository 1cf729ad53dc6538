"""The champion pointer of a model: changed atomically, with append-only deployment history.

A promotion locks the model row (`SELECT ... FOR UPDATE` on PostgreSQL; SQLite sessions take
the write lock at BEGIN), so concurrent promotions run one after the other: every history
record names the champion it replaced, and the model ends with exactly one champion.
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from patient_ml.db.models import Deployment, Model, Run
from patient_ml.exceptions import ConflictError
from patient_ml.services import audit
from patient_ml.services.common import get_by_id_or_name
from patient_ml.services.runs import get_run


def promote(
    session: Session,
    model_ref: str,
    run_id: str,
    *,
    actor: str,
    reason: str | None = None,
    endpoint: str | None = None,
) -> Deployment:
    """Make `run_id` the champion of its model. Promoting the current champion again returns
    its latest deployment record (idempotent retries); promoting an earlier champion is
    recorded as a rollback."""
    model_id = get_by_id_or_name(session, Model, model_ref).id
    model = session.scalars(
        select(Model)
        .where(Model.id == model_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    ).one()
    run = get_run(session, run_id)
    _check_promotable(model, run)
    history = list(
        session.scalars(
            select(Deployment).where(Deployment.model_id == model.id).order_by(Deployment.id)
        )
    )
    if model.champion_id == run.id and history:
        return history[-1]
    action = "rollback" if any(d.run_id == run.id for d in history) else "promote"
    deployment = Deployment(
        model_id=model.id,
        run_id=run.id,
        previous_champion_id=model.champion_id,
        action=action,
        deploy_type=model.deploy_approach.get("type", "edge"),
        endpoint=endpoint,
        actor=actor,
        reason=reason,
    )
    session.add(deployment)
    before = {"championId": model.champion_id}
    model.champion_id = run.id
    session.flush()
    audit.record(
        session,
        actor=actor,
        action=f"model.champion.{action}",
        entity_type="model",
        entity_id=model.id,
        before=before,
        after={"championId": run.id, "deploymentId": deployment.id, "reason": reason},
    )
    return deployment


def deployment_history(session: Session, model_ref: str) -> list[Deployment]:
    model = get_by_id_or_name(session, Model, model_ref)
    return list(
        session.scalars(
            select(Deployment).where(Deployment.model_id == model.id).order_by(Deployment.id)
        )
    )


def was_champion(session: Session, model_id: str, run_id: str) -> bool:
    """Whether the run was ever deployed as its model's champion."""
    found = session.scalar(
        select(Deployment.id).where(Deployment.model_id == model_id, Deployment.run_id == run_id)
    )
    return found is not None


def _check_promotable(model: Model, run: Run) -> None:
    if run.model_id != model.id:
        raise ConflictError(
            f"Run {run.id} belongs to model {run.model_id}, not to {model.name!r}.",
            fix="promote a run of this model",
        )
    if run.status != "succeeded":
        raise ConflictError(
            f"Run {run.id} has status {run.status!r}; only a succeeded run can become champion.",
            fix="wait for the run to finish, or approve another run",
        )
    if run.is_archived:
        raise ConflictError(
            f"Run {run.id} is archived; its artifacts are gone.",
            fix="approve a run that is not archived",
        )
