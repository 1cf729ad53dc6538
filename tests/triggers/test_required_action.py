"""Who the approval's Required Action is offered to (issue 31): the model's approvers as HITL
assigned users, so Airflow itself refuses anyone else, when the auth manager's user ids are the
user names; and the body says who may decide before anything else."""

from __future__ import annotations

import pytest

from patient_ml.triggers import required_action

SIMPLE = "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager"
FAB = "airflow.providers.fab.auth_manager.fab_auth_manager.FabAuthManager"


def test_approvers_are_assigned_by_name_under_the_simple_auth_manager() -> None:
    assert required_action.assignees(["dr-approver", "dr-b"], SIMPLE) == [
        {"id": "dr-approver", "name": "dr-approver"},
        {"id": "dr-b", "name": "dr-b"},
    ]
    assert required_action.assignees([], SIMPLE) is None  # anyone with the decision right


def test_under_fab_the_approvers_are_marked_for_the_api_server_to_resolve() -> None:
    """FAB's ids are `ab_user` row numbers the task cannot read: it sends the names marked, and
    the API server puts the ids in as it stores the request (tests/hooks/test_airflow_assignees)."""
    assert required_action.assignees(["dr-approver"], FAB) == [
        {"id": "patient-ml-user-name:dr-approver", "name": "dr-approver"}
    ]
    assert required_action.assignees([], FAB) is None


def test_no_assignment_under_another_auth_manager() -> None:
    """Keycloak's ids are UUIDs nobody here can look up: the request stays unassigned."""
    keycloak = "airflow.providers.keycloak.auth_manager.keycloak_auth_manager.KeycloakAuthManager"
    assert required_action.assignees(["dr-approver"], keycloak) is None


def test_the_configured_auth_manager_decides(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIRFLOW__CORE__AUTH_MANAGER", FAB)
    assert required_action.ids_are_names() is False
    monkeypatch.setenv("AIRFLOW__CORE__AUTH_MANAGER", SIMPLE)
    assert required_action.ids_are_names() is True


def test_the_body_starts_with_who_may_decide() -> None:
    run = {"id": "r1", "snapshotId": "s1", "metrics": {"challenger": [], "champion": []}}
    body = required_action.body_of(run, "m", ["dr-approver"], "2026-12-07 10:00")
    first = body.splitlines()[0]
    assert first.startswith("**Who may decide:** dr-approver (the model's approvers).")
    assert "Anyone else is refused" in first
    anyone = required_action.body_of(run, "m", [], "2026-12-07 10:00").splitlines()[0]
    assert "any user with the right to respond" in anyone
