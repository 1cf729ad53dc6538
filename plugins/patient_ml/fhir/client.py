"""A FHIR R4 REST client on `requests`, for operators (through `FhirHook`), the CLI and tools.

    client = FhirClient("https://fhir.example.org/fhir", BearerAuth("..."), page_size=200)
    for doc in client.search("DocumentReference", {"type": "http://loinc.org|24590-2"}):
        ...

The client is composed of the package's parts: `transport` (session, retries through urllib3's
`Retry`, errors), `auth` (none, bearer, basic, OAuth2 client credentials through authlib),
`rest` (read, Binary, create, update, transaction), `search` (paging) and `bulk` (`$export`).
The names of `names.CLIENT_NAMES` stay importable from here; `patient_ml.fhir` re-exports
them too.
"""

from __future__ import annotations

# The imports marked F401 are the re-exported names of `names.CLIENT_NAMES` (this `__all__`).
from patient_ml.fhir.auth import (  # noqa: F401
    AUTH_TYPES,
    BasicAuth,
    BearerAuth,
    ClientCredentialsAuth,
    FhirAuth,
    NoAuth,
    make_auth,
)
from patient_ml.fhir.bulk import (  # noqa: F401
    POLL_RETRYABLE_STATUSES,
    ExportFile,
    ExportManifest,
    FhirBulkExport,
)
from patient_ml.fhir.errors import (  # noqa: F401
    FhirAuthError,
    FhirConfigError,
    FhirConflictError,
    FhirError,
    FhirNotFoundError,
    FhirReferenceError,
    FhirTooLargeError,
    FhirTransactionError,
)
from patient_ml.fhir.names import CLIENT_NAMES
from patient_ml.fhir.rest import FhirRest
from patient_ml.fhir.search import FhirSearch
from patient_ml.fhir.transport import (  # noqa: F401
    FHIR_JSON,
    FHIR_NDJSON,
    NOT_PROCESSED_STATUSES,
    RETRYABLE_STATUSES,
    parse_retry_after,
)

__all__ = list(CLIENT_NAMES)


class FhirClient(FhirRest, FhirSearch, FhirBulkExport):
    """FHIR R4 REST client for one server (`base_url` includes the FHIR path, e.g. /fhir)."""
