"""Read models for the web UI and list pages: one row per model (the Models table), pages of
runs, a run's trials, a model's deployments and the latest curation report of a dataset.

Paging, search and sorting happen in the database (a page of 50 rows out of thousands of models
or runs costs a few indexed queries, never a full load), so the pages render fast at any size.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from sqlalchemy import ColumnElement, Select, and_, func, or_, select
from sqlalchemy.orm import Session

from patient_ml.config.platform_metrics import PLATFORM_METRICS
from patient_ml.db.models import (
    Approval,
    Dataset,
    Deployment,
    Metric,
    Model,
    Run,
    Snapshot,
    Trial,
)
from patient_ml.naming import DAG_ID_PREFIX, dag_id_of
from patient_ml.services.common import get_by_id_or_name, to_millis

if TYPE_CHECKING:
    from sqlalchemy.sql import Subquery

ModelSort = Literal["name", "createdAt", "updatedAt", "lastRunAt", "problemType", "dataset"]
RunSort = Literal["start", "end", "status"]
Order = Literal["asc", "desc"]
MODEL_SORTS: tuple[str, ...] = ModelSort.__args__  # type: ignore[attr-defined]
RUN_SORTS: tuple[str, ...] = RunSort.__args__  # type: ignore[attr-defined]


@dataclass(frozen=True)
class Page:
    rows: list[Any]
    total: int


def headline_metric(problem_type: str) -> str:
    """The first platform metric of a problem type (accuracy, meanDice): the Models table's."""
    return next(m.name for m in PLATFORM_METRICS.values() if m.problem_type == problem_type)


def objective_metric(training_approach: dict[str, Any] | None, problem_type: str) -> str:
    """The platform metric the Models table shows for a model: its objective's (the tuning
    objective `validation:balancedAccuracy` is judged on the test set as `balancedAccuracy`)
    when that is a platform metric of the problem type, else the problem type's headline."""
    objective = ((training_approach or {}).get("objective") or {}).get("metric")
    if isinstance(objective, str):
        for name in (objective, objective.rsplit(":", 1)[-1]):
            known = PLATFORM_METRICS.get(name)
            if known is not None and known.problem_type == problem_type:
                return name
    return headline_metric(problem_type)


def _like(text: str) -> str:
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped.lower()}%"


def _latest_runs() -> Subquery:
    """(model_id, started_at of its newest run) as a subquery."""
    return (
        select(Run.model_id.label("model_id"), func.max(Run.started_at).label("last_started"))
        .group_by(Run.model_id)
        .subquery()
    )


def model_page(
    session: Session,
    *,
    search: str | None = None,
    sort: ModelSort = "name",
    order: Order = "asc",
    limit: int | None = None,
    offset: int = 0,
    dag_ids: set[str] | None = None,
) -> Page:
    """Models matching `search` (name, description, dataset name; case-insensitive), sorted and
    paged in SQL. `dag_ids`: only models whose DAG is among them (None: all)."""
    latest = _latest_runs()
    query: Select[Any] = (
        select(Model)
        .join(Dataset, Dataset.id == Model.dataset_id)
        .outerjoin(latest, latest.c.model_id == Model.id)
    )
    conditions: list[ColumnElement[bool]] = []
    if search:
        pattern = _like(search.strip())
        conditions.append(
            or_(
                func.lower(Model.name).like(pattern, escape="\\"),
                func.lower(Model.description).like(pattern, escape="\\"),
                func.lower(Dataset.name).like(pattern, escape="\\"),
            )
        )
    if dag_ids is not None:
        slugs = [d[len(DAG_ID_PREFIX) :] for d in dag_ids if d.startswith(DAG_ID_PREFIX)]
        conditions.append(Model.slug.in_(slugs))
    if conditions:
        query = query.where(and_(*conditions))
    total = session.scalar(select(func.count()).select_from(query.subquery())) or 0
    column: Any = {
        "name": func.lower(Model.name),
        "createdAt": Model.created_at,
        "updatedAt": Model.updated_at,
        "lastRunAt": latest.c.last_started,
        "problemType": Dataset.problem_type,
        "dataset": func.lower(Dataset.name),
    }[sort]
    ordered = column.asc() if order == "asc" else column.desc()
    query = query.order_by(ordered.nulls_last(), Model.name, Model.id).offset(offset)
    if limit is not None:
        query = query.limit(limit)
    return Page(list(session.scalars(query)), int(total))


