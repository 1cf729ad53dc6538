"""A real Docker engine for tests, or a skip with the reason (a failure where CI promises one:
PATIENT_ML_REQUIRE_DOCKER=1). Images are built from the local base image that
include/docker/build_base_image.sh makes, because no registry is reachable."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

BASE_IMAGE = os.environ.get("PATIENT_ML_BASE_IMAGE", "patient-ml/base:bookworm")


def _unavailable(reason: str) -> None:
    if os.environ.get("PATIENT_ML_REQUIRE_DOCKER") == "1":
        pytest.fail(f"{reason} (PATIENT_ML_REQUIRE_DOCKER=1, so this is an error)")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def docker_engine() -> Any:
    try:
        import docker

        client = docker.from_env(timeout=120)
        client.ping()
    except Exception as exc:
        _unavailable(f"no Docker engine answers ({type(exc).__name__}); see include/docker")
    try:
        client.images.get(BASE_IMAGE)
    except Exception:
        _unavailable(f"base image {BASE_IMAGE} missing; run include/docker/build_base_image.sh")
    return client


def build_image(client: Any, folder: Path, tag: str, dockerfile: str | None = None) -> str:
    client.images.build(
        path=str(folder),
        tag=tag,
        dockerfile=dockerfile,
        buildargs={"BASE_IMAGE": BASE_IMAGE},
        rm=True,
        network_mode="none",
    )
    return tag


TRAINERS = Path(__file__).resolve().parents[1] / "include" / "trainers"


def build_trainer_image(client: Any, kind: str, tag: str) -> str:
    """A reference trainer's image (img_clf, img_seg): the build context is include/trainers,
    so the image gets the shared common/ folder next to the trainer's own files."""
    return build_image(client, TRAINERS, tag, dockerfile=f"{kind}/Dockerfile")
