"""The Docker Compose stack end to end (docker-compose.yaml + docker-compose.local.yaml): the
image built from the host's wheelhouse on the local base image (cached by content hash), the
stack up with two Celery workers, the README's demo (run 1) through `airflow-cli` (approval and
deploy included), its trials spread over both workers, the deployed endpoint answering through
the API server, and `down` leaving no container, network or volume behind.

Skips with a reason without a Docker engine, the base image, docker compose, PostgreSQL or Redis
(fails instead with PATIENT_ML_REQUIRE_DOCKER=1, as in CI). The figures it measures (build, up,
DAG run, which worker ran which trials) are printed (`pytest -s`); `benchmarks/compose_stack.py`
prints the same for the README.
"""

from __future__ import annotations

import os
import socket
import time
import uuid
from typing import Any

import pytest

from include.compose_stack import compose_command, run_compose_demo
from tests.conftest import ADMIN_URL
from tests.docker_engine import _unavailable


def _reachable(host: str, port: int) -> bool:
    try:
        socket.create_connection((host, port), timeout=2).close()
    except OSError:
        return False
    return True


@pytest.fixture
def compose_ready(docker_engine: Any) -> None:
    try:
        compose_command()
    except Exception as exc:
        _unavailable(f"{exc} (apt-get install docker-compose)")
    if not os.path.exists("/var/run/postgresql/.s.PGSQL.5432"):
        _unavailable("no PostgreSQL unix socket at /var/run/postgresql (the local override's)")
    if not _reachable("127.0.0.1", 6379):
        _unavailable("no Redis on 127.0.0.1:6379 (the local override's broker)")


def test_compose_stack_runs_the_demo_over_two_celery_workers(compose_ready: None) -> None:
    started = time.monotonic()
    figures = run_compose_demo(f"pml-compose-{uuid.uuid4().hex[:8]}", admin_url=ADMIN_URL)
    print("\n" + figures.report())
    print(f"compose test wall time {time.monotonic() - started:.0f} s")
    # nothing left: containers, networks (the serving network included), volumes
    assert figures.leftovers == []
    # the documented stop (through airflow-cli) stops the endpoints itself (issue 34)
    assert figures.left_by_stop == [], figures.stop_output
    assert "stopped the endpoint" in figures.stop_output, figures.stop_output
    # run 1's DAG run: curate, both tune workers, evaluate, approval, deploy, record
    assert figures.dag_run_state == "success", figures.task_states
    assert {"curate", "tune[0]", "tune[1]", "evaluate", "await_approval", "deploy"} <= set(
        figures.task_states
    )
    assert set(figures.task_states.values()) == {"success"}, figures.task_states
    # both Celery workers ran a tune task, and each of those ran trials (all maxTrials together)
    assert len(figures.worker_hostnames) == 2
    tune_hosts = {figures.task_hosts["tune[0]"], figures.task_hosts["tune[1]"]}
    assert tune_hosts == set(figures.worker_hostnames), (tune_hosts, figures.worker_hostnames)
    assert set(figures.trials_by_host) == tune_hosts, figures.trials_by_host
    assert sorted(n for ns in figures.trials_by_host.values() for n in ns) == list(
        range(figures.max_trials)
    )
    # the deployed champion's endpoint answered through the API server (serving network)
    assert figures.prediction.get("predictionType") == "imgClf", figures.prediction
    assert figures.prediction.get("predictions"), figures.prediction
