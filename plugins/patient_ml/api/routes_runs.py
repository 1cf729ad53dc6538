"""Runs of a model: create (triggers the model's DAG run), list, get, the model artifact,
approval decisions, and predictions from the deployed champion (reference shapes).

Responses are declared with `response_model_exclude_unset=True`: keys the service leaves out
stay out, as before the models were declared (see `schemas`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated, Any, Literal

from fastapi import APIRouter, Body, Depends, Header, Query, Request
from fastapi import Response as ResponseHeaders
from fastapi.responses import Response
from pydantic import BaseModel, Field

from patient_ml.api.auth import (
    CurrentUser,
    Method,
    authorized_model,
    require_decision_right,
    user_name,
)
from patient_ml.api.deps import Engine, Session
from patient_ml.api.guards import refuse_nul_characters
from patient_ml.api.schemas import (
    CreateApprovalDecisionResponse,
    CreateDeploymentResponse,
    CreateRollbackResponse,
    CreateRunResponse,
    GetModelArtifactResponse,
    GetRunExtendedResponse,
    GetRunResponse,
    GetRunsExtendedResponse,
    GetRunsResponse,
    PredictionResponse,
    error_responses,
)
from patient_ml.api.views import (
    OMITTED_DOC,
    View,
    extended,
    in_view,
    readable,
    reference_prediction,
)
from patient_ml.exceptions import NotFoundError
from patient_ml.services.overview import Order, RunSort

if TYPE_CHECKING:
    from patient_ml.db.models import Model, Run

# Bounded: a huge limit overflowed in the database (500 on SQLite, 503 on PostgreSQL).
MAX_RUNS = 1000
RunsLimit = Annotated[int, Query(ge=1, le=MAX_RUNS, description="At most this many runs.")]
router = APIRouter(dependencies=[Depends(refuse_nul_characters)])


class OverrideInput(BaseModel):
    justification: str = Field(
        description="Why approve although the challenger fails a change-control rule or is "
        "worse on the objective; its own text, not the decision's description."
    )


class ApprovalDecisionInput(BaseModel):
    decision: Literal["approved", "rejected"]
    description: str | None = Field(None, description="Why; required by this platform.")
    override: OverrideInput | None = Field(
        None,
        description="Extension: confirms an override. Required to approve a run whose "
        "`gate.overrideRequired` is true (a failed non-inferiority rule, or worse on the "
        "objective), refused otherwise; audited as `run.override_approved`.",
    )


class RollbackInput(BaseModel):
    description: str | None = Field(None, description="Why; required by this platform.")


class RunRequest(BaseModel):
    maxTrials: int | None = Field(None, ge=1, description="Extension: trials of this run.")


def _model_keys(
    engine: Engine, model_id: str, user: CurrentUser, method: Method = "GET", run: bool = False
) -> tuple[str, str]:
    """(id, DAG id) of a model the user may `method`, authorized in a short transaction of its
    own (for handlers that write in several)."""
    from patient_ml.db.engine import read_scope
    from patient_ml.naming import dag_id_of

    with read_scope(engine) as session:
        model = authorized_model(session, model_id, user, method, run=run)
        return str(model.id), dag_id_of(model.slug)


def _run_of(session: Session, model: Model, run_id: str) -> Run:
    from patient_ml.services.runs import get_run

    run = get_run(session, run_id)
    if run.model_id != model.id:
        raise NotFoundError(
            f"Model {model.name!r} has no run {run_id!r}.",
            fix="list the model's runs with GET /v1/patient-ml/models/{modelId}/runs",
        )
    return run


@router.post(
    "/models/{model_id}/runs",
    summary="Start a run (triggers the model's DAG run)",
    response_model=CreateRunResponse,
    response_model_exclude_unset=True,
    responses=error_responses(404, 409, 422),
)
def create_run(
    model_id: str,
    engine: Engine,
    user: CurrentUser,
    body: Annotated[RunRequest | None, Body()] = None,
) -> dict[str, Any]:
    from patient_ml.hooks.airflow_dag_runs import AirflowDagRunHook
    from patient_ml.services.runs import start_run

    found, dag_id = _model_keys(engine, model_id, user, "POST", run=True)
    hook = AirflowDagRunHook("rest_api")
    hook.require_runnable(dag_id)  # else 409 and no run is saved
    run, _ = start_run(  # its own transactions: the run is saved before the trigger
        engine,
        found,
        actor=user_name(user),
        trigger=hook.trigger,
        max_trials=body.maxTrials if body else None,
    )
    return {"runId": run.id}


def _run_view(wire: dict[str, Any], view: View) -> dict[str, Any]:
    """The extended run, or the reference one: its top-level fields, and metrics without their
    interval (the reference SDK's Metric forbids other fields)."""
    from patient_ml.config import reference

    if extended(view):
        return wire
    run = reference.project("ModelRun", wire)
    run["metrics"] = {
        subject: [reference.project("Metric", m) for m in items]
        for subject, items in wire["metrics"].items()
    }
    return run


@router.get(
    "/models/{model_id}/runs",
    summary="The model's runs, newest first",
    response_model=GetRunsResponse | GetRunsExtendedResponse,
    response_model_exclude_unset=True,
    responses={
        200: {"description": "The runs, in the view asked for.", "headers": OMITTED_DOC},
        **error_responses(404, 422),
    },
)
def list_runs(
    model_id: str,
    session: Session,
    user: CurrentUser,
    response: ResponseHeaders,
    limit: RunsLimit = 100,
    view: View = "reference",
    offset: Annotated[
        int, Query(ge=0, le=10_000_000, description="Extension: skip this many runs.")
    ] = 0,
    sort: Annotated[RunSort, Query(description="Extension: order by this field.")] = "start",
    order: Annotated[Order, Query(description="Extension: asc or desc.")] = "desc",
    status: Annotated[
        Literal["running", "succeeded", "failed"] | None,
        Query(description="Extension: only runs of this status."),
    ] = None,
) -> Response:
    from patient_ml.services.overview import run_page
    from patient_ml.services.runs import runs_to_wire

    model = authorized_model(session, model_id, user)
    page = run_page(
        session, model.id, limit=limit, offset=offset, sort=sort, order=order, status=status
    )
    runs = [_run_view(wire, view) for wire in runs_to_wire(session, page.rows)]
    content: dict[str, Any]
    if not extended(view):  # the reference GetRuns answer has no total
        content = {"runs": readable("ModelRun", runs, response, "run")}
    else:
        content = {"runs": runs, "totalEntries": page.total}
    return in_view(view, (GetRunsResponse, GetRunsExtendedResponse), content, response)


@router.get(
    "/models/{model_id}/runs/{run_id}",
    summary="One run (the reference ModelRun; view=extended adds extensions)",
    response_model=GetRunResponse | GetRunExtendedResponse,
    response_model_exclude_unset=True,
    responses=error_responses(404, 422),
)
def get_run(
    model_id: str,
    run_id: str,
    session: Session,
    user: CurrentUser,
    response: ResponseHeaders,
    view: View = "reference",
) -> Response:
    from patient_ml.services.runs import run_to_wire

    model = authorized_model(session, model_id, user)
    content = {"run": _run_view(run_to_wire(session, _run_of(session, model, run_id)), view)}
    return in_view(view, (GetRunResponse, GetRunExtendedResponse), content, response)


@router.post(
    "/models/{model_id}/runs/{run_id}/approvals",
    summary="Approve or reject an evaluated run",
    response_model=CreateApprovalDecisionResponse,
    response_model_exclude_unset=True,
    responses=error_responses(404, 409, 422),
)
def create_approval(
    model_id: str,
    run_id: str,
    body: ApprovalDecisionInput,
    session: Session,
    user: CurrentUser,
    channel: Annotated[
        Literal["api", "ui"],
        Header(
            alias="X-Patient-ML-Channel",
            description="Extension: `ui` when the Patient ML pages send the decision "
            "(recorded as the decision's channel); default `api`.",
        ),
    ] = "api",
) -> dict[str, Any]:
    """Needs read access to the model's DAG, the decision right on it (Airflow's edit right on
    its human-in-the-loop details, as for Airflow's Required Actions) and, when the model names
    approvers, to be one of them (403 saying which is missing). Approving a run whose gate
    requires an override (`GET .../runs/{runId}?view=extended`: `gate.overrideRequired`) needs
    `override.justification` (422 on `override` otherwise, naming the failed rules). Under
    `approvalPolicy.minApprovers` each approval by a different person counts; the run is
    approved at the last one. A pending Required Action of the run in Airflow is closed with
    the decision that settles the run."""
    from patient_ml.naming import dag_id_of
    from patient_ml.services.approvals import decide
    from patient_ml.services.runs import approval_to_wire
    from patient_ml.triggers.required_action import answer_settled

    model = authorized_model(session, model_id, user)
    require_decision_right(user, model.name, dag_id_of(model.slug))
    run = _run_of(session, model, run_id)
    approval = decide(
        session,
        run.id,
        body.decision,
        user=user_name(user),
        reason=body.description or "",
        channel=channel,
        detail={"airflowUserId": str(user.get_id())},
        override=body.override.justification if body.override is not None else None,
    )
    wire = approval_to_wire(approval)
    session.commit()  # the task this resumes reads the decision from the product DB
    answer_settled(session, run, str(user.get_id()), user_name(user))
    return {"approvalDecision": wire}


ChannelHeader = Annotated[
    Literal["api", "ui"],
    Header(
        alias="X-Patient-ML-Channel",
        description="Extension: `ui` when the Patient ML pages send the request (recorded in "
        "the audit trail); default `api`.",
    ),
]


def _pipeline_state(run: Run) -> str | None:
    """The state of the run's Airflow DAG run (None: no DAG run, or Airflow has none)."""
    from patient_ml.hooks.airflow_dag_runs import AirflowDagRunHook

    if not (run.airflow_dag_id and run.airflow_run_id):
        return None
    return AirflowDagRunHook("rest_api").dag_run_state(run.airflow_dag_id, run.airflow_run_id)


class DeployOption(BaseModel):
    allowed: bool
    reason: str | None = Field(None, description="Why not (the API's refusal), when not allowed.")


class DeployOptions(BaseModel):
    deploy: DeployOption
    rollback: DeployOption


class GetDeployOptionsResponse(BaseModel):
    deployOptions: DeployOptions


@router.get(
    "/models/{model_id}/runs/{run_id}/deploy-options",
    summary="Extension: whether you may deploy this run, or roll back to it, now (and why not)",
    response_model=GetDeployOptionsResponse,
    response_model_exclude_none=True,
    responses=error_responses(404, 422),
)
def get_deploy_options(
    model_id: str, run_id: str, session: Session, user: CurrentUser
) -> dict[str, Any]:
    """What `POST .../deployment` and `POST .../rollback` would refuse, without doing them: the
    web UI offers the buttons that would work and tells why the others would not."""
    from patient_ml.api.auth import may_decide
    from patient_ml.deploy import deploy_options
    from patient_ml.naming import dag_id_of

    model = authorized_model(session, model_id, user)
    run = _run_of(session, model, run_id)
    dag_id = dag_id_of(model.slug)
    if not may_decide(user, dag_id):
        reason = (
            f"User {user_name(user)!r} may not deploy runs of model {model.name!r}: it needs the "
            f"right to respond to the required actions of the DAG {dag_id}, as deciding does."
        )
        refused = {"allowed": False, "reason": reason}
        return {"deployOptions": {"deploy": refused, "rollback": refused}}
    options = deploy_options(session, run, user=user_name(user), pipeline_state=_pipeline_state)
    return {"deployOptions": options}


def _deploy(
    engine: Engine,
    model_id: str,
    run_id: str,
    user: CurrentUser,
    channel: str,
    rollback_reason: str | None = None,
) -> dict[str, Any]:
    """Deploy (or roll back to) a run for a person: read access, the decision right on the
    model's DAG and, when the model names approvers, one of them (the service checks that)."""
    from patient_ml import settings
    from patient_ml.db.engine import read_scope
    from patient_ml.deploy import deploy_on_request
    from patient_ml.naming import dag_id_of
    from patient_ml.serving.servers import make_server
    from patient_ml.storage import default_artifact_store

    with read_scope(engine) as session:
        model = authorized_model(session, model_id, user)
        require_decision_right(user, model.name, dag_id_of(model.slug))
        found = _run_of(session, model, run_id).id

    return deploy_on_request(
        engine,
        default_artifact_store(),
        found,
        user=user_name(user),
        channel=channel,
        server=make_server(settings.backend()),
        rollback_reason=rollback_reason,
        pipeline_state=_pipeline_state,
        detail={"airflowUserId": str(user.get_id())},
    )


def _deploy_route(
    action: str, summary: str, answer: type[BaseModel]
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """The route declaration of `POST .../runs/{run_id}/<action>` (deployment, rollback)."""
    return router.post(
        f"/models/{{model_id}}/runs/{{run_id}}/{action}",
        summary=summary,
        response_model=answer,
        response_model_exclude_none=True,
        responses=error_responses(404, 409, 422, 502),
    )


@_deploy_route(
    "deployment",
    "Extension: deploy an approved run (as `patient-ml runs deploy`)",
    CreateDeploymentResponse,
)
def create_deployment(
    model_id: str,
    run_id: str,
    engine: Engine,
    user: CurrentUser,
    channel: ChannelHeader = "api",
) -> dict[str, Any]:
    """Deploys the run now (edge: it becomes champion; cloud: a new endpoint is started and
    health-checked before the champion is swapped) and answers when done. Needs what a
    decision needs: read access to the model's DAG, the decision right on it and, when the
    model names approvers, to be one of them (403 saying which is missing). 409 when the run is
    not approved, is being deployed, or its own pipeline (a queued or running DAG run) will
    deploy it; 502 when the new endpoint did not become healthy (the old champion keeps
    serving, the run records `deployStatus: failed`). Deploying the deployed champion again
    does nothing (`alreadyDeployed`)."""
    answer = _deploy(engine, model_id, run_id, user, channel)
    return {"deployment": answer["deployment"]}


@_deploy_route(
    "rollback",
    "Extension: roll back to an earlier champion (approve it again and deploy it)",
    CreateRollbackResponse,
)
def create_rollback(
    model_id: str,
    run_id: str,
    body: RollbackInput,
    engine: Engine,
    user: CurrentUser,
    channel: ChannelHeader = "api",
) -> dict[str, Any]:
    """The run must have been champion before and not be now. Records an approval with the
    justification (`criteria.rollback: true`, audited as `run.rollback_approved`), then deploys
    the run as `.../deployment` does (a deployment with action `rollback`). Same rights as a
    decision. When the deployment fails (502) the approval stays; deploy again with
    `.../deployment`."""
    return _deploy(engine, model_id, run_id, user, channel, body.description or "")


@router.get(
    "/models/{model_id}/runs/{run_id}/model-artifact",
    summary="A URL that downloads the run's model artifact (model.tar.gz)",
    response_model=GetModelArtifactResponse,
    response_model_exclude_unset=True,
    responses=error_responses(404, 422),
)
def get_model_artifact(
    model_id: str, run_id: str, request: Request, session: Session, user: CurrentUser
) -> dict[str, Any]:
    run, _ = _run_with_artifact(session, model_id, run_id, user)
    url = request.url_for("download_model_artifact", model_id=run.model_id, run_id=run.id)
    return {"url": str(url)}


@router.get(
    "/models/{model_id}/runs/{run_id}/model-artifact/download",
    name="download_model_artifact",
    summary="The run's model artifact (same credentials as the API)",
    response_class=Response,
    responses={
        200: {
            "description": "The model artifact (model.tar.gz).",
            "content": {"application/gzip": {"schema": {"type": "string", "format": "binary"}}},
        },
        **error_responses(404, 422),
    },
)
def download_model_artifact(
    model_id: str, run_id: str, session: Session, user: CurrentUser
) -> Response:
    from patient_ml.storage import default_artifact_store

    run, artifact_uri = _run_with_artifact(session, model_id, run_id, user)
    store = default_artifact_store()
    data = store.read_bytes(store.key_of(artifact_uri))
    return Response(
        data,
        media_type="application/gzip",
        headers={"Content-Disposition": f'attachment; filename="{run.slug}-model.tar.gz"'},
    )


def _run_with_artifact(
    session: Session, model_id: str, run_id: str, user: CurrentUser
) -> tuple[Run, str]:
    """A run of a model the user may read, which has a model artifact (else 404), and the
    artifact's URI."""
    run = _run_of(session, authorized_model(session, model_id, user), run_id)
    if not run.model_artifact_uri:
        raise NotFoundError(
            f"Run {run.id} has no model artifact yet (status {run.status!r}).",
            fix="wait until tuning has finished",
        )
    return run, run.model_artifact_uri


@router.get(
    "/models/{model_id}/predictions",
    summary="A prediction from the deployed champion",
    response_model=PredictionResponse,
    response_model_exclude_unset=True,
    responses=error_responses(404, 409, 422),
)
def predict(
    model_id: str,
    engine: Engine,
    user: CurrentUser,
    exampleId: Annotated[
        str | None,
        Query(
            min_length=1,
            description="The example (DocumentReference id) to predict. Left out (as the "
            "reference SDK's predict() does): the first example, in id order, of the test "
            "split of the dataset's latest snapshot.",
        ),
    ] = None,
    predictionType: Annotated[Literal["imgClf", "imgSeg"] | None, Query()] = None,
    view: View = "reference",
) -> dict[str, Any]:
    from patient_ml.services.predictions import predict
    from patient_ml.storage import default_artifact_store

    found, _ = _model_keys(engine, model_id, user)
    answer = predict(
        engine, default_artifact_store(), found, example_id=exampleId, test_example=True
    )
    if predictionType and answer.get("problemType") != predictionType:
        raise NotFoundError(
            f"Model {model_id!r} answers {answer.get('problemType')}, not {predictionType}.",
            fix=f"ask for predictionType={answer.get('problemType')}",
        )
    answer = {"predictionType": answer.get("problemType"), **answer}
    return answer if extended(view) else reference_prediction(answer)
