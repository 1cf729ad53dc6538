"""A FHIR R4 REST client on `requests`, for operators (through `FhirHook`), the CLI and tools.

    client = FhirClient("https://fhir.example.org/fhir", BearerAuth("..."), page_size=200)
    for doc in client.search("DocumentReference", {"type": "http://loinc.org|24590-2"}):
        ...

- Search streams every page (`_count` = page_size, `link[next]`, same server only) and sends
  `Prefer: handling=strict`, so a server that does not know a search parameter refuses the
  search instead of silently ignoring the filter and returning everything.
- Bulk `$export` (kick-off, polling with `Retry-After`, manifest, NDJSON download as raw lines).
- Auth: none, bearer token, HTTP basic, OAuth2 client credentials (token fetched lazily, cached
  until shortly before it expires, fetched again once when the server answers 401).
- Retries: 429, 500, 502, 503, 504, connection errors and timeouts, with exponential backoff and
  jitter, honouring `Retry-After` up to `retry_after_max`. Requests that may create something
  (POST create and transaction) are retried only when the server cannot have acted on them
  (429, 503, connection not established). Other 4xx fail at once.
- Logging (logger `patient_ml.fhir`): methods, paths with resource ids masked, statuses,
  counts and rates; never bodies, query strings or ids.
"""

from __future__ import annotations

import base64
import binascii
import email.utils
import logging
import random
import re
import threading
import time
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, ClassVar
from urllib.parse import quote, urlencode, urljoin, urlsplit

import orjson
import requests
from urllib3.exceptions import NewConnectionError

from patient_ml.exceptions import PatientMLError

log = logging.getLogger("patient_ml.fhir")

FHIR_JSON = "application/fhir+json"
FHIR_NDJSON = "application/fhir+ndjson"
JSON_CONTENT_TYPES = ("application/fhir+json", "application/json", "application/json+fhir")
RETRYABLE_STATUSES = frozenset({429, 500, 502, 503, 504})
# A 500 from a bulk-export status endpoint means the export failed; polling again will not help.
POLL_RETRYABLE_STATUSES = frozenset({429, 502, 503, 504})
# Statuses that say the server did not act on the request, so even a POST may be repeated.
NOT_PROCESSED_STATUSES = frozenset({429, 503})
LOG_EVERY_PAGES = 5

_RESOURCE_TYPE = re.compile(r"^[A-Z][A-Za-z]{1,63}$")
_RESOURCE_ID = re.compile(r"^[A-Za-z0-9\-.]{1,64}$")
_ERRNO = re.compile(r"\[Errno -?\d+\][^'\")]*")


# ---------------------------------------------------------------------------------------------
# Errors


class FhirError(PatientMLError):
    """A FHIR server could not be reached or refused a request; `status` is its HTTP status."""

    exit_code = 1
    http_status = 502

    def __init__(self, message: str, *, fix: str | None = None, status: int | None = None) -> None:
        self.status = status
        super().__init__(message, fix=fix)


class FhirConfigError(FhirError):
    """The client or the Airflow connection is set up wrongly (URL, auth, limits)."""

    exit_code = 3
    http_status = 400


class FhirAuthError(FhirError):
    """The server or the OAuth2 token endpoint refused the credentials (401/403)."""


class FhirNotFoundError(FhirError):
    exit_code = 4
    http_status = 404


class FhirTooLargeError(FhirError):
    """A download is larger than the caller's limit."""


class FhirReferenceError(FhirError):
    """A reference or URL is not of a form this client can follow (e.g. not Binary/<id>)."""


class FhirConflictError(FhirError):
    """The resource changed on the server since it was read (409/412 on a versioned update)."""

    exit_code = 5
    http_status = 409


class FhirTransactionError(FhirError):
    """A transaction-response holds entries that did not succeed; `failures` lists them."""

    def __init__(self, message: str, *, failures: list[str], fix: str | None = None) -> None:
        self.failures = failures
        super().__init__(message, fix=fix)


