"""Models and datasets: create, list, get, update, delete (reference shapes).

Bodies reach the services as raw dicts (documented with the config models' schemas in
`schemas`), so a bad config gets the product's field-level 422. Responses are declared with
`response_model_exclude_unset=True`: keys the service leaves out stay out (see `schemas`).

Both kinds get the same five routes from `add_config_routes`; what differs (who may read or
change a config, the body and response models) is its `ConfigRoutes`. The module does not use
postponed annotations: the routes' parameter types are the kind's, known only when the factory
runs, and FastAPI reads them from the functions it defines.
"""

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Response
from pydantic import BaseModel

from patient_ml.api.auth import (
    CurrentUser,
    Method,
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
from patient_ml.services.configs import ConfigRepository
from patient_ml.services.datasets import DATASETS
from patient_ml.services.models import MODELS

if TYPE_CHECKING:
    from patient_ml.db.models import Dataset, Model


@dataclass(frozen=True)
class ConfigRoutes:
    """What the five routes of one kind of config differ in.

    `authorized(session, ref, user, method)` is the stored config `ref` if `user` may `method`
    it (else 403; 404 when unknown); `readable(session, user)` the configs `user` may list."""

    repository: ConfigRepository[Any, Any]
    body: Any
    reference_kind: str
    operations: dict[str, tuple[str, type[BaseModel]]]
    """Summary and response model of "create", "list", "get", "update" and "delete"."""
    extensions: dict[str, tuple[str, ...]]
    authorized: Callable[[Any, str, Any, Method], Any]
    readable: Callable[[Any, Any], list[Any]]


MAX_CONFIGS = 1000  # the largest `limit` of a list, as for runs (routes_runs.MAX_RUNS)


def add_config_routes(router: APIRouter, kind: ConfigRoutes) -> None:
    """Add list/create/get/update/delete of `kind` to `router`, at `/<kind>s` and
    `/<kind>s/{<kind>_id}`, with the operation ids FastAPI derives from `create_<kind>`,
    `list_<kind>s`, `get_<kind>`, `update_<kind>` and `delete_<kind>`."""
    repository, noun = kind.repository, kind.repository.kind
    plural, one = f"{noun}s", f"/{noun}s/{{{noun}_id}}"
    body_type = kind.body
    ref_type = Annotated[str, Path(alias=f"{noun}_id", title=f"{noun.capitalize()} Id")]

    def wrapped(stored: object) -> dict[str, Any]:
        return {noun: repository.to_wire(stored)}

    def create(body: body_type, session: Session, user: CurrentUser) -> dict[str, Any]:  # type: ignore[valid-type]
        require_dag(user, "PUT", None)
        return wrapped(repository.create(session, body, actor=user_name(user)))

    def list_(
        session: Session,
        user: CurrentUser,
        response: Response,
        view: View = "reference",
        limit: Annotated[
            int | None,
            Query(ge=1, le=MAX_CONFIGS, description=f"Extension: at most this many {plural}."),
        ] = None,
        offset: Annotated[
            int, Query(ge=0, le=10_000_000, description=f"Extension: skip this many {plural}.")
        ] = 0,
    ) -> dict[str, Any]:
        found = kind.readable(session, user)
        page = found[offset : None if limit is None else offset + limit]
        wire = [repository.to_wire(stored) for stored in page]
        if extended(view):
            return {plural: wire}
        return {plural: readable(kind.reference_kind, wire, response, noun)}

    def get(ref: ref_type, session: Session, user: CurrentUser) -> dict[str, Any]:  # type: ignore[valid-type]
        return wrapped(kind.authorized(session, ref, user, "GET"))

    def update(
        ref: ref_type,  # type: ignore[valid-type]
        body: body_type,  # type: ignore[valid-type]
        session: Session,
        user: CurrentUser,
    ) -> dict[str, Any]:
        stored = repository.to_wire(kind.authorized(session, ref, user, "PUT"))
        body = keep_unsent_extensions(body, stored, kind.extensions)
        return wrapped(repository.update(session, ref, body, actor=user_name(user)))

    def delete(ref: ref_type, session: Session, user: CurrentUser) -> dict[str, Any]:  # type: ignore[valid-type]
        kind.authorized(session, ref, user, "DELETE")
        return {"id": repository.delete(session, ref, actor=user_name(user))}

    listed: dict[int | str, Any] = {
        200: {"description": f"The {plural}, in the view asked for.", "headers": OMITTED_DOC}
    }
    routes: list[tuple[str, str, Callable[..., Any], str, dict[int | str, Any]]] = [
        ("POST", f"/{plural}", create, "create", error_responses(409, 422)),
        ("GET", f"/{plural}", list_, "list", {**listed, **error_responses(422)}),
        ("GET", one, get, "get", error_responses(404, 422)),
        ("PUT", one, update, "update", error_responses(404, 409, 422)),
        ("DELETE", one, delete, "delete", error_responses(404, 409, 422)),
    ]
    for method, path, endpoint, operation, responses in routes:
        summary, response_model = kind.operations[operation]
        router.add_api_route(
            path,
            endpoint,
            methods=[method],
            name=f"{operation}_{plural if operation == 'list' else noun}",
            summary=summary,
            response_model=response_model,
            response_model_exclude_unset=True,
            responses=responses,
        )


def _authorized_dataset(session: Session, ref: str, user: CurrentUser, method: Method) -> "Dataset":
    require_dag(user, method, None)
    return DATASETS.get(session, ref)


def _readable_datasets(session: Session, user: CurrentUser) -> "list[Dataset]":
    require_dag(user, "GET", None)
    return DATASETS.list(session)


def _readable_models(session: Session, user: CurrentUser) -> "list[Model]":
    models = MODELS.list(session)
    if may(user, "GET", None):
        return models
    allowed = readable_dag_ids(user)
    return [m for m in models if dag_id_of(m.slug) in allowed]


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


router = APIRouter(dependencies=[Depends(refuse_nul_characters)])
add_config_routes(
    router,
    ConfigRoutes(
        repository=MODELS,
        body=ModelConfigBody,
        reference_kind="ModelConfig",
        operations={
            "create": ("Create a model config", CreateModelResponse),
            "list": ("List the model configs you may read", GetModelsResponse),
            "get": ("Get a model config", GetModelResponse),
            "update": ("Replace a model config", UpdateModelResponse),
            "delete": ("Delete a model config nothing depends on", DeleteModelResponse),
        },
        extensions=MODEL_EXTENSIONS,
        authorized=authorized_model,
        readable=_readable_models,
    ),
)
add_config_routes(
    router,
    ConfigRoutes(
        repository=DATASETS,
        body=DatasetConfigBody,
        reference_kind="DatasetConfig",
        operations={
            "create": ("Create a dataset config", CreateDatasetResponse),
            "list": ("List dataset configs", GetDatasetsResponse),
            "get": ("Get a dataset config", GetDatasetResponse),
            "update": ("Replace a dataset config", UpdateDatasetResponse),
            "delete": ("Delete a dataset config no model uses", DeleteDatasetResponse),
        },
        extensions=DATASET_EXTENSIONS,
        authorized=_authorized_dataset,
        readable=_readable_datasets,
    ),
)
