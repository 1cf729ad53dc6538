"""FhirClient under injected failures, against a real HTTP server that answers from a script."""

from __future__ import annotations

import base64
import json
import logging
import time
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest

from patient_ml.fhir.client import (
    BasicAuth,
    BearerAuth,
    ClientCredentialsAuth,
    ExportFile,
    FhirAuthError,
    FhirClient,
    FhirConfigError,
    FhirError,
    FhirTransactionError,
    make_auth,
    parse_retry_after,
)
from tests.fhir.scripted_server import Recorded, Reply, ScriptedServer, outcome, searchset

PATIENT = {"resourceType": "Patient", "id": "p1"}


def _client(server: ScriptedServer, **kwargs) -> FhirClient:
    settings = {"backoff_base": 0.01, "timeout": 5.0, **kwargs}
    return FhirClient(f"{server.url}/fhir", **settings)


def test_429_with_retry_after_waits_then_succeeds(scripted: ScriptedServer, caplog) -> None:
    scripted.on("/fhir/Patient/p1", Reply(429, headers={"Retry-After": "1"}), Reply(200, PATIENT))
    caplog.set_level(logging.WARNING, logger="patient_ml.fhir")

    assert _client(scripted).read("Patient", "p1") == PATIENT

    first, second = scripted.hits("/fhir/Patient/p1")
    assert second.at - first.at >= 0.95
    assert "answered HTTP 429; retry 1/5 in 1.0 s" in caplog.text
    assert "p1" not in caplog.text  # ids are masked in logs


def test_503_three_times_then_200(scripted: ScriptedServer) -> None:
    scripted.on("/fhir/Patient/p1", Reply(503), Reply(503), Reply(503), Reply(200, PATIENT))
    assert _client(scripted).read("Patient", "p1") == PATIENT
    assert len(scripted.hits("/fhir/Patient/p1")) == 4


def test_503_forever_fails_after_max_retries(scripted: ScriptedServer) -> None:
    scripted.on("/fhir/Patient/p1", Reply(503, outcome("database maintenance", "transient")))
    with pytest.raises(FhirError) as caught:
        _client(scripted, max_retries=3).read("Patient", "p1")
    message = str(caught.value)
    assert "GET /fhir/Patient/{id} with HTTP 503 Service Unavailable after 3 retries" in message
    assert "database maintenance" in message and "Fix:" in message
    assert caught.value.status == 503
    assert len(scripted.hits("/fhir/Patient/p1")) == 4


def test_400_fails_at_once_with_the_diagnostics_only(scripted: ScriptedServer) -> None:
    body = outcome("Unknown search parameter 'colour'")
    body["text"] = {"status": "generated", "div": "<div>SECRET NARRATIVE</div>"}
    scripted.on("/fhir/Observation", Reply(400, body))
    with pytest.raises(FhirError, match=r"Unknown search parameter 'colour'") as caught:
        list(_client(scripted).search("Observation", {"colour": "blue"}))
    assert caught.value.status == 400
    assert "SECRET NARRATIVE" not in str(caught.value)
    assert len(scripted.hits("/fhir/Observation")) == 1


def test_read_timeout_is_retried(scripted: ScriptedServer) -> None:
    scripted.on("/fhir/Patient/p1", Reply(200, PATIENT, delay=1.0), Reply(200, PATIENT))
    assert _client(scripted, timeout=0.3).read("Patient", "p1") == PATIENT
    assert len(scripted.hits("/fhir/Patient/p1")) == 2


def test_read_timeout_forever_fails_with_a_clear_error(scripted: ScriptedServer) -> None:
    scripted.on("/fhir/Patient/p1", Reply(200, PATIENT, delay=1.0))
    started = time.monotonic()
    with pytest.raises(FhirError, match=r"read timeout of 0.3 s \(3 attempts\)") as caught:
        _client(scripted, timeout=0.3, max_retries=2).read("Patient", "p1")
    assert time.monotonic() - started < 3
    assert "raise timeout" in str(caught.value)
    assert len(scripted.hits("/fhir/Patient/p1")) == 3