def model_summaries(
    session: Session, models: list[Model], next_runs: dict[str, dict[str, Any]] | None = None
) -> list[dict[str, Any]]:
    """The Models table's rows of `models` (a page): a handful of queries for the whole page."""
    if not models:
        return []
    ids = [m.id for m in models]
    datasets = {
        d.id: d
        for d in session.scalars(
            select(Dataset).where(Dataset.id.in_({m.dataset_id for m in models}))
        )
    }
    newest = (
        select(Run.model_id, func.max(Run.started_at).label("at"))
        .where(Run.model_id.in_(ids))
        .group_by(Run.model_id)
        .subquery()
    )
    last_runs: dict[str, Run] = {}
    for run in session.scalars(
        select(Run).join(
            newest, and_(Run.model_id == newest.c.model_id, Run.started_at == newest.c.at)
        )
    ):
        last_runs.setdefault(run.model_id, run)
    champion_ids = [m.champion_id for m in models if m.champion_id]
    champions = (
        {r.id: r for r in session.scalars(select(Run).where(Run.id.in_(champion_ids)))}
        if champion_ids
        else {}
    )
    metrics: dict[tuple[str, str], float] = {}
    if champion_ids:
        for metric in session.scalars(
            select(Metric).where(
                Metric.run_id.in_(champion_ids),
                Metric.subject == "challenger",
                Metric.stage == "evaluation",
            )
        ):
            metrics[(metric.run_id, metric.name)] = metric.value
    run_counts = dict(
        session.execute(
            select(Run.model_id, func.count()).where(Run.model_id.in_(ids)).group_by(Run.model_id)
        ).all()
    )
    rows = []
    for model in models:
        dataset = datasets[model.dataset_id]
        headline = objective_metric(model.training_approach, dataset.problem_type)
        champion = champions.get(model.champion_id or "")
        last = last_runs.get(model.id)
        row: dict[str, Any] = {
            "id": model.id,
            "name": model.name,
            "description": model.description,
            "slug": model.slug,
            "dagId": dag_id_of(model.slug),
            "problemType": dataset.problem_type,
            "datasetId": dataset.id,
            "datasetName": dataset.name,
            "deployed": model.champion_id is not None,
            "runCount": int(run_counts.get(model.id, 0)),
            "headlineMetric": headline,
            "updatedAt": to_millis(model.updated_at),
        }
        if champion is not None:
            row["champion"] = {
                "id": champion.id,
                "slug": champion.slug,
                "metricName": headline,
                "metricValue": metrics.get((champion.id, headline)),
            }
        if last is not None:
            row["lastRun"] = {
                "id": last.id,
                "slug": last.slug,
                "status": last.status,
                "start": to_millis(last.started_at),
                "end": to_millis(last.ended_at),
            }
        if next_runs is not None:
            row["nextRun"] = next_runs.get(row["dagId"], {"state": "notInAirflow"})
        rows.append(row)
    return rows


def run_page(
    session: Session,
    model_ref: str,
    *,
    limit: int = 100,
    offset: int = 0,
    sort: RunSort = "start",
    order: Order = "desc",
    status: str | None = None,
) -> Page:
    """A model's runs, sorted and paged in SQL (newest first by default)."""
    model = get_by_id_or_name(session, Model, model_ref)
    query = select(Run).where(Run.model_id == model.id)
    if status:
        query = query.where(Run.status == status)
    total = session.scalar(select(func.count()).select_from(query.subquery())) or 0
    column: Any = {"start": Run.started_at, "end": Run.ended_at, "status": Run.status}[sort]
    ordered = column.asc() if order == "asc" else column.desc()
    query = query.order_by(ordered.nulls_last(), Run.started_at.desc(), Run.id)
    return Page(list(session.scalars(query.offset(offset).limit(limit))), int(total))


