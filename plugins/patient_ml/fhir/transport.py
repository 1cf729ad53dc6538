"""The FHIR client's HTTP layer: one `requests` session whose adapter retries through urllib3's
`Retry`, authentication headers, and errors that name the server, the masked path and the fix.

- Retries: 429, 500, 502, 503, 504, connection errors and timeouts, with exponential backoff and
  jitter, honouring `Retry-After` up to `retry_after_max`. Requests that may create something
  (POST create and transaction) are retried only when the server cannot have acted on them
  (429, 503, connection not established). Other 4xx fail at once.
- Logging (logger `patient_ml.fhir`): methods, paths with resource ids masked, statuses,
  counts and rates; never bodies, query strings or ids.
"""

from __future__ import annotations

import email.utils
import logging
import random
import re
import time
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import UTC, datetime
from types import TracebackType
from typing import TYPE_CHECKING, Any, ParamSpec, Self, TypeVar
from urllib.parse import urlsplit

import orjson
import requests
from requests.adapters import HTTPAdapter
from urllib3.exceptions import (
    ConnectTimeoutError,
    NewConnectionError,
    ProtocolError,
    ReadTimeoutError,
)
from urllib3.exceptions import SSLError as Urllib3SSLError
from urllib3.util.retry import Retry

if TYPE_CHECKING:
    from urllib3.connectionpool import ConnectionPool
    from urllib3.response import BaseHTTPResponse

from patient_ml.fhir.auth import (
    BasicAuth,
    BearerAuth,
    ClientCredentialsAuth,
    ClientCredentialsTokens,
    FhirAuth,
    basic_header,
    coerce_auth,
)
from patient_ml.fhir.errors import (
    FhirAuthError,
    FhirConfigError,
    FhirConflictError,
    FhirError,
    FhirNotFoundError,
)
from patient_ml.fhir.ndjson import LineTooLong

log = logging.getLogger("patient_ml.fhir")
P = ParamSpec("P")
R = TypeVar("R")

FHIR_JSON = "application/fhir+json"
FHIR_NDJSON = "application/fhir+ndjson"
JSON_CONTENT_TYPES = ("application/fhir+json", "application/json", "application/json+fhir")
RETRYABLE_STATUSES = frozenset({429, 500, 502, 503, 504})
# Statuses that say the server did not act on the request, so even a POST may be repeated.
NOT_PROCESSED_STATUSES = frozenset({429, 503})
IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "PUT", "DELETE", "OPTIONS", "TRACE"})

RESOURCE_TYPE = re.compile(r"^[A-Z][A-Za-z]{1,63}$")
_RESOURCE_ID = re.compile(r"^[A-Za-z0-9\-.]{1,64}$")
_ERRNO = re.compile(r"\[Errno -?\d+\][^'\")]*")


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


def origin(url: str) -> tuple[str, str, int]:
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    return scheme, (parts.hostname or "").lower(), parts.port or (443 if scheme == "https" else 80)


def show_origin(where: tuple[str, str, int]) -> str:
    return f"{where[0]}://{where[1]}:{where[2]}"


def check_type(resource_type: str) -> str:
    if not isinstance(resource_type, str) or not RESOURCE_TYPE.match(resource_type):
        raise FhirConfigError(
            f"{resource_type!r} is not a FHIR resource type.",
            fix="use a resource type name such as 'DocumentReference' or 'Observation'",
        )
    return resource_type


def check_id(resource_type: str, resource_id: object) -> str:
    if not isinstance(resource_id, str) or not _RESOURCE_ID.match(resource_id):
        raise FhirConfigError(
            f"{resource_type} id {resource_id!r} is not a valid FHIR id.",
            fix="ids are 1-64 characters of A-Z, a-z, 0-9, '-' and '.'",
        )
    return resource_id


def outcome_text(doc: object, limit: int = 3) -> str | None:
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
        return outcome_text(orjson.loads(resp.content[:1_000_000]))
    except (orjson.JSONDecodeError, requests.RequestException):
        return None


