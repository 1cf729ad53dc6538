"""Models and datasets: create, list, get, update, delete (reference shapes)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body

from patient_ml.api.auth import (
    CurrentUser,
    authorized_model,
    may,
    readable_dag_ids,
    require_dag,
    user_name,
)
from patient_ml.api.deps import Session
from patient_ml.naming import dag_id_of

router = APIRouter()
ConfigBody = Annotated[dict[str, Any], Body(description="The config (reference shape, camelCase).")]


@router.post("/models", summary="Create a model config")
def create_model(body: ConfigBody, session: Session, user: CurrentUser) -> dict[str, Any]:
    from patient_ml.services.models import create_model, model_to_wire

    require_dag(user, "PUT", None)
    return {"model": model_to_wire(create_model(session, body, actor=user_name(user)))}


@router.get("/models", summary="List the model configs you may read")
def list_models(session: Session, user: CurrentUser) -> dict[str, Any]:
    from patient_ml.services.models import list_models, model_to_wire

    models = list_models(session)
    if not may(user, "GET", None):
        allowed = readable_dag_ids(user)
        models = [m for m in models if dag_id_of(m.slug) in allowed]
    return {"models": [model_to_wire(m) for m in models]}


@router.get("/models/{model_id}", summary="Get a model config")
def get_model(model_id: str, session: Session, user: CurrentUser) -> dict[str, Any]:
    from patient_ml.services.models import model_to_wire

    return {"model": model_to_wire(authorized_model(session, model_id, user))}


@router.put("/models/{model_id}", summary="Replace a model config")
def update_model(
    model_id: str, body: ConfigBody, session: Session, user: CurrentUser
) -> dict[str, Any]:
    from patient_ml.services.models import model_to_wire, update_model

    authorized_model(session, model_id, user, "PUT")
    return {"model": model_to_wire(update_model(session, model_id, body, actor=user_name(user)))}


@router.delete("/models/{model_id}", summary="Delete a model config nothing depends on")
def delete_model(model_id: str, session: Session, user: CurrentUser) -> dict[str, Any]:
    from patient_ml.services.models import delete_model

    authorized_model(session, model_id, user, "DELETE")
    return {"id": delete_model(session, model_id, actor=user_name(user))}


@router.post("/datasets", summary="Create a dataset config")
def create_dataset(body: ConfigBody, session: Session, user: CurrentUser) -> dict[str, Any]:
    from patient_ml.services.datasets import create_dataset, dataset_to_wire

    require_dag(user, "PUT", None)
    return {"dataset": dataset_to_wire(create_dataset(session, body, actor=user_name(user)))}


@router.get("/datasets", summary="List dataset configs")
def list_datasets(session: Session, user: CurrentUser) -> dict[str, Any]:
    from patient_ml.services.datasets import dataset_to_wire, list_datasets

    require_dag(user, "GET", None)
    return {"datasets": [dataset_to_wire(d) for d in list_datasets(session)]}


@router.get("/datasets/{dataset_id}", summary="Get a dataset config")
def get_dataset(dataset_id: str, session: Session, user: CurrentUser) -> dict[str, Any]:
    from patient_ml.services.datasets import dataset_to_wire, get_dataset

    require_dag(user, "GET", None)
    return {"dataset": dataset_to_wire(get_dataset(session, dataset_id))}


@router.put("/datasets/{dataset_id}", summary="Replace a dataset config")
def update_dataset(
    dataset_id: str, body: ConfigBody, session: Session, user: CurrentUser
) -> dict[str, Any]:
    from patient_ml.services.datasets import dataset_to_wire, update_dataset

    require_dag(user, "PUT", None)
    updated = update_dataset(session, dataset_id, body, actor=user_name(user))
    return {"dataset": dataset_to_wire(updated)}


@router.delete("/datasets/{dataset_id}", summary="Delete a dataset config no model uses")
def delete_dataset(dataset_id: str, session: Session, user: CurrentUser) -> dict[str, Any]:
    from patient_ml.services.datasets import delete_dataset

    require_dag(user, "DELETE", None)
    return {"id": delete_dataset(session, dataset_id, actor=user_name(user))}
