"""Who calls and what they may do, decided by Airflow's auth manager.

The caller is the Airflow user of the request's Bearer JWT or of the UI's session cookie
(`airflow.api_fastapi.core_api.security.get_user`). A model is guarded as its DAG
(`patient_ml__<slug>`): reading it needs read access to that DAG, changing or deleting it needs
edit access, starting a run needs the right to create DAG runs. Datasets and new models are
guarded as DAGs in general. Approvers are checked by the decision service on top.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import Depends

from patient_ml.exceptions import PermissionDeniedError

Method = Literal["GET", "POST", "PUT", "DELETE"]


def _get_user_dependency() -> Any:
    from airflow.api_fastapi.core_api.security import get_user

    return get_user


CurrentUser = Annotated[Any, Depends(_get_user_dependency())]


def user_name(user: Any) -> str:
    return str(user.get_name())


def _auth_manager() -> Any:
    from airflow.api_fastapi.app import get_auth_manager

    return get_auth_manager()


def may(user: Any, method: Method, dag_id: str | None, *, run: bool = False) -> bool:
    """Whether `user` may `method` the DAG `dag_id` (None: DAGs in general), or its runs."""
    from airflow.api_fastapi.auth.managers.models.resource_details import (
        DagAccessEntity,
        DagDetails,
    )

    return bool(
        _auth_manager().is_authorized_dag(
            method=method,
            access_entity=DagAccessEntity.RUN if run else None,
            details=DagDetails(id=dag_id),
            user=user,
        )
    )


def require_dag(user: Any, method: Method, dag_id: str | None, *, run: bool = False) -> None:
    """Refuse (403) unless `user` may `method` the DAG `dag_id` (None: DAGs in general)."""
    if not may(user, method, dag_id, run=run):
        what = {"GET": "read", "POST": "create", "PUT": "edit", "DELETE": "delete"}[method]
        target = f"the DAG {dag_id}" if dag_id else "Airflow DAGs"
        raise PermissionDeniedError(
            f"User {user_name(user)!r} may not {what} {'runs of ' if run else ''}{target}.",
            fix="ask an Airflow admin for the role that grants it",
        )


def authorized_model(
    session: Any, model_ref: str, user: Any, method: Method = "GET", *, run: bool = False
) -> Any:
    """The model `model_ref` (404 when unknown) if `user` may `method` its DAG (else 403)."""
    from patient_ml.naming import dag_id_of
    from patient_ml.services.models import get_model

    model = get_model(session, model_ref)
    require_dag(user, method, dag_id_of(model.slug), run=run)
    return model


def readable_dag_ids(user: Any) -> set[str]:
    return set(_auth_manager().get_authorized_dag_ids(user=user, method="GET"))