def test_connection_refused_is_retried_then_reported(scripted: ScriptedServer) -> None:
    url = scripted.url
    scripted.stop()
    client = FhirClient(f"{url}/fhir", max_retries=1, backoff_base=0.01)
    with pytest.raises(FhirError, match=r"Cannot reach the FHIR server .*Connection refused"):
        client.read("Patient", "p1")


def test_a_create_is_not_repeated_after_a_server_error(scripted: ScriptedServer) -> None:
    scripted.on("/fhir/Patient", Reply(500, outcome("boom")), Reply(201, PATIENT))
    with pytest.raises(FhirError, match=r"HTTP 500.*boom"):
        _client(scripted).create({"resourceType": "Patient"})
    assert len(scripted.hits("/fhir/Patient")) == 1  # may have been created: not repeated
    scripted.on("/fhir/Patient", Reply(503), Reply(201, PATIENT))
    assert _client(scripted).create({"resourceType": "Patient"}) == PATIENT  # 503: not acted on


def test_retry_after_is_capped_and_accepts_http_dates(scripted: ScriptedServer) -> None:
    scripted.on(
        "/fhir/Patient/p1", Reply(429, headers={"Retry-After": "3600"}), Reply(200, PATIENT)
    )
    started = time.monotonic()
    assert _client(scripted, retry_after_max=0.2).read("Patient", "p1") == PATIENT
    assert 0.15 < time.monotonic() - started < 2
    in_two_s = format_datetime(datetime.now(UTC) + timedelta(seconds=2), usegmt=True)
    assert 0.5 < parse_retry_after(in_two_s) <= 2
    assert parse_retry_after("7") == 7
    assert parse_retry_after("soon") is None


def test_paging_follows_relative_next_links(scripted: ScriptedServer) -> None:
    scripted.on(
        "/fhir/Patient",
        Reply(200, searchset([{"resourceType": "Patient", "id": "a"}], "Patient?page=2")),
        Reply(200, searchset([{"resourceType": "Patient", "id": "b"}], "/fhir/Patient?page=3")),
        Reply(200, searchset([{"resourceType": "Patient", "id": "c"}])),
    )
    found = list(_client(scripted, page_size=1).search("Patient", {"name": "x"}))
    assert [p["id"] for p in found] == ["a", "b", "c"]
    queries = [r.query for r in scripted.hits("/fhir/Patient")]
    assert queries == ["name=x&_count=1", "page=2", "page=3"]
    assert all(r.headers["prefer"] == "handling=strict" for r in scripted.hits("/fhir/Patient"))


def test_a_next_link_to_another_host_is_refused(scripted: ScriptedServer) -> None:
    evil = "http://attacker.example:8080/fhir/Patient?page=2"
    scripted.on("/fhir/Patient", Reply(200, searchset([PATIENT], evil)))
    found = []
    with pytest.raises(FhirError, match=r"Refusing .* http://attacker.example:8080: it leaves"):
        for resource in _client(scripted).search("Patient"):
            found.append(resource)
    assert found == [PATIENT]


def test_a_next_link_that_repeats_a_page_is_refused(scripted: ScriptedServer) -> None:
    scripted.on("/fhir/Patient", Reply(200, searchset([PATIENT], "Patient?_count=500")))
    with pytest.raises(FhirError, match=r"repeats a page"):
        list(_client(scripted).search("Patient"))


def test_search_skips_include_and_outcome_entries_unless_asked(scripted: ScriptedServer) -> None:
    bundle = {
        "resourceType": "Bundle",
        "type": "searchset",
        "entry": [
            {"resource": {"resourceType": "Observation", "id": "o1"}, "search": {"mode": "match"}},
            {"resource": {"resourceType": "Observation", "id": "o2"}},
            {"resource": {"resourceType": "Patient", "id": "p"}, "search": {"mode": "include"}},
            {"resource": outcome("slow query"), "search": {"mode": "outcome"}},
        ],
    }
    scripted.on("/fhir/Observation", Reply(200, bundle))
    client = _client(scripted)
    assert [r["id"] for r in client.search("Observation")] == ["o1", "o2"]
    both = client.search("Observation", modes=("match", "include"))
    assert [r["id"] for r in both] == ["o1", "o2", "p"]


