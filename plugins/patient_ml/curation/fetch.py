"""Fetch the bytes of a DocumentReference attachment, deny-by-default.

- inline `data` (base64, whitespace allowed), or the scratch file it was decoded into while the
  record was read (`curation.inline.SpilledData`);
- `file://` only under an allowed root (symlinks and `..` resolved before the check), regular
  files only (a FIFO, device or socket is refused without being opened);
- `http(s)://` only on an allowed host (`host` or `host:port`), redirects followed only to
  allowed hosts. The URL is parsed once, strictly (no userinfo, backslash, control character,
  non-ASCII character, bad port or bad IPv6 literal), and the connection goes to exactly the
  host and port that were checked;
- `s3://bucket/key` through the Airflow AWS connection;
- `Binary/<id>` (or an absolute URL of the source FHIR server's Binary) through the FHIR client.

Every fetch has a total deadline (connect, redirects and all reads):
PATIENT_ML_FETCH_DEADLINE_SECONDS.

A problem with one record raises `QuarantineError` (the record is set aside with its reason),
including an unexpected one (`image_fetch_error`, with the error's class); a problem with the
infrastructure (S3 credentials, FHIR server down) propagates and fails the task, so a retry can
succeed instead of quarantining every image.
"""

from __future__ import annotations

import contextlib
import errno
import http.client
import ipaddress
import os
import re
import socket
import stat
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import unquote, urljoin

from patient_ml.curation import inline
from patient_ml.curation.inline import SpilledData
from patient_ml.curation.quarantine import QuarantineError, unexpected_errors_quarantined
from patient_ml.fhir.errors import FhirNotFoundError, FhirReferenceError, FhirTooLargeError
from patient_ml.settings import env_number, setting
from patient_ml.storage import ArtifactNotFoundError, ArtifactTooLargeError, read_s3_url

if TYPE_CHECKING:
    import ssl

    from patient_ml.fhir.client import FhirClient

MAX_REDIRECTS = 5
DEFAULT_DEADLINE = 60.0
_CHUNK = 1 << 16
_UNSAFE_CHARS = re.compile(r"[\x00-\x20\x7f\\]")  # controls, space, DEL, backslash
_CONTROL_CHARS = re.compile(r"[\x00-\x1f\x7f\\]")
_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*):")
_HTTP_URL = re.compile(r"(?i)(https?)://([^/?#]*)([^#]*)(?:#.*)?")
_HOST_LABEL = re.compile(r"[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?")
_PORT = re.compile(r"[0-9]{1,5}")
_S3_URL = re.compile(r"s3://([a-z0-9][a-z0-9.-]{1,61}[a-z0-9])/(.{1,1024})")


@dataclass(frozen=True)
class FetchPolicy:
    allowed_file_roots: tuple[Path, ...] = ()
    allowed_http_hosts: tuple[str, ...] = ()
    max_bytes: int = 50_000_000
    http_timeout: float = 30.0  # each connect or read; the whole fetch is bounded by `deadline`
    deadline: float = DEFAULT_DEADLINE  # seconds for one fetch: connect, redirects, all reads
    aws_conn_id: str = "aws_default"

    @classmethod
    def from_env(cls) -> FetchPolicy:
        """PATIENT_ML_ALLOWED_FILE_ROOTS (os.pathsep-separated folders),
        PATIENT_ML_ALLOWED_HTTP_HOSTS (comma-separated `host` or `host:port`) and
        PATIENT_ML_FETCH_DEADLINE_SECONDS (total seconds for one fetch, default 60)."""
        roots = setting("PATIENT_ML_ALLOWED_FILE_ROOTS") or ""
        hosts = setting("PATIENT_ML_ALLOWED_HTTP_HOSTS") or ""
        return cls(
            allowed_file_roots=tuple(Path(r) for r in roots.split(os.pathsep) if r.strip()),
            allowed_http_hosts=tuple(h.strip().lower() for h in hosts.split(",") if h.strip()),
            deadline=deadline_from_env(),
        )


def deadline_from_env() -> float:
    return env_number("PATIENT_ML_FETCH_DEADLINE_SECONDS", DEFAULT_DEADLINE, low=0.1, high=3600)


