"""Subgroup attributes read from FHIR at curation: the rules (age bands, paths, settings) and
curation end to end on real files, a real FHIR server and PostgreSQL, with a real DICOM
Manufacturer tag."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import orjson
import pydicom
import pytest
from pydantic import ValidationError
from pydicom.data import get_testdata_file
from sqlalchemy import Engine

from patient_ml.config.models import SubgroupSettings
from patient_ml.curation.attributes import (
    AttributePlan,
    age_band,
    document_attributes,
    example_attributes,
    patient_attributes,
    resolve_path,
)
from patient_ml.curation.fetch import FetchPolicy, ImageFetcher
from patient_ml.curation.sources import FhirSearchSource, NdjsonSource
from patient_ml.db.engine import session_scope
from patient_ml.fhir.client import FhirClient
from patient_ml.services.curation import curate
from patient_ml.services.datasets import create_dataset
from patient_ml.storage import LocalArtifactStore
from tests.curation.cohort import Cohort, dataset_config, png
from tests.fhir_server import FhirServer


@pytest.mark.parametrize(
    ("birth", "on", "band"),
    [
        ("1990-06-15", "2020-06-14", "18-39"),  # 29 the day before the birthday
        ("1990-06-15", "2030-06-14", "18-39"),  # 39
        ("1990-06-15", "2030-06-15", "40-64"),  # 40 on the birthday
        ("2010-01-01", "2020-05-01T10:00:00Z", "0-17"),  # a dateTime
        ("1950", "2020-01-01", "65+"),  # a year only: mid-year
        ("1990-06-15", "1980-01-01", None),  # imaged before birth
        ("not a date", "2020-01-01", None),
        ("1990-06-15", None, None),
    ],
)
def test_age_band_counts_whole_years_at_imaging_time(
    birth: str, on: str | None, band: str | None
) -> None:
    assert age_band(birth, on, (18, 40, 65)) == band


def test_paths_and_built_in_attributes() -> None:
    patient = {
        "resourceType": "Patient",
        "gender": "female",
        "birthDate": "1970-03-01",
        "managingOrganization": {"reference": "Organization/site-a"},
        "address": [{"state": "CA"}, {"state": "NY"}],
    }
    document = {
        "date": "2021-05-01",
        "custodian": {"reference": "Organization/x", "display": "Site <B>"},
        "context": {"related": [{"reference": "Device/d1", "display": "Acme Scan"}]},
    }
    assert resolve_path(patient, ["address[1]", "state"]) == "NY"
    assert resolve_path(patient, ["address", "state"]) == "CA"  # a list: its first element
    assert resolve_path(patient, ["managingOrganization"]) == "Organization/site-a"
    assert resolve_path(patient, ["address[5]", "state"]) is None
    assert resolve_path(patient, ["nothing"]) is None
    settings = SubgroupSettings.model_validate(
        {"custom": [{"name": "state", "path": "Patient.address[0].state"}],
         "attributes": ["sex", "ageBand", "site", "manufacturer", "state"]}
    )  # fmt: skip
    plan = AttributePlan.of(settings)
    kept = example_attributes(
        plan, document_attributes(document, plan), patient_attributes(patient, plan)
    )
    # The custodian wins over the managing organisation; odd characters are replaced.
    assert kept == {
        "sex": "female",
        "ageBand": "40-64",
        "site": "Site _B_",
        "manufacturer": "Acme Scan",
        "state": "CA",
    }
    # A DICOM Manufacturer tag wins over the DocumentReference's device.
    assert example_attributes(plan, {}, {}, "GE MEDICAL")["manufacturer"] == "GE MEDICAL"
    # Nothing known: no attributes (the manifest entry then has none).
    assert example_attributes(plan, {}, {}) == {}


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"attributes": ["sex", "race"]}, "'race', which is neither built in"),
        ({"ageBands": [40, 18]}, "is not increasing"),
        ({"custom": [{"name": "site", "path": "Patient.gender"}]}, "has a built-in name"),
        ({"custom": [{"name": "x", "path": "Observation.value"}]}, "path"),
        ({"custom": [{"name": "x", "path": "Patient.a..b"}]}, "path"),
        ({"minClusters": 1}, "minClusters"),
    ],
)
def test_bad_subgroup_settings_are_refused_with_the_field(
    settings: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValidationError) as caught:
        SubgroupSettings.model_validate(settings)
    assert message in str(caught.value)


def _cohort(tmp_path: Path, engine: Engine, **curation: Any) -> tuple[str, Cohort]:
    name, code = f"ds-{uuid.uuid4().hex[:8]}", f"code-{uuid.uuid4().hex[:8]}"
    config = dataset_config(name, code, maxImageBytes=200_000, maxImagePixels=50_000, **curation)
    with session_scope(engine) as session:
        dataset_id = create_dataset(session, config, actor="t").id
    cohort = Cohort(tmp_path / "source", code, f"urn:test:{name}")
    for p in range(12):
        for k in range(2):
            doc = cohort.doc(f"d{p:02d}-{k}", f"p{p:02d}", data=png(p * 10 + k))
            doc["date"] = f"20{10 + k}-06-01T09:00:00Z"  # an instant
            if p % 3 == 0:
                doc["custodian"] = {"reference": "Organization/site-c", "display": "Site C"}
            cohort.label(f"o{p:02d}-{k}", doc["id"], p % 2)
    dicom = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    dicom.Manufacturer = "Acme Medical"
    out = tmp_path / "ct.dcm"
    dicom.save_as(out)
    cohort.doc("ct-1", "p00", data=None, url=f"file://{out}", content_type="application/dicom")
    return dataset_id, cohort


def _patients() -> list[dict[str, Any]]:
    return [
        {
            "resourceType": "Patient",
            "id": f"p{p:02d}",
            "gender": "female" if p % 2 else "male",
            "birthDate": f"{1950 + 5 * p}-01-15",
            "managingOrganization": {"reference": f"Organization/site-{'ab'[p % 2]}"},
        }
        for p in range(11)  # p11 has no Patient record: no sex, age band or (own) site
    ]


def _curate(engine: Engine, dataset_id: str, source: Any, tmp_path: Path, cohort: Cohort) -> Any:
    store = LocalArtifactStore(tmp_path / "artifacts")
    fetcher = ImageFetcher(
        FetchPolicy(allowed_file_roots=(cohort.images, tmp_path), max_bytes=200_000)
    )
    result = curate(
        engine=engine, dataset_ref=dataset_id, source=source, store=store, fetcher=fetcher,
        workdir=tmp_path / f"work-{uuid.uuid4().hex[:6]}", workers=2,
    )  # fmt: skip
    key = result.manifest_uri.removeprefix(store.uri(""))
    lines = store.read_bytes(key).splitlines()
    return result, {e["id"]: e for e in map(orjson.loads, lines[1:])}


def test_curation_keeps_attributes_from_patients_documents_and_dicom(
    engine: Engine, tmp_path: Path, fhir_server: FhirServer
) -> None:
    dataset_id, cohort = _cohort(tmp_path, engine)
    folder = cohort.write_ndjson(tmp_path / "ndjson")
    (folder / "Patient.ndjson").write_bytes(b"\n".join(map(orjson.dumps, _patients())) + b"\n")

    result, examples = _curate(engine, dataset_id, NdjsonSource(folder), tmp_path, cohort)

    assert examples["d01-0"]["attributes"] == {
        "sex": "female",
        "ageBand": "40-64",
        "site": "Organization/site-b",
    }  # fmt: skip  (born 1955, imaged 2010: 55)
    assert examples["d03-1"]["attributes"]["site"] == "Site C"  # the custodian wins
    assert examples["d00-0"]["attributes"]["ageBand"] == "40-64"  # born 1950, imaged 2010: 60
    assert examples["d00-1"]["attributes"]["ageBand"] == "40-64"  # 2011: 61
    assert examples["d10-0"]["attributes"]["ageBand"] == "0-17"  # born 2000, imaged 2010
    assert examples["ct-1"]["attributes"]["manufacturer"] == "Acme Medical"
    assert "attributes" not in examples["d11-0"]  # no Patient, no date-free attributes
    counts = result.report["subgroups"]
    assert counts["sex"] == {"(missing)": 2, "female": 10, "male": 13}  # p00 has the CT too
    assert counts["manufacturer"] == {"(missing)": 24, "Acme Medical": 1}
    assert sum(counts["site"].values()) == len(examples) == 25

    # The same records from a real FHIR server (Patients come with `_include`): same
    # attributes, same snapshot.
    client = FhirClient(fhir_server.base_url)
    bundle = cohort.transaction()
    bundle["entry"] = [e for e in bundle["entry"] if e["resource"]["resourceType"] != "Patient"] + [
        {"resource": p, "request": {"method": "PUT", "url": f"Patient/{p['id']}"}}
        for p in _patients()
    ]
    client.transaction(bundle)
    source = FhirSearchSource(client, cohort_codes(cohort), patients=True)
    _, served = _curate(engine, dataset_id, source, tmp_path, cohort)
    assert set(served) == set(examples)
    for doc_id, example in served.items():
        assert example.get("attributes") == examples[doc_id].get("attributes"), doc_id


def cohort_codes(cohort: Cohort) -> list[str]:
    return [f"http://loinc.org|{cohort.code}"]


def test_no_attributes_configured_leaves_manifests_as_before(
    engine: Engine, tmp_path: Path
) -> None:
    dataset_id, cohort = _cohort(tmp_path, engine, subgroups={"attributes": []})
    folder = cohort.write_ndjson(tmp_path / "ndjson")
    (folder / "Patient.ndjson").write_bytes(b"\n".join(map(orjson.dumps, _patients())) + b"\n")
    result, examples = _curate(engine, dataset_id, NdjsonSource(folder), tmp_path, cohort)
    assert not any("attributes" in e for e in examples.values())
    assert result.report["subgroups"] == {}
