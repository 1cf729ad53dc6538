"""Airflow hook for a FHIR R4 server (connection type `fhir`); all logic is in FhirClient.

Connection fields:
- host: the FHIR base URL with scheme and path, e.g. `https://fhir.example.org/fhir`. A host
  without a scheme is completed from `schema` when it is `http`/`https` (else https), `port`,
  and the path of a URI-style connection (`fhir://host:8080/fhir` puts `fhir` in `schema`).
- login / password: HTTP basic user and password, or the OAuth2 client id and secret.
- extra: `auth_type` (none | bearer | basic | client_credentials; guessed when missing),
  `token` (bearer; the password is used when empty), `token_url`, `scope`, `timeout` (seconds,
  or [connect, read]), `max_retries`, `page_size`, `verify` (true/false or a CA bundle path).
"""

from __future__ import annotations

from typing import Any

from airflow.sdk import BaseHook, Connection

from patient_ml.exceptions import ConflictError
from patient_ml.fhir.auth import AUTH_TYPES, make_auth
from patient_ml.fhir.client import FhirClient
from patient_ml.fhir.errors import FhirConfigError, FhirError


class FhirHook(BaseHook):
    conn_name_attr = "fhir_conn_id"
    default_conn_name = "fhir_default"
    conn_type = "fhir"
    hook_name = "FHIR server"

    def __init__(
        self, fhir_conn_id: str = default_conn_name, *, logger_name: str | None = None
    ) -> None:
        super().__init__(logger_name=logger_name)
        self.fhir_conn_id = fhir_conn_id
        self._client: FhirClient | None = None

    @classmethod
    def get_ui_field_behaviour(cls) -> dict[str, Any]:
        return {
            "hidden_fields": ["schema", "port"],
            "relabeling": {
                "host": "FHIR base URL",
                "login": "Login or OAuth2 client id",
                "password": "Password, bearer token or OAuth2 client secret",
            },
            "placeholders": {
                "host": "https://fhir.example.org/fhir",
                "login": "user or client id (basic / client_credentials)",
                "password": "password, token or client secret",
                "extra": '{"auth_type": "client_credentials", '
                '"token_url": "https://auth.example.org/oauth2/token", "scope": "system/*.read", '
                '"timeout": 30, "max_retries": 5, "page_size": 500, "verify": true}',
            },
        }

    def get_client(self) -> FhirClient:
        """A FhirClient for this connection (built once per hook)."""
        if self._client is None:
            conn = self.get_connection(self.fhir_conn_id)
            self._client = build_client(self.fhir_conn_id, conn)
        return self._client

    def test_connection(self) -> tuple[bool, str]:
        """GET [base]/metadata (and, for client credentials, fetch a token)."""
        try:
            client = self.get_client()
            statement = client.capabilities(refresh=True)
            if client.auth.kind == "client_credentials":
                client.access_token()
        except FhirError as exc:
            return False, str(exc)
        software = (statement.get("software") or {}).get("name") or "unnamed server"
        bulk = "offers" if client.supports_bulk_export() else "does not offer"
        return True, (
            f"Connected to {software} (FHIR {statement.get('fhirVersion', '?')}) at "
            f"{client.base_url}; it {bulk} bulk $export."
        )


def fhir_client(conn_id: str) -> FhirClient:
    """The FHIR client of Airflow connection `conn_id`; ConflictError when it is not defined."""
    from airflow.exceptions import AirflowNotFoundException

    try:
        return FhirHook(conn_id).get_client()
    except AirflowNotFoundException:
        raise ConflictError(
            f"The dataset's FHIR connection {conn_id!r} is not defined in Airflow.",
            fix=f"create the Airflow connection {conn_id!r} (type fhir), or point the dataset's "
            "source at another connection or at NDJSON files",
        ) from None


def build_client(conn_id: str, conn: Connection) -> FhirClient:
    """FhirClient from an Airflow Connection's fields (see the module docstring)."""
    extra = conn.extra_dejson or {}
    base_url = _base_url(conn_id, conn, extra)
    auth_type = str(extra.get("auth_type") or _guess_auth_type(conn, extra)).lower()
    if auth_type not in AUTH_TYPES:
        raise FhirConfigError(
            f"Airflow connection {conn_id!r} has an unknown auth_type {auth_type!r}.",
            fix=f"set extra.auth_type to one of: {', '.join(AUTH_TYPES)}",
        )
    auth = make_auth(
        auth_type,
        token=extra.get("token") or conn.password,
        username=conn.login,
        password=conn.password,
        token_url=extra.get("token_url"),
        client_id=extra.get("client_id") or conn.login,
        client_secret=extra.get("client_secret") or conn.password,
        scope=extra.get("scope"),
    )
    settings: dict[str, Any] = {}
    if extra.get("timeout") not in (None, ""):
        timeout = extra["timeout"]
        settings["timeout"] = (
            tuple(_number(conn_id, "timeout", t) for t in timeout)
            if isinstance(timeout, list | tuple)
            else _number(conn_id, "timeout", timeout)
        )
    for name in ("max_retries", "page_size"):
        if extra.get(name) not in (None, ""):
            settings[name] = int(_number(conn_id, name, extra[name]))
    if "verify" in extra:
        settings["verify"] = _verify(extra["verify"])
    return FhirClient(base_url, auth, **settings)


def fhir_base_url(conn_id: str) -> str:
    """The FHIR base URL of an Airflow connection (what the client would call)."""
    conn = FhirHook(conn_id).get_connection(conn_id)
    return _base_url(conn_id, conn, conn.extra_dejson or {})


def _base_url(conn_id: str, conn: Connection, extra: dict[str, Any]) -> str:
    host = str(conn.host or "").strip()
    if not host:
        raise FhirConfigError(
            f"Airflow connection {conn_id!r} has no host.",
            fix="set host to the FHIR base URL, e.g. https://fhir.example.org/fhir",
        )
    if "://" in host:
        return host
    schema = str(conn.schema or "").strip()
    scheme = schema.lower() if schema.lower() in ("http", "https") else extra.get("scheme", "https")
    hostname, _, path = host.partition("/")
    if conn.port and ":" not in hostname:
        hostname = f"{hostname}:{conn.port}"
    if not path and schema and schema.lower() not in ("http", "https"):
        path = schema  # URI-style connection: fhir://host:8080/fhir
    return f"{scheme}://{hostname}/{path.strip('/')}".rstrip("/")


def _guess_auth_type(conn: Connection, extra: dict[str, Any]) -> str:
    if extra.get("token_url"):
        return "client_credentials"
    if extra.get("token"):
        return "bearer"
    if conn.login and conn.password:
        return "basic"
    return "none"


def _number(conn_id: str, name: str, value: object) -> float:
    try:
        if not isinstance(value, str | int | float):  # JSON: null, a list, an object
            raise TypeError(type(value).__name__)
        return float(value)
    except (TypeError, ValueError):
        raise FhirConfigError(
            f"Airflow connection {conn_id!r} has extra.{name}={value!r}, which is not a number.",
            fix=f"set extra.{name} to a number",
        ) from None


def _verify(value: object) -> bool | str:
    if isinstance(value, bool):
        return value
    text = str(value).strip()
    if text.lower() in ("true", "1", "yes", ""):
        return True
    if text.lower() in ("false", "0", "no"):
        return False
    return text  # a CA bundle path
