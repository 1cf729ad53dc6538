"""FhirClient auth against a real FHIR server that requires it (sekmet with basic, bearer and
SMART backend services: OAuth2 client credentials with a client secret)."""

from __future__ import annotations

from collections.abc import Iterator

import orjson
import pytest

from patient_ml.fhir.client import (
    BasicAuth,
    BearerAuth,
    ClientCredentialsAuth,
    FhirAuthError,
    FhirClient,
)
from tests.fhir import resources
from tests.fhir_server import FhirServer, running_fhir_server

SERVER_AUTH = {
    "types": ["basic", "bearer", "smart"],
    "users": {"alice": "wonder land"},
    "tokens": ["static-token-1"],
    "smart_clients": [
        {"client_id": "patient-ml", "client_secret": "s3cret", "scopes": "system/*.read"}
    ],
}


@pytest.fixture(scope="module")
def secured_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FhirServer]:
    data_dir = tmp_path_factory.mktemp("sekmet-secured")
    with running_fhir_server(data_dir, server_auth=SERVER_AUTH) as server:
        yield server


def _client_credentials(server: FhirServer, secret: str = "s3cret") -> ClientCredentialsAuth:
    return ClientCredentialsAuth(server.token_url, "patient-ml", secret, "system/*.read")


def test_without_credentials_the_server_refuses(secured_server: FhirServer) -> None:
    client = FhirClient(secured_server.base_url)
    with pytest.raises(FhirAuthError, match=r"HTTP 401.*Authentication required") as caught:
        list(client.search("Patient"))
    assert caught.value.status == 401
    assert "credentials" in (caught.value.fix or "")


@pytest.mark.parametrize("kind", ["basic", "bearer", "client_credentials"])
def test_each_auth_type_reads_and_searches(secured_server: FhirServer, kind: str) -> None:
    auth = {
        "basic": BasicAuth("alice", "wonder land"),
        "bearer": BearerAuth("static-token-1"),
        "client_credentials": _client_credentials(secured_server),
    }[kind]
    client = FhirClient(secured_server.base_url, auth)
    assert list(client.search("Patient", {"identifier": f"{resources.tag()}|"})) == []
    assert client.supports_bulk_export()


def test_wrong_client_secret_is_refused_by_the_token_endpoint(secured_server: FhirServer) -> None:
    client = FhirClient(secured_server.base_url, _client_credentials(secured_server, "wrong"))
    with pytest.raises(FhirAuthError, match=r"refused client 'patient-ml'.*invalid_client"):
        list(client.search("Patient"))


def test_scopes_are_enforced_with_a_clear_error(secured_server: FhirServer) -> None:
    client = FhirClient(secured_server.base_url, _client_credentials(secured_server))
    with pytest.raises(FhirAuthError, match=r"HTTP 403.*do not permit") as caught:
        client.create(resources.patient(resources.tag(), "x"))
    assert "scopes" in (caught.value.fix or "")


def test_bulk_export_with_an_access_token(secured_server: FhirServer) -> None:
    writer = FhirClient(secured_server.base_url, BasicAuth("alice", "wonder land"))
    system = resources.tag()
    writer.transaction(resources.image_cohort(system, 2))

    reader = FhirClient(secured_server.base_url, _client_credentials(secured_server))
    files = reader.bulk_export(["DocumentReference"], poll_interval=0.2)
    assert [f.requires_access_token for f in files] == [True]
    docs = [orjson.loads(line) for line in reader.iter_export_ndjson(files[0])]
    assert len([d for d in docs if d["identifier"][0]["system"] == system]) == 2
