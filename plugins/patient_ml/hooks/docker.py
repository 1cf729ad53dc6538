"""Docker engine clients through the Docker provider's `DockerHook`, and the one resolver of
backend kinds (`auto`, `local`, `docker`) that training and serving share.

`DockerHook` (apache-airflow-providers-docker) builds the API client: engine URL and TLS, and,
when a Docker connection is named (`docker_conn_id`), the registry login from that connection
(host = registry, login/password, extra `email`/`reauth`), so pulls of private images use it.
The engine is the one `docker` itself would use: `DOCKER_HOST` (default the local socket), with
TLS from `DOCKER_TLS_VERIFY` / `DOCKER_CERT_PATH` as the Docker CLI reads them.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Literal

import docker
from airflow.providers.docker.hooks.docker import DockerHook
from docker.errors import DockerException

from patient_ml.exceptions import FieldError, InvalidInputError, PatientMLError

if TYPE_CHECKING:
    from docker.tls import TLSConfig

BackendKind = Literal["local", "docker", "sagemaker"]
BACKEND_KINDS = ("auto", "local", "docker", "sagemaker")
DEFAULT_DOCKER_URL = "unix:///var/run/docker.sock"


def docker_url() -> str:
    """The engine's URL, as the Docker CLI finds it."""
    return os.environ.get("DOCKER_HOST") or DEFAULT_DOCKER_URL


def tls_config() -> TLSConfig | bool:
    """TLS towards the engine from DOCKER_TLS_VERIFY / DOCKER_CERT_PATH (False: none)."""
    if not os.environ.get("DOCKER_TLS_VERIFY"):
        return False
    certs = os.environ.get("DOCKER_CERT_PATH") or os.path.expanduser("~/.docker")
    return DockerHook.construct_tls_config(
        ca_cert=os.path.join(certs, "ca.pem"),
        client_cert=os.path.join(certs, "cert.pem"),
        client_key=os.path.join(certs, "key.pem"),
    )


def docker_hook(docker_conn_id: str | None = None, *, timeout: int = 60) -> DockerHook:
    return DockerHook(
        docker_conn_id=docker_conn_id, base_url=docker_url(), tls=tls_config(), timeout=timeout
    )


def docker_client(docker_conn_id: str | None = None, *, timeout: int = 60) -> docker.DockerClient:
    """A docker-py client over the hook's API client (pinged, logged in to the connection's
    registry). PatientMLError naming the engine, or the connection, when that fails."""
    hook = docker_hook(docker_conn_id, timeout=timeout)
    try:
        api = hook.get_conn()
    except Exception as exc:
        if docker_conn_id and _engine_answers(timeout):
            raise PatientMLError(
                f"The Docker engine answers, but logging in with the Docker connection "
                f"{docker_conn_id!r} failed: {type(exc).__name__}: {exc}",
                fix=f"set the registry URL (host), login and password of the Airflow "
                f"connection {docker_conn_id!r}, or leave docker_conn_id unset for public "
                "or local images",
            ) from None
        raise PatientMLError(
            f"No Docker engine answers at {docker_url()} ({type(exc).__name__}).",
            fix="start Docker (or set DOCKER_HOST), or use the local backend",
        ) from None
    client = docker.DockerClient.__new__(docker.DockerClient)
    client.api = api  # DockerClient holds nothing but its API client
    return client


def _engine_answers(timeout: int) -> bool:
    try:
        return bool(docker_hook(None, timeout=timeout).get_conn().ping())
    except Exception:
        return False


def docker_available(docker_conn_id: str | None = None) -> bool:
    """True when the engine answers. With a Docker connection, its registry login must work
    too: a wrong connection raises (PatientMLError) rather than silently falling back."""
    if not _engine_answers(timeout=3):
        return False
    if docker_conn_id:
        docker_client(docker_conn_id, timeout=10)
    return True


def resolve_backend(
    kind: str, *, docker_conn_id: str | None = None, field: str = "backend"
) -> BackendKind:
    """Where trials and model servers run: `local`, `docker`, `sagemaker` (Amazon SageMaker
    training jobs and endpoints), or `auto` (Docker when an engine answers, else local). Any other
    kind is refused (InvalidInputError naming the field)."""
    value = kind.strip().lower() if isinstance(kind, str) else kind
    if value not in BACKEND_KINDS:
        raise InvalidInputError(
            f"Unknown backend {kind!r} in {field}: trials and model servers run 'local' or in "
            "'docker', or as Amazon SageMaker jobs and endpoints ('sagemaker').",
            [FieldError(field, "must be one of auto, local, docker, sagemaker", kind)],
            fix=f"set {field} to 'auto' (Docker when an engine answers, else local), 'local', "
            "'docker' or 'sagemaker'",
        )
    if value == "auto":
        return "docker" if docker_available(docker_conn_id) else "local"
    return "sagemaker" if value == "sagemaker" else "docker" if value == "docker" else "local"


__all__ = [
    "BACKEND_KINDS",
    "BackendKind",
    "DockerException",
    "docker_available",
    "docker_client",
    "docker_hook",
    "resolve_backend",
]
