"""`patient_ml.fhir` re-exports the client's public names (`names.CLIENT_NAMES`, kept once)
without loading requests until one is used."""

from __future__ import annotations

import subprocess
import sys

import patient_ml.fhir
from patient_ml.fhir import client
from patient_ml.fhir.names import CLIENT_NAMES


def test_the_package_and_the_client_export_the_same_names() -> None:
    assert patient_ml.fhir.__all__ == client.__all__ == list(CLIENT_NAMES)
    for name in CLIENT_NAMES:
        assert getattr(patient_ml.fhir, name) is getattr(client, name), name


def test_importing_the_package_does_not_load_requests() -> None:
    code = (
        "import sys, patient_ml.fhir, patient_ml.fhir.mapping\n"
        "assert 'requests' not in sys.modules and 'urllib3' not in sys.modules\n"
        "patient_ml.fhir.FhirClient\n"
        "assert 'requests' in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
