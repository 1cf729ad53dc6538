"""FHIR: the REST client (`FhirClient`, its auth and errors; see `client`), the data contract
(`mapping`), NDJSON reading (`ndjson`) and validation with fhir.resources (`validation`).

The client's public names (`names.CLIENT_NAMES`) are re-exported here, loaded on first use
(PEP 562): importing `patient_ml.fhir.mapping` (every curation reader does) does not load
requests or urllib3.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from patient_ml.fhir.names import CLIENT_NAMES

if TYPE_CHECKING:
    from patient_ml.fhir.client import *  # noqa: F403  (the names of CLIENT_NAMES)

__all__ = list(CLIENT_NAMES)


def __getattr__(name: str) -> object:
    if name in CLIENT_NAMES:
        return getattr(importlib.import_module("patient_ml.fhir.client"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
