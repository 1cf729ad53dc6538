"""The FHIR client's errors: one base (`FhirError`, a PatientMLError) with the HTTP status."""

from __future__ import annotations

from patient_ml.exceptions import PatientMLError


class FhirError(PatientMLError):
    """A FHIR server could not be reached or refused a request; `status` is its HTTP status."""

    exit_code = 1
    http_status = 502

    def __init__(self, message: str, *, fix: str | None = None, status: int | None = None) -> None:
        self.status = status
        super().__init__(message, fix=fix)


class FhirConfigError(FhirError):
    """The client or the Airflow connection is set up wrongly (URL, auth, limits)."""

    exit_code = 3
    http_status = 400


class FhirAuthError(FhirError):
    """The server or the OAuth2 token endpoint refused the credentials (401/403)."""


class FhirNotFoundError(FhirError):
    exit_code = 4
    http_status = 404


class FhirTooLargeError(FhirError):
    """A download is larger than the caller's limit."""


class FhirReferenceError(FhirError):
    """A reference or URL is not of a form this client can follow (e.g. not Binary/<id>)."""


class FhirConflictError(FhirError):
    """The resource changed on the server since it was read (409/412 on a versioned update)."""

    exit_code = 5
    http_status = 409


class FhirTransactionError(FhirError):
    """A transaction-response holds entries that did not succeed; `failures` lists them."""

    def __init__(self, message: str, *, failures: list[str], fix: str | None = None) -> None:
        self.failures = failures
        super().__init__(message, fix=fix)
