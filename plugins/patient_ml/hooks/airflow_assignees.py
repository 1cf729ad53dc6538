"""The approval's Required Action assigned to the approvers' FAB user ids, in the API server.

Airflow compares a HITL request's assigned users with the responder by id
(`BaseAuthManager.is_authorized_hitl_task`: `user.get_id() in assigned ids`). With the simple
auth manager the id is the user name, which `approvalPolicy.approvers` lists; with the FAB auth
manager it is the numeric row id of `ab_user`, which the task that registers the request cannot
look up (Airflow 3 keeps tasks out of its metadata database). So under FAB the task sends each
approver as `{"id": "patient-ml-user-name:<name>", "name": <name>}`
(`patient_ml.triggers.required_action.assignees`), and the API server, which serves the
Execution API that stores the request, puts the FAB id of that user name in its place just
before the row is inserted (an SQLAlchemy `before_insert` listener on Airflow's `HITLDetail`,
installed with the product's API app). A name FAB does not know keeps its marked id, which no
user has: the request then fails closed (nobody may answer it in Required Actions; the Patient
ML page and REST API still let a listed approver decide once the user exists).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from airflow.models.hitl import HITLDetail
    from sqlalchemy import Connection

log = logging.getLogger("patient_ml.hooks.airflow_assignees")

BY_NAME = "patient-ml-user-name:"
FAB_USER_TABLE = "ab_user"


def marked(name: str) -> dict[str, str]:
    """An assigned user to be resolved by name in the API server."""
    return {"id": f"{BY_NAME}{name}", "name": name}


def resolve(
    assignees: Sequence[dict[str, Any]], ids_by_name: dict[str, str]
) -> list[dict[str, Any]]:
    """`assignees` with every marked id replaced by the id of its name in `ids_by_name` (user
    names compared case-insensitively, as FAB signs in); unknown names keep their marked id."""
    lowered = {name.lower(): user_id for name, user_id in ids_by_name.items()}
    resolved = []
    for user in assignees:
        user_id = str(user.get("id", ""))
        if user_id.startswith(BY_NAME):
            found = lowered.get(user_id[len(BY_NAME) :].lower())
            if found is None:
                log.warning(
                    "no FAB user named %r: the Required Action stays assigned to nobody who "
                    "exists (create the user, or fix approvalPolicy.approvers)",
                    user_id[len(BY_NAME) :],
                )
            else:
                user = {**user, "id": found}
        resolved.append(dict(user))
    return resolved


def fab_ids_by_name(connection: Connection, names: Sequence[str]) -> dict[str, str]:
    """FAB's `ab_user` ids of these user names (case-insensitive), read on `connection`."""
    from sqlalchemy import column, func, select, table

    users = table(FAB_USER_TABLE, column("id"), column("username"))
    wanted = sorted({name.lower() for name in names})
    rows = connection.execute(
        select(users.c.id, users.c.username).where(func.lower(users.c.username).in_(wanted))
    )
    return {str(username): str(user_id) for user_id, username in rows}


def _before_insert(_mapper: object, connection: Connection, target: HITLDetail) -> None:
    assignees = list(target.assignees or [])
    names = [
        str(u["id"])[len(BY_NAME) :] for u in assignees if str(u.get("id", "")).startswith(BY_NAME)
    ]
    if not names:
        return
    try:
        ids = fab_ids_by_name(connection, names)
    except Exception as exc:  # no ab_user table (not FAB): leave the marks, fail closed
        log.warning("could not look up the approvers' user ids: %s", exc)
        return
    target.assignees = resolve(assignees, ids)


def install() -> bool:
    """Resolve marked assignees of every HITL request this process inserts (idempotent); False
    where Airflow's models cannot be imported (the product's API served without Airflow)."""
    try:
        from airflow.models.hitl import HITLDetail
        from sqlalchemy import event
    except Exception:
        return False
    if not event.contains(HITLDetail, "before_insert", _before_insert):
        event.listen(HITLDetail, "before_insert", _before_insert)
    return True
