"""Realistic FHIR R4 test records: Patients, image DocumentReferences and label Observations."""

from __future__ import annotations

import uuid
from typing import Any

from patient_ml.fhir import mapping

LOINC = "http://loinc.org"
MRI_BRAIN = "24590-2"  # MR Brain
CHEST_XRAY = "36643-5"  # XR Chest 2 Views


def tag() -> str:
    """A unique identifier system, so tests sharing one server find only their own records."""
    return f"urn:uuid:{uuid.uuid4()}"


def patient(system: str, value: str) -> dict[str, Any]:
    return {
        "resourceType": "Patient",
        "identifier": [{"system": system, "value": value}],
        "name": [{"family": "Doe", "given": [f"Test-{value}"]}],
        "gender": "female",
        "birthDate": "1971-04-12",
    }


def document_reference(
    system: str, value: str, subject: str, *, code: str = MRI_BRAIN, url: str | None = None
) -> dict[str, Any]:
    return {
        "resourceType": "DocumentReference",
        "identifier": [{"system": system, "value": value}],
        "status": "current",
        "type": {"coding": [{"system": LOINC, "code": code, "display": "MR Brain"}]},
        "subject": {"reference": subject},
        "date": "2024-05-02T10:15:00Z",
        "content": [
            {
                "attachment": {
                    "contentType": "image/png",
                    "url": url or f"file:///data/images/{value}.png",
                    "title": f"{value}.png",
                }
            }
        ],
    }


def label_observation(
    system: str, value: str, focus: str, *, label: str = "1", status: str = "final"
) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "identifier": [{"system": system, "value": value}],
        "status": status,
        "code": {"coding": [{"system": mapping.LABEL_CODE_SYSTEM, "code": mapping.LABEL_CODE}]},
        "focus": [{"reference": focus}],
        "valueCodeableConcept": {
            "coding": [{"system": "urn:patient-ml:labels:brain-mri", "code": label}]
        },
    }


def transaction(resources_by_full_url: dict[str, dict[str, Any]]) -> dict[str, Any]:
    return {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "fullUrl": full_url,
                "resource": resource,
                "request": {"method": "POST", "url": resource["resourceType"]},
            }
            for full_url, resource in resources_by_full_url.items()
        ],
    }


def image_cohort(system: str, patients: int, *, code: str = MRI_BRAIN) -> dict[str, Any]:
    """A transaction: each patient with one image DocumentReference and one label."""
    resources: dict[str, dict[str, Any]] = {}
    for n in range(patients):
        pid, did, oid = (f"urn:uuid:{uuid.uuid4()}" for _ in range(3))
        resources[pid] = patient(system, f"p{n}")
        resources[did] = document_reference(system, f"d{n}", pid, code=code)
        resources[oid] = label_observation(system, f"o{n}", did, label=str(n % 2))
    return transaction(resources)
