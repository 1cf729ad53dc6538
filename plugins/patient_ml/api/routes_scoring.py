"""Batch scoring of a deployed model (extension): its batches, newest first, with their
progress, and one batch's chunks. Reading them needs read access to the model's DAG."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query
from pydantic import Field

from patient_ml.api.auth import CurrentUser, authorized_model
from patient_ml.api.deps import Session
from patient_ml.api.guards import refuse_nul_characters
from patient_ml.api.schemas import error_responses
from patient_ml.config.wire import WireModel
from patient_ml.exceptions import NotFoundError
from patient_ml.services import scoring
from patient_ml.services.scoring import ScoringBatchView, ScoringChunkView

router = APIRouter(dependencies=[Depends(refuse_nul_characters)])


class ScoringBatchesResponse(WireModel):
    model_id: str
    scoring_dag_id: str = Field(description="The Airflow DAG that scores with the champion.")
    batches: list[ScoringBatchView] = Field(description="Newest first.")


class ScoringBatchResponse(WireModel):
    batch: ScoringBatchView
    chunks: list[ScoringChunkView] = Field(description="In order.")


@router.get(
    "/models/{model_id}/scoring-batches",
    summary="Extension: the model's batch scorings with their progress, newest first",
    response_model=ScoringBatchesResponse,
    responses=error_responses(404, 422),
)
def list_scoring_batches(
    model_id: str,
    session: Session,
    user: CurrentUser,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
) -> ScoringBatchesResponse:
    from patient_ml.naming import scoring_dag_id_of

    model = authorized_model(session, model_id, user)
    return ScoringBatchesResponse(
        model_id=model.id,
        scoring_dag_id=scoring_dag_id_of(model.slug),
        batches=scoring.list_batches(session, model.id, limit=limit),
    )


@router.get(
    "/models/{model_id}/scoring-batches/{batch_id}",
    summary="Extension: one batch scoring with its chunks",
    response_model=ScoringBatchResponse,
    responses=error_responses(404, 422),
)
def get_scoring_batch(
    model_id: str, batch_id: str, session: Session, user: CurrentUser
) -> ScoringBatchResponse:
    model = authorized_model(session, model_id, user)
    batch = scoring.get_batch(session, model.id, batch_id)
    if batch is None:
        raise NotFoundError(
            f"Model {model.name!r} has no scoring batch {batch_id!r}.",
            fix="list its batches with GET /v1/patient-ml/models/{modelId}/scoring-batches",
        )
    return ScoringBatchResponse(batch=batch, chunks=scoring.chunks_of(session, batch.id))