@dataclass(frozen=True)
class HttpTarget:
    """One strictly parsed http(s) URL: what is checked is what is connected to."""

    scheme: str  # http | https
    host: str  # lower-case name, dotted IPv4 or IPv6 (without brackets)
    port: int
    path: str  # path and query, starting with "/"

    @property
    def is_ipv6(self) -> bool:
        return ":" in self.host

    @property
    def authority(self) -> str:
        host = f"[{self.host}]" if self.is_ipv6 else self.host
        return f"{host}:{self.port}"

    @property
    def url(self) -> str:
        return f"{self.scheme}://{self.authority}{self.path}"


def parse_http_url(url: str) -> HttpTarget:
    """`url` as an HttpTarget, or QuarantineError("url_malformed") for anything ambiguous."""
    if not url.isascii() or _UNSAFE_CHARS.search(url):
        raise _malformed("control character, space, backslash or non-ASCII character")
    match = _HTTP_URL.fullmatch(url)
    if match is None:
        raise _malformed("not scheme://host[:port]/path")
    scheme, authority, rest = match.group(1).lower(), match.group(2), match.group(3)
    if "@" in authority:
        raise _malformed("user information in the authority")
    if authority.startswith("["):
        host, sep, port_text = authority[1:].partition("]")
        if not sep or (port_text and not port_text.startswith(":")):
            raise _malformed("bad IPv6 literal")
        try:
            host = str(ipaddress.IPv6Address(host))
        except ValueError:
            raise _malformed("bad IPv6 literal") from None
        port_text = port_text[1:] if port_text else None
    else:
        host, sep, port_text = authority.partition(":")
        port_text = port_text if sep else None
        host = _checked_host(host.lower())
    default = 443 if scheme == "https" else 80
    if port_text is None:
        port = default
    elif not _PORT.fullmatch(port_text) or not 1 <= int(port_text) <= 65535:
        raise _malformed("port is not a number from 1 to 65535")
    else:
        port = int(port_text)
    path = rest if rest.startswith("/") else "/" + rest
    return HttpTarget(scheme, host, port, path)


def _checked_host(host: str) -> str:
    labels = host.split(".")
    if not host or len(host) > 253 or not all(_HOST_LABEL.fullmatch(x) for x in labels):
        raise _malformed("bad host name")
    if labels[-1].isdigit() or labels[-1].startswith("0x"):  # numeric: dotted-quad IPv4 only
        try:
            ipaddress.IPv4Address(host)
        except ValueError:
            raise _malformed("bad IPv4 address") from None
    return host


def _malformed(detail: str) -> QuarantineError:
    return QuarantineError("url_malformed", detail)


