"""The error of model serving, raised by the servers and by the client of the serving contract."""

from __future__ import annotations

from patient_ml.exceptions import PatientMLError


class ServingError(PatientMLError):
    """A model server did not start, did not answer, or answered outside the contract."""
