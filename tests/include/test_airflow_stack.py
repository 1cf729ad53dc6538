"""The Airflow launcher's generated settings (no Airflow process is started here)."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import jwt
import pytest

from include.airflow_stack import JWT_SECRET_BYTES, AirflowStack, openlineage_file_transport


def test_the_jwt_secret_is_long_enough_for_hs512_without_a_pyjwt_warning(tmp_path: Path) -> None:
    old = tmp_path / "airflow" / ".jwt_secret"
    old.parent.mkdir()
    old.write_text("short-secret-of-an-older-demo")  # replaced: too short for HS512
    stack = AirflowStack(tmp_path / "airflow")
    secret = stack.env["AIRFLOW__API_AUTH__JWT_SECRET"]
    assert len(secret.encode()) >= JWT_SECRET_BYTES and secret == old.read_text().strip()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # InsecureKeyLengthWarning would raise
        token = jwt.encode({"sub": "admin"}, secret, algorithm="HS512")
    assert jwt.decode(token, secret, algorithms=["HS512"]) == {"sub": "admin"}
    assert AirflowStack(tmp_path / "airflow").env["AIRFLOW__API_AUTH__JWT_SECRET"] == secret


def test_the_openlineage_transport_writes_one_file_under_the_root(tmp_path: Path) -> None:
    pytest.importorskip("airflow.providers.openlineage", reason="the OpenLineage provider")

    env: dict[str, str] = {}
    events = openlineage_file_transport(tmp_path, env, "patient-ml-demo")
    assert events == tmp_path / "openlineage" / "events.jsonl"
    assert events.parent.is_dir()
    transport = json.loads(env["AIRFLOW__OPENLINEAGE__TRANSPORT"])
    assert transport == {"type": "file", "log_file_path": str(events), "append": True}
    assert env["AIRFLOW__OPENLINEAGE__NAMESPACE"] == "patient-ml-demo"
    # a second stack on the same root (a rerun of the demo) appends to the same file
    assert openlineage_file_transport(tmp_path, {}, "patient-ml-demo") == events


def test_the_fab_variant_runs_the_fab_auth_manager_with_the_demo_users_roles(
    tmp_path: Path,
) -> None:
    from include.airflow_stack import FAB_AUTH_MANAGER
    from include.demo_users import DEMO_USERS, FAB_ROLES

    simple = AirflowStack(tmp_path / "simple").env
    assert simple.get("AIRFLOW__CORE__AUTH_MANAGER") != FAB_AUTH_MANAGER
    stack = AirflowStack(tmp_path / "fab", auth_manager="fab")
    assert stack.env["AIRFLOW__CORE__AUTH_MANAGER"] == FAB_AUTH_MANAGER
    assert {FAB_ROLES[u.role] for u in DEMO_USERS} == {"Admin", "Op", "User", "Viewer"}
    with pytest.raises(ValueError, match="auth_manager"):
        AirflowStack(tmp_path / "other", auth_manager="keycloak")