class ImageFetcher:
    def __init__(self, policy: FetchPolicy, fhir_client: FhirClient | None = None) -> None:
        self.policy = policy
        self.fhir_client = fhir_client
        self._roots = tuple(os.path.realpath(r) for r in policy.allowed_file_roots)

    def fetch(self, attachment: dict[str, Any]) -> bytes:
        """The attachment's bytes; QuarantineError for anything wrong with this one record."""
        with unexpected_errors_quarantined("image_fetch_error"):
            if isinstance(attachment, SpilledData):  # decoded while its record was read
                return attachment.read(self.policy.max_bytes)
            data = attachment.get("data")
            if data:
                return self._inline(data)
            url = str(attachment.get("url") or "").strip()
            match = _SCHEME.match(url)
            scheme = match.group(1).lower() if match else ""
            if scheme == "file":
                return self._file(url)
            if scheme in {"http", "https"} and not self._is_fhir_binary(url):
                return self._http(url)
            if scheme == "s3":
                match = _S3_URL.fullmatch(url)
                if match is None or _CONTROL_CHARS.search(url) or match.group(2).endswith("/"):
                    raise _malformed("not s3://bucket/key with a valid bucket name and key")
            elif not (scheme in {"http", "https"} or (not scheme and url.startswith("Binary/"))):
                shown = scheme[:20] or "(none)"
                raise QuarantineError("url_not_allowed", f"scheme {shown!r}")
        # S3 and the FHIR server: their infrastructure errors (credentials, server down)
        # propagate and fail the task; their per-record errors are QuarantineErrors.
        return self._s3(url) if scheme == "s3" else self._binary(url)

    # inline -------------------------------------------------------------------------------
    def _inline(self, data: object) -> bytes:
        """base64Binary, whitespace allowed (MIME line breaks), decoded a piece at a time."""
        return inline.decode(data, self.policy.max_bytes)

    # file:// ------------------------------------------------------------------------------
    def _file(self, url: str) -> bytes:
        rest = url[len("file:") :]
        if not rest.startswith("//"):
            raise _malformed("file URL without //")
        host, slash, path = rest[2:].partition("/")
        if host not in {"", "localhost"}:
            shown = host if not _UNSAFE_CHARS.search(host) and len(host) < 100 else "…"
            raise QuarantineError("url_not_allowed", f"file URL with host {shown!r}")
        if _CONTROL_CHARS.search(path):
            raise _malformed("control character or backslash in the path")
        try:
            path = unquote(slash + path.partition("?")[0].partition("#")[0], errors="strict")
        except UnicodeDecodeError:
            raise _malformed("the path is not UTF-8") from None
        if _CONTROL_CHARS.search(path):
            raise _malformed("control character (e.g. %00) or backslash in the path")
        try:
            real = os.path.realpath(path)
            if not any(_is_under(real, root) for root in self._roots):
                detail = "outside allowed roots" if self._roots else "no allowed roots configured"
                raise QuarantineError("path_outside_allowed_roots", detail)
            return self._read_regular_file(real)
        except FileNotFoundError:
            raise QuarantineError("image_not_found", "no such file") from None
        except PermissionError:
            raise QuarantineError("image_unreachable", "permission denied") from None
        except OSError as exc:  # ELOOP, ENAMETOOLONG, ENOTDIR, EIO, ...
            name = errno.errorcode.get(exc.errno or 0, type(exc).__name__)
            raise QuarantineError("image_unreachable", name) from None

    def _read_regular_file(self, real: str) -> bytes:
        """Only a regular file is opened; a FIFO, device or socket is refused from its stat."""
        limit = self.policy.max_bytes
        _check_regular(os.stat(real), limit)
        flags = os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
        fd = os.open(real, flags)
        try:
            _check_regular(os.fstat(fd), limit)  # what was opened, even if swapped since the stat
            chunks, size = [], 0
            while chunk := os.read(fd, _CHUNK):
                size += len(chunk)
                if size > limit:
                    raise QuarantineError("image_too_large", f"> {limit} B")
                chunks.append(chunk)
            return b"".join(chunks)
        finally:
            os.close(fd)

    # http(s):// ---------------------------------------------------------------------------
    def _check_host(self, target: HttpTarget) -> None:
        allowed = self.policy.allowed_http_hosts
        names = {target.host, f"{target.host}:{target.port}"}
        if target.is_ipv6:
            names |= {f"[{target.host}]", target.authority}
        if not names & set(allowed):
            raise QuarantineError("url_not_allowed", f"host {target.authority!r} is not allowed")

    def _http(self, url: str) -> bytes:
        deadline = time.monotonic() + self.policy.deadline
        target = parse_http_url(url)
        for _ in range(MAX_REDIRECTS + 1):
            self._check_host(target)
            location, body = _HttpExchange(target, deadline, self.policy).run()
            if location is None:
                return body
            try:
                joined = urljoin(target.url, location)
            except ValueError:
                raise _malformed("bad redirect location") from None
            target = parse_http_url(joined)
        raise QuarantineError("image_unreachable", f"more than {MAX_REDIRECTS} redirects")

    # s3:// --------------------------------------------------------------------------------
    def _s3(self, url: str) -> bytes:
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
        return isinstance(base, str) and url.startswith(base.rstrip("/") + "/Binary/")

    def _binary(self, reference: str) -> bytes:
        if self.fhir_client is None:
            raise QuarantineError(
                "url_not_allowed", "a Binary reference needs a FHIR server source"
            )
        try:
            content: bytes
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


