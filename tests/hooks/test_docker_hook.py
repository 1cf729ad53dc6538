"""Docker clients come from the Docker provider's DockerHook (engine, TLS, the connection's
registry login) on a real engine; backend kinds resolve in one place and unknown ones fail."""

from __future__ import annotations

import json
from typing import Any

import pytest
from airflow.providers.docker.hooks.docker import DockerHook

from patient_ml.exceptions import InvalidInputError, PatientMLError
from patient_ml.hooks import docker as docker_hooks
from patient_ml.operators.tune import make_backend
from patient_ml.serving.servers import DockerServer, LocalServer, make_server
from patient_ml.training.backends.docker import DockerBackend
from patient_ml.training.backends.local import LocalBackend


def test_the_client_is_the_hooks_and_answers(docker_engine: Any) -> None:
    hook = docker_hooks.docker_hook(None)
    assert isinstance(hook, DockerHook)
    client = docker_hooks.docker_client(None)
    assert client.ping()
    assert client.api.base_url  # the hook's APIClient, not a second from_env client
    backend = DockerBackend()
    assert backend.client.ping()
    assert docker_hooks.docker_available(None)


def test_a_docker_connection_is_honoured_and_a_bad_login_fails_loudly(
    docker_engine: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # a registry nobody listens on: the hook's login through this connection must fail
    monkeypatch.setenv(
        "AIRFLOW_CONN_PML_LAYERS_BAD_REGISTRY",
        json.dumps(
            {"conn_type": "docker", "host": "127.0.0.1", "port": 9, "login": "u", "password": "p"}
        ),
    )
    with pytest.raises(PatientMLError) as failed:
        docker_hooks.docker_available("pml_layers_bad_registry")
    assert "pml_layers_bad_registry" in str(failed.value)
    assert "registry URL" in (failed.value.fix or "")
    with pytest.raises(PatientMLError, match="pml_layers_bad_registry"):
        _ = DockerBackend(docker_conn_id="pml_layers_bad_registry").client
    # 'auto' does not fall back to local on a wrong connection either
    with pytest.raises(PatientMLError, match="pml_layers_bad_registry"):
        make_server("auto", docker_conn_id="pml_layers_bad_registry")


def test_no_engine_is_reported_with_the_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DOCKER_HOST", "tcp://127.0.0.1:9")
    assert docker_hooks.docker_available(None) is False
    assert docker_hooks.resolve_backend("auto") == "local"
    with pytest.raises(PatientMLError, match=r"No Docker engine answers at tcp://127\.0\.0\.1:9"):
        docker_hooks.docker_client(None, timeout=3)


@pytest.mark.parametrize("kind", ["dokcer", "", "LOCAL ", "kubernetes", None])
def test_unknown_backend_kinds_are_refused_by_training_and_serving(kind: Any) -> None:
    if kind == "LOCAL ":  # case and spaces are forgiven
        assert isinstance(make_backend(kind), LocalBackend)
        assert isinstance(make_server(kind), LocalServer)
        return
    for build in (make_backend, make_server):
        with pytest.raises(InvalidInputError) as refused:
            build(kind)
        assert refused.value.errors[0].field == "backend"
        assert "'auto'" in (refused.value.fix or "")


def test_docker_kind_builds_docker_backends(docker_engine: Any) -> None:
    assert isinstance(make_backend("docker"), DockerBackend)
    assert isinstance(make_server("docker"), DockerServer)


def test_tls_settings_come_from_the_docker_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    monkeypatch.delenv("DOCKER_TLS_VERIFY", raising=False)
    assert docker_hooks.tls_config() is False
    for name in ("ca.pem", "cert.pem", "key.pem"):
        (tmp_path / name).write_text("x")
    monkeypatch.setenv("DOCKER_TLS_VERIFY", "1")
    monkeypatch.setenv("DOCKER_CERT_PATH", str(tmp_path))
    tls = docker_hooks.tls_config()
    assert tls is not False
    assert tls.ca_cert == str(tmp_path / "ca.pem")
    assert tls.cert == (str(tmp_path / "cert.pem"), str(tmp_path / "key.pem"))