def test_bearer_and_basic_headers_are_sent(scripted: ScriptedServer) -> None:
    scripted.on("/fhir/Patient/p1", Reply(200, PATIENT))
    _client(scripted).read("Patient", "p1")
    FhirClient(f"{scripted.url}/fhir", BearerAuth("tok-123")).read("Patient", "p1")
    FhirClient(f"{scripted.url}/fhir", BasicAuth("alice", "pa:ss")).read("Patient", "p1")
    none, bearer, basic = (
        r.headers.get("authorization") for r in scripted.hits("/fhir/Patient/p1")
    )
    assert none is None
    assert bearer == "Bearer tok-123"
    assert basic == "Basic " + base64.b64encode(b"alice:pa:ss").decode()


def _token_endpoint(tokens: list[str], expires_in: int = 3600):
    def reply(request: Recorded) -> Reply:
        tokens.append(f"token-{len(tokens) + 1}")
        return Reply(
            200, {"access_token": tokens[-1], "token_type": "bearer", "expires_in": expires_in}
        )

    return reply


def test_client_credentials_token_is_cached_and_refreshed_after_401(
    scripted: ScriptedServer,
) -> None:
    tokens: list[str] = []
    scripted.on("/oauth/token", _token_endpoint(tokens))
    auth = ClientCredentialsAuth(
        f"{scripted.url}/oauth/token", "ml-client", "s3cret", "system/*.rs"
    )
    client = _client(scripted, auth=auth)
    scripted.on("/fhir/Patient/p1", Reply(200, PATIENT))
    for _ in range(3):
        client.read("Patient", "p1")
    assert len(scripted.hits("/oauth/token")) == 1
    token_request = scripted.hits("/oauth/token")[0]
    assert token_request.body == b"grant_type=client_credentials&scope=system%2F%2A.rs"
    assert (
        token_request.headers["authorization"]
        == "Basic " + base64.b64encode(b"ml-client:s3cret").decode()
    )

    scripted.on(
        "/fhir/Patient/p1", Reply(401, outcome("token revoked", "login")), Reply(200, PATIENT)
    )
    assert client.read("Patient", "p1") == PATIENT
    assert len(scripted.hits("/oauth/token")) == 2
    sent = [r.headers["authorization"] for r in scripted.hits("/fhir/Patient/p1")]
    assert sent == ["Bearer token-1"] * 4 + ["Bearer token-2"]


def test_client_credentials_token_is_fetched_again_when_it_expires(
    scripted: ScriptedServer,
) -> None:
    tokens: list[str] = []
    scripted.on("/oauth/token", _token_endpoint(tokens, expires_in=0))
    scripted.on("/fhir/Patient/p1", Reply(200, PATIENT))
    auth = make_auth("client_credentials", token_url=f"{scripted.url}/oauth/token",
                     client_id="c", client_secret="s")  # fmt: skip
    client = _client(scripted, auth=auth)
    client.read("Patient", "p1")
    client.read("Patient", "p1")
    assert len(scripted.hits("/oauth/token")) == 2


def test_a_second_401_and_a_refused_token_are_auth_errors(scripted: ScriptedServer) -> None:
    tokens: list[str] = []
    scripted.on("/oauth/token", _token_endpoint(tokens))
    scripted.on("/fhir/Patient/p1", Reply(401, outcome("no", "login")))
    auth = ClientCredentialsAuth(f"{scripted.url}/oauth/token", "c", "s")
    with pytest.raises(FhirAuthError, match=r"HTTP 401") as caught:
        _client(scripted, auth=auth).read("Patient", "p1")
    assert "credentials" in caught.value.fix
    assert len(scripted.hits("/oauth/token")) == 2

    scripted.on("/oauth/token", Reply(401, {"error": "invalid_client", "error_description": "bad"}))
    with pytest.raises(FhirAuthError, match=r"refused client 'c'.*invalid_client: bad"):
        _client(scripted, auth=auth).read("Patient", "p1")


