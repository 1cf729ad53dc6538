"""Validation of written FHIR resources with the fhir.resources models (R4B)."""

from __future__ import annotations

import pytest

from patient_ml.fhir import mapping
from patient_ml.fhir.validation import InvalidFhirResourceError, problems, validated

LABEL = {
    "resourceType": "Observation",
    "id": "pml-label-1",
    "status": "final",
    "code": {"coding": [{"system": mapping.LABEL_CODE_SYSTEM, "code": mapping.LABEL_CODE}]},
    "subject": {"reference": "Patient/p1"},
    "focus": [{"reference": "DocumentReference/d1"}],
    "issued": "2026-01-02T03:04:05.678+00:00",
    "valueCodeableConcept": {"coding": [{"system": "urn:patient-ml:labels:x", "code": "1"}]},
}


def test_a_valid_resource_is_returned_as_it_is() -> None:
    assert validated(LABEL) is LABEL
    assert problems(LABEL) == []


def test_an_invalid_resource_is_refused_naming_the_fields_not_the_values() -> None:
    bad = {**LABEL, "issued": "yesterday SECRET", "bodySite": "left", "focus": [{"reference": 3}]}
    with pytest.raises(InvalidFhirResourceError) as caught:
        validated(bad)
    message = str(caught.value)
    assert message.startswith("The Observation to write is not valid FHIR R4B: ")
    assert "issued: " in message and "focus[0].reference: " in message
    assert "bodySite: " in message
    assert "SECRET" not in message and "yesterday" not in message
    assert "Fix:" in message
    assert len(caught.value.problems) == 3


def test_problems_of_records_that_are_not_resources() -> None:
    assert problems({"id": "x"}) == ["resourceType: missing"]
    assert problems({"resourceType": "Spaceship"}) == [
        "resourceType: 'Spaceship' is not a FHIR R4B resource type"
    ]
    assert problems({"resourceType": "DocumentReference", "status": "current"}) == [
        "content: Field required"
    ]


def test_a_bundle_is_validated_with_its_entries() -> None:
    entry = {"resource": {**LABEL, "status": 7}, "request": {"method": "PUT", "url": "x"}}
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [entry]}
    assert problems(bundle) == ["entry[0].resource.status: Input should be a valid string"]
