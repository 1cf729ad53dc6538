"""FHIR: the REST client (`FhirClient`, its auth and errors; see `client`), the data contract
(`mapping`), NDJSON reading (`ndjson`) and validation with fhir.resources (`validation`).

The client's public names are re-exported here, loaded on first use (PEP 562): importing
`patient_ml.fhir.mapping` (every curation reader does) does not load requests or urllib3.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from patient_ml.fhir.client import (
        AUTH_TYPES,
        FHIR_JSON,
        FHIR_NDJSON,
        NOT_PROCESSED_STATUSES,
        POLL_RETRYABLE_STATUSES,
        RETRYABLE_STATUSES,
        BasicAuth,
        BearerAuth,
        ClientCredentialsAuth,
        ExportFile,
        ExportManifest,
        FhirAuth,
        FhirAuthError,
        FhirClient,
        FhirConfigError,
        FhirConflictError,
        FhirError,
        FhirNotFoundError,
        FhirReferenceError,
        FhirTooLargeError,
        FhirTransactionError,
        NoAuth,
        make_auth,
        parse_retry_after,
    )

__all__ = [
    "AUTH_TYPES",
    "FHIR_JSON",
    "FHIR_NDJSON",
    "NOT_PROCESSED_STATUSES",
    "POLL_RETRYABLE_STATUSES",
    "RETRYABLE_STATUSES",
    "BasicAuth",
    "BearerAuth",
    "ClientCredentialsAuth",
    "ExportFile",
    "ExportManifest",
    "FhirAuth",
    "FhirAuthError",
    "FhirClient",
    "FhirConfigError",
    "FhirConflictError",
    "FhirError",
    "FhirNotFoundError",
    "FhirReferenceError",
    "FhirTooLargeError",
    "FhirTransactionError",
    "NoAuth",
    "make_auth",
    "parse_retry_after",
]


def __getattr__(name: str) -> Any:
    if name in __all__:
        return getattr(importlib.import_module("patient_ml.fhir.client"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