def trials_of(session: Session, run_id: str) -> list[dict[str, Any]]:
    """A run's trials in trial order (state, hyperparameters, objective, failure text)."""
    rows = []
    for trial in session.scalars(
        select(Trial).where(Trial.run_id == run_id).order_by(Trial.number)
    ):
        row: dict[str, Any] = {
            "number": trial.number,
            "state": trial.state,
            "params": trial.params,
            "value": trial.value,
            "failure": trial.failure,
            "start": to_millis(trial.started_at),
            "end": to_millis(trial.ended_at),
        }
        rows.append({k: v for k, v in row.items() if v is not None})
    return rows


def deployments_of(session: Session, model_ref: str) -> list[dict[str, Any]]:
    """A model's deployment history, newest first, with each deployed run's slug."""
    model = get_by_id_or_name(session, Model, model_ref)
    found = session.execute(
        select(Deployment, Run.slug)
        .join(Run, Run.id == Deployment.run_id)
        .where(Deployment.model_id == model.id)
        .order_by(Deployment.id.desc())
    ).all()
    # Who approved each deployed run: the people behind the pipeline's deploy task (its actor is
    # the task, `airflow:<dag>.deploy`). The newest approval of the run at or before the deployment.
    approvals: dict[str, list[Approval]] = {}
    for approval in session.scalars(
        select(Approval)
        .where(
            Approval.run_id.in_({d.run_id for d, _ in found}),
            Approval.decision == "approved",
        )
        .order_by(Approval.decided_at, Approval.id)
    ):
        approvals.setdefault(approval.run_id, []).append(approval)
    rows = []
    for deployment, slug in found:
        before = [
            a
            for a in approvals.get(deployment.run_id, [])
            if deployment.created_at is None
            or a.decided_at is None
            or a.decided_at <= deployment.created_at
        ]
        approved_by: list[str] = []
        if before:
            last = before[-1]
            progress = (last.criteria or {}).get("approvals") or {}
            approved_by = [str(u) for u in progress.get("approvedBy") or []] or (
                [last.user] if last.user else []
            )
        row: dict[str, Any] = {
            "id": deployment.id,
            "runId": deployment.run_id,
            "runSlug": slug,
            "previousChampionId": deployment.previous_champion_id,
            "action": deployment.action,
            "deployType": deployment.deploy_type,
            "endpoint": deployment.endpoint,
            "actor": deployment.actor,
            "reason": deployment.reason,
            # The people whose approval it carries out (a two-person rule names both), newest
            # last; absent when none was recorded (a system decision).
            "approvedBy": list(dict.fromkeys(approved_by)) or None,
            "timestamp": to_millis(deployment.created_at),
            "isCurrent": deployment.run_id == model.champion_id,
        }
        rows.append({k: v for k, v in row.items() if v is not None})
    # Only the newest deployment of the champion is the current one.
    seen_current = False
    for row in rows:
        if row["isCurrent"]:
            row["isCurrent"] = not seen_current
            seen_current = True
    return rows


def latest_curation_report(session: Session, dataset_ref: str) -> dict[str, Any] | None:
    """The report of the dataset's newest snapshot (None before its first curation)."""
    dataset = get_by_id_or_name(session, Dataset, dataset_ref)
    snapshot = session.scalars(
        select(Snapshot)
        .where(Snapshot.dataset_id == dataset.id)
        .order_by(Snapshot.created_at.desc(), Snapshot.id)
        .limit(1)
    ).first()
    if snapshot is None:
        return None
    return {
        "snapshotId": snapshot.id,
        "createdAt": to_millis(snapshot.created_at),
        "exampleCount": snapshot.example_count,
        "counts": snapshot.counts,
        "report": snapshot.report,
    }


def run_of_dag_run(session: Session, dag_id: str, dag_run_id: str) -> Run | None:
    return session.scalars(
        select(Run).where(Run.airflow_dag_id == dag_id, Run.airflow_run_id == dag_run_id)
    ).one_or_none()
