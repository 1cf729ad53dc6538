"""`records_of`: the records of one image, found without reading the whole source, from NDJSON
files and from a real FHIR server (sekmet, which has no Observation `focus` search parameter:
the label search of the whole source is used instead, and the reader keeps that image's)."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

from patient_ml.curation.sources import FhirSearchSource, NdjsonSource
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
