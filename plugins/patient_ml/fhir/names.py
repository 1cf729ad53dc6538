"""The FHIR client's public names, kept once: `patient_ml.fhir.client` exports them and
`patient_ml.fhir` re-exports them on first use. Reading this list imports nothing, so
`import patient_ml.fhir` stays free of requests and urllib3."""

from __future__ import annotations

CLIENT_NAMES = (
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
)
