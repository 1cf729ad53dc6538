"""The Docker backend on a real engine with a contract-following image: success, failure
text, timeout, pruning, kill, no network, read-only inputs, containers removed."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest

from patient_ml.exceptions import PatientMLError
from patient_ml.training.backends.docker import DockerBackend
from tests.docker_engine import build_image
from tests.training.helpers import IMAGE, SCRIPTED, job


@pytest.fixture(scope="module")
def docker(docker_engine: Any) -> DockerBackend:
    build_image(docker_engine, SCRIPTED, IMAGE)
    return DockerBackend(client=docker_engine)


def leftovers(docker: DockerBackend, training: Any) -> list[Any]:
    label = f"patient-ml.job={training.name}"
    return docker.client.containers.list(all=True, filters={"label": label})


def test_success_with_the_contract_layout(docker: DockerBackend, tmp_path: Path) -> None:
    training = job(tmp_path, mode="probe", epochs=3, score=0.9)
    result = docker.run(training)
    assert result.succeeded, result.failure
    assert result.metrics == {"validation:accuracy": 0.9, "validation:loss": 0.1}
    assert (tmp_path / "model" / "model.json").exists()
    assert leftovers(docker, training) == []


def test_no_network_read_only_inputs_and_host_uid(
    docker: DockerBackend, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    import logging
    import os

    caplog.set_level(logging.INFO, logger="patient_ml.training")
    assert docker.run(job(tmp_path, mode="probe", epochs=1)).succeeded
    assert "probe network=no" in caplog.text
    assert "probe input_writable=no" in caplog.text
    assert f"probe uid={os.getuid()}" in caplog.text


def test_failure_text_and_crash(docker: DockerBackend, tmp_path: Path) -> None:
    failed = docker.run(job(tmp_path / "a", mode="fail"))
    assert failed.status == "failed" and failed.exit_code == 1
    assert failed.failure == "learning_rate='abc' is not a number"
    crashed = docker.run(job(tmp_path / "b", mode="crash"))
    assert crashed.exit_code == 3 and "exited with code 3" in (crashed.failure or "")


def test_timeout_stops_and_removes_the_container(docker: DockerBackend, tmp_path: Path) -> None:
    training = job(tmp_path, mode="hang", timeout=3)
    result = docker.run(training)
    assert result.status == "timed_out"
    assert leftovers(docker, training) == []


def test_pruning_stops_the_container(docker: DockerBackend, tmp_path: Path) -> None:
    result = docker.run(
        job(tmp_path, epochs=40, delay=0.3),
        on_metric=lambda name, value, step: name == "validation:accuracy" and step >= 1,
    )
    assert result.status == "stopped" and not (tmp_path / "model" / "model.json").exists()


def test_kill_from_another_thread(docker: DockerBackend, tmp_path: Path) -> None:
    training = job(tmp_path, name=f"kill-me-{tmp_path.name}", mode="hang", timeout=60)
    threading.Timer(3.0, docker.kill, args=(training.name,)).start()
    result = docker.run(training)
    assert result.status == "failed" and leftovers(docker, training) == []


def test_a_leftover_container_of_a_crashed_attempt_is_replaced(
    docker: DockerBackend, tmp_path: Path
) -> None:
    from patient_ml.training.backends.docker import container_name

    training = job(tmp_path, epochs=1, score=0.7)
    stale = docker.client.containers.create(
        IMAGE, command=["sleep", "600"], name=container_name(training.name)
    )
    stale.start()  # still running, as after a worker that died mid-trial
    result = docker.run(training)
    assert result.succeeded and result.metrics["validation:accuracy"] == 0.7
    assert leftovers(docker, training) == []
    assert stale.id not in {c.id for c in docker.client.containers.list(all=True)}


def test_missing_image_names_the_fix(docker: DockerBackend, tmp_path: Path) -> None:
    training = job(tmp_path)
    training.image = "patient-ml/does-not-exist:0"
    with pytest.raises(PatientMLError, match="could not be pulled") as info:
        docker.run(training)
    assert "include/trainers" in (info.value.fix or "")


def test_host_paths_of_a_container_translate_its_mounts(docker_engine: Any, tmp_path: Path) -> None:
    """A worker in a container (docker compose) gives the host engine the host paths of its own
    volumes and bind mounts; a path on no mount is refused with the fix; on a host, unchanged."""
    import uuid

    from patient_ml.training.backends.docker import HostPaths, own_container_id
    from tests.docker_engine import BASE_IMAGE

    name = f"pml-test-hostpaths-{uuid.uuid4().hex[:8]}"
    volume = docker_engine.volumes.create(name)
    container = docker_engine.containers.create(
        BASE_IMAGE,
        command=["true"],
        name=name,
        volumes={name: {"bind": "/data", "mode": "rw"}, str(tmp_path): {"bind": "/work/in"}},
    )
    try:
        at = HostPaths(docker_engine, container_id=container.id)
        source = docker_engine.api.inspect_volume(name)["Mountpoint"]
        assert at("/data") == source
        assert at("/data/runs/r1/model") == f"{source}/runs/r1/model"
        assert at("/work/in/channel") == f"{tmp_path}/channel"
        for outside in ("/tmp/tune-1/config", "/database"):  # /data is not a prefix of /database
            with pytest.raises(PatientMLError, match="on no volume or bind mount"):
                at(outside)
    finally:
        container.remove(force=True)
        volume.remove(force=True)
    assert own_container_id(str(tmp_path / "missing")) is None
    assert HostPaths(docker_engine, container_id="")("/tmp/x") == "/tmp/x"  # on a host


def test_a_retried_worker_removes_what_its_dead_attempt_left(
    docker: DockerBackend, tmp_path: Path
) -> None:
    """Labelled by run and worker: a retry stops its own leftovers, never another worker's."""
    from patient_ml.training.backends.docker import container_labels

    mine = {"run": "r-1", "worker": "0"}
    theirs = {"run": "r-1", "worker": "1"}
    made = [
        docker.client.containers.run(
            IMAGE, command=["sleep", "600"], detach=True, labels=container_labels(name, who)
        )
        for name, who in (("a", mine), ("b", mine), ("c", theirs))
    ]
    try:
        assert docker.remove_leftovers(mine) == 2
        alive = {c.id for c in docker.client.containers.list(all=True)}
        assert made[0].id not in alive and made[1].id not in alive and made[2].id in alive
        assert docker.remove_leftovers(mine) == 0  # idempotent
        assert docker.remove_leftovers({}) == 0  # no labels: never everything
    finally:
        docker.remove_container(made[2].id)


