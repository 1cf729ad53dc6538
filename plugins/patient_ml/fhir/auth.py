"""How the FHIR client authenticates: none, bearer token, HTTP basic, or OAuth2 client
credentials (SMART backend services with a client secret) through authlib, which fetches the
token, caches it and fetches a new one shortly before it expires."""

from __future__ import annotations

import base64
import logging
import threading
import time
from collections.abc import MutableMapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, ClassVar
from urllib.parse import urlsplit

from patient_ml.fhir.errors import FhirConfigError

if TYPE_CHECKING:
    import requests

log = logging.getLogger("patient_ml.fhir")


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
# A token without expires_in is used this long; a token is renewed 10% of its lifetime (at
# most 60 s) before it expires.
DEFAULT_TOKEN_LIFETIME = 300
MAX_TOKEN_LEEWAY = 60


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


def coerce_auth(auth: FhirAuth | str | tuple[str, str] | None) -> FhirAuth:
    """An auth object from what FhirClient accepts (None, a token, a (user, password) pair)."""
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


def basic_header(username: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode("ascii")


class ClientCredentialsTokens:
    """OAuth2 client credentials tokens of one client, from authlib's `OAuth2Session`: fetched
    lazily, cached until shortly before they expire, then fetched again (thread-safe).

    `session` is a requests session; the FHIR transport mounts its retrying adapter on it.
    Errors are authlib's and requests' own; the transport turns them into FhirErrors."""

    def __init__(self, auth: ClientCredentialsAuth, *, timeout: tuple[float, float]) -> None:
        # authlib (with its JOSE and cryptography imports) is loaded only by a client that uses
        # client credentials: `patient_ml.fhir` is imported by every curation reader.
        from authlib.integrations.requests_client import OAuth2Session, OAuthError

        self.auth = auth
        self.oauth_error: type[Exception] = OAuthError
        self.session = OAuth2Session(
            client_id=auth.client_id,
            client_secret=auth.client_secret,
            token_endpoint_auth_method=(
                "client_secret_post" if auth.secret_in_body else "client_secret_basic"
            ),
            scope=auth.scope,
            token_endpoint=auth.token_url,
            grant_type="client_credentials",
            default_timeout=timeout,
        )
        self.session.register_compliance_hook("access_token_response", self._seen)
        self.last_status: int | None = None
        self._lock = threading.Lock()

    def _seen(self, resp: requests.Response) -> requests.Response:
        self.last_status = resp.status_code
        return resp

    def access_token(self) -> str | None:
        """The cached token, or a new one when there is none or it is about to expire; None
        when the token endpoint answered without an access_token."""
        with self._lock:
            before = self.session.token
            if not before or not before.get("access_token"):
                self.session.fetch_token()
            else:
                self.session.ensure_active_token(before)
            token = self.session.token
            if token is not before and token:
                self._fix_lifetime(token)
            value = token.get("access_token") if token else None
            return value if isinstance(value, str) and value else None

    def invalidate(self) -> None:
        """Forget the token (the server refused it): the next request fetches another."""
        with self._lock:
            self.session.token = None

    def _fix_lifetime(self, token: MutableMapping[str, object]) -> None:
        expires_in = token.get("expires_in", DEFAULT_TOKEN_LIFETIME)
        try:
            if not isinstance(expires_in, str | int | float):  # null, a list, an object
                raise TypeError(type(expires_in).__name__)
            lifetime = float(expires_in)
        except (TypeError, ValueError):
            lifetime = float(DEFAULT_TOKEN_LIFETIME)
        if not isinstance(token.get("expires_at"), int):
            token["expires_at"] = int(time.time() + lifetime)
        self.session.leeway = int(min(MAX_TOKEN_LEEWAY, lifetime * 0.1))
        log.info("Fetched an OAuth2 access token (expires in %.0f s)", lifetime)
