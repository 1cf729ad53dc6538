"""Who calls and what they may do, decided by Airflow's auth manager.

The caller is the Airflow user of the request's Bearer JWT or of the UI's session cookie
(`airflow.api_fastapi.core_api.security.get_user`). A model is guarded as its DAG
(`patient_ml__<slug>`): reading it needs read access to that DAG, changing or deleting it needs
edit access, starting a run needs the right to create DAG runs. Datasets and new models are
guarded as DAGs in general.

Deciding on a run (approve/reject) needs the *decision right*: the right to respond to the
DAG's human-in-the-loop requests (`is_authorized_dag(method="PUT",
access_entity=DagAccessEntity.HITL_DETAIL)`), the very right Airflow's own Required Actions page
and `PATCH .../hitlDetails` ask. With the simple auth manager that is the `user` role or above
(a `viewer` may not decide); with FAB, edit on the DAG and on "HITL Detail". So a decision needs
the same right whichever channel it comes through. The model's `approvalPolicy.approvers` (when
not empty) are checked by the decision service on top.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Annotated, Any, Literal

from airflow.api_fastapi.auth.managers.models.base_user import BaseUser
from fastapi import Depends

from patient_ml.exceptions import PermissionDeniedError

if TYPE_CHECKING:
    from airflow.api_fastapi.auth.managers.base_auth_manager import BaseAuthManager
    from sqlalchemy.orm import Session

    from patient_ml.db.models import Model

Method = Literal["GET", "POST", "PUT", "DELETE"]
DECISION_RIGHT = (
    "the right to respond to the DAG's required actions (the simple auth manager's 'user' role "
    "or above; with FAB, can_edit on the DAG and on HITL Detail)"
)


def _get_user_dependency() -> Callable[..., Coroutine[Any, Any, BaseUser]]:
    from airflow.api_fastapi.core_api.security import get_user

    return get_user


CurrentUser = Annotated[BaseUser, Depends(_get_user_dependency())]


def user_name(user: BaseUser) -> str:
    return str(user.get_name())


def _auth_manager() -> BaseAuthManager[BaseUser]:
    from airflow.api_fastapi.app import get_auth_manager

    return get_auth_manager()


def may(user: BaseUser, method: Method, dag_id: str | None, *, run: bool = False) -> bool:
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


def require_dag(user: BaseUser, method: Method, dag_id: str | None, *, run: bool = False) -> None:
    """Refuse (403) unless `user` may `method` the DAG `dag_id` (None: DAGs in general)."""
    if not may(user, method, dag_id, run=run):
        what = {"GET": "read", "POST": "create", "PUT": "edit", "DELETE": "delete"}[method]
        target = f"the DAG {dag_id}" if dag_id else "Airflow DAGs"
        raise PermissionDeniedError(
            f"User {user_name(user)!r} may not {what} {'runs of ' if run else ''}{target}.",
            fix="ask an Airflow admin for the role that grants it",
        )


def may_decide(user: BaseUser, dag_id: str) -> bool:
    """Whether `user` holds the decision right on the DAG `dag_id` (see the module docstring)."""
    from airflow.api_fastapi.auth.managers.models.resource_details import (
        DagAccessEntity,
        DagDetails,
    )

    return bool(
        _auth_manager().is_authorized_dag(
            method="PUT",
            access_entity=DagAccessEntity.HITL_DETAIL,
            details=DagDetails(id=dag_id),
            user=user,
        )
    )


def require_decision_right(user: BaseUser, model_name: str, dag_id: str) -> None:
    """Refuse (403, saying which right is missing) unless `user` may decide on the DAG's runs."""
    if not may_decide(user, dag_id):
        raise PermissionDeniedError(
            f"User {user_name(user)!r} may not approve or reject runs of model {model_name!r}: "
            f"deciding needs the right to respond to the required actions of the DAG {dag_id} "
            "(Airflow's edit right on its human-in-the-loop details), and read access is not "
            "enough.",
            fix="ask an Airflow admin for a role that may edit the DAG (the simple auth "
            "manager's 'user' role or above; with FAB, can_edit on the DAG and on HITL Detail)",
        )


def authorized_model(
    session: Session, model_ref: str, user: BaseUser, method: Method = "GET", *, run: bool = False
) -> Model:
    """The model `model_ref` (404 when unknown) if `user` may `method` its DAG (else 403)."""
    from patient_ml.naming import dag_id_of
    from patient_ml.services.models import get_model

    model = get_model(session, model_ref)
    require_dag(user, method, dag_id_of(model.slug), run=run)
    return model


def readable_dag_ids(user: BaseUser) -> set[str]:
    return set(_auth_manager().get_authorized_dag_ids(user=user, method="GET"))
