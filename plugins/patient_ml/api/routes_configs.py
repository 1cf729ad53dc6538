"""Models and datasets: create, list, get, update, delete (reference shapes).

Bodies reach the services as raw dicts (documented with the config models' schemas in
`schemas`), so a bad config gets the product's field-level 422. Responses are declared with
`response_model_exclude_unset=True`: keys the service leaves out stay out (see `schemas`).
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Response

from patient_ml.api.auth import (
    CurrentUser,
    authorized_model,
    may,
    readable_dag_ids,
    require_dag,
    user_name,
)
from patient_ml.api.deps import Session
from patient_ml.api.guards import refuse_nul_characters
from patient_ml.api.schemas import (
    CreateDatasetResponse,
    CreateModelResponse,
    DatasetConfigBody,
    DeleteDatasetResponse,
    DeleteModelResponse,
    GetDatasetResponse,
    GetDatasetsResponse,
    GetModelResponse,
    GetModelsResponse,
    ModelConfigBody,
    UpdateDatasetResponse,
    UpdateModelResponse,
    error_responses,
)
from patient_ml.api.views import OMITTED_DOC, View, extended, readable
from patient_ml.naming import dag_id_of

router = APIRouter(dependencies=[Depends(refuse_nul_characters)])


@router.post(
    "/models",
    summary="Create a model config",
    response_model=CreateModelResponse,
    response_model_exclude_unset=True,
    responses=error_responses(409, 422),
)
def create_model(body: ModelConfigBody, session: Session, user: CurrentUser) -> dict[str, Any]:
    from patient_ml.services.models import create_model, model_to_wire

    require_dag(user, "PUT", None)
    return {"model": model_to_wire(create_model(session, body, actor=user_name(user)))}


@router.get(
    "/models",
    summary="List the model configs you may read",
    response_model=GetModelsResponse,
    response_model_exclude_unset=True,
    responses={
        200: {"description": "The models, in the view asked for.", "headers": OMITTED_DOC},
        **error_responses(422),
    },
)
def list_models(
    session: Session, user: CurrentUser, response: Response, view: View = "reference"
) -> dict[str, Any]:
    from patient_ml.services.models import list_models, model_to_wire

    models = list_models(session)
    if not may(user, "GET", None):
        allowed = readable_dag_ids(user)
        models = [m for m in models if dag_id_of(m.slug) in allowed]
    wire = [model_to_wire(m) for m in models]
    return {"models": wire if extended(view) else readable("ModelConfig", wire, response, "model")}


@router.get(
    "/models/{model_id}",
    summary="Get a model config",
    response_model=GetModelResponse,
    response_model_exclude_unset=True,
    responses=error_responses(404, 422),
)
def get_model(model_id: str, session: Session, user: CurrentUser) -> dict[str, Any]:
    from patient_ml.services.models import model_to_wire

    return {"model": model_to_wire(authorized_model(session, model_id, user))}


@router.put(
    "/models/{model_id}",
    summary="Replace a model config",
    response_model=UpdateModelResponse,
    response_model_exclude_unset=True,
    responses=error_responses(404, 409, 422),
)
def update_model(
    model_id: str, body: ModelConfigBody, session: Session, user: CurrentUser
) -> dict[str, Any]:
    from patient_ml.services.models import model_to_wire, update_model

    stored = model_to_wire(authorized_model(session, model_id, user, "PUT"))
    body = keep_unsent_extensions(body, stored, MODEL_EXTENSIONS)
    return {"model": model_to_wire(update_model(session, model_id, body, actor=user_name(user)))}


@router.delete(
    "/models/{model_id}",
    summary="Delete a model config nothing depends on",
    response_model=DeleteModelResponse,
    response_model_exclude_unset=True,
    responses=error_responses(404, 409, 422),
)
def delete_model(model_id: str, session: Session, user: CurrentUser) -> dict[str, Any]:
    from patient_ml.services.models import delete_model

    authorized_model(session, model_id, user, "DELETE")
    return {"id": delete_model(session, model_id, actor=user_name(user))}


@router.post(
    "/datasets",
    summary="Create a dataset config",
    response_model=CreateDatasetResponse,
    response_model_exclude_unset=True,
    responses=error_responses(409, 422),
)
def create_dataset(body: DatasetConfigBody, session: Session, user: CurrentUser) -> dict[str, Any]:
    from patient_ml.services.datasets import create_dataset, dataset_to_wire

    require_dag(user, "PUT", None)
    return {"dataset": dataset_to_wire(create_dataset(session, body, actor=user_name(user)))}


@router.get(
    "/datasets",
    summary="List dataset configs",
    response_model=GetDatasetsResponse,
    response_model_exclude_unset=True,
    responses={
        200: {"description": "The datasets, in the view asked for.", "headers": OMITTED_DOC},
        **error_responses(422),
    },
)
def list_datasets(
    session: Session, user: CurrentUser, response: Response, view: View = "reference"
) -> dict[str, Any]:
    from patient_ml.services.datasets import dataset_to_wire, list_datasets

    require_dag(user, "GET", None)
    wire = [dataset_to_wire(d) for d in list_datasets(session)]
    if extended(view):
        return {"datasets": wire}
    return {"datasets": readable("DatasetConfig", wire, response, "dataset")}


@router.get(
    "/datasets/{dataset_id}",
    summary="Get a dataset config",
    response_model=GetDatasetResponse,
    response_model_exclude_unset=True,
    responses=error_responses(404, 422),
)
def get_dataset(dataset_id: str, session: Session, user: CurrentUser) -> dict[str, Any]:
    from patient_ml.services.datasets import dataset_to_wire, get_dataset

    require_dag(user, "GET", None)
    return {"dataset": dataset_to_wire(get_dataset(session, dataset_id))}


@router.put(
    "/datasets/{dataset_id}",
    summary="Replace a dataset config",
    response_model=UpdateDatasetResponse,
    response_model_exclude_unset=True,
    responses=error_responses(404, 409, 422),
)
def update_dataset(
    dataset_id: str, body: DatasetConfigBody, session: Session, user: CurrentUser
) -> dict[str, Any]:
    from patient_ml.services.datasets import dataset_to_wire, get_dataset, update_dataset

    require_dag(user, "PUT", None)
    stored = dataset_to_wire(get_dataset(session, dataset_id))
    body = keep_unsent_extensions(body, stored, DATASET_EXTENSIONS)
    updated = update_dataset(session, dataset_id, body, actor=user_name(user))
    return {"dataset": dataset_to_wire(updated)}


@router.delete(
    "/datasets/{dataset_id}",
    summary="Delete a dataset config no model uses",
    response_model=DeleteDatasetResponse,
    response_model_exclude_unset=True,
    responses=error_responses(404, 409, 422),
)
def delete_dataset(dataset_id: str, session: Session, user: CurrentUser) -> dict[str, Any]:
    from patient_ml.services.datasets import delete_dataset

    require_dag(user, "DELETE", None)
    return {"id": delete_dataset(session, dataset_id, actor=user_name(user))}


# A client built for the reference API cannot send our extension fields, so a PUT that leaves
# one out keeps its stored value instead of resetting it (e.g. the approvers, the source).
# Send a field explicitly (its default, or null where allowed) to change it.
DATASET_EXTENSIONS = {"": ("curation", "source"), "problemDefinition": ("labelSystem",)}
MODEL_EXTENSIONS = {
    "": ("approvalPolicy", "monitoring"),
    "trainingApproach": ("parallelTrials", "seed", "schedule"),
}


def keep_unsent_extensions(
    body: dict[str, Any], stored: dict[str, Any], fields: dict[str, tuple[str, ...]]
) -> dict[str, Any]:
    """`body` with every extension field it leaves out taken from `stored` (both wire shape);
    `fields` maps a parent key ("" = top level) to its extension field names."""
    merged = dict(body)
    for parent, names in fields.items():
        have = stored.get(parent) if parent else stored
        into = merged.get(parent) if parent else merged
        if not isinstance(have, dict) or not isinstance(into, dict):
            continue
        if parent:
            into = merged[parent] = dict(into)
        for name in names:
            if name not in into and have.get(name) is not None:
                into[name] = have[name]
    return merged