def describe_failure(exc: BaseException, timeout: tuple[float, float]) -> str:
    """A short, URL-free description of a requests or urllib3 error (their own messages carry
    the query string); a requests error wrapping urllib3's MaxRetryError is described by the
    error that exhausted the retries."""
    reason: Any = exc
    if isinstance(exc, requests.RequestException) and exc.args:
        reason = getattr(exc.args[0], "reason", exc.args[0])
    if isinstance(exc, requests.exceptions.SSLError) or isinstance(reason, Urllib3SSLError):
        return "the TLS handshake failed (certificate not trusted?)"
    connection_error = isinstance(exc, requests.ConnectionError | ProtocolError) or isinstance(
        reason, NewConnectionError | ProtocolError
    )
    if not isinstance(reason, NewConnectionError):
        if isinstance(exc, requests.ConnectTimeout) or isinstance(reason, ConnectTimeoutError):
            return f"connecting timed out after {timeout[0]:g} s"
        if isinstance(exc, requests.ReadTimeout) or isinstance(reason, ReadTimeoutError):
            return f"no answer within the read timeout of {timeout[1]:g} s"
    if connection_error:
        match = _ERRNO.search(str(reason)) or _ERRNO.search(str(exc))
        if match:
            return f"connection failed ({match.group(0).strip()})"
        return "the connection failed or was closed by the server"
    return type(exc).__name__


# ---------------------------------------------------------------------------------------------
# Retries: urllib3's Retry on the session's adapter, with this client's policy


@dataclass
class _Attempts:
    retries: int = 0


