"""The FHIR hook builds the right FhirClient from an Airflow connection and tests it."""

from __future__ import annotations

import json
import socket
from typing import Any

import pytest

from patient_ml.fhir.client import (
    BasicAuth,
    BearerAuth,
    ClientCredentialsAuth,
    FhirClient,
    FhirConfigError,
    NoAuth,
)
from patient_ml.hooks.fhir import FhirHook
from tests.fhir_server import FhirServer


def _hook(monkeypatch: pytest.MonkeyPatch, **fields: Any) -> FhirHook:
    monkeypatch.setenv("AIRFLOW_CONN_FHIR_TEST", json.dumps({"conn_type": "fhir", **fields}))
    return FhirHook("fhir_test")


def test_no_auth_and_client_settings_from_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    extra = {"timeout": [5, 60], "max_retries": "2", "page_size": 100, "verify": "false"}
    client = _hook(monkeypatch, host="http://127.0.0.1:8080/fhir/", extra=extra).get_client()
    assert client.base_url == "http://127.0.0.1:8080/fhir"
    assert client.auth == NoAuth()
    assert (client.timeout, client.max_retries, client.page_size) == ((5.0, 60.0), 2, 100)
    assert client.session.verify is False


def test_bearer_token_from_the_extra_or_the_password(monkeypatch: pytest.MonkeyPatch) -> None:
    hook = _hook(monkeypatch, host="https://fhir.example.org/r4", extra={"token": "t-1"})
    assert hook.get_client().auth == BearerAuth("t-1")
    hook = _hook(monkeypatch, host="https://fhir.example.org/r4", password="t-2",
                 extra={"auth_type": "bearer", "verify": "/etc/ssl/ca.pem"})  # fmt: skip
    client = hook.get_client()
    assert client.auth == BearerAuth("t-2")
    assert client.session.verify == "/etc/ssl/ca.pem"


def test_basic_auth_from_login_and_password(monkeypatch: pytest.MonkeyPatch) -> None:
    hook = _hook(monkeypatch, host="fhir.example.org/fhir", schema="http", port=8443,
                 login="alice", password="pw")  # fmt: skip
    client = hook.get_client()
    assert client.base_url == "http://fhir.example.org:8443/fhir"
    assert client.auth == BasicAuth("alice", "pw")
    assert hook.get_client() is client  # cached


def test_client_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    extra = {
        "auth_type": "client_credentials",
        "token_url": "https://auth.example.org/token",
        "scope": "system/*.read",
    }
    hook = _hook(monkeypatch, host="https://fhir.example.org/fhir", login="ml-client",
                 password="s3cret", extra=extra)  # fmt: skip
    assert hook.get_client().auth == ClientCredentialsAuth(
        "https://auth.example.org/token", "ml-client", "s3cret", "system/*.read"
    )


def test_uri_style_connection_puts_the_path_in_schema(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_FHIR_URI", "fhir://fhir.example.org:8080/baseR4")
    assert FhirHook("fhir_uri").get_client().base_url == "https://fhir.example.org:8080/baseR4"


def test_bad_connections_are_refused_with_the_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(FhirConfigError, match=r"'fhir_test' has no host.*Fix: set host"):
        _hook(monkeypatch).get_client()
    hook = _hook(monkeypatch, host="https://h/fhir", extra={"auth_type": "kerberos"})
    with pytest.raises(FhirConfigError, match=r"unknown auth_type 'kerberos'"):
        hook.get_client()
    hook = _hook(monkeypatch, host="https://h/fhir", extra={"auth_type": "basic"})
    with pytest.raises(FhirConfigError, match=r"needs 'username'"):
        hook.get_client()
    with pytest.raises(FhirConfigError, match=r"extra.timeout='soon', which is not a number"):
        _hook(monkeypatch, host="https://h/fhir", extra={"timeout": "soon"}).get_client()


def test_ui_field_behaviour_has_placeholders() -> None:
    behaviour = FhirHook.get_ui_field_behaviour()
    assert behaviour["placeholders"]["host"].startswith("https://")
    assert "auth_type" in behaviour["placeholders"]["extra"]


def test_test_connection_against_a_real_fhir_server(
    monkeypatch: pytest.MonkeyPatch,
    fhir_server: FhirServer,
) -> None:
    ok, message = _hook(monkeypatch, host=fhir_server.base_url).test_connection()
    assert ok, message
    assert "FHIR 4.0.1" in message and "offers bulk $export" in message
    assert isinstance(FhirHook("fhir_test").get_client(), FhirClient)


def test_test_connection_reports_an_unreachable_server(monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    hook = _hook(monkeypatch, host=f"http://127.0.0.1:{port}/fhir", extra={"max_retries": 0})
    ok, message = hook.test_connection()
    assert not ok
    assert "Cannot reach the FHIR server at http://127.0.0.1" in message
