"""Under FAB, the approval's Required Action is assigned to the approvers' `ab_user` ids (issue
31): the task sends the names marked, the API server's listener puts the ids in as Airflow
stores the request. The end-to-end proof on real Airflow with FAB: tests/e2e/test_fab_roles.py."""

from __future__ import annotations

from types import SimpleNamespace

from sqlalchemy import create_engine, text

from patient_ml.hooks import airflow_assignees
from patient_ml.hooks.airflow_assignees import BY_NAME, marked, resolve


def _fab_users() -> object:
    engine = create_engine("sqlite://")
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE ab_user (id INTEGER PRIMARY KEY, username TEXT)"))
        conn.execute(text("INSERT INTO ab_user VALUES (1, 'admin'), (4, 'Dr-Approver')"))
    return engine


def test_marked_names_get_their_ids_and_unknown_names_stay_marked() -> None:
    given = [marked("dr-approver"), marked("nobody"), {"id": "7", "name": "someone"}]
    assert resolve(given, {"Dr-Approver": "4"}) == [
        {"id": "4", "name": "dr-approver"},  # FAB compares user names case-insensitively
        {"id": f"{BY_NAME}nobody", "name": "nobody"},  # fails closed: no user has this id
        {"id": "7", "name": "someone"},  # not ours: untouched
    ]


def test_the_ids_are_read_from_fab_user_table() -> None:
    engine = _fab_users()
    with engine.connect() as conn:
        assert airflow_assignees.fab_ids_by_name(conn, ["dr-approver", "ghost"]) == {
            "Dr-Approver": "4"
        }


def test_the_listener_rewrites_the_row_before_insert() -> None:
    engine = _fab_users()
    target = SimpleNamespace(assignees=[marked("dr-approver"), marked("admin")])
    with engine.connect() as conn:
        airflow_assignees._before_insert(None, conn, target)
    assert target.assignees == [
        {"id": "4", "name": "dr-approver"},
        {"id": "1", "name": "admin"},
    ]
    unassigned = SimpleNamespace(assignees=None)  # nothing marked: no query, nothing changed
    airflow_assignees._before_insert(None, None, unassigned)
    assert unassigned.assignees is None


def test_without_fab_table_the_marks_stay() -> None:
    target = SimpleNamespace(assignees=[marked("dr-approver")])
    with create_engine("sqlite://").connect() as conn:
        airflow_assignees._before_insert(None, conn, target)
    assert target.assignees == [marked("dr-approver")]


def test_installed_once_on_airflow_hitl_detail() -> None:
    from airflow.models.hitl import HITLDetail
    from sqlalchemy import event

    assert airflow_assignees.install() and airflow_assignees.install()
    assert event.contains(HITLDetail, "before_insert", airflow_assignees._before_insert)
