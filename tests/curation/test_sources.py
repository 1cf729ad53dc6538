"""`records_of`: the records of one image, found without reading the whole source, from NDJSON
files and from a real FHIR server (sekmet, which has no Observation `focus` search parameter:
the label search of the whole source is used instead, and the reader keeps that image's). A FHIR
search source's positions name the search each record came from."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

from patient_ml.curation.sources import FhirSearchSource, NdjsonSource
from patient_ml.fhir import mapping
from patient_ml.fhir.client import FhirClient
from tests.curation.cohort import Cohort, png


def _cohort(tmp_path: Path) -> Cohort:
    cohort = Cohort(tmp_path / "src", "code-x", "urn:test:labels")
    for doc in ("img-1", "img-10", "img-2"):
        cohort.doc(doc, "p1", data=png(len(doc)))
    cohort.label("lab-1", "img-1", 0)
    cohort.label("lab-10", "img-10", 1)
    cohort.label("lab-2", "img-2", 1, status="preliminary")
    return cohort


def _ids(records: Any) -> list[tuple[str, str]]:
    from patient_ml.curation.records import parse_resource

    found = [parse_resource(raw) for _, _, raw in records]
    return sorted((r["resourceType"], r["id"]) for r in found)


def test_ndjson_records_of_one_image(tmp_path: Path) -> None:
    source = NdjsonSource(_cohort(tmp_path).write_ndjson(tmp_path / "nd"))
    found = _ids(source.records_of("img-1"))
    # a byte search: img-10's records mention "img-1" too (the reader drops them by id)
    assert ("DocumentReference", "img-1") in found and ("Observation", "lab-1") in found
    assert ("DocumentReference", "img-2") not in found and ("Observation", "lab-2") not in found
    assert _ids(source.records_of("img-2")) == [
        ("DocumentReference", "img-2"), ("Observation", "lab-2"),
    ]  # fmt: skip
    assert _ids(source.records_of("gone")) == []


def test_fhir_records_of_one_image(tmp_path: Path, fhir_server: Any) -> None:
    cohort = _cohort(tmp_path)
    client = FhirClient(fhir_server.base_url)
    suffix = uuid.uuid4().hex[:6]
    for resource in [*cohort.docs, *cohort.observations]:
        client.update({**resource, "id": f"{resource['id']}-{suffix}"} | (
            {"focus": [{"reference": f"{resource['focus'][0]['reference']}-{suffix}"}]}
            if resource["resourceType"] == "Observation" else {}
        ))  # fmt: skip
    source = FhirSearchSource(client, [])
    found = _ids(source.records_of(f"img-2-{suffix}"))
    assert ("DocumentReference", f"img-2-{suffix}") in found
    assert ("Observation", f"lab-2-{suffix}") in found
    assert ("DocumentReference", f"img-1-{suffix}") not in found
    assert source._focus_search is False  # sekmet refused `focus`; the label search served
    assert not [r for r in _ids(source.records_of(f"gone-{suffix}")) if r[0] != "Observation"]


class _Searches:
    """A FHIR client whose searches answer from `found`: (resource type, code) -> resources."""

    def __init__(self, found: dict[tuple[str, str | None], list[dict[str, Any]]]) -> None:
        self.found = found

    def search(self, resource_type: str, params: dict[str, str], **_: Any) -> Any:
        code = params.get("code")
        return iter(self.found.get((resource_type, code and code.split("|")[1]), []))


def test_fhir_search_positions_name_the_search() -> None:
    """The label and the prediction Observations come from two searches: a quarantined
    prediction's position says it was the predictions' (not the labels' at the same place)."""
    client = _Searches({
        ("DocumentReference", None): [{"resourceType": "DocumentReference", "id": "img-1"}],
        ("Observation", mapping.LABEL_CODE): [{"resourceType": "Observation", "id": "lab-1"}],
        ("Observation", mapping.PREDICTION_CODE): [
            {"resourceType": "Observation", "id": "pred-1"},
            {"resourceType": "Observation", "id": "pred-2"},
        ],
    })  # fmt: skip
    found = list(FhirSearchSource(client, ["code-x"], predictions=True).records())
    assert [(position, raw["id"]) for position, _, raw in found] == [
        ("search:DocumentReference#1", "img-1"),
        ("search:Observation#1", "lab-1"),
        ("search:Observation[image-prediction]#1", "pred-1"),
        ("search:Observation[image-prediction]#2", "pred-2"),
    ]
    assert [expected for _, expected, _ in found] == [
        "DocumentReference", "Observation", "Observation", "Observation",
    ]  # fmt: skip
