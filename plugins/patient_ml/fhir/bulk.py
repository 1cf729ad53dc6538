"""FHIR Bulk Data `$export`: kick-off, polling with `Retry-After`, the manifest, and NDJSON
download as raw lines (streamed)."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urljoin

import requests

from patient_ml.fhir.errors import FhirConfigError, FhirError
from patient_ml.fhir.ndjson import DEFAULT_MAX_LINE_BYTES, LineTooLong
from patient_ml.fhir.transport import (
    FHIR_JSON,
    FHIR_NDJSON,
    FhirTransport,
    check_id,
    check_type,
    describe_failure,
    parse_retry_after,
    split_lines,
)

log = logging.getLogger("patient_ml.fhir")

# A 500 from a bulk-export status endpoint means the export failed; polling again will not help.
POLL_RETRYABLE_STATUSES = frozenset({429, 502, 503, 504})


@dataclass(frozen=True)
class ExportFile:
    """One NDJSON file of a bulk export manifest."""

    type: str
    url: str
    count: int | None = None
    requires_access_token: bool | None = None


@dataclass(frozen=True)
class ExportManifest:
    status_url: str
    transaction_time: str | None
    requires_access_token: bool | None
    output: list[ExportFile]
    error: list[ExportFile]


class FhirBulkExport(FhirTransport):
    """Bulk Data `$export` interactions of a FHIR client."""

    def start_bulk_export(
        self,
        types: Sequence[str],
        *,
        since: str | None = None,
        level: str = "system",
        type_filters: Sequence[str] = (),
    ) -> str:
        """Kick off `$export`; returns the status URL to poll."""
        if level == "system":
            path = "$export"
        elif level == "patient":
            path = "Patient/$export"
        elif level.startswith("group:") and level[len("group:") :]:
            path = f"Group/{check_id('Group', level[len('group:') :])}/$export"
        else:
            raise FhirConfigError(
                f"Unknown bulk export level {level!r}.",
                fix="use 'system', 'patient' or 'group:<Group id>'",
            )
        params = []
        if types:
            params.append(("_type", ",".join(check_type(t) for t in types)))
        if since:
            params.append(("_since", since))
        params.extend(("_typeFilter", f) for f in type_filters)
        url = self.url(path)
        resp = self.request(
            "GET", url, params=params, headers={"Accept": FHIR_JSON, "Prefer": "respond-async"}
        )
        resp.close()
        location = resp.headers.get("Content-Location")
        if resp.status_code != 202 or not location:
            raise FhirError(
                f"FHIR bulk export kick-off {self.log_path(url)} answered HTTP "
                f"{resp.status_code} without a Content-Location to poll.",
                fix="check that the server supports asynchronous $export (Bulk Data IG)",
                status=resp.status_code,
            )
        status_url = urljoin(resp.url, location)
        self._require_same_origin(status_url, "bulk export status URL")
        log.info("FHIR bulk export started (%s level, types %s)", level, ",".join(types) or "all")
        return status_url

    def wait_for_bulk_export(
        self, status_url: str, *, poll_interval: float = 2.0, timeout: float = 3600.0
    ) -> ExportManifest:
        """Poll a bulk export until its manifest is ready (honouring `Retry-After`)."""
        started = time.monotonic()
        last_progress = None
        while True:
            resp = self.request(
                "GET",
                status_url,
                headers={"Accept": "application/json"},
                retry_statuses=POLL_RETRYABLE_STATUSES,
            )
            if resp.status_code == 200:
                manifest = self._manifest(self._json(resp, "GET", status_url), status_url)
                log.info(
                    "FHIR bulk export complete after %.1f s: %d files (%s lines), %d error files",
                    time.monotonic() - started,
                    len(manifest.output),
                    sum(f.count or 0 for f in manifest.output),
                    len(manifest.error),
                )
                return manifest
            resp.close()
            if resp.status_code != 202:
                raise FhirError(
                    f"FHIR bulk export status {self.log_path(status_url)} answered HTTP "
                    f"{resp.status_code}; expected 202 (in progress) or 200 (done).",
                    fix="check that the server supports asynchronous $export (Bulk Data IG)",
                    status=resp.status_code,
                )
            progress = resp.headers.get("X-Progress")
            if progress and progress != last_progress:
                log.info("FHIR bulk export in progress: %s", progress[:100])
                last_progress = progress
            wait = parse_retry_after(resp.headers.get("Retry-After"))
            wait = poll_interval if wait is None else min(wait, self.retry_after_max)
            remaining = timeout - (time.monotonic() - started)
            if remaining <= 0:
                self.cancel_bulk_export(status_url)
                raise FhirError(
                    f"FHIR bulk export did not finish within {timeout:g} s (last progress: "
                    f"{last_progress or 'none'}); it was cancelled.",
                    fix="raise the export timeout, or narrow it with types or since",
                )
            self._sleep(max(0.05, min(wait, remaining)))

    def cancel_bulk_export(self, status_url: str) -> None:
        """DELETE the export's status URL (best effort; errors are logged, not raised)."""
        try:
            self.request("DELETE", status_url, headers={"Accept": "application/json"}).close()
        except FhirError as exc:
            log.warning("Could not cancel the FHIR bulk export: HTTP %s", exc.status)

    def _manifest(self, doc: dict[str, Any], status_url: str) -> ExportManifest:
        requires = doc.get("requiresAccessToken")
        requires = requires if isinstance(requires, bool) else None

        def files(key: str) -> list[ExportFile]:
            out = []
            for item in doc.get(key) or []:
                if isinstance(item, dict) and item.get("url"):
                    count = item.get("count")
                    out.append(
                        ExportFile(
                            type=str(item.get("type") or ""),
                            url=urljoin(status_url, str(item["url"])),
                            count=count if isinstance(count, int) else None,
                            requires_access_token=requires,
                        )
                    )
            return out

        if not isinstance(doc.get("output"), list):
            raise FhirError(
                "FHIR bulk export manifest has no 'output' list.",
                fix="check that the server implements the Bulk Data IG manifest",
            )
        return ExportManifest(
            status_url, doc.get("transactionTime"), requires, files("output"), files("error")
        )

    def bulk_export(
        self,
        types: Sequence[str],
        *,
        since: str | None = None,
        poll_interval: float = 2.0,
        timeout: float = 3600.0,
        level: str = "system",
    ) -> list[ExportFile]:
        """Run `$export` to completion; returns the output files (error files are logged)."""
        status_url = self.start_bulk_export(types, since=since, level=level)
        manifest = self.wait_for_bulk_export(
            status_url, poll_interval=poll_interval, timeout=timeout
        )
        if manifest.error:
            log.warning(
                "FHIR bulk export reported %d error file(s) (OperationOutcome)", len(manifest.error)
            )
        return manifest.output

    def iter_export_ndjson(
        self, file: ExportFile, *, max_line_bytes: int = DEFAULT_MAX_LINE_BYTES
    ) -> Iterator[bytes | LineTooLong]:
        """The non-blank lines of one exported NDJSON file, as raw bytes, streamed; a line
        longer than `max_line_bytes` comes as a LineTooLong, never held."""
        url = urljoin(self.base_url + "/", file.url)
        send_token = file.requires_access_token
        if send_token is None:
            send_token = self._same_origin(url)
        resp = self.request(
            "GET", url, headers={"Accept": FHIR_NDJSON}, stream=True, authenticate=send_token
        )
        started, lines, size = time.monotonic(), 0, 0

        def counted(chunks: Iterable[bytes]) -> Iterator[bytes]:
            nonlocal size
            for chunk in chunks:
                size += len(chunk)
                yield chunk

        try:
            chunks = counted(resp.iter_content(chunk_size=1 << 16))
            for line in split_lines(chunks, max_line_bytes=max_line_bytes):
                lines += 1
                yield line
        except requests.RequestException as exc:
            raise FhirError(
                f"Download of the {file.type or 'NDJSON'} export file broke after {lines} lines: "
                f"{describe_failure(exc, self.timeout)}.",
                fix="run the export again; check the network and the server's file storage",
            ) from None
        finally:
            resp.close()
        log.info(
            "FHIR bulk export file %s: %d lines, %.1f MB in %.1f s",
            file.type or "?", lines, size / 1e6, time.monotonic() - started,
        )  # fmt: skip