class _HttpExchange:
    """One GET to exactly `target.host:target.port`, within the fetch's deadline.

    http.client (not a client that re-parses the URL) connects to the host and port that were
    checked. Each connect and read has `http_timeout`; a watchdog shuts the socket down when the
    deadline passes, so a server trickling a byte at a time cannot hold the fetch longer.
    """

    def __init__(self, target: HttpTarget, deadline: float, policy: FetchPolicy) -> None:
        self.target, self.deadline, self.policy = target, deadline, policy
        self.expired = threading.Event()

    def run(self) -> tuple[str | None, bytes]:
        """(redirect location, b"") or (None, body)."""
        remaining = self.deadline - time.monotonic()
        if remaining <= 0:
            raise self._timeout()
        conn = self._connection(min(self.policy.http_timeout, remaining))
        watchdog = threading.Timer(remaining, self._expire, args=(conn,))
        watchdog.daemon = True
        watchdog.start()
        try:
            conn.connect()  # name resolution and connect; the watchdog can shut it from here on
            if self.expired.is_set():
                raise self._timeout()
            conn.request(
                "GET",
                self.target.path,
                headers={"Accept-Encoding": "identity", "User-Agent": "patient-ml-curation"},
            )
            resp = conn.getresponse()
            outcome = self._outcome(resp)
        except (OSError, http.client.HTTPException) as exc:
            if self.expired.is_set():
                raise self._timeout() from None
            raise QuarantineError("image_unreachable", type(exc).__name__) from None
        finally:
            watchdog.cancel()
            conn.close()
        if self.expired.is_set():  # the body may look complete after the socket was shut
            raise self._timeout()
        return outcome

    def _connection(self, timeout: float) -> http.client.HTTPConnection:
        target = self.target
        if target.scheme == "https":
            return http.client.HTTPSConnection(
                target.host, target.port, timeout=timeout, context=_tls_context()
            )
        return http.client.HTTPConnection(target.host, target.port, timeout=timeout)

    def _outcome(self, resp: http.client.HTTPResponse) -> tuple[str | None, bytes]:
        status = resp.status
        location = resp.getheader("Location")
        if status in {301, 302, 303, 307, 308} and location:
            return location, b""
        if status in {404, 410}:
            raise QuarantineError("image_not_found", f"HTTP {status}")
        if status >= 300:
            raise QuarantineError("image_unreachable", f"HTTP {status}")
        limit = self.policy.max_bytes
        length = resp.getheader("Content-Length") or ""
        if length.isdigit() and int(length) > limit:
            raise QuarantineError("image_too_large", f"{length} B > {limit} B")
        if (resp.getheader("Content-Encoding") or "identity").lower() != "identity":
            raise QuarantineError("image_unreachable", "content-encoding other than identity")
        chunks, size = [], 0
        while chunk := resp.read1(_CHUNK):
            size += len(chunk)
            if size > limit:
                raise QuarantineError("image_too_large", f"> {limit} B")
            chunks.append(chunk)
            if time.monotonic() > self.deadline:
                raise self._timeout()
        return None, b"".join(chunks)

    def _expire(self, conn: http.client.HTTPConnection) -> None:
        self.expired.set()
        sock = conn.sock
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def _timeout(self) -> QuarantineError:
        return QuarantineError(
            "image_fetch_timeout", f"no complete response within {self.policy.deadline:g} s"
        )


_TLS: list[ssl.SSLContext] = []


def _tls_context() -> ssl.SSLContext:
    """Certificates as `requests` verifies them: REQUESTS_CA_BUNDLE, else certifi's bundle."""
    if not _TLS:
        import ssl

        import certifi

        cafile = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE")
        _TLS.append(ssl.create_default_context(cafile=cafile or certifi.where()))
    return _TLS[0]


def _check_regular(info: os.stat_result, limit: int) -> None:
    if not stat.S_ISREG(info.st_mode):
        kind = "a directory" if stat.S_ISDIR(info.st_mode) else "a FIFO, device or socket"
        raise QuarantineError("image_not_found", f"{kind}, not a regular file")
    if info.st_size > limit:
        raise QuarantineError("image_too_large", f"{info.st_size} B > {limit} B")


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
        deadline=base.deadline,
        aws_conn_id=aws_conn_id or base.aws_conn_id,
    )


class ImageFetching(Protocol):
    """The seam curation and the label service fetch image and mask bytes through
    (`ImageFetcher` implements it with the fetch policy's checks). During curation an
    attachment with inline data arrives as a `SpilledData` (its data decoded into a scratch
    file while the record was read), which an implementation reads back."""

    def fetch(self, attachment: dict[str, Any]) -> bytes: ...
