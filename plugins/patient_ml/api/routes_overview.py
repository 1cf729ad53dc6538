"""Extensions for list pages and the web UI: the Models table's rows (server search, sort and
paging), what the caller may do with a model, a run's trials, a model's deployments, a
dataset's latest curation report, a run's model card and the run of an Airflow DAG run.

Every route authorizes exactly as the reference routes do (`auth`), so the web UI shows and
allows what the REST API allows the same user."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Response
from pydantic import BaseModel, ConfigDict, Field

from patient_ml.api.auth import (
    DECISION_RIGHT,
    CurrentUser,
    authorized_model,
    may,
    may_decide,
    readable_dag_ids,
    require_dag,
    user_name,
)
from patient_ml.api.deps import Session
from patient_ml.api.guards import refuse_nul_characters
from patient_ml.api.routes_runs import _run_of
from patient_ml.api.schemas import error_responses
from patient_ml.evaluation.model_card import ModelCardDocument
from patient_ml.exceptions import NotFoundError, PermissionDeniedError
from patient_ml.services.overview import ModelSort, Order

router = APIRouter(dependencies=[Depends(refuse_nul_characters)])

MAX_PAGE = 1000


class _Open(BaseModel):
    model_config = ConfigDict(extra="allow")


class ChampionSummary(_Open):
    id: str
    slug: str
    metricName: str
    metricValue: float | None = None


class LastRunSummary(_Open):
    id: str
    slug: str
    status: str
    start: int | None = None
    end: int | None = None


NextRunState = Literal["scheduled", "manual", "onAssets", "paused", "ended", "notInAirflow"]


class NextRun(BaseModel):
    """Extension: the model's next DAG run as Airflow's scheduler sees it."""

    state: NextRunState = Field(
        description="`scheduled` (at `at`), `manual` (no schedule: runs start from the UI, CLI or "
        "API), `onAssets` (only when monitoring signals drift), `paused` (the DAG is paused), "
        "`ended` (the schedule has no further run) or `notInAirflow` (Airflow has not parsed "
        "the model's DAG, or no longer has it)."
    )
    at: int | None = Field(None, description="`scheduled`: when it is due (ms since epoch).")
    schedule: str | None = Field(None, description="Airflow's summary of the DAG's schedule.")


class ModelSummary(_Open):
    """Extension: one row of the Models table."""

    id: str
    name: str
    description: str
    slug: str
    dagId: str
    problemType: str
    datasetId: str
    datasetName: str
    deployed: bool = Field(description="Whether the model has a champion (deployed).")
    runCount: int
    headlineMetric: str = Field(description="The platform metric shown for the champion.")
    updatedAt: int | None = None
    champion: ChampionSummary | None = None
    lastRun: LastRunSummary | None = None
    nextRun: NextRun = Field(description="When Airflow runs the model's DAG next, if it does.")


class ModelSummariesResponse(BaseModel):
    modelSummaries: list[ModelSummary]
    totalEntries: int


class ModelPermissions(BaseModel):
    """Extension: what the caller may do with a model (as the API decides it)."""

    user: str
    mayRead: bool
    mayEdit: bool
    mayStartRun: bool
    mayDecide: bool
    decideReason: str | None = Field(None, description="Why the caller may not decide, if not.")
    approvers: list[str] = Field(
        default_factory=list,
        description="Who may decide on the model's runs: its approvalPolicy.approvers (they "
        "also need the decision right); empty: any user with the decision right.",
    )
    decisionRight: str = Field(
        "",
        description="The Airflow right a decision needs, as the auth managers name it.",
    )


class ModelPermissionsResponse(BaseModel):
    permissions: ModelPermissions


class Trial(_Open):
    number: int
    state: str
    params: dict[str, Any] = Field(default_factory=dict)
    value: float | None = None
    failure: str | None = None
    start: int | None = None
    end: int | None = None


class GetTrialsResponse(BaseModel):
    trials: list[Trial]


class DeploymentEntry(_Open):
    id: int
    runId: str
    runSlug: str
    previousChampionId: str | None = None
    action: str
    deployType: str
    endpoint: str | None = None
    actor: str
    reason: str | None = None
    approvedBy: list[str] | None = Field(
        default=None,
        description="The people whose approval the deployment carries out (the actor of a "
        "pipeline deployment is its Airflow task).",
    )
    timestamp: int | None = None
    isCurrent: bool


class GetDeploymentsResponse(BaseModel):
    deployments: list[DeploymentEntry]


class CurationReport(_Open):
    snapshotId: str
    createdAt: int | None = None
    exampleCount: int
    counts: dict[str, Any]
    report: dict[str, Any]


class GetCurationReportResponse(BaseModel):
    curationReport: CurationReport | None = Field(
        None, description="None until the dataset's first curation."
    )


class GetModelCardResponse(BaseModel):
    modelCard: dict[str, Any]


class GetModelCardDocumentResponse(BaseModel):
    modelCard: ModelCardDocument


class DagRunRef(BaseModel):
    modelId: str
    runId: str


class GetDagRunRefResponse(BaseModel):
    run: DagRunRef


# Airflow's own timetables that never schedule a run by themselves (their `type_name`).
_MANUAL_TIMETABLES = {"NullTimetable"}
_ASSET_TIMETABLES = {"AssetTriggeredTimetable", "PartitionedAssetTimetable"}


def next_run_of(row: Any | None) -> dict[str, Any]:
    """A DAG's next run (`NextRun`) from its row of Airflow's `dag` table (None: no row)."""
    if row is None or row.is_stale:
        return {"state": "notInAirflow"}
    kind = row.timetable_type or ""
    schedule = row.timetable_summary or None
    described: dict[str, Any] = {"schedule": schedule} if schedule and schedule != "None" else {}
    if row.is_paused:
        return {"state": "paused", **described}
    if kind in _MANUAL_TIMETABLES or (not kind and schedule in (None, "None")):
        return {"state": "manual"}
    if kind in _ASSET_TIMETABLES:
        return {"state": "onAssets", **described}
    if row.next_dagrun_create_after is None:
        return {"state": "ended", **described}
    from patient_ml.services.common import to_millis

    return {"state": "scheduled", "at": to_millis(row.next_dagrun_create_after), **described}


def next_dag_runs(dag_ids: list[str]) -> dict[str, dict[str, Any]]:
    """When Airflow runs each DAG next (`NextRun`), from Airflow's metadata DB: the time the
    scheduler may create its next run, or why there is none."""
    if not dag_ids:
        return {}
    from airflow.models.dag import DagModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    columns = (
        DagModel.dag_id,
        DagModel.is_paused,
        DagModel.is_stale,
        DagModel.timetable_type,
        DagModel.timetable_summary,
        DagModel.next_dagrun_create_after,
    )
    with create_session() as session:
        rows = {
            row.dag_id: row
            for row in session.execute(select(*columns).where(DagModel.dag_id.in_(dag_ids)))
        }
    return {dag_id: next_run_of(rows.get(dag_id)) for dag_id in dag_ids}


@router.get(
    "/model-summaries",
    summary="Extension: the Models table (search, sort and paging on the server)",
    response_model=ModelSummariesResponse,
    response_model_exclude_none=True,
    responses=error_responses(422),
)
def list_model_summaries(
    session: Session,
    user: CurrentUser,
    search: Annotated[
        str | None, Query(max_length=200, description="In name, description, dataset.")
    ] = None,
    sort: Annotated[ModelSort, Query()] = "name",
    order: Annotated[Order, Query()] = "asc",
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 50,
    offset: Annotated[int, Query(ge=0, le=10_000_000)] = 0,
) -> dict[str, Any]:
    from patient_ml.naming import dag_id_of
    from patient_ml.services.overview import model_page, model_summaries

    dag_ids = None if may(user, "GET", None) else readable_dag_ids(user)
    page = model_page(
        session, search=search, sort=sort, order=order, limit=limit, offset=offset, dag_ids=dag_ids
    )
    next_runs = next_dag_runs([dag_id_of(m.slug) for m in page.rows])
    return {
        "modelSummaries": model_summaries(session, page.rows, next_runs),
        "totalEntries": page.total,
    }


@router.get(
    "/models/{model_id}/permissions",
    summary="Extension: what you may do with this model",
    response_model=ModelPermissionsResponse,
    responses=error_responses(404, 422),
)
def get_permissions(model_id: str, session: Session, user: CurrentUser) -> dict[str, Any]:
    from patient_ml.naming import dag_id_of
    from patient_ml.services.approvals import check_may_decide

    model = authorized_model(session, model_id, user)
    dag_id = dag_id_of(model.slug)
    approvers = list((model.approval_policy or {}).get("approvers") or [])
    who = ", ".join(approvers) if approvers else "any user with the decision right"
    reason = None
    if not may_decide(user, dag_id):
        reason = (
            f"User {user_name(user)!r} may not decide on runs of model {model.name!r}: "
            f"deciding needs {DECISION_RIGHT} on the DAG {dag_id}, which this user's Airflow "
            f"role does not grant. Who may decide: {who}."
        )
    else:
        try:
            check_may_decide(model, user_name(user))
        except PermissionDeniedError as refused:
            reason = refused.message
    return {
        "permissions": {
            "user": user_name(user),
            "mayRead": True,
            "mayEdit": may(user, "PUT", dag_id),
            "mayStartRun": may(user, "POST", dag_id, run=True),
            "mayDecide": reason is None,
            "decideReason": reason,
            "approvers": approvers,
            "decisionRight": DECISION_RIGHT,
        }
    }


@router.get(
    "/models/{model_id}/runs/{run_id}/trials",
    summary="Extension: the run's trials (state, hyperparameters, objective, failure)",
    response_model=GetTrialsResponse,
    response_model_exclude_none=True,
    responses=error_responses(404, 422),
)
def get_trials(model_id: str, run_id: str, session: Session, user: CurrentUser) -> dict[str, Any]:
    from patient_ml.services.overview import trials_of

    run = _run_of(session, authorized_model(session, model_id, user), run_id)
    return {"trials": trials_of(session, run.id)}


@router.get(
    "/models/{model_id}/runs/{run_id}/model-card",
    summary="Extension: the run's model card (current)",
    response_model=GetModelCardResponse,
    responses=error_responses(404, 422),
)
def get_model_card(
    model_id: str, run_id: str, session: Session, user: CurrentUser
) -> dict[str, Any]:
    from patient_ml.services.model_cards import build_model_card

    run = _run_of(session, authorized_model(session, model_id, user), run_id)
    return {"modelCard": build_model_card(session, run.id)}


@router.get(
    "/models/{model_id}/runs/{run_id}/model-card/document",
    summary="Extension: the run's model card as a document (ISO dates, no paths, no nulls)",
    response_model=GetModelCardDocumentResponse,
    response_model_exclude_none=True,
    responses=error_responses(404, 422),
)
def get_model_card_document(
    model_id: str, run_id: str, session: Session, user: CurrentUser
) -> dict[str, Any]:
    from patient_ml.services.model_card_document import build_model_card_document

    run = _run_of(session, authorized_model(session, model_id, user), run_id)
    return {"modelCard": build_model_card_document(session, run.id).wire()}


@router.get(
    "/models/{model_id}/runs/{run_id}/model-card/markdown",
    summary="Extension: the run's model card as a Markdown file (a download)",
    response_class=Response,
    responses={
        200: {
            "description": "The model card in Markdown (as `patient-ml runs card` prints it).",
            "content": {"text/markdown": {"schema": {"type": "string"}}},
        },
        **error_responses(404, 422),
    },
)
def download_model_card_markdown(
    model_id: str, run_id: str, session: Session, user: CurrentUser
) -> Response:
    from patient_ml.evaluation.model_card import render_markdown
    from patient_ml.services.model_card_document import build_model_card_document

    model = authorized_model(session, model_id, user)
    run = _run_of(session, model, run_id)
    text = render_markdown(build_model_card_document(session, run.id))
    return Response(
        text.encode(),
        media_type="text/markdown; charset=utf-8",
        headers={
            "Content-Disposition": f'attachment; filename="model-card-{model.slug}-{run.slug}.md"'
        },
    )


@router.get(
    "/models/{model_id}/deployments",
    summary="Extension: the model's deployment history, newest first",
    response_model=GetDeploymentsResponse,
    response_model_exclude_none=True,
    responses=error_responses(404, 422),
)
def get_deployments(model_id: str, session: Session, user: CurrentUser) -> dict[str, Any]:
    from patient_ml.services.overview import deployments_of

    model = authorized_model(session, model_id, user)
    return {"deployments": deployments_of(session, model.id)}


@router.get(
    "/datasets/{dataset_id}/curation-report",
    summary="Extension: the dataset's latest curation report",
    response_model=GetCurationReportResponse,
    responses=error_responses(404, 422),
)
def get_curation_report(dataset_id: str, session: Session, user: CurrentUser) -> dict[str, Any]:
    from patient_ml.services.overview import latest_curation_report

    require_dag(user, "GET", None)
    return {"curationReport": latest_curation_report(session, dataset_id)}


@router.get(
    "/dag-runs/{dag_id}/{dag_run_id}",
    summary="Extension: the Patient ML run of an Airflow DAG run",
    response_model=GetDagRunRefResponse,
    responses=error_responses(404, 422),
)
def get_dag_run_ref(
    dag_id: str, dag_run_id: str, session: Session, user: CurrentUser
) -> dict[str, Any]:
    from patient_ml.naming import slug_of_dag_id
    from patient_ml.services.overview import run_of_dag_run

    if slug_of_dag_id(dag_id) is None:
        raise NotFoundError(
            f"The DAG {dag_id!r} is not a Patient ML model's DAG.",
            fix="open a DAG named patient_ml__<model>",
        )
    require_dag(user, "GET", dag_id)
    run = run_of_dag_run(session, dag_id, dag_run_id)
    if run is None:
        raise NotFoundError(
            f"The DAG run {dag_run_id!r} of {dag_id} has no Patient ML run (yet).",
            fix="its first task creates it; wait until the run has started",
        )
    return {"run": {"modelId": run.model_id, "runId": run.id}}


class DagModelRef(BaseModel):
    modelId: str


class GetDagModelRefResponse(BaseModel):
    model: DagModelRef


@router.get(
    "/dags/{dag_id}",
    summary="Extension: the Patient ML model of an Airflow DAG",
    response_model=GetDagModelRefResponse,
    responses=error_responses(404, 422),
)
def get_dag_model_ref(dag_id: str, session: Session, user: CurrentUser) -> dict[str, Any]:
    from sqlalchemy import select

    from patient_ml.db.models import Model
    from patient_ml.naming import slug_of_dag_id

    slug = slug_of_dag_id(dag_id)
    model = session.scalars(select(Model).where(Model.slug == slug)).one_or_none() if slug else None
    if model is None:
        raise NotFoundError(
            f"The DAG {dag_id!r} is not a Patient ML model's DAG.",
            fix="open a DAG named patient_ml__<model> whose model exists",
        )
    require_dag(user, "GET", dag_id)
    return {"model": {"modelId": model.id}}
