"""Fetch the bytes of a DocumentReference attachment, deny-by-default.

- inline `data` (base64);
- `file://` only under an allowed root (symlinks and `..` resolved before the check);
- `http(s)://` only on an allowed host (`host` or `host:port`), redirects followed only to
  allowed hosts;
- `s3://bucket/key` through the Airflow AWS connection;
- `Binary/<id>` (or an absolute URL of the source FHIR server's Binary) through the FHIR client.

A problem with one record raises `QuarantineError` (the record is set aside with its reason);
a problem with the infrastructure (S3 credentials, FHIR server down) propagates and fails the
task, so a retry can succeed instead of quarantining every image.
"""

from __future__ import annotations

import base64
import binascii
import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urljoin, urlsplit

from patient_ml.curation.quarantine import QuarantineError

MAX_REDIRECTS = 5


@dataclass(frozen=True)
class FetchPolicy:
    allowed_file_roots: tuple[Path, ...] = ()
    allowed_http_hosts: tuple[str, ...] = ()
    max_bytes: int = 50_000_000
    http_timeout: float = 30.0
    aws_conn_id: str = "aws_default"

    @classmethod
    def from_env(cls) -> FetchPolicy:
        """PATIENT_ML_ALLOWED_FILE_ROOTS (os.pathsep-separated folders) and
        PATIENT_ML_ALLOWED_HTTP_HOSTS (comma-separated `host` or `host:port`)."""
        roots = os.environ.get("PATIENT_ML_ALLOWED_FILE_ROOTS", "")
        hosts = os.environ.get("PATIENT_ML_ALLOWED_HTTP_HOSTS", "")
        return cls(
            allowed_file_roots=tuple(Path(r) for r in roots.split(os.pathsep) if r.strip()),
            allowed_http_hosts=tuple(h.strip().lower() for h in hosts.split(",") if h.strip()),
        )