# ---------------------------------------------------------------------------------------------
# Authentication


@dataclass(frozen=True)
class NoAuth:
    kind: ClassVar[str] = "none"


@dataclass(frozen=True)
class BearerAuth:
    token: str = field(repr=False)
    kind: ClassVar[str] = "bearer"


@dataclass(frozen=True)
class BasicAuth:
    username: str
    password: str = field(repr=False)
    kind: ClassVar[str] = "basic"


@dataclass(frozen=True)
class ClientCredentialsAuth:
    """OAuth2 client credentials grant; the secret goes in HTTP basic (or the form body)."""

    token_url: str
    client_id: str
    client_secret: str = field(repr=False)
    scope: str | None = None
    secret_in_body: bool = False
    kind: ClassVar[str] = "client_credentials"


FhirAuth = NoAuth | BearerAuth | BasicAuth | ClientCredentialsAuth
AUTH_TYPES = ("none", "bearer", "basic", "client_credentials")


def make_auth(
    auth_type: str = "none",
    *,
    token: str | None = None,
    username: str | None = None,
    password: str | None = None,
    token_url: str | None = None,
    client_id: str | None = None,
    client_secret: str | None = None,
    scope: str | None = None,
) -> FhirAuth:
    """Build an auth object from simple parameters (as an Airflow connection holds them)."""
    kind = (auth_type or "none").strip().lower().replace("-", "_")

    def need(name: str, value: str | None) -> str:
        if not value:
            raise FhirConfigError(
                f"FHIR auth_type {kind!r} needs {name!r}, which is empty.",
                fix=f"set {name} (or choose another auth_type: {', '.join(AUTH_TYPES)})",
            )
        return value

    if kind == "none":
        return NoAuth()
    if kind == "bearer":
        return BearerAuth(need("token", token))
    if kind == "basic":
        return BasicAuth(need("username", username), need("password", password))
    if kind == "client_credentials":
        url = need("token_url", token_url)
        if urlsplit(url).scheme not in ("http", "https"):
            raise FhirConfigError(
                f"FHIR OAuth2 token_url {url!r} is not an http(s) URL.",
                fix="give the full token endpoint URL, e.g. https://auth.example.org/oauth2/token",
            )
        return ClientCredentialsAuth(
            url, need("client_id", client_id), need("client_secret", client_secret), scope or None
        )
    raise FhirConfigError(
        f"Unknown FHIR auth_type {auth_type!r}.", fix=f"use one of: {', '.join(AUTH_TYPES)}"
    )


def _coerce_auth(auth: FhirAuth | str | tuple[str, str] | None) -> FhirAuth:
    if auth is None:
        return NoAuth()
    if isinstance(auth, NoAuth | BearerAuth | BasicAuth | ClientCredentialsAuth):
        return auth
    if isinstance(auth, str):
        return BearerAuth(auth)
    if isinstance(auth, tuple) and len(auth) == 2:
        return BasicAuth(str(auth[0]), str(auth[1]))
    raise FhirConfigError(
        f"FHIR client auth of type {type(auth).__name__} is not supported.",
        fix="pass NoAuth(), BearerAuth(token), BasicAuth(user, password), "
        "ClientCredentialsAuth(token_url, client_id, client_secret) or make_auth(...)",
    )


