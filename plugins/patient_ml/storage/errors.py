"""Errors of the artifact store; messages name the URI and the fix, never credentials."""

from __future__ import annotations

from patient_ml.exceptions import NotFoundError, PatientMLError


class ArtifactStoreError(PatientMLError):
    """The artifact store cannot be used (bad URI, missing bucket, credentials, network)."""


class ArtifactNotFoundError(NotFoundError):
    """No artifact at this key."""


class ArtifactTooLargeError(ArtifactStoreError):
    """An object is larger than the caller's limit."""