@dataclass
class ImageFetcher:
    policy: FetchPolicy
    fhir_client: Any = None
    _local: threading.local = field(default_factory=threading.local, repr=False)

    def __post_init__(self) -> None:
        self._roots = tuple(os.path.realpath(r) for r in self.policy.allowed_file_roots)

    def fetch(self, attachment: dict[str, Any]) -> bytes:
        data = attachment.get("data")
        if data:
            return self._inline(data)
        url = str(attachment.get("url") or "").strip()
        scheme = urlsplit(url).scheme.lower()
        if scheme == "file":
            return self._file(url)
        if scheme in {"http", "https"}:
            if self._is_fhir_binary(url):
                return self._binary(url)
            return self._http(url)
        if scheme == "s3":
            return self._s3(url)
        if not scheme and url.startswith("Binary/"):
            return self._binary(url)
        raise QuarantineError("url_not_allowed", f"scheme {scheme or '(none)'!r}")

    # inline -------------------------------------------------------------------------------
    def _inline(self, data: Any) -> bytes:
        text = str(data)
        if len(text) * 3 // 4 > self.policy.max_bytes + 3:
            raise QuarantineError("image_too_large", f"inline data > {self.policy.max_bytes} B")
        try:
            return base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError):
            raise QuarantineError("invalid_inline_data") from None

    # file:// ------------------------------------------------------------------------------
    def _file(self, url: str) -> bytes:
        parts = urlsplit(url)
        if parts.netloc not in {"", "localhost"}:
            raise QuarantineError("url_not_allowed", f"file URL with host {parts.netloc!r}")
        real = os.path.realpath(unquote(parts.path))
        if not any(_is_under(real, root) for root in self._roots):
            detail = "no allowed roots configured" if not self._roots else "outside allowed roots"
            raise QuarantineError("path_outside_allowed_roots", detail)
        try:
            if os.path.isdir(real):
                raise QuarantineError("image_not_found", "a directory, not a file")
            size = os.stat(real).st_size
            if size > self.policy.max_bytes:
                raise QuarantineError("image_too_large", f"{size} B > {self.policy.max_bytes} B")
            with open(real, "rb") as fh:
                return fh.read(self.policy.max_bytes + 1)
        except FileNotFoundError:
            raise QuarantineError("image_not_found", "no such file") from None
        except PermissionError:
            raise QuarantineError("image_unreachable", "permission denied") from None

    # http(s):// ---------------------------------------------------------------------------
    def _session(self) -> Any:
        session = getattr(self._local, "session", None)
        if session is None:
            import requests

            session = requests.Session()
            self._local.session = session
        return session

    def _check_host(self, url: str) -> None:
        parts = urlsplit(url)
        host = (parts.hostname or "").lower()
        with_port = f"{host}:{parts.port}" if parts.port else host
        allowed = self.policy.allowed_http_hosts
        if host not in allowed and with_port not in allowed:
            raise QuarantineError("url_not_allowed", f"host {with_port!r} is not allowed")

    def _http(self, url: str) -> bytes:
        import requests

        for _ in range(MAX_REDIRECTS + 1):
            self._check_host(url)
            try:
                resp = self._session().get(
                    url, stream=True, allow_redirects=False, timeout=self.policy.http_timeout
                )
            except requests.RequestException as exc:
                raise QuarantineError("image_unreachable", type(exc).__name__) from None
            with resp:
                if resp.is_redirect and resp.headers.get("Location"):
                    url = urljoin(url, resp.headers["Location"])
                    continue
                if resp.status_code in {404, 410}:
                    raise QuarantineError("image_not_found", f"HTTP {resp.status_code}")
                if resp.status_code >= 400:
                    raise QuarantineError("image_unreachable", f"HTTP {resp.status_code}")
                return self._read_limited(resp)
        raise QuarantineError("image_unreachable", f"more than {MAX_REDIRECTS} redirects")

    def _read_limited(self, resp: Any) -> bytes:
        limit = self.policy.max_bytes
        length = resp.headers.get("Content-Length")
        if length and length.isdigit() and int(length) > limit:
            raise QuarantineError("image_too_large", f"{length} B > {limit} B")
        chunks, size = [], 0
        try:
            for chunk in resp.iter_content(chunk_size=1 << 16):
                size += len(chunk)
                if size > limit:
                    raise QuarantineError("image_too_large", f"> {limit} B")
                chunks.append(chunk)
        except OSError as exc:
            raise QuarantineError("image_unreachable", type(exc).__name__) from None
        return b"".join(chunks)

    # s3:// --------------------------------------------------------------------------------
    def _s3(self, url: str) -> bytes:
        from patient_ml.storage import ArtifactNotFoundError, ArtifactTooLargeError, read_s3_url

        try:
            return read_s3_url(
                url, aws_conn_id=self.policy.aws_conn_id, max_bytes=self.policy.max_bytes
            )
        except ArtifactNotFoundError:
            raise QuarantineError("image_not_found", "no such S3 object") from None
        except ArtifactTooLargeError:
            raise QuarantineError("image_too_large", f"> {self.policy.max_bytes} B") from None

    # FHIR Binary --------------------------------------------------------------------------
    def _is_fhir_binary(self, url: str) -> bool:
        base = getattr(self.fhir_client, "base_url", None)
        return bool(base) and url.startswith(base.rstrip("/") + "/Binary/")

    def _binary(self, reference: str) -> bytes:
        from patient_ml.fhir.client import (
            FhirNotFoundError,
            FhirReferenceError,
            FhirTooLargeError,
        )

        if self.fhir_client is None:
            raise QuarantineError(
                "url_not_allowed", "a Binary reference needs a FHIR server source"
            )
        try:
            content, _type = self.fhir_client.read_binary(
                reference, max_bytes=self.policy.max_bytes
            )
        except FhirNotFoundError:
            raise QuarantineError("image_not_found", "no such Binary") from None
        except FhirTooLargeError:
            raise QuarantineError("image_too_large", f"> {self.policy.max_bytes} B") from None
        except FhirReferenceError:
            raise QuarantineError("url_not_allowed", "not a Binary/<id> reference") from None
        return content


def _is_under(path: str, root: str) -> bool:
    try:
        return os.path.commonpath([path, root]) == root
    except ValueError:
        return False


def policy_with(
    base: FetchPolicy,
    *,
    allowed_file_roots: Sequence[str] | None = None,
    allowed_http_hosts: Sequence[str] | None = None,
    max_bytes: int | None = None,
    aws_conn_id: str | None = None,
) -> FetchPolicy:
    """`base` with the given settings replaced (operator/CLI arguments over environment)."""
    return FetchPolicy(
        allowed_file_roots=tuple(Path(r) for r in allowed_file_roots)
        if allowed_file_roots is not None
        else base.allowed_file_roots,
        allowed_http_hosts=tuple(h.lower() for h in allowed_http_hosts)
        if allowed_http_hosts is not None
        else base.allowed_http_hosts,
        max_bytes=max_bytes if max_bytes is not None else base.max_bytes,
        http_timeout=base.http_timeout,
        aws_conn_id=aws_conn_id or base.aws_conn_id,
    )