class FhirRetry(Retry):
    """urllib3 `Retry` with the FHIR client's policy and logging.

    - A method outside `allowed_methods` (POST) is retried on a status only when the status
      says the server did not act on it (429, 503); urllib3 already retries it on connection
      errors only when the request was never sent.
    - Backoff: exponential from `backoff_factor`, capped at `backoff_max`, "equal jitter"
      (half fixed, half random), from the first retry on; `Retry-After` (seconds, fractions or
      an HTTP date) wins, capped at `retry_after_cap` (the client's
      `retry_after_max`).
    - Each retry is logged with the method and the masked path (`label`), never the URL."""

    def __init__(
        self,
        *args: Any,
        label: str = "",
        describe: Callable[[BaseException], str] | None = None,
        attempts: _Attempts | None = None,
        retry_after_cap: float = 120.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.retry_after_cap = retry_after_cap
        self.label = label
        self.describe = describe or (lambda exc: type(exc).__name__)
        self.attempts = attempts if attempts is not None else _Attempts()
        self.planned_wait: float | None = None

    def new(self, **kw: object) -> Self:
        fresh = super().new(**kw)
        fresh.label, fresh.describe, fresh.attempts = self.label, self.describe, self.attempts
        fresh.retry_after_cap = self.retry_after_cap
        return fresh

    def is_retry(self, method: str, status_code: int, has_retry_after: bool = False) -> bool:
        if not self.total or status_code not in (self.status_forcelist or ()):
            return False
        return self._is_method_retryable(method) or status_code in NOT_PROCESSED_STATUSES

    def get_backoff_time(self) -> float:
        attempt = len(self.history)
        if attempt == 0:
            return 0.0
        ceiling = min(self.backoff_max, self.backoff_factor * 2 ** (attempt - 1))
        return float(ceiling / 2 + random.uniform(0, ceiling / 2))

    def get_retry_after(self, response: BaseHTTPResponse) -> float | None:
        seconds = parse_retry_after(response.headers.get("Retry-After"))
        return None if seconds is None else min(seconds, self.retry_after_cap)

    def increment(
        self,
        method: str | None = None,
        url: str | None = None,
        response: BaseHTTPResponse | None = None,
        error: Exception | None = None,
        _pool: ConnectionPool | None = None,
        _stacktrace: TracebackType | None = None,
    ) -> Self:
        fresh = super().increment(method, url, response, error, _pool, _stacktrace)
        wait = fresh.get_retry_after(response) if response is not None else None
        fresh.planned_wait = fresh.get_backoff_time() if wait is None else wait
        self.attempts.retries = len(fresh.history)
        limit = len(fresh.history) + (fresh.total or 0)
        if response is not None:
            log.warning(
                "FHIR %s answered HTTP %d; retry %d/%d in %.1f s",
                self.label, response.status, len(fresh.history), limit, fresh.planned_wait,
            )  # fmt: skip
        else:
            log.warning(
                "FHIR %s: %s; retry %d/%d in %.1f s",
                self.label, self.describe(error) if error else "error", len(fresh.history),
                limit, fresh.planned_wait,
            )  # fmt: skip
        return fresh

    def sleep(self, response: BaseHTTPResponse | None = None) -> None:
        wait = self.planned_wait if self.planned_wait is not None else self.get_backoff_time()
        if wait > 0:
            time.sleep(wait)


_RETRY_POLICY: ContextVar[Retry | None] = ContextVar("patient_ml_fhir_retry", default=None)


class RetryingAdapter(HTTPAdapter):
    """An HTTPAdapter whose `max_retries` is the policy of the request being sent (set by the
    transport for the duration of one `session.request`), else the adapter's own."""

    @property  # type: ignore[override]
    def max_retries(self) -> Retry:
        return _RETRY_POLICY.get() or self._default_retries

    @max_retries.setter
    def max_retries(self, value: Retry) -> None:
        self._default_retries = value


def mount_retrying_adapter(session: requests.Session) -> None:
    adapter = RetryingAdapter()
    session.mount("http://", adapter)
    session.mount("https://", adapter)


# ---------------------------------------------------------------------------------------------
# The transport


class FhirTransport:
    """Settings, session and the `request` core of a FHIR client for one server."""

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
        self.auth = coerce_auth(auth)
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
        mount_retrying_adapter(self.session)
        self._sleep = time.sleep
        self._capabilities: dict[str, Any] | None = None
        self._tokens: ClientCredentialsTokens | None = None
        if isinstance(self.auth, ClientCredentialsAuth):
            self._tokens = ClientCredentialsTokens(self.auth, timeout=self.timeout)
            self._tokens.session.verify = verify
            self._tokens.session.headers["User-Agent"] = "patient-ml-fhir-client"
            mount_retrying_adapter(self._tokens.session)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.base_url!r}, auth={self.auth.kind})"

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        self.session.close()
        if self._tokens is not None:
            self._tokens.session.close()

    # -- URLs and logging ----------------------------------------------------------------------

    def url(self, path: str) -> str:
        """Absolute URL of a path relative to the base (`Patient/1`, `metadata`, `$export`)."""
        return f"{self.base_url}/{path.lstrip('/')}"

    def _same_origin(self, url: str) -> bool:
        return origin(url) == origin(self.base_url)

    def _require_same_origin(self, url: str, what: str) -> None:
        if not self._same_origin(url):
            raise FhirError(
                f"Refusing to follow the {what} to {show_origin(origin(url))}: it leaves the "
                f"FHIR server {show_origin(origin(self.base_url))}.",
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
            if is_id and (RESOURCE_TYPE.match(previous) or previous == "_history"):
                segments[i] = "{id}"
        return prefix + "/".join(segments)

    # -- HTTP core -----------------------------------------------------------------------------

    def _retry_policy(
        self, method: str, label: str, idempotent: bool, statuses: Collection[int]
    ) -> FhirRetry:
        return FhirRetry(
            total=self.max_retries,
            other=0,  # TLS and other errors are not retried
            allowed_methods=IDEMPOTENT_METHODS | ({method} if idempotent else set()),
            status_forcelist=frozenset(statuses),
            backoff_factor=self.backoff_base,
            backoff_max=self.backoff_max,
            retry_after_cap=self.retry_after_max,
            raise_on_status=False,
            respect_retry_after_header=True,
            label=label,
            describe=lambda exc: describe_failure(exc, self.timeout),
        )

    @staticmethod
    def _send(policy: FhirRetry, send: Callable[P, R], *args: P.args, **kwargs: P.kwargs) -> R:
        """Call `send` (a session's request) with `policy` as its adapter's retries."""
        token = _RETRY_POLICY.set(policy)
        try:
            return send(*args, **kwargs)
        finally:
            _RETRY_POLICY.reset(token)

    def _authorization(self) -> str | None:
        auth = self.auth
        if isinstance(auth, BearerAuth):
            return f"Bearer {auth.token}"
        if isinstance(auth, BasicAuth):
            return basic_header(auth.username, auth.password)
        if isinstance(auth, ClientCredentialsAuth):
            return f"Bearer {self._access_token()}"
        return None

    def request(
        self,
        method: str,
        url: str,
        *,
        params: Sequence[tuple[str, str]] | None = None,
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
            idempotent = method in IDEMPOTENT_METHODS
        path = self.log_path(url)
        refreshed_token = False
        while True:
            send_headers = {"Accept": FHIR_JSON, **(headers or {})}
            if authenticate:
                authorization = self._authorization()
                if authorization:
                    send_headers["Authorization"] = authorization
            policy = self._retry_policy(method, f"{method} {path}", idempotent, retry_statuses)
            started = time.monotonic()
            try:
                resp: requests.Response = self._send(
                    policy,
                    self.session.request,
                    method,
                    url,
                    params=params,
                    data=body,
                    headers=send_headers,
                    timeout=self.timeout,
                    stream=stream,
                )
            except requests.RequestException as exc:
                reason = describe_failure(exc, self.timeout)
                raise self._unreachable(method, url, reason, policy.attempts.retries, exc) from None
            status = resp.status_code
            log.debug(
                "FHIR %s %s -> %d in %.2f s", method, path, status, time.monotonic() - started
            )
            if status == 401 and authenticate and self._tokens is not None and not refreshed_token:
                resp.close()
                refreshed_token = True
                self._tokens.invalidate()
                log.info("FHIR %s %s answered 401; fetching a new access token", method, path)
                continue
            if status >= 400:
                error = self._http_error(method, url, resp, policy.attempts.retries)
                resp.close()
                raise error
            return resp

    def _unreachable(
        self, method: str, url: str, reason: str, retries: int, exc: Exception
    ) -> FhirError:
        attempts = retries + 1
        where = show_origin(origin(url))
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

    # -- OAuth2 client credentials (authlib) ---------------------------------------------------

    def access_token(self) -> str:
        """The OAuth2 access token in use (fetched when missing or about to expire)."""
        if self._tokens is None:
            raise FhirConfigError(
                f"FHIR client auth is {self.auth.kind!r}; only client_credentials has tokens.",
                fix="configure auth_type client_credentials with token_url, client id and secret",
            )
        return self._access_token()

    def _access_token(self) -> str:
        tokens = self._tokens
        if tokens is None:  # only called for client_credentials
            raise FhirConfigError(
                f"FHIR client auth is {self.auth.kind!r}; only client_credentials has tokens.",
                fix="configure auth_type client_credentials with token_url, client id and secret",
            )
        auth = tokens.auth
        where = f"OAuth2 token endpoint {show_origin(origin(auth.token_url))}"
        fix = (
            "check the client id and secret (login/password of the connection), token_url and scope"
        )
        label = f"POST {self.log_path(auth.token_url)}"
        policy = self._retry_policy("POST", label, True, RETRYABLE_STATUSES)
        tokens.last_status = None
        try:
            token = self._send(policy, tokens.access_token)
        except tokens.oauth_error as exc:
            status = tokens.last_status
            error, description = getattr(exc, "error", None), getattr(exc, "description", None)
            raise FhirAuthError(
                f"The {where} refused client {auth.client_id!r} with HTTP {status}: "
                f"{error}" + (f": {description}" if description else "") + ".",
                fix=fix,
                status=status,
            ) from None
        except requests.HTTPError as exc:
            resp = exc.response
            if resp is None:
                raise
            error = self._http_error("POST", auth.token_url, resp, policy.attempts.retries)
            if resp.status_code >= 500:
                raise error from None
            raise FhirAuthError(
                f"The {where} refused client {auth.client_id!r}: {error.message}",
                fix=fix,
                status=resp.status_code,
            ) from None
        except requests.RequestException as exc:
            reason = describe_failure(exc, self.timeout)
            raise self._unreachable(
                "POST", auth.token_url, reason, policy.attempts.retries, exc
            ) from None
        except ValueError:
            token = None  # a 2xx answer that is not a JSON object
        if not token:
            raise FhirAuthError(
                f"The {where} answered without an access_token for client {auth.client_id!r}.",
                fix="check token_url points at the OAuth2 token endpoint",
            )
        return str(token)


def split_lines(
    chunks: Iterable[bytes], *, max_line_bytes: int | None = None
) -> Iterator[bytes | LineTooLong]:
    """Non-blank lines of a byte stream, without their LF / CRLF; a last line may lack one.

    A line longer than `max_line_bytes` (without its line ending) is never held: it comes out
    as a LineTooLong. A line is joined once from its pieces, so a long line costs linear time.
    """
    parts: list[bytes] = []
    size = 0
    limit = None if max_line_bytes is None else max_line_bytes + 1  # + the CR of a CRLF
    for chunk in chunks:
        start = 0
        while True:
            newline = chunk.find(b"\n", start)
            end = len(chunk) if newline < 0 else newline
            size += end - start
            if limit is None or size <= limit:
                parts.append(chunk[start:end])
            else:
                parts.clear()
            if newline < 0:
                break
            line = _finish_line(parts, size, limit)
            if line is not None:
                yield line
            parts, size, start = [], 0, newline + 1
    line = _finish_line(parts, size, limit)
    if line is not None:
        yield line


def _finish_line(parts: list[bytes], size: int, limit: int | None) -> bytes | LineTooLong | None:
    if limit is not None and size > limit:
        return LineTooLong(size, limit - 1)
    line = b"".join(parts).rstrip(b"\r")
    if limit is not None and len(line) > limit - 1:
        return LineTooLong(len(line), limit - 1)
    return line if line.strip() else None
