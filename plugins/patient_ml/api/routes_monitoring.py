"""Monitoring of a deployed model (extension): the monitor checks' events, newest first, and
the champion's reference profile. Reading them needs read access to the model's DAG."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel, Field

from patient_ml.api.auth import CurrentUser, authorized_model
from patient_ml.api.deps import Session
from patient_ml.api.guards import refuse_nul_characters
from patient_ml.api.schemas import error_responses

# Loaded with the app, not on the first request (its drift tests import SciPy: seconds).
from patient_ml.services import monitoring
from patient_ml.services.wire import Millis, WireResponse

router = APIRouter(dependencies=[Depends(refuse_nul_characters)])

Status = Literal["ok", "breach", "insufficient", "no-reference"]


class MonitoringWindow(WireResponse):
    predictions: int = Field(description="Predictions of the champion in the checked window.")
    from_: Millis | None = Field(None, alias="from", description="The oldest one's time.")
    to: Millis | None = Field(None, description="The newest one's time.")


class MonitoringEvent(WireResponse):
    id: int
    modelId: str
    runId: str | None = Field(description="The champion that was checked.")
    status: Status = Field(
        description="ok; breach (a threshold of the model's `monitoring` section was crossed); "
        "insufficient (fewer predictions than minSamples); no-reference (the champion has no "
        "reference profile)."
    )
    breaches: list[str] = Field(
        description="What crossed its threshold, e.g. `inputDrift.mean`, "
        "`predictionDrift.labels`, `livePerformance.balancedAccuracy`."
    )
    window: MonitoringWindow
    details: dict[str, Any] = Field(
        description="Per test: statistics, p-values, PSI, shares, live metric with its 95% "
        "bootstrap interval and the champion's test value."
    )
    actor: str
    createdAt: Millis


class ReferenceProfileSummary(WireResponse):
    runId: str
    snapshotId: str | None
    examples: int = Field(description="Confirmed test examples the profile was made from.")
    statistics: dict[str, Any] = Field(description="Per image statistic: its mean and count.")
    labels: dict[str, int] | None = Field(description="Predicted-label counts on the test split.")
    metrics: dict[str, Any] | None = Field(description="The champion's test metrics.")
    createdAt: Millis


class MonitorDag(BaseModel):
    dagId: str = Field(description="The model's monitor DAG (`patient_ml_monitor__<slug>`).")
    state: str = Field(
        description="What Airflow will do with it, as the Models table's `nextRun`: scheduled, "
        "paused (no check runs until it is unpaused), manual, onAssets, ended, notInAirflow."
    )
    at: Millis | None = Field(None, description="When the next check is due (scheduled).")
    schedule: str | None = None


class GetMonitoringResponse(BaseModel):
    modelId: str
    championId: str | None
    monitorDag: MonitorDag = Field(
        description="Whether Airflow runs the checks: a paused monitor DAG never checks."
    )
    monitoring: dict[str, Any] = Field(description="The model config's monitoring section.")
    reference: ReferenceProfileSummary | None = Field(
        description="The champion's reference profile; null before a cloud deployment."
    )
    events: list[MonitoringEvent] = Field(description="Newest first.")


@router.get(
    "/models/{model_id}/monitoring",
    summary="Extension: the deployed champion's monitoring checks and reference profile",
    response_model=GetMonitoringResponse,
    responses=error_responses(404, 422),
)
def get_monitoring(
    model_id: str,
    session: Session,
    user: CurrentUser,
    status: Annotated[Status | None, Query(description="Only events with this status.")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> dict[str, Any]:
    from patient_ml.api.routes_overview import next_dag_runs
    from patient_ml.naming import monitor_dag_id_of

    model = authorized_model(session, model_id, user)
    dag_id = monitor_dag_id_of(model.slug)
    return {
        "modelId": model.id,
        "championId": model.champion_id,
        "monitorDag": {"dagId": dag_id, **next_dag_runs([dag_id])[dag_id]},
        "monitoring": monitoring.settings_of(model).to_wire(),
        "reference": monitoring.reference_summary(session, model.champion_id),
        "events": monitoring.list_events(session, model.id, limit=limit, status=status),
    }