def _basic_header(username: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode("ascii")


# ---------------------------------------------------------------------------------------------
# Bulk export results


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


# ---------------------------------------------------------------------------------------------
# Small helpers (no PHI in logs: paths with ids masked, never queries or bodies)


def parse_retry_after(value: str | None) -> float | None:
    """Seconds to wait from a `Retry-After` header (delta-seconds or HTTP-date), or None."""
    if not value:
        return None
    text = value.strip()
    try:
        return max(0.0, float(text))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


def _origin(url: str) -> tuple[str, str, int]:
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    return scheme, (parts.hostname or "").lower(), parts.port or (443 if scheme == "https" else 80)


def _show_origin(origin: tuple[str, str, int]) -> str:
    return f"{origin[0]}://{origin[1]}:{origin[2]}"


def _check_type(resource_type: str) -> str:
    if not isinstance(resource_type, str) or not _RESOURCE_TYPE.match(resource_type):
        raise FhirConfigError(
            f"{resource_type!r} is not a FHIR resource type.",
            fix="use a resource type name such as 'DocumentReference' or 'Observation'",
        )
    return resource_type


def _check_id(resource_type: str, resource_id: Any) -> str:
    if not isinstance(resource_id, str) or not _RESOURCE_ID.match(resource_id):
        raise FhirConfigError(
            f"{resource_type} id {resource_id!r} is not a valid FHIR id.",
            fix="ids are 1-64 characters of A-Z, a-z, 0-9, '-' and '.'",
        )
    return resource_id


def _query_pairs(
    params: Mapping[str, Any] | Iterable[tuple[str, Any]] | None,
) -> list[tuple[str, str]]:
    if params is None:
        return []
    items = params.items() if isinstance(params, Mapping) else params
    pairs: list[tuple[str, str]] = []
    for key, value in items:
        values = value if isinstance(value, list | tuple) else [value]
        pairs.extend((str(key), str(v)) for v in values if v is not None)
    return pairs


def _status_code(status_text: Any) -> int | None:
    match = re.match(r"\s*(\d{3})", str(status_text or ""))
    return int(match.group(1)) if match else None


def _outcome_text(doc: Any, limit: int = 3) -> str | None:
    """Diagnostics of an OperationOutcome (or an OAuth2 error), never the whole body."""
    if not isinstance(doc, dict):
        return None
    if doc.get("resourceType") == "OperationOutcome":
        texts = []
        for issue in doc.get("issue") or []:
            if not isinstance(issue, dict):
                continue
            text = issue.get("diagnostics") or (issue.get("details") or {}).get("text")
            text = text or issue.get("code")
            if text:
                text = str(text)
                texts.append(text if len(text) <= 300 else text[:297] + "...")
        return "; ".join(texts[:limit]) or None
    if isinstance(doc.get("error"), str):
        description = doc.get("error_description")
        return f"{doc['error']}: {description}" if description else doc["error"]
    return None


def _response_outcome(resp: requests.Response) -> str | None:
    content_type = resp.headers.get("Content-Type", "").lower()
    if "json" not in content_type:
        return None
    try:
        return _outcome_text(orjson.loads(resp.content[:1_000_000]))
    except (orjson.JSONDecodeError, requests.RequestException):
        return None


def _describe_exception(exc: requests.RequestException, timeout: tuple[float, float]) -> str:
    """A short, URL-free description (requests' own messages carry the query string)."""
    if isinstance(exc, requests.ConnectTimeout):
        return f"connecting timed out after {timeout[0]:g} s"
    if isinstance(exc, requests.ReadTimeout):
        return f"no answer within the read timeout of {timeout[1]:g} s"
    if isinstance(exc, requests.exceptions.SSLError):
        return "the TLS handshake failed (certificate not trusted?)"
    if isinstance(exc, requests.ConnectionError):
        match = _ERRNO.search(str(exc))
        if match:
            return f"connection failed ({match.group(0).strip()})"
        return "the connection failed or was closed by the server"
    return type(exc).__name__


def _retryable_exception(exc: requests.RequestException, idempotent: bool) -> bool:
    if isinstance(exc, requests.exceptions.SSLError):
        return False
    if isinstance(exc, requests.ConnectTimeout):
        return True
    if not isinstance(exc, requests.ConnectionError | requests.Timeout):
        return False
    if idempotent:
        return True
    reason = getattr(exc.args[0], "reason", None) if exc.args else None
    return isinstance(reason, NewConnectionError)  # never reached the server


def _split_lines(chunks: Iterable[bytes]) -> Iterator[bytes]:
    """Non-blank lines of a byte stream, without their LF / CRLF; a last line may lack one."""
    pending = b""
    for chunk in chunks:
        if not chunk:
            continue
        pending += chunk
        *lines, pending = pending.split(b"\n")
        for line in lines:
            line = line.rstrip(b"\r")
            if line.strip():
                yield line
    if pending.strip():
        yield pending.rstrip(b"\r")


# ---------------------------------------------------------------------------------------------
# The client


class FhirClient:
    """FHIR R4 REST client for one server (`base_url` includes the FHIR path, e.g. /fhir)."""

    def __init__(
        self,
        base_url: str,
        auth: FhirAuth | str | tuple[str, str] | None = None,
        *,
        timeout: float | tuple[float, float] = 30.0,
        max_retries: int = 5,
        backoff_base: float = 0.5,
        backoff_max: float = 30.0,
        retry_after_max: float = 120.0,
        page_size: int = 500,
        verify: bool | str = True,
        strict_search: bool = True,
        session: requests.Session | None = None,
    ) -> None:
        parts = urlsplit(str(base_url or "").strip())
        if parts.scheme not in ("http", "https") or not parts.hostname or parts.query:
            raise FhirConfigError(
                f"FHIR base URL {base_url!r} is not an http(s) URL without a query.",
                fix="give the full base URL with scheme and path, e.g. https://fhir.example.org/fhir",
            )
        self.base_url = str(base_url).strip().rstrip("/")
        self._base_path = parts.path.rstrip("/")
        self.auth = _coerce_auth(auth)
        connect, read = timeout if isinstance(timeout, tuple | list) else (timeout, timeout)
        self.timeout = (float(connect), float(read))
        self.max_retries = int(max_retries)
        self.backoff_base = float(backoff_base)
        self.backoff_max = float(backoff_max)
        self.retry_after_max = float(retry_after_max)
        self.page_size = int(page_size)
        self.strict_search = strict_search
        for name, value, low in (
            ("timeout", min(self.timeout), 0.001),
            ("max_retries", self.max_retries, 0),
            ("backoff_base", self.backoff_base, 0),
            ("retry_after_max", self.retry_after_max, 0),
            ("page_size", self.page_size, 1),
        ):
            if value < low:
                raise FhirConfigError(
                    f"FHIR client setting {name}={value!r} is too small.",
                    fix=f"use a value of at least {low}",
                )
        self.session = session or requests.Session()
        self.session.verify = verify
        self.session.headers.setdefault("User-Agent", "patient-ml-fhir-client")
        self._sleep = time.sleep
        self._token: str | None = None
        self._token_refresh_at = 0.0
        self._token_lock = threading.Lock()
        self._capabilities: dict[str, Any] | None = None

    def __repr__(self) -> str:
        return f"FhirClient({self.base_url!r}, auth={self.auth.kind})"

    def __enter__(self) -> FhirClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        self.session.close()

    # -- URLs and logging ----------------------------------------------------------------------

    def url(self, path: str) -> str:
        """Absolute URL of a path relative to the base (`Patient/1`, `metadata`, `$export`)."""
        return f"{self.base_url}/{path.lstrip('/')}"

    def _same_origin(self, url: str) -> bool:
        return _origin(url) == _origin(self.base_url)

    def _require_same_origin(self, url: str, what: str) -> None:
        if not self._same_origin(url):
            raise FhirError(
                f"Refusing to follow the {what} to {_show_origin(_origin(url))}: it leaves the "
                f"FHIR server {_show_origin(_origin(self.base_url))}.",
                fix="the server advertises another address than the connection's base URL; "
                "correct the server's public base URL or use the address it advertises",
            )

    def log_path(self, url: str) -> str:
        """The path of a URL for logs and errors: no query, resource ids masked as {id}."""
        path = urlsplit(url).path
        prefix = ""
        if self._base_path and path.startswith(self._base_path + "/"):
            prefix, path = self._base_path, path[len(self._base_path) :]
        segments = path.split("/")
        for i in range(1, len(segments)):
            previous, segment = segments[i - 1], segments[i]
            is_id = bool(segment) and segment[0] not in "$_" and segment != "{id}"
            if is_id and (_RESOURCE_TYPE.match(previous) or previous == "_history"):
                segments[i] = "{id}"
        return prefix + "/".join(segments)

    # -- HTTP core -----------------------------------------------------------------------------

    def _authorization(self) -> str | None:
        auth = self.auth
        if isinstance(auth, BearerAuth):
            return f"Bearer {auth.token}"
        if isinstance(auth, BasicAuth):
            return _basic_header(auth.username, auth.password)
        if isinstance(auth, ClientCredentialsAuth):
            return f"Bearer {self._access_token()}"
        return None

    def _backoff(self, attempt: int) -> float:
        ceiling = min(self.backoff_max, self.backoff_base * 2 ** (attempt - 1))
        return ceiling / 2 + random.uniform(0, ceiling / 2)

    def _retry_wait(self, resp: requests.Response, attempt: int) -> float:
        retry_after = parse_retry_after(resp.headers.get("Retry-After"))
        if retry_after is None:
            return self._backoff(attempt)
        return min(retry_after, self.retry_after_max)

    def request(
        self,
        method: str,
        url: str,
        *,
        params: Any = None,
        body: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        stream: bool = False,
        idempotent: bool | None = None,
        authenticate: bool = True,
        retry_statuses: Collection[int] = RETRYABLE_STATUSES,
    ) -> requests.Response:
        """Send one request with retries; returns a response below 400, else raises FhirError."""
        method = method.upper()
        if idempotent is None:
            idempotent = method in ("GET", "HEAD", "PUT", "DELETE", "OPTIONS")
        path = self.log_path(url)
        retries = 0
        refreshed_token = False
        while True:
            send_headers = {"Accept": FHIR_JSON, **(headers or {})}
            if authenticate:
                authorization = self._authorization()
                if authorization:
                    send_headers["Authorization"] = authorization
            started = time.monotonic()
            try:
                resp = self.session.request(
                    method,
                    url,
                    params=params,
                    data=body,
                    headers=send_headers,
                    timeout=self.timeout,
                    stream=stream,
                )
            except requests.RequestException as exc:
                reason = _describe_exception(exc, self.timeout)
                if not _retryable_exception(exc, idempotent) or retries >= self.max_retries:
                    raise self._unreachable(method, url, reason, retries, exc) from None
                retries += 1
                wait = self._backoff(retries)
                log.warning(
                    "FHIR %s %s: %s; retry %d/%d in %.1f s",
                    method, path, reason, retries, self.max_retries, wait,
                )  # fmt: skip
                self._sleep(wait)
                continue
            status = resp.status_code
            log.debug(
                "FHIR %s %s -> %d in %.2f s", method, path, status, time.monotonic() - started
            )
            if (
                status == 401
                and authenticate
                and isinstance(self.auth, ClientCredentialsAuth)
                and not refreshed_token
            ):
                resp.close()
                refreshed_token = True
                self._forget_token()
                log.info("FHIR %s %s answered 401; fetching a new access token", method, path)
                continue
            retry_allowed = idempotent or status in NOT_PROCESSED_STATUSES
            if status in retry_statuses and retry_allowed and retries < self.max_retries:
                retries += 1
                wait = self._retry_wait(resp, retries)
                resp.close()
                log.warning(
                    "FHIR %s %s answered HTTP %d; retry %d/%d in %.1f s",
                    method, path, status, retries, self.max_retries, wait,
                )  # fmt: skip
                self._sleep(wait)
                continue
            if status >= 400:
                error = self._http_error(method, url, resp, retries)
                resp.close()
                raise error
            return resp

    def _unreachable(
        self, method: str, url: str, reason: str, retries: int, exc: Exception
    ) -> FhirError:
        attempts = retries + 1
        where = _show_origin(_origin(url))
        if isinstance(exc, requests.exceptions.SSLError):
            fix = "set verify to the CA bundle that signed the server's certificate (a file path)"
        elif isinstance(exc, requests.ConnectionError | requests.Timeout):
            fix = (
                f"check that the server is up and the base URL {self.base_url} is right; for a "
                f"slow server raise timeout (now {self.timeout[1]:g} s) or max_retries "
                f"(now {self.max_retries})"
            )
        else:
            fix = "check the URL and the client settings"
        noun = "attempt" if attempts == 1 else "attempts"
        return FhirError(
            f"Cannot reach the FHIR server at {where} for {method} {self.log_path(url)}: "
            f"{reason} ({attempts} {noun}).",
            fix=fix,
        )

    def _http_error(
        self, method: str, url: str, resp: requests.Response, retries: int
    ) -> FhirError:
        status = resp.status_code
        detail = _response_outcome(resp)
        text = f"FHIR server answered {method} {self.log_path(url)} with HTTP {status}"
        if resp.reason:
            text += f" {resp.reason}"
        if retries:
            text += f" after {retries} {'retry' if retries == 1 else 'retries'}"
        text += f": {detail}" if detail else ""
        text += "" if text.endswith((".", "!", "?")) else "."
        cls: type[FhirError] = FhirError
        if status in (401, 403):
            cls = FhirAuthError
            fix = (
                "check the FHIR connection's credentials (auth_type, token, login/password or "
                "client id/secret and token_url)"
                if status == 401
                else "grant this client access to the resource type on the FHIR server (scopes)"
            )
        elif status in (404, 410):
            cls = FhirNotFoundError
            fix = (
                "check the resource type and id, and that the base URL includes the FHIR path "
                "(e.g. https://host/fhir)"
            )
        elif status in (409, 412):
            cls = FhirConflictError
            fix = "the resource changed on the server: read it again, re-apply the change, retry"
        elif status in (405, 501):
            fix = "the server does not offer this interaction; see GET [base]/metadata"
        elif status == 429:
            fix = "the server is rate limiting; lower the request rate or raise max_retries"
        elif status >= 500:
            fix = "the FHIR server failed; check its health and logs, or retry later"
        else:
            fix = "correct the request as the server's diagnostics say"
        return cls(text, fix=fix, status=status)

    def _json(self, resp: requests.Response, method: str, url: str) -> dict[str, Any]:
        try:
            doc = orjson.loads(resp.content)
        except orjson.JSONDecodeError:
            doc = None
        if not isinstance(doc, dict):
            content_type = resp.headers.get("Content-Type", "none")
            raise FhirError(
                f"FHIR server answered {method} {self.log_path(url)} with HTTP "
                f"{resp.status_code} but not with a JSON resource (Content-Type {content_type!r}).",
                fix="check that the base URL points at the FHIR endpoint (e.g. https://host/fhir)",
                status=resp.status_code,
            )
        return doc

    def _expect_type(self, doc: dict[str, Any], resource_type: str, what: str) -> dict[str, Any]:
        if doc.get("resourceType") != resource_type:
            raise FhirError(
                f"FHIR server answered {what} with a {doc.get('resourceType')!r} instead of a "
                f"{resource_type}.",
                fix="check that the base URL points at a FHIR R4 server",
            )
        return doc

    # -- OAuth2 client credentials ---------------------------------------------------------

    def access_token(self) -> str:
        """The OAuth2 access token in use (fetched when missing or about to expire)."""
        if not isinstance(self.auth, ClientCredentialsAuth):
            raise FhirConfigError(
                f"FHIR client auth is {self.auth.kind!r}; only client_credentials has tokens.",
                fix="configure auth_type client_credentials with token_url, client id and secret",
            )
        return self._access_token()

    def _access_token(self) -> str:
        with self._token_lock:
            if self._token is None or time.monotonic() >= self._token_refresh_at:
                self._token, self._token_refresh_at = self._fetch_token()
            return self._token

    def _forget_token(self) -> None:
        with self._token_lock:
            self._token = None

    def _fetch_token(self) -> tuple[str, float]:
        auth = self.auth
        assert isinstance(auth, ClientCredentialsAuth)
        form = {"grant_type": "client_credentials"}
        if auth.scope:
            form["scope"] = auth.scope
        headers = {
            "Accept": "application/json",
            "Content-Type": "application/x-www-form-urlencoded",
        }
        if auth.secret_in_body:
            form.update(client_id=auth.client_id, client_secret=auth.client_secret)
        else:
            headers["Authorization"] = _basic_header(
                quote(auth.client_id, safe=""), quote(auth.client_secret, safe="")
            )
        where = f"OAuth2 token endpoint {_show_origin(_origin(auth.token_url))}"
        fix = (
            "check the client id and secret (login/password of the connection), token_url and scope"
        )
        try:
            resp = self.request(
                "POST",
                auth.token_url,
                body=urlencode(form).encode(),
                headers=headers,
                authenticate=False,
                idempotent=True,
            )
        except (FhirAuthError, FhirNotFoundError, FhirConflictError) as exc:
            raise FhirAuthError(
                f"The {where} refused client {auth.client_id!r}: {exc.message}",
                fix=fix,
                status=exc.status,
            ) from None
        except FhirError as exc:
            if exc.status is None or exc.status >= 500:
                raise
            raise FhirAuthError(
                f"The {where} refused client {auth.client_id!r}: {exc.message}",
                fix=fix,
                status=exc.status,
            ) from None
        try:
            doc = orjson.loads(resp.content)
        except orjson.JSONDecodeError:
            doc = None
        token = doc.get("access_token") if isinstance(doc, dict) else None
        if not isinstance(token, str) or not token:
            raise FhirAuthError(
                f"The {where} answered without an access_token for client {auth.client_id!r}.",
                fix="check token_url points at the OAuth2 token endpoint",
            )
        try:
            expires_in = float(doc.get("expires_in", 300))
        except (TypeError, ValueError):
            expires_in = 300.0
        margin = min(60.0, expires_in * 0.1)
        log.info("Fetched an OAuth2 access token (expires in %.0f s)", expires_in)
        return token, time.monotonic() + max(0.0, expires_in - margin)

    # -- reading -------------------------------------------------------------------------------

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
        url = self.url(f"{_check_type(resource_type)}/{_check_id(resource_type, resource_id)}")
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
        _check_id("Binary", segments[1])
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
                f"{_describe_exception(exc, self.timeout)}.",
                fix="retry; check the network and the FHIR server",
            ) from None
        return b"".join(chunks)

    def _too_large(self, url: str, max_bytes: int) -> FhirError:
        return FhirTooLargeError(
            f"FHIR {self.log_path(url)} is larger than the limit of {max_bytes} bytes.",
            fix="raise the size limit if such files are expected",
        )

    # -- search --------------------------------------------------------------------------------

    def search_pages(
        self,
        resource_type: str,
        params: Mapping[str, Any] | Sequence[tuple[str, Any]] | None = None,
    ) -> Iterator[dict[str, Any]]:
        """Every searchset Bundle of a search, following `link[next]` on this server."""
        query = _query_pairs(params)
        if not any(key == "_count" for key, _ in query):
            query.append(("_count", str(self.page_size)))
        headers = {"Prefer": "handling=strict"} if self.strict_search else {}
        url = self.url(_check_type(resource_type))
        seen: set[str] = set()
        first = True
        while True:
            resp = self.request("GET", url, params=query if first else None, headers=headers)
            bundle = self._expect_type(
                self._json(resp, "GET", url), "Bundle", f"search {resource_type}"
            )
            seen.add(resp.url)
            yield bundle
            next_link = next(
                (
                    link.get("url")
                    for link in bundle.get("link") or []
                    if isinstance(link, dict) and link.get("relation") == "next"
                ),
                None,
            )
            if not next_link:
                return
            url = urljoin(resp.url, str(next_link))
            self._require_same_origin(url, f"{resource_type} search's next-page link")
            if url in seen:
                raise FhirError(
                    f"FHIR search {resource_type}: the next-page link repeats a page already "
                    f"read ({len(seen)} pages so far).",
                    fix="the server's paging is broken; report it to the server's operators",
                )
            first = False

    def search(
        self,
        resource_type: str,
        params: Mapping[str, Any] | Sequence[tuple[str, Any]] | None = None,
        *,
        modes: Collection[str] = ("match",),
    ) -> Iterator[dict[str, Any]]:
        """Every resource of every page whose `search.mode` is in `modes` (missing = match)."""
        started = time.monotonic()
        pages = count = 0
        for bundle in self.search_pages(resource_type, params):
            pages += 1
            if pages == 1 and isinstance(bundle.get("total"), int):
                log.info("FHIR search %s: %d matches on the server", resource_type, bundle["total"])
            issues = 0
            for entry in bundle.get("entry") or []:
                if not isinstance(entry, dict):
                    continue
                mode = (entry.get("search") or {}).get("mode") or "match"
                resource = entry.get("resource")
                if mode == "outcome" and isinstance(resource, dict):
                    issues += len(resource.get("issue") or [])
                if mode in modes and isinstance(resource, dict):
                    count += 1
                    yield resource
            if issues:
                log.warning(
                    "FHIR search %s: the server reported %d issue(s) on page %d",
                    resource_type, issues, pages,
                )  # fmt: skip
            if pages % LOG_EVERY_PAGES == 0:
                self._log_progress(f"FHIR search {resource_type}", pages, count, started)
        self._log_progress(f"FHIR search {resource_type} done", pages, count, started)

    @staticmethod
    def _log_progress(what: str, pages: int, count: int, started: float) -> None:
        elapsed = max(time.monotonic() - started, 1e-6)
        log.info(
            "%s: %d pages, %d resources in %.1f s (%.0f/s)",
            what, pages, count, elapsed, count / elapsed,
        )  # fmt: skip

    # -- writing -------------------------------------------------------------------------------

    def create(self, resource: Mapping[str, Any]) -> dict[str, Any]:
        """POST [base]/Type; returns the stored resource (with its id and meta.versionId)."""
        resource_type = _check_type(str(resource.get("resourceType", "")))
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
        resource_type = _check_type(str(resource.get("resourceType", "")))
        if not resource.get("id"):
            raise FhirConfigError(
                f"Cannot update a {resource_type} without an id.",
                fix="use create() for a new resource, or set resource['id']",
            )
        url = self.url(f"{resource_type}/{_check_id(resource_type, resource['id'])}")
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
            code = _status_code(response.get("status"))
            if code is None or not 200 <= code < 300:
                detail = _outcome_text(response.get("outcome"))
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

    # -- bulk export ---------------------------------------------------------------------------

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
            path = f"Group/{_check_id('Group', level[len('group:') :])}/$export"
        else:
            raise FhirConfigError(
                f"Unknown bulk export level {level!r}.",
                fix="use 'system', 'patient' or 'group:<Group id>'",
            )
        params = []
        if types:
            params.append(("_type", ",".join(_check_type(t) for t in types)))
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

    def iter_export_ndjson(self, file: ExportFile) -> Iterator[bytes]:
        """The non-blank lines of one exported NDJSON file, as raw bytes, streamed."""
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
            for line in _split_lines(counted(resp.iter_content(chunk_size=1 << 16))):
                lines += 1
                yield line
        except requests.RequestException as exc:
            raise FhirError(
                f"Download of the {file.type or 'NDJSON'} export file broke after {lines} lines: "
                f"{_describe_exception(exc, self.timeout)}.",
                fix="run the export again; check the network and the server's file storage",
            ) from None
        finally:
            resp.close()
        log.info(
            "FHIR bulk export file %s: %d lines, %.1f MB in %.1f s",
            file.type or "?", lines, size / 1e6, time.monotonic() - started,
        )  # fmt: skip
