"""OAuth2 client credentials through authlib, and the token endpoint behind the same retrying
adapter, against the scripted HTTP server."""

from __future__ import annotations

from urllib.parse import parse_qsl

import pytest

from patient_ml.fhir import ClientCredentialsAuth, FhirAuthError, FhirClient, FhirError
from tests.fhir.scripted_server import Reply, ScriptedServer, outcome

PATIENT = {"resourceType": "Patient", "id": "p1"}
TOKEN = {"access_token": "tok-1", "token_type": "bearer", "expires_in": 3600}


def _client(server: ScriptedServer, auth: ClientCredentialsAuth, **kwargs) -> FhirClient:
    return FhirClient(f"{server.url}/fhir", auth, backoff_base=0.01, timeout=5.0, **kwargs)


def test_secret_in_body_and_a_503_from_the_token_endpoint_is_retried(
    scripted: ScriptedServer,
) -> None:
    scripted.on("/oauth/token", Reply(503), Reply(200, TOKEN))
    scripted.on("/fhir/Patient/p1", Reply(200, PATIENT))
    auth = ClientCredentialsAuth(f"{scripted.url}/oauth/token", "c", "s", secret_in_body=True)
    client = _client(scripted, auth)

    assert client.read("Patient", "p1") == PATIENT
    assert client.access_token() == "tok-1"

    failed, second = scripted.hits("/oauth/token")
    assert failed.body == second.body  # the same form, sent again
    assert "authorization" not in second.headers
    assert dict(parse_qsl(second.body.decode())) == {
        "grant_type": "client_credentials",
        "client_id": "c",
        "client_secret": "s",
    }
    assert scripted.hits("/fhir/Patient/p1")[0].headers["authorization"] == "Bearer tok-1"


def test_token_endpoint_failures_are_clear(scripted: ScriptedServer) -> None:
    auth = ClientCredentialsAuth(f"{scripted.url}/oauth/token", "c", "s")
    scripted.on("/oauth/token", Reply(500, outcome("token store down")))
    with pytest.raises(FhirError, match=r"HTTP 500.*after 1 retry.*token store down") as caught:
        _client(scripted, auth, max_retries=1).read("Patient", "p1")
    assert not isinstance(caught.value, FhirAuthError)

    scripted.on("/oauth/token", Reply(200, {"token_type": "bearer"}))
    with pytest.raises(FhirAuthError, match=r"answered without an access_token"):
        _client(scripted, auth).read("Patient", "p1")

    scripted.on("/oauth/token", Reply(403, "forbidden"))
    with pytest.raises(FhirAuthError, match=r"refused client 'c'.*HTTP 403") as refused:
        _client(scripted, auth).read("Patient", "p1")
    assert refused.value.status == 403
