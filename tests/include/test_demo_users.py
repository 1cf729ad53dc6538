"""The demo's users (issue 31): one per Patient ML role, the same under `make demo` and the
Docker Compose stack, the demo model's approver among them, and a previous demo's labels made in
the browser never silently deleted."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from include import demo
from include.airflow_stack import USERS, AirflowStack
from include.demo_users import APPROVER, DEMO_USERS, sign_in_lines, simple_auth_manager_users
from patient_ml.labels.sinks import LABELS_FILE

ROOT = Path(__file__).resolve().parents[2]
MAY_DECIDE = {"user", "op", "admin"}  # the simple auth manager's roles with the HITL edit right


def test_one_user_per_role_and_the_demo_models_approvers_exist(tmp_path: Path) -> None:
    assert {u.role for u in DEMO_USERS} == {"admin", "op", "user", "viewer"}
    assert [u.name for u in DEMO_USERS] == list(USERS)
    env = AirflowStack(tmp_path / "airflow").env
    assert env["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS"] == simple_auth_manager_users()
    compose = yaml.safe_load((ROOT / "docker-compose.yaml").read_text())
    common = compose["x-airflow-common"]["environment"]
    # the default of `.env`'s AIRFLOW_USERS (users per role come from configuration)
    users = f"${{AIRFLOW_USERS:-{simple_auth_manager_users()}}}"
    assert common["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS"] == users
    model = yaml.safe_load((ROOT / "include" / "configs" / "brain_mri_model.yaml").read_text())
    approvers = model["approvalPolicy"]["approvers"]
    assert approvers == [APPROVER]
    for name in approvers:
        assert USERS.get(name) in MAY_DECIDE, f"{name} must be a demo user that may decide"


def test_sign_in_lines_name_every_user_its_role_and_password(tmp_path: Path) -> None:
    passwords = tmp_path / "passwords.json"
    passwords.write_text(json.dumps({u.name: f"pw-{u.name}" for u in DEMO_USERS}))
    lines = sign_in_lines("http://127.0.0.1:8080", passwords)
    assert str(passwords) in lines[0] and "docs/roles.md" in lines[-1]
    for user in DEMO_USERS:
        [line] = [x for x in lines if x.split()[0] == user.name]
        assert f"pw-{user.name}" in line and f"role {user.role}" in line
    missing = sign_in_lines("http://x", tmp_path / "none.json")
    assert all("(not generated yet)" in x for x in missing[1:-1])
    # the compose stack's init logs say how to read them, never a password (issue 34)
    logged = "\n".join(sign_in_lines("http://x", passwords, read_with="cat passwords.json"))
    assert "`cat passwords.json`" in logged and "pw-" not in logged
    assert all(f"role {u.role}" in logged for u in DEMO_USERS)


def _previous_demo(home: Path, labels: int) -> None:
    folder = home / "sample" / "br35h"
    folder.mkdir(parents=True)
    (folder / "1.DocumentReference.ndjson").write_text("{}\n")
    if labels:
        (folder / LABELS_FILE).write_text('{"resourceType": "Observation"}\n' * labels)


def test_a_previous_demo_with_browser_labels_is_kept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    home = tmp_path / "demo"
    monkeypatch.setattr(demo, "HOME", home)
    _previous_demo(home, labels=3)
    demo.set_aside_previous(fresh=False)
    assert not home.exists()
    [kept] = tmp_path.glob("demo-previous-*")
    assert (kept / "sample" / "br35h" / LABELS_FILE).read_text().count("\n") == 3
    out = capsys.readouterr().out
    assert "WARNING" in out and "3 label(s) made in the browser" in out and str(kept) in out
    assert "--fresh" in out
    # without labels made in the browser there is nothing to keep
    _previous_demo(home, labels=0)
    demo.set_aside_previous(fresh=False)
    assert not home.exists() and len(list(tmp_path.glob("demo-previous-*"))) == 1
    # --fresh deletes, saying what is lost
    _previous_demo(home, labels=2)
    demo.set_aside_previous(fresh=True)
    assert not home.exists() and len(list(tmp_path.glob("demo-previous-*"))) == 1
    assert "with its 2 label(s) made in the browser" in capsys.readouterr().out
