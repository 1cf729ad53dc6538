"""Serving endpoints of deployed (cloud) models, as recorded in the product DB."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from patient_ml.db.models import Endpoint, Model, utcnow
from patient_ml.db.require import present
from patient_ml.exceptions import ConflictError
from patient_ml.services import audit
from patient_ml.services.common import get_by_id_or_name, to_millis


def add_endpoint(session: Session, model_id: str, run_id: str, kind: str) -> Endpoint:
    endpoint = Endpoint(model_id=model_id, run_id=run_id, kind=kind, status="starting")
    session.add(endpoint)
    session.flush()
    return endpoint


def mark_endpoint(
    session: Session,
    endpoint_id: int,
    status: str,
    *,
    actor: str,
    url: str | None = None,
    handle: str | None = None,
    error: str | None = None,
) -> Endpoint:
    endpoint = session.get(Endpoint, endpoint_id)
    endpoint = present(endpoint, f"endpoint {endpoint_id}")
    before = {"status": endpoint.status}
    endpoint.status = status
    endpoint.url = url or endpoint.url
    endpoint.handle = handle or endpoint.handle
    endpoint.error = error
    if status in {"stopped", "failed"}:
        endpoint.stopped_at = utcnow()
    session.flush()
    audit.record(
        session,
        actor=actor,
        action=f"endpoint.{status}",
        entity_type="endpoint",
        entity_id=str(endpoint.id),
        before=before,
        after={"status": status, "url": endpoint.url, "runId": endpoint.run_id, "error": error},
    )
    return endpoint


def live_endpoints(session: Session, model_id: str) -> list[Endpoint]:
    """Endpoints of a model that were healthy when last seen (oldest first)."""
    return list(
        session.scalars(
            select(Endpoint)
            .where(Endpoint.model_id == model_id, Endpoint.status == "healthy")
            .order_by(Endpoint.id)
        )
    )


def champion_endpoint(session: Session, model_ref: str) -> Endpoint:
    """The healthy endpoint serving a model's champion; a clear error when there is none."""
    model = get_by_id_or_name(session, Model, model_ref)
    if model.champion_id is None:
        raise ConflictError(
            f"Model {model.name!r} has no champion, so nothing is deployed.",
            fix="approve a run of this model and let it deploy",
        )
    for endpoint in reversed(live_endpoints(session, model.id)):
        if endpoint.run_id == model.champion_id:
            return endpoint
    kind = (model.deploy_approach or {}).get("type")
    raise ConflictError(
        f"Model {model.name!r} has no running endpoint for its champion (run "
        f"{model.champion_id}); its deployApproach is {kind!r}.",
        fix="edge models are used by downloading the champion's model artifact; for a cloud "
        "model, deploy the champion again (`patient-ml runs deploy --run ID`)",
    )


def endpoint_to_wire(endpoint: Endpoint) -> dict[str, Any]:
    return {
        "id": endpoint.id,
        "modelId": endpoint.model_id,
        "runId": endpoint.run_id,
        "kind": endpoint.kind,
        "url": endpoint.url,
        "status": endpoint.status,
        "error": endpoint.error,
        "createdAt": to_millis(endpoint.created_at),
        "stoppedAt": to_millis(endpoint.stopped_at),
    }