def test_transaction_response_with_failing_entries_lists_them(scripted: ScriptedServer) -> None:
    response = {
        "resourceType": "Bundle",
        "type": "transaction-response",
        "entry": [
            {"response": {"status": "201 Created"}},
            {"response": {"status": "404 Not Found", "outcome": outcome("Patient/x not found")}},
            {"response": {"status": "200 OK"}},
        ],
    }
    scripted.on("/fhir", Reply(200, response))
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [{}, {}, {}]}
    with pytest.raises(FhirTransactionError) as caught:
        _client(scripted).transaction(bundle)
    assert caught.value.failures == ["entry 1: 404 Not Found (Patient/x not found)"]
    with pytest.raises(FhirConfigError, match=r"type 'transaction'"):
        _client(scripted).transaction({"resourceType": "Bundle", "type": "batch"})


def test_bulk_export_polls_honouring_retry_after_then_streams_ndjson(
    scripted: ScriptedServer, caplog
) -> None:
    status_url = f"{scripted.url}/fhir/export-status/1"
    scripted.on("/fhir/$export", Reply(202, headers={"Content-Location": status_url}))
    manifest = {
        "transactionTime": "2024-01-01T00:00:00Z",
        "request": "x",
        "requiresAccessToken": True,
        "output": [{"type": "Observation", "url": "/files/obs.ndjson", "count": 3}],
        "error": [],
    }
    scripted.on(
        "/fhir/export-status/1",
        Reply(202, headers={"X-Progress": "50%", "Retry-After": "0.3"}),
        Reply(503, headers={"Retry-After": "0"}),
        Reply(200, manifest),
    )
    scripted.on("/files/obs.ndjson", Reply(200, b'{"a":1}\r\n\n{"b":2}\n  \n{broken', {}))
    caplog.set_level(logging.INFO, logger="patient_ml.fhir")
    client = _client(scripted, auth=BearerAuth("tok"))

    files = client.bulk_export(["Observation"], since="2024-01-01T00:00:00Z", poll_interval=5)

    assert files == [ExportFile("Observation", f"{scripted.url}/files/obs.ndjson", 3, True)]
    kickoff = scripted.hits("/fhir/$export")[0]
    assert kickoff.query == "_type=Observation&_since=2024-01-01T00%3A00%3A00Z"
    assert kickoff.headers["prefer"] == "respond-async"
    assert kickoff.headers["accept"] == "application/fhir+json"
    polls = scripted.hits("/fhir/export-status/1")
    assert len(polls) == 3 and 0.25 < polls[1].at - polls[0].at < 2
    assert "in progress: 50%" in caplog.text
    assert list(client.iter_export_ndjson(files[0])) == [b'{"a":1}', b'{"b":2}', b"{broken"]
    assert scripted.hits("/files/obs.ndjson")[0].headers["authorization"] == "Bearer tok"


def test_export_files_get_no_token_unless_required(scripted: ScriptedServer) -> None:
    scripted.on("/files/a.ndjson", Reply(200, b"{}\n"))
    client = _client(scripted, auth=BearerAuth("tok"))
    file = ExportFile("Patient", f"{scripted.url}/files/a.ndjson", 1, requires_access_token=False)
    assert list(client.iter_export_ndjson(file)) == [b"{}"]
    assert "authorization" not in scripted.hits("/files/a.ndjson")[0].headers


def test_bulk_export_failures_carry_the_outcome_text(scripted: ScriptedServer) -> None:
    scripted.on("/fhir/Patient/$export", Reply(400, outcome("_type 'Foo' is not supported")))
    with pytest.raises(FhirError, match=r"HTTP 400.*_type 'Foo' is not supported"):
        _client(scripted).bulk_export(["Patient"], level="patient")

    status_url = f"{scripted.url}/fhir/status/9"
    scripted.on("/fhir/$export", Reply(202, headers={"Content-Location": status_url}))
    scripted.on("/fhir/status/9", Reply(500, outcome("export job crashed", "exception")))
    with pytest.raises(FhirError, match=r"HTTP 500.*export job crashed"):
        _client(scripted).bulk_export(["Patient"])
    assert len(scripted.hits("/fhir/status/9")) == 1  # a failed export is not polled again

    with pytest.raises(FhirConfigError, match=r"Unknown bulk export level 'ward'"):
        _client(scripted).bulk_export(["Patient"], level="ward")


