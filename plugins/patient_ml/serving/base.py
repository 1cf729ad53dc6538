"""What a model server is to the platform: `ModelServer`, the base of the local, Docker and
SageMaker servers (`patient_ml.serving.servers`, `patient_ml.serving.sagemaker`), the
`ModelServing` seam that evaluation and deploy use, a started server's `ServerHandle` and its
`ServeLimits`."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol


@dataclass(frozen=True)
class ServerHandle:
    kind: str  # local | docker
    name: str
    url: str
    handle: str  # process id or container id
    log_path: str | None = None


@dataclass
class ServeLimits:
    health_timeout: float = 120.0
    cpus: float = 1.0
    memory_mb: int = 2048


class ModelServing(Protocol):
    """What evaluation and deploy need of a model server (the seam; `ModelServer` is the base
    of the local and Docker implementations, `operators.common.TrackedServer` wraps one)."""

    kind: str
    limits: ServeLimits

    def start(
        self,
        *,
        name: str,
        image: str,
        model_dir: Path,
        labels: Mapping[str, str] | None = None,
    ) -> ServerHandle: ...

    def stop(self, handle: str) -> None: ...

    def is_running(self, handle: str) -> bool: ...

    def image_digest(self, image: str) -> str: ...


class ModelServer(ABC):
    kind = "server"

    def __init__(self, limits: ServeLimits | None = None) -> None:
        self.limits = limits or ServeLimits()

    @abstractmethod
    def start(
        self,
        *,
        name: str,
        image: str,
        model_dir: Path,
        labels: Mapping[str, str] | None = None,
    ) -> ServerHandle:
        """Start `serve` for the model in `model_dir`; returns once /ping answers. `labels`
        mark what started it (e.g. `{"run": id}` for an evaluation) so that the run's end finds
        it when its task died (containers: `patient-ml.<key>` labels; processes: environment).
        """

    @abstractmethod
    def stop(self, handle: str) -> None:
        """Stop the server with this handle (no error when it is already gone)."""

    @abstractmethod
    def is_running(self, handle: str) -> bool:
        """True while the server process or container runs."""

    @abstractmethod
    def image_digest(self, image: str) -> str:
        """What exactly serves `image` here: an image id, or a hash of the local trainer."""