def test_the_image_the_container_ran_from_is_recorded(
    docker: DockerBackend, tmp_path: Path
) -> None:
    """Provenance: the engine's image id (what the container was created from) and its
    repository digests; a tag rebuilt between trials gives the later trial the new id."""
    import shutil

    result = docker.run(job(tmp_path / "a", epochs=1))
    engine_image = docker.client.images.get(IMAGE)
    assert result.image is not None
    assert (result.image.reference, result.image.backend) == (IMAGE, "docker")
    assert result.image.image_id == result.image.digest == engine_image.id
    assert result.image.repo_digests == sorted(engine_image.attrs.get("RepoDigests") or [])
    assert result.environment is None  # the scripted trainer writes no environment.json

    moving = "patient-ml/scripted-trainer:moving"
    folder = tmp_path / "trainer"
    shutil.copytree(SCRIPTED, folder)
    build_image(docker.client, folder, moving)
    first = job(tmp_path / "b", epochs=1)
    first.image = moving
    before = docker.run(first).image
    (folder / "train").write_text((folder / "train").read_text() + "\n# rebuilt\n")
    build_image(docker.client, folder, moving)
    second = job(tmp_path / "c", epochs=1)
    second.image = moving
    after = docker.run(second).image
    assert before is not None and after is not None
    assert before.digest != after.digest == docker.client.images.get(moving).id
