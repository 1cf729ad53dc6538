"""FhirClient against a real FHIR R4 server (sekmet): load, search, page, write, export."""

from __future__ import annotations

import base64
import uuid

import orjson
import pytest

from patient_ml.fhir.client import (
    FhirClient,
    FhirConflictError,
    FhirError,
    FhirNotFoundError,
    FhirTransactionError,
)
from tests.fhir import resources
from tests.fhir_server import FhirServer

PNG_1PX = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAAAAAA6fptVAAAACklEQVR4nGNgAAAAAgABSK+kcQAAAABJRU5ErkJggg=="
)


@pytest.fixture
def client(fhir_server: FhirServer) -> FhirClient:
    return FhirClient(fhir_server.base_url, page_size=10, backoff_base=0.05)


def _ids(resources_: list[dict]) -> list[str]:
    return [r["id"] for r in resources_]


def test_transaction_loads_patients_images_and_labels(client: FhirClient) -> None:
    system = resources.tag()
    response = client.transaction(resources.image_cohort(system, 3))

    assert response["type"] == "transaction-response"
    assert [e["response"]["status"][:3] for e in response["entry"]] == ["201"] * 9
    docs = list(client.search("DocumentReference", {"identifier": f"{system}|"}))
    observations = list(client.search("Observation", {"identifier": f"{system}|"}))
    patients = list(client.search("Patient", {"identifier": f"{system}|"}))
    assert (len(patients), len(docs), len(observations)) == (3, 3, 3)
    patient_refs = {f"Patient/{p['id']}" for p in patients}
    assert {d["subject"]["reference"] for d in docs} == patient_refs  # urn:uuid rewritten
    doc_refs = {f"DocumentReference/{d['id']}" for d in docs}
    assert {o["focus"][0]["reference"] for o in observations} == doc_refs
    assert docs[0]["content"][0]["attachment"]["url"].startswith("file:///data/images/")


def test_failed_transaction_names_the_entry(client: FhirClient) -> None:
    system = resources.tag()
    bad_label = {**resources.label_observation(system, "o", "urn:uuid:1"), "issued": "not-a-date"}
    bundle = resources.transaction(
        {"urn:uuid:1": resources.patient(system, "x"), "urn:uuid:2": bad_label}
    )
    with pytest.raises(FhirError, match=r"HTTP 400.*rolled back.*Observation.issued") as caught:
        client.transaction(bundle)
    assert not isinstance(caught.value, FhirTransactionError)  # the server refused it whole
    assert caught.value.status == 400
    assert list(client.search("Patient", {"identifier": f"{system}|"})) == []  # rolled back


def test_search_follows_every_page_and_yields_each_resource_once(client: FhirClient) -> None:
    system = resources.tag()
    subject = client.create(resources.patient(system, "pager"))
    entries = {
        f"urn:uuid:{uuid.uuid4()}": resources.document_reference(
            system, f"d{n}", f"Patient/{subject['id']}"
        )
        for n in range(57)
    }
    client.transaction(resources.transaction(entries))

    pages = list(client.search_pages("DocumentReference", [("identifier", f"{system}|")]))
    assert len(pages) == 6
    assert [len(p.get("entry", [])) for p in pages] == [10, 10, 10, 10, 10, 7]
    found = list(client.search("DocumentReference", {"identifier": f"{system}|"}))
    assert len(found) == 57
    assert len(set(_ids(found))) == 57
    assert {d["identifier"][0]["value"] for d in found} == {f"d{n}" for n in range(57)}


def test_token_search_on_document_type(client: FhirClient) -> None:
    system = resources.tag()
    resources_by_url = {}
    for n, code in enumerate([resources.MRI_BRAIN] * 4 + [resources.CHEST_XRAY] * 3):
        resources_by_url[f"urn:uuid:{uuid.uuid4()}"] = resources.document_reference(
            system, f"d{n}", "Patient/unknown-subject", code=code
        )
    client.transaction(resources.transaction(resources_by_url))

    mri = list(
        client.search(
            "DocumentReference",
            {"type": f"{resources.LOINC}|{resources.MRI_BRAIN}", "identifier": f"{system}|"},
        )
    )
    assert len(mri) == 4
    assert all(d["type"]["coding"][0]["code"] == resources.MRI_BRAIN for d in mri)
    either = client.search(
        "DocumentReference",
        [
            ("type", f"{resources.LOINC}|{resources.MRI_BRAIN},{resources.LOINC}|36643-5"),
            ("identifier", f"{system}|"),
        ],
    )
    assert len(list(either)) == 7


