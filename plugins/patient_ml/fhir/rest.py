"""FHIR REST interactions on single resources: capabilities, read, Binary download, create,
update (with `If-Match`) and transactions."""

from __future__ import annotations

import base64
import binascii
import logging
import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

import orjson
import requests

from patient_ml.fhir.errors import (
    FhirConfigError,
    FhirConflictError,
    FhirError,
    FhirReferenceError,
    FhirTooLargeError,
    FhirTransactionError,
)
from patient_ml.fhir.transport import (
    FHIR_JSON,
    JSON_CONTENT_TYPES,
    FhirTransport,
    check_id,
    check_type,
    describe_failure,
    outcome_text,
)

log = logging.getLogger("patient_ml.fhir")


def status_code(status_text: object) -> int | None:
    match = re.match(r"\s*(\d{3})", str(status_text or ""))
    return int(match.group(1)) if match else None


class FhirRest(FhirTransport):
    """Read and write interactions of a FHIR client."""

    def capabilities(self, *, refresh: bool = False) -> dict[str, Any]:
        """The server's CapabilityStatement (GET [base]/metadata), cached."""
        if self._capabilities is None or refresh:
            url = self.url("metadata")
            doc = self._json(self.request("GET", url), "GET", url)
            self._capabilities = self._expect_type(doc, "CapabilityStatement", "GET metadata")
        return self._capabilities

    def supports_bulk_export(self) -> bool:
        """True when the CapabilityStatement offers the `export` operation (or bulk data IG)."""
        statement = self.capabilities()
        if any("bulk-data" in str(c) for c in statement.get("instantiates") or []):
            return True
        for rest in statement.get("rest") or []:
            operations = list(rest.get("operation") or [])
            for resource in rest.get("resource") or []:
                operations.extend(resource.get("operation") or [])
            if any(str(op.get("name", "")).lstrip("$") == "export" for op in operations):
                return True
        return False

    def read(self, resource_type: str, resource_id: str) -> dict[str, Any]:
        """GET [base]/Type/id; FhirNotFoundError when it does not exist (or was deleted)."""
        url = self.url(f"{check_type(resource_type)}/{check_id(resource_type, resource_id)}")
        doc = self._json(self.request("GET", url), "GET", url)
        return self._expect_type(doc, resource_type, f"GET {resource_type}/{{id}}")

    def read_binary(
        self, reference_or_url: str, *, max_bytes: int | None = None
    ) -> tuple[bytes, str]:
        """Content and content type of a `Binary/<id>` (relative or absolute on this server).

        Asks for the raw content (`Accept: */*`); a server answering with the Binary resource
        in JSON has its base64 `data` decoded. `max_bytes` stops an oversized download early.
        """
        url = self._binary_url(reference_or_url)
        resp = self.request("GET", url, headers={"Accept": "*/*"}, stream=True)
        try:
            content = self._read_limited(resp, url, max_bytes)
        finally:
            resp.close()
        content_type = resp.headers.get("Content-Type", "application/octet-stream")
        content_type = content_type.split(";")[0].strip().lower() or "application/octet-stream"
        if content_type not in JSON_CONTENT_TYPES:
            return content, content_type
        try:
            doc = orjson.loads(content)
        except orjson.JSONDecodeError:
            return content, content_type
        if not isinstance(doc, dict) or doc.get("resourceType") != "Binary":
            return content, content_type
        data = doc.get("data")
        if not isinstance(data, str):
            raise FhirError(
                f"FHIR {self.log_path(url)} is a Binary without data.",
                fix="store the content in Binary.data (base64) or use another attachment URL",
            )
        try:
            raw = base64.b64decode(data, validate=True)
        except (binascii.Error, ValueError):
            raise FhirError(
                f"FHIR {self.log_path(url)} has a Binary.data that is not valid base64.",
                fix="re-upload the Binary with base64-encoded data",
            ) from None
        if max_bytes is not None and len(raw) > max_bytes:
            raise self._too_large(url, max_bytes)
        return raw, str(doc.get("contentType") or "application/octet-stream").lower()

    def _binary_url(self, reference_or_url: str) -> str:
        ref = str(reference_or_url or "").strip()
        if ref.startswith(("http://", "https://")):
            self._require_same_origin(ref, "Binary reference")
            path = urlsplit(ref).path
            if "/Binary/" not in path:
                raise FhirReferenceError(
                    f"{self.log_path(ref)} is not a FHIR Binary URL.",
                    fix="reference the image as Binary/<id> or [base]/Binary/<id>",
                )
            return ref
        segments = ref.split("/")
        if len(segments) not in (2, 4) or segments[0] != "Binary":
            raise FhirReferenceError(
                "Attachment reference is not of the form Binary/<id>.",
                fix="reference the image as Binary/<id> or [base]/Binary/<id>",
            )
        check_id("Binary", segments[1])
        if len(segments) == 4 and segments[2] != "_history":
            raise FhirReferenceError(
                "Attachment reference is not of the form Binary/<id>/_history/<version>.",
                fix="reference the image as Binary/<id>",
            )
        return self.url(ref)

    def _read_limited(self, resp: requests.Response, url: str, max_bytes: int | None) -> bytes:
        chunks, size = [], 0
        try:
            for chunk in resp.iter_content(chunk_size=1 << 16):
                size += len(chunk)
                if max_bytes is not None and size > max_bytes:
                    raise self._too_large(url, max_bytes)
                chunks.append(chunk)
        except requests.RequestException as exc:
            raise FhirError(
                f"Download of {self.log_path(url)} broke after {size} bytes: "
                f"{describe_failure(exc, self.timeout)}.",
                fix="retry; check the network and the FHIR server",
            ) from None
        return b"".join(chunks)

    def _too_large(self, url: str, max_bytes: int) -> FhirError:
        return FhirTooLargeError(
            f"FHIR {self.log_path(url)} is larger than the limit of {max_bytes} bytes.",
            fix="raise the size limit if such files are expected",
        )

    # -- writing -------------------------------------------------------------------------------

    def create(self, resource: Mapping[str, Any]) -> dict[str, Any]:
        """POST [base]/Type; returns the stored resource (with its id and meta.versionId)."""
        resource_type = check_type(str(resource.get("resourceType", "")))
        url = self.url(resource_type)
        resp = self.request(
            "POST",
            url,
            body=orjson.dumps(resource),
            headers={"Content-Type": FHIR_JSON, "Prefer": "return=representation"},
        )
        return self._written(resp, resource_type, "POST")

    def update(self, resource: Mapping[str, Any]) -> dict[str, Any]:
        """PUT [base]/Type/id, with `If-Match` when `meta.versionId` is set.

        A resource changed on the server since that version raises FhirConflictError.
        """
        resource_type = check_type(str(resource.get("resourceType", "")))
        if not resource.get("id"):
            raise FhirConfigError(
                f"Cannot update a {resource_type} without an id.",
                fix="use create() for a new resource, or set resource['id']",
            )
        url = self.url(f"{resource_type}/{check_id(resource_type, resource['id'])}")
        headers = {"Content-Type": FHIR_JSON, "Prefer": "return=representation"}
        version = (resource.get("meta") or {}).get("versionId")
        if version:
            headers["If-Match"] = f'W/"{version}"'
        try:
            resp = self.request("PUT", url, body=orjson.dumps(resource), headers=headers)
        except FhirConflictError as exc:
            raise FhirConflictError(
                f"Cannot update {resource_type} (version {version}): it was changed on the "
                f"server since that version was read. {exc.message}",
                fix="read the resource again, re-apply the change and update with the new version",
                status=exc.status,
            ) from None
        return self._written(resp, resource_type, "PUT")

    def _written(self, resp: requests.Response, resource_type: str, method: str) -> dict[str, Any]:
        if resp.content.strip():
            doc = self._json(resp, method, resp.url)
            if doc.get("resourceType") == resource_type:
                return doc
        location = resp.headers.get("Location") or resp.headers.get("Content-Location") or ""
        segments = urlsplit(location).path.split("/")
        if resource_type in segments[:-1]:
            index = segments.index(resource_type)
            return self.read(resource_type, segments[index + 1])
        raise FhirError(
            f"FHIR server answered {method} {resource_type} without the resource and without a "
            "Location header.",
            fix="configure the server to honour 'Prefer: return=representation'",
            status=resp.status_code,
        )

    def transaction(self, bundle: Mapping[str, Any]) -> dict[str, Any]:
        """POST a transaction Bundle; every entry must succeed (2xx), else FhirTransactionError."""
        if bundle.get("resourceType") != "Bundle" or bundle.get("type") != "transaction":
            raise FhirConfigError(
                f"transaction() needs a Bundle of type 'transaction' (got "
                f"{bundle.get('resourceType')!r} of type {bundle.get('type')!r}).",
                fix="set resourceType 'Bundle' and type 'transaction'",
            )
        sent = len(bundle.get("entry") or [])
        resp = self.request(
            "POST", self.base_url, body=orjson.dumps(bundle), headers={"Content-Type": FHIR_JSON}
        )
        doc = self._json(resp, "POST", self.base_url)
        if doc.get("resourceType") != "Bundle" or doc.get("type") != "transaction-response":
            raise FhirError(
                f"FHIR server answered a transaction with a {doc.get('resourceType')!r} of type "
                f"{doc.get('type')!r} instead of a transaction-response Bundle.",
                fix="check that the server supports transactions (CapabilityStatement)",
            )
        entries = doc.get("entry") or []
        failures = []
        for index, entry in enumerate(entries):
            response = (entry or {}).get("response") or {}
            code = status_code(response.get("status"))
            if code is None or not 200 <= code < 300:
                detail = outcome_text(response.get("outcome"))
                failures.append(
                    f"entry {index}: {response.get('status') or 'no status'}"
                    + (f" ({detail})" if detail else "")
                )
        if len(entries) != sent:
            failures.append(f"{len(entries)} response entries for {sent} request entries")
        if failures:
            raise FhirTransactionError(
                f"FHIR transaction of {sent} entries did not fully succeed: " + "; ".join(failures),
                failures=failures,
                fix="correct the failing entries and send the transaction again",
            )
        log.info("FHIR transaction: %d entries committed", sent)
        return doc