def test_bulk_export_timeout_cancels_the_job(scripted: ScriptedServer) -> None:
    status_url = f"{scripted.url}/fhir/status/7"
    scripted.on("/fhir/$export", Reply(202, headers={"Content-Location": status_url}))
    scripted.on("/fhir/status/7", Reply(202, headers={"Retry-After": "0.1"}))
    with pytest.raises(FhirError, match=r"did not finish within 0.3 s"):
        _client(scripted).bulk_export(["Patient"], timeout=0.3)
    assert [r.method for r in scripted.hits("/fhir/status/7")][-1] == "DELETE"


def test_binary_raw_content_and_references(scripted: ScriptedServer) -> None:
    scripted.on("/fhir/Binary/img1", Reply(200, b"\x89PNG...", {"Content-Type": "image/png"}))
    client = _client(scripted)
    assert client.read_binary("Binary/img1") == (b"\x89PNG...", "image/png")
    assert scripted.hits("/fhir/Binary/img1")[0].headers["accept"] == "*/*"
    with pytest.raises(FhirError, match=r"Refusing .*Binary reference"):
        client.read_binary("http://elsewhere.example/fhir/Binary/img1")
    with pytest.raises(FhirError, match=r"not of the form Binary/<id>"):
        client.read_binary("Patient/img1")


def test_bad_settings_are_refused_with_the_fix() -> None:
    with pytest.raises(FhirConfigError, match=r"not an http\(s\) URL"):
        FhirClient("fhir.example.org/fhir")
    with pytest.raises(FhirConfigError, match=r"page_size=0 is too small"):
        FhirClient("http://h/fhir", page_size=0)
    with pytest.raises(FhirConfigError, match=r"needs 'token_url'"):
        make_auth("client_credentials", client_id="a", client_secret="b")
    with pytest.raises(FhirConfigError, match=r"Unknown FHIR auth_type 'kerberos'"):
        make_auth("kerberos")
    assert "s3cret" not in repr(BasicAuth("u", "s3cret"))


def test_logs_carry_no_query_strings_or_ids(scripted: ScriptedServer, caplog) -> None:
    scripted.on("/fhir/Observation", Reply(503), Reply(200, searchset([])))
    scripted.on("/fhir/Patient/pat-secret-7", Reply(503), Reply(200, PATIENT))
    caplog.set_level(logging.DEBUG, logger="patient_ml.fhir")
    client = _client(scripted)
    list(client.search("Observation", {"subject": "Patient/pat-secret-7"}))
    client.read("Patient", "pat-secret-7")
    assert "pat-secret-7" not in caplog.text
    assert "GET /fhir/Observation answered HTTP 503" in caplog.text
    assert "GET /fhir/Patient/{id} answered HTTP 503" in caplog.text


def test_a_search_entry_with_a_duplicated_key_is_marked_for_quarantine(
    scripted: ScriptedServer,
) -> None:
    """A page's JSON is parsed once, last value winning; an entry whose resource held a key
    twice comes out marked, and curation quarantines it as duplicate_key (issue 33)."""
    from patient_ml.curation.quarantine import QuarantineError
    from patient_ml.curation.records import parse_resource
    from patient_ml.fhir.search import DuplicateKeyResource

    good = {"resourceType": "Observation", "id": "good", "status": "final"}
    bad = {"resourceType": "Observation", "id": "bad", "status": "final"}
    page = json.dumps(searchset([good, bad]), indent=1).encode()
    page = page.replace(b'"id": "bad"', b'"id": "bad", "status": "cancelled"')
    scripted.on("/fhir/Observation", Reply(200, page))

    found = list(_client(scripted).search("Observation"))

    assert [r["id"] for r in found] == ["good", "bad"]
    assert not isinstance(found[0], DuplicateKeyResource)
    assert isinstance(found[1], DuplicateKeyResource)
    assert parse_resource(found[0])["id"] == "good"
    with pytest.raises(QuarantineError) as caught:
        parse_resource(found[1])
    assert caught.value.reason == "duplicate_key" and "'status'" in caught.value.detail