def test_unknown_search_parameter_is_refused_not_ignored(client: FhirClient) -> None:
    with pytest.raises(FhirError, match="Unknown search parameter 'no-such-param'") as caught:
        list(client.search("Observation", {"no-such-param": "x"}))
    assert caught.value.status == 400


def test_create_read_and_versioned_update(client: FhirClient) -> None:
    created = client.create(resources.patient(resources.tag(), "v"))
    assert created["meta"]["versionId"] == "1"
    assert client.read("Patient", created["id"]) == created

    stale = dict(created)
    changed = {**created, "gender": "male"}
    updated = client.update(changed)
    assert updated["meta"]["versionId"] == "2"
    assert client.read("Patient", created["id"])["gender"] == "male"

    with pytest.raises(FhirConflictError, match=r"Patient \(version 1\).*changed on the server"):
        client.update({**stale, "gender": "other"})
    assert client.read("Patient", created["id"])["gender"] == "male"  # nothing overwritten


def test_read_missing_resource_is_not_found(client: FhirClient) -> None:
    with pytest.raises(FhirNotFoundError, match=r"GET /fhir/Patient/\{id\} with HTTP 404"):
        client.read("Patient", "does-not-exist")


def test_capabilities_and_bulk_export_support(client: FhirClient) -> None:
    statement = client.capabilities()
    assert statement["resourceType"] == "CapabilityStatement"
    assert statement["fhirVersion"].startswith("4.0")
    assert client.supports_bulk_export() is True
    assert client.capabilities() is statement  # cached


def test_binary_read_decodes_the_stored_content(client: FhirClient) -> None:
    binary = client.create(
        {
            "resourceType": "Binary",
            "contentType": "image/png",
            "data": base64.b64encode(PNG_1PX).decode(),
        }
    )
    content, content_type = client.read_binary(f"Binary/{binary['id']}")
    assert (content, content_type) == (PNG_1PX, "image/png")
    absolute = client.read_binary(client.url(f"Binary/{binary['id']}"))
    assert absolute == (PNG_1PX, "image/png")
    with pytest.raises(FhirError, match="larger than the limit of 10 bytes"):
        client.read_binary(f"Binary/{binary['id']}", max_bytes=10)


def test_bulk_export_round_trip(client: FhirClient) -> None:
    system = resources.tag()
    client.transaction(resources.image_cohort(system, 4))

    files = client.bulk_export(["DocumentReference", "Observation"], poll_interval=0.2)
    assert sorted(f.type for f in files) == ["DocumentReference", "Observation"]
    by_type: dict[str, list[dict]] = {}
    for export_file in files:
        lines = list(client.iter_export_ndjson(export_file))
        assert all(isinstance(line, bytes) and b"\n" not in line for line in lines)
        assert len(lines) == export_file.count
        by_type[export_file.type] = [orjson.loads(line) for line in lines]
    assert {r["resourceType"] for r in by_type["DocumentReference"]} == {"DocumentReference"}

    # The server is shared by the whole test session: pick out this test's resources.
    def tagged(resource: dict) -> bool:
        return (resource.get("identifier") or [{}])[0].get("system") == system

    ours = [d for d in by_type["DocumentReference"] if tagged(d)]
    assert len(ours) == 4
    labels = [o for o in by_type["Observation"] if tagged(o)]
    assert len(labels) == 4


def test_bulk_export_at_group_level_exports_only_the_members(client: FhirClient) -> None:
    system = resources.tag()
    client.transaction(resources.image_cohort(system, 3))
    patients = list(client.search("Patient", {"identifier": f"{system}|"}))
    member = patients[0]
    group = client.create(
        {
            "resourceType": "Group",
            "type": "person",
            "actual": True,
            "member": [{"entity": {"reference": f"Patient/{member['id']}"}}],
        }
    )

    files = client.bulk_export(["DocumentReference"], level=f"group:{group['id']}")
    docs = [orjson.loads(line) for f in files for line in client.iter_export_ndjson(f)]
    assert [d["subject"]["reference"] for d in docs] == [f"Patient/{member['id']}"]


def test_bulk_export_since_the_future_exports_nothing(client: FhirClient) -> None:
    assert client.bulk_export(["DocumentReference"], since="2999-01-01T00:00:00Z") == []


def test_bulk_export_of_an_unknown_group_fails_with_the_diagnostics(client: FhirClient) -> None:
    with pytest.raises(FhirNotFoundError, match="Group/nope not found"):
        client.bulk_export(["Patient"], level="group:nope")
