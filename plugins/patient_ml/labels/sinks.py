"""Where label Observations are written: back into the dataset's FHIR source, so the next
curation reads them like any other record.

* FHIR server: `PUT Observation/<id>` with `If-Match` on the version that was read, so two
  people saving the same example at once cannot silently overwrite each other (409).
* NDJSON folder: one line per written version, appended (under an exclusive lock) to
  `Observation.patient-ml-labels.ndjson` in the folder; the new version has the next
  `meta.versionId`, and curation keeps the newest version of each Observation.
* NDJSON on S3: one new object per write (objects cannot be appended to).
"""

from __future__ import annotations

import fcntl
import os
import stat
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import orjson

from patient_ml.curation.sources import local_path
from patient_ml.exceptions import ConflictError, PatientMLError
from patient_ml.fhir.errors import FhirConflictError
from patient_ml.storage import artifact_store_from_uri

if TYPE_CHECKING:
    from patient_ml.config.models import DatasetSource
    from patient_ml.fhir.client import FhirClient

LABELS_FILE = "Observation.patient-ml-labels.ndjson"


class LabelSinkError(PatientMLError):
    """The dataset's source cannot take label records."""

    http_status = 409


class LabelSink(Protocol):
    description: str
    assigns_versions: bool  # True: the server sets meta.versionId (FHIR); False: we do

    def write(self, resources: Sequence[dict[str, Any]]) -> list[dict[str, Any]]: ...


class FhirServerSink:
    assigns_versions = True

    def __init__(self, client: FhirClient) -> None:
        self.client = client
        self.description = f"FHIR server {getattr(client, 'base_url', '')}"

    def write(self, resources: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
        written = []
        for resource in resources:
            try:
                written.append(self.client.update(resource))
            except FhirConflictError as exc:
                raise ConflictError(
                    f"Observation/{resource.get('id')} was changed by someone else meanwhile.",
                    fix="read the example again and save the label once more",
                ) from exc
        return written


class NdjsonFolderSink:
    assigns_versions = False

    def __init__(
        self, uri: str | Path, *, file_name: str = LABELS_FILE, what: str = "Labels"
    ) -> None:
        """`file_name`: the file written in a folder source; `what`: the records, in messages
        (batch scoring writes its predictions to its own file the same way)."""
        path = local_path(uri)
        self.what = what
        if path.is_dir():
            self.file = path / file_name
        elif path.suffix == ".ndjson":
            self.file = path
        else:
            raise LabelSinkError(
                f"{what} cannot be written to the NDJSON source {str(path)!r}.",
                fix="point the dataset's source.uri at a folder (or a plain .ndjson file)",
            )
        self.description = f"NDJSON file {self.file}"

    def write(self, resources: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
        data = ndjson_bytes(resources)
        self.append(lambda _fd: data)
        return list(resources)

    def append(self, build: Callable[[int], bytes]) -> None:
        """Append `build(fd)` to the file under its exclusive lock; `build` may read the file
        through `fd` (open for reading and appending) to see what was written before."""
        # Non-blocking and no symlink: a FIFO put in place of the file fails at once (instead
        # of blocking the API until a reader comes), and only a regular file is written to.
        flags = os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_NONBLOCK | os.O_NOFOLLOW
        try:
            fd = os.open(self.file, flags, 0o640)
        except OSError as exc:
            raise self._not_writable(exc.strerror or type(exc).__name__) from None
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise self._not_writable("not a regular file")
            os.set_blocking(fd, True)
            fcntl.flock(fd, fcntl.LOCK_EX)
            os.write(fd, build(fd))
            os.fsync(fd)
        finally:
            os.close(fd)  # releases the lock

    def _not_writable(self, why: str) -> LabelSinkError:
        return LabelSinkError(
            f"{self.what} cannot be written to {self.file.name!r} in the dataset's NDJSON "
            f"folder: {why}.",
            fix="make it a regular file the service may write, or remove it",
        )


class S3NdjsonSink:
    assigns_versions = False

    def __init__(
        self, uri: str, *, aws_conn_id: str = "aws_default", file_name: str = LABELS_FILE
    ) -> None:
        self.store = artifact_store_from_uri(uri.rstrip("/"), aws_conn_id=aws_conn_id)
        self.file_name = file_name
        self.description = f"NDJSON objects under {uri}"

    def write(self, resources: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
        data = ndjson_bytes(resources)
        key = f"{self.file_name.removesuffix('.ndjson')}-{uuid.uuid4().hex}.ndjson"
        self.store.put_bytes(key, data)
        return list(resources)


def ndjson_bytes(resources: Sequence[dict[str, Any]]) -> bytes:
    return b"".join(orjson.dumps(r) + b"\n" for r in resources)


def sink_for(
    source: DatasetSource,
    *,
    fhir_client: FhirClient | None = None,
    aws_conn_id: str = "aws_default",
) -> LabelSink:
    """The sink of a dataset's source config (`patient_ml.config.models.DatasetSource`)."""
    if source.type == "ndjson":
        uri = source.uri or ""
        if uri.startswith("s3://"):
            return S3NdjsonSink(uri, aws_conn_id=aws_conn_id)
        return NdjsonFolderSink(uri)
    if fhir_client is None:
        raise PatientMLError(
            "Labels for a FHIR server source need a FHIR client.",
            fix="pass fhir_client= (the dataset's FHIR connection, e.g. through FhirHook)",
        )
    return FhirServerSink(fhir_client)
