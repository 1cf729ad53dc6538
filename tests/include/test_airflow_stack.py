"""The Airflow launcher's generated settings (no Airflow process is started here)."""

from __future__ import annotations

import warnings
from pathlib import Path

import jwt

from include.airflow_stack import JWT_SECRET_BYTES, AirflowStack


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
