"""A run's logs (reference `GetLogs`): training trials and evaluation, filtered and paged.

Served from the run's log objects in the artifact store (see patient_ml.services.run_logs), so
they outlive Airflow's task logs and need no access to the workers. Reading them needs read
access to the model's DAG, like reading the run.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query

from patient_ml.api.auth import CurrentUser, authorized_model
from patient_ml.api.deps import Session
from patient_ml.api.guards import refuse_nul_characters
from patient_ml.api.routes_runs import _run_of
from patient_ml.api.schemas import GetModelLogsResponse, error_responses
from patient_ml.services.run_logs import MAX_LIMIT

router = APIRouter(dependencies=[Depends(refuse_nul_characters)])


@router.get(
    "/models/{model_id}/runs/{run_id}/logs",
    summary="The run's log events (training trials, evaluation), oldest first",
    response_model=GetModelLogsResponse,
    response_model_exclude_unset=True,  # `marker` only when more events follow
    responses=error_responses(404, 422),
)
def get_run_logs(
    model_id: str,
    run_id: str,
    session: Session,
    user: CurrentUser,
    filter_pattern: Annotated[
        str,
        Query(
            alias="filter",
            max_length=1024,
            description="CloudWatch Logs filter pattern, plain-text forms: `a b` (all terms), "
            '`"a phrase"`, `?a ?b` (any term), `a -b` (exclude). Empty: every event.',
        ),
    ] = "",
    marker: Annotated[
        str | None,
        Query(max_length=2048, description="The `marker` of the previous page, unchanged."),
    ] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = MAX_LIMIT,
) -> dict[str, Any]:
    from patient_ml.services.run_logs import run_logs_page
    from patient_ml.storage import default_artifact_store

    run = _run_of(session, authorized_model(session, model_id, user), run_id)
    return run_logs_page(
        default_artifact_store(),
        run.id,
        filter_pattern=filter_pattern,
        marker=marker,
        limit=limit,
    )
