"""Where curation reads FHIR records: NDJSON files (the bulk-data format), a FHIR server's
paged search, or a FHIR server's bulk `$export`. Each yields `(position, expected_type, raw)`
where raw is NDJSON bytes or a parsed resource, so malformed lines reach the curation and get
quarantined with their file and line number.

NDJSON sources (files, S3 objects, `$export` files) never hold a line longer than their record
limit (`limit_record_bytes`, which curation sets from the dataset's maxImageBytes): such a line
comes as a `LineTooLong` and is quarantined as `record_too_large`."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from patient_ml.fhir import mapping
from patient_ml.fhir.ndjson import DEFAULT_MAX_LINE_BYTES, LineTooLong, iter_ndjson_lines
from patient_ml.storage import artifact_store_from_uri

if TYPE_CHECKING:
    from patient_ml.fhir.client import FhirClient

Record = tuple[str, str | None, bytes | dict[str, Any] | LineTooLong]
RESOURCE_TYPES = ("DocumentReference", "Observation")
_TYPE_FROM_NAME = re.compile(r"^(?:\d+\.)?([A-Z][A-Za-z]+)")


class RecordSource(Protocol):
    description: str

    def records(self) -> Iterator[Record]: ...


class ImageRecordSource(RecordSource, Protocol):
    """A source that can also find the records of one image without reading everything: its
    DocumentReference and the label Observations whose focus is that DocumentReference (and
    possibly other records, which the reader filters out)."""

    def records_of(self, image_id: str) -> Iterator[Record]: ...


def expected_type_from_filename(name: str) -> str | None:
    """`DocumentReference.ndjson`, `1.Observation.ndjson` → the resource type; else None."""
    match = _TYPE_FROM_NAME.match(Path(name).name)
    return match.group(1) if match else None


def local_path(uri: str | Path) -> Path:
    """`file:///folder`, `/folder` or a Path → the Path."""
    text = str(uri)
    return Path(text.removeprefix("file://"))


class _LineLimit:
    max_line_bytes: int = DEFAULT_MAX_LINE_BYTES

    def limit_record_bytes(self, max_line_bytes: int) -> None:
        """Lines longer than this come as LineTooLong (never held in memory)."""
        self.max_line_bytes = max_line_bytes


class NdjsonSource(_LineLimit):
    """All `*.ndjson` / `*.ndjson.gz` files of a local folder (or one file)."""

    def __init__(self, path: str | Path) -> None:
        self.path = local_path(path)
        self.description = f"NDJSON files in {self.path}"

    def records(self) -> Iterator[Record]:
        lines = iter_ndjson_lines(self.path, max_line_bytes=self.max_line_bytes)
        for source, line_number, raw in lines:
            yield f"{Path(source).name}:{line_number}", expected_type_from_filename(source), raw

    def records_of(self, image_id: str) -> Iterator[Record]:
        """The lines that mention `image_id` (a FHIR id: letters, digits, '-' and '.', never
        escaped in JSON): a byte search per line, no parsing, so a 100,000-image source is
        scanned in well under a second."""
        needle = image_id.encode()
        for source, line_number, raw in iter_ndjson_lines(
            self.path, max_line_bytes=self.max_line_bytes
        ):
            if not isinstance(raw, LineTooLong) and needle in raw:
                yield f"{Path(source).name}:{line_number}", expected_type_from_filename(source), raw

    def written_at(self, position: str) -> float | None:
        """When the file of a record's position (`name:line`) was last written, in seconds
        since the epoch (None when it cannot be read)."""
        name = position.rsplit(":", 1)[0]
        file = self.path if self.path.is_file() else self.path / Path(name).name
        try:
            return file.stat().st_mtime
        except OSError:
            return None


class S3NdjsonSource(_LineLimit):
    """The `*.ndjson(.gz)` objects under an `s3://bucket/prefix`, downloaded one at a time."""

    def __init__(self, uri: str, *, aws_conn_id: str = "aws_default") -> None:
        self.uri = uri.rstrip("/")
        self.aws_conn_id = aws_conn_id
        self.description = f"NDJSON objects under {self.uri}"

    def records(self) -> Iterator[Record]:
        import tempfile

        store = artifact_store_from_uri(self.uri, aws_conn_id=self.aws_conn_id)
        keys = [k for k in store.list_keys() if k.endswith((".ndjson", ".ndjson.gz"))]
        with tempfile.TemporaryDirectory(prefix="patient-ml-ndjson-") as tmp:
            for key in keys:
                # A local name of bounded length, whatever the key (up to 1024 bytes in S3).
                digest = hashlib.sha256(key.encode()).hexdigest()[:32]
                name = f"{digest}.ndjson" + (".gz" if key.endswith(".gz") else "")
                local = store.get_file(key, Path(tmp) / name)
                expected = expected_type_from_filename(key.rsplit("/", 1)[-1])
                for _, line_number, raw in iter_ndjson_lines(
                    local, max_line_bytes=self.max_line_bytes
                ):
                    yield f"{key}:{line_number}", expected, raw
                local.unlink()


class FhirSearchSource:
    """Paged search: DocumentReferences of the filter codes, then label Observations (and,
    for a chained dataset, prediction Observations). A record's position names its search and
    its place in it: `search:DocumentReference#n`, `search:Observation#n` (the labels),
    `search:Observation[image-prediction]#n` (the predictions)."""

    def __init__(
        self,
        client: FhirClient,
        filter_codes: Sequence[str],
        *,
        patients: bool = False,
        predictions: bool = False,
    ) -> None:
        self.client = client
        self.filter_codes = list(filter_codes)
        self.patients = patients  # also search Patients (subgroup attributes need them)
        self.predictions = predictions  # also search predictions (source.fromModel)
        self._focus_search = True  # until the server refuses Observation?focus=
        self.description = f"FHIR search on {getattr(client, 'base_url', 'the FHIR server')}"

    def records(self) -> Iterator[Record]:
        labels = f"{mapping.LABEL_CODE_SYSTEM}|{mapping.LABEL_CODE}"
        searches = [  # (resource type, parameters, the search's name in positions)
            ("DocumentReference", {"type": ",".join(self.filter_codes)}, "DocumentReference"),
            ("Observation", {"code": labels}, "Observation"),
        ]
        if self.predictions:
            predictions = f"{mapping.LABEL_CODE_SYSTEM}|{mapping.PREDICTION_CODE}"
            searches.append(
                ("Observation", {"code": predictions}, f"Observation[{mapping.PREDICTION_CODE}]")
            )
        for resource_type, params, name in searches:
            if resource_type == "DocumentReference" and self.patients:
                # the Patients of the images come along (`_include`), none other is read
                found = self.client.search(
                    resource_type,
                    {**params, "_include": "DocumentReference:subject"},
                    modes=("match", "include"),
                )
            else:
                found = self.client.search(resource_type, params)
            for n, resource in enumerate(found, start=1):
                included = self.patients and resource.get("resourceType") == "Patient"
                expected = "Patient" if included else resource_type
                yield f"search:{name}#{n}", expected, resource

    def records_of(self, image_id: str) -> Iterator[Record]:
        """The DocumentReference (a read; nothing when it is gone) and the label Observations
        whose `focus` is it (a search; a server without Observation's `focus` search parameter
        gets the label search of `records` instead, once it has refused it)."""
        from patient_ml.fhir.errors import FhirError, FhirNotFoundError

        try:
            doc: dict[str, Any] | None = self.client.read("DocumentReference", image_id)
        except FhirNotFoundError:
            doc = None
        if doc is not None:
            yield "read:DocumentReference", "DocumentReference", doc
        params = {"code": f"{mapping.LABEL_CODE_SYSTEM}|{mapping.LABEL_CODE}"}
        found: list[dict[str, Any]] | None = None
        if self._focus_search:
            try:  # the whole (small) result first: a refusal comes before anything is yielded
                found = list(
                    self.client.search(
                        "Observation", {**params, "focus": f"DocumentReference/{image_id}"}
                    )
                )
            except FhirError as exc:
                if exc.status != 400:
                    raise
                self._focus_search = False
        results = found if found is not None else self.client.search("Observation", params)
        for n, resource in enumerate(results, start=1):
            yield f"search:Observation#{n}", "Observation", resource


class FhirBulkExportSource(_LineLimit):
    """`$export` of DocumentReference and Observation, then the NDJSON files it produced."""

    def __init__(self, client: FhirClient, *, patients: bool = False) -> None:
        self.client = client
        self.patients = patients  # also export Patients (subgroup attributes need them)
        self.description = f"FHIR $export from {getattr(client, 'base_url', 'the FHIR server')}"

    def records(self) -> Iterator[Record]:
        types = [*RESOURCE_TYPES, "Patient"] if self.patients else list(RESOURCE_TYPES)
        files = self.client.bulk_export(types)
        for index, export_file in enumerate(files, start=1):
            resource_type = getattr(export_file, "type", None)
            name = f"export-{index}.{resource_type or 'ndjson'}"
            lines = self.client.iter_export_ndjson(export_file, max_line_bytes=self.max_line_bytes)
            for line_number, raw in enumerate(lines, 1):
                yield f"{name}:{line_number}", resource_type, raw
