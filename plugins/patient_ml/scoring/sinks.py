"""Where batch scoring writes its prediction resources: the dataset's own FHIR source.

* FHIR server: one transaction Bundle per chunk (one HTTP request), a `PUT Type/id` entry per
  resource: update-as-create with the deterministic ids of `observations`, so a rerun updates
  the same resources (a new version each) and never duplicates them; all or nothing.
* NDJSON folder: appended, under the same exclusive lock as the label sink
  (`labels.sinks.NdjsonFolderSink.append`), to `<Type>.patient-ml-predictions.ndjson` in the
  folder (Observation; Binary for imgSeg masks), each line with `meta.versionId` above every
  version already in the file and `meta.lastUpdated`, so the newest line of an id wins.
* NDJSON on S3: one new object `<Type>.patient-ml-predictions-<uuid>.ndjson` per write and
  resource type (objects cannot be appended to); `meta.versionId` from the clock.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import orjson

from patient_ml.exceptions import PatientMLError
from patient_ml.fhir import validation
from patient_ml.labels.sinks import NdjsonFolderSink, S3NdjsonSink, ndjson_bytes

if TYPE_CHECKING:
    from patient_ml.config.models import DatasetSource
    from patient_ml.fhir.client import FhirClient

PREDICTIONS_SUFFIX = "patient-ml-predictions.ndjson"
PREDICTIONS_FILE = f"Observation.{PREDICTIONS_SUFFIX}"
TAIL_BLOCK = 1 << 16


def predictions_file(resource_type: str) -> str:
    """The NDJSON file (name) of a resource type's predictions, e.g. PREDICTIONS_FILE."""
    return f"{resource_type}.{PREDICTIONS_SUFFIX}"


class PredictionSink(Protocol):
    description: str

    def write(self, resources: Sequence[Mapping[str, Any]]) -> int: ...


class FhirTransactionSink:
    """One transaction Bundle of `PUT Type/id` entries per write."""

    def __init__(self, client: FhirClient) -> None:
        self.client = client
        self.base_url = str(getattr(client, "base_url", "") or "").rstrip("/")
        self.description = f"FHIR server {self.base_url}"

    def write(self, resources: Sequence[Mapping[str, Any]]) -> int:
        if not resources:
            return 0
        self.client.transaction(transaction_bundle(resources, base_url=self.base_url))
        return len(resources)


def transaction_bundle(
    resources: Sequence[Mapping[str, Any]], *, base_url: str = ""
) -> dict[str, Any]:
    """The validated transaction Bundle that creates or updates `resources` by their ids."""
    entries = []
    for resource in resources:
        kind, rid = resource.get("resourceType"), resource.get("id")
        if not isinstance(kind, str) or not isinstance(rid, str) or not rid:
            raise PatientMLError(
                "A prediction resource to write has no resourceType or id.",
                fix="build it with patient_ml.scoring.observations.prediction_resources",
            )
        entry: dict[str, Any] = {
            "resource": dict(resource),
            "request": {"method": "PUT", "url": f"{kind}/{rid}"},
        }
        if base_url.startswith(("http://", "https://")):
            entry = {"fullUrl": f"{base_url}/{kind}/{rid}", **entry}
        entries.append(entry)
    return validation.validated({"resourceType": "Bundle", "type": "transaction", "entry": entries})


def _now() -> tuple[int, str]:
    """A version number from the clock (microseconds) and the FHIR instant of now."""
    return time.time_ns() // 1000, datetime.now(UTC).isoformat(timespec="milliseconds")


def _stamped(
    resources: Sequence[Mapping[str, Any]], version: int, updated: str
) -> list[dict[str, Any]]:
    stamped = []
    for resource in resources:
        meta = {**(resource.get("meta") or {}), "versionId": str(version), "lastUpdated": updated}
        stamped.append({**resource, "meta": meta})
    return stamped


def _by_type(resources: Sequence[Mapping[str, Any]]) -> dict[str, list[Mapping[str, Any]]]:
    """Resources per type, in the order the types first come (a mask before its Observation)."""
    grouped: dict[str, list[Mapping[str, Any]]] = {}
    for resource in resources:
        grouped.setdefault(str(resource.get("resourceType")), []).append(resource)
    return grouped


def last_version(fd: int) -> int:
    """The numeric `meta.versionId` of the file's last line (0 when none): reads the file's
    tail only, block by block from the end, until that line is whole."""
    end = os.fstat(fd).st_size
    tail = b""
    while end > 0:
        start = max(0, end - TAIL_BLOCK)
        tail = os.pread(fd, end - start, start) + tail
        end = start
        if b"\n" in tail.rstrip(b"\n"):
            break
    line = tail.rstrip(b"\n").rsplit(b"\n", 1)[-1].strip()
    if not line:
        return 0
    try:
        version = str(((orjson.loads(line) or {}).get("meta") or {}).get("versionId") or "")
    except (orjson.JSONDecodeError, AttributeError):
        return 0
    return int(version) if version.isascii() and version.isdigit() else 0


class NdjsonFolderPredictionSink:
    """Appends to `<Type>.patient-ml-predictions.ndjson` through the label sink's locked
    append (a single-file source: to that file)."""

    def __init__(self, uri: str | Path) -> None:
        self.uri = uri
        self._sinks: dict[str, NdjsonFolderSink] = {}
        self.description = f"NDJSON file {self._sink('Observation').file}"

    def _sink(self, resource_type: str) -> NdjsonFolderSink:
        if resource_type not in self._sinks:
            self._sinks[resource_type] = NdjsonFolderSink(
                self.uri, file_name=predictions_file(resource_type), what="Predictions"
            )
        return self._sinks[resource_type]

    def write(self, resources: Sequence[Mapping[str, Any]]) -> int:
        for resource_type, group in _by_type(resources).items():

            def lines(fd: int, group: Sequence[Mapping[str, Any]] = group) -> bytes:
                clock, updated = _now()
                version = max(clock, last_version(fd) + 1)  # the newest line always wins
                return ndjson_bytes(_stamped(group, version, updated))

            self._sink(resource_type).append(lines)
        return len(resources)


class S3PredictionSink:
    """One object per write and resource type under the dataset's S3 prefix."""

    def __init__(self, uri: str, *, aws_conn_id: str = "aws_default") -> None:
        self.uri, self.aws_conn_id = uri, aws_conn_id
        self.description = f"NDJSON objects under {uri}"

    def write(self, resources: Sequence[Mapping[str, Any]]) -> int:
        version, updated = _now()
        for resource_type, group in _by_type(resources).items():
            sink = S3NdjsonSink(
                self.uri, aws_conn_id=self.aws_conn_id, file_name=predictions_file(resource_type)
            )
            sink.write(_stamped(group, version, updated))
        return len(resources)


def prediction_sink_for(
    source: DatasetSource,
    *,
    fhir_client: FhirClient | None = None,
    aws_conn_id: str = "aws_default",
) -> PredictionSink:
    """The prediction sink of a dataset's source config (`patient_ml.config.models.
    DatasetSource`): its FHIR server (through `fhir_client`) or its NDJSON folder / S3 prefix."""
    if source.type == "ndjson":
        uri = source.uri or ""
        if uri.startswith("s3://"):
            return S3PredictionSink(uri, aws_conn_id=aws_conn_id)
        return NdjsonFolderPredictionSink(uri)
    if fhir_client is None:
        raise PatientMLError(
            "Predictions for a FHIR server source need a FHIR client.",
            fix="pass fhir_client= (the dataset's FHIR connection, e.g. through FhirHook)",
        )
    return FhirTransactionSink(fhir_client)
