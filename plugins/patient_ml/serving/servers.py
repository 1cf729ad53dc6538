"""Start and stop a trained model's `serve` as a host process or a container.

Both run the image's own `serve` entrypoint (SageMaker hosting convention) with the model
folder at `SM_MODEL_DIR` (read-only in a container), wait until `GET /ping` answers, and can be
stopped later from another process through the handle (process id or container id) that the
product DB records for deployed endpoints.

A container gets no outbound network: it joins an *internal* Docker network and the platform
reaches it at its address there (PATIENT_ML_SERVING_NETWORK, default `patient-ml-serving`), so
test images sent during evaluation cannot leave the machine through the model's code.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from patient_ml.serving.base import ModelServer, ServeLimits, ServerHandle
from patient_ml.serving.client import wait_healthy
from patient_ml.serving.errors import ServingError
from patient_ml.settings import setting
from patient_ml.training.backends.labelled import label_environment
from patient_ml.training.backends.local import LocalBackend, process_environment

if TYPE_CHECKING:
    import docker

STOP_GRACE_SECONDS = 10.0
CONTAINER_MODEL_DIR = "/opt/ml/model"
CONTAINER_PORT = 8080
LOG_TAIL_CHARS = 2000


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _tail(path: Path) -> str:
    try:
        with open(path, "rb") as fh:
            fh.seek(max(0, path.stat().st_size - LOG_TAIL_CHARS))
            return fh.read().decode("utf-8", errors="replace")
    except OSError:
        return "(no log)"


class LocalServer(ModelServer):
    """`serve` of a local trainer folder (see LocalBackend) as a detached host process bound to
    127.0.0.1; its output goes to `<model_dir>/../serve.log`."""

    kind = "local"

    def __init__(
        self, limits: ServeLimits | None = None, trainer_dirs: dict[str, Path] | None = None
    ) -> None:
        super().__init__(limits)
        self.backend = LocalBackend(trainer_dirs)

    def start(
        self,
        *,
        name: str,
        image: str,
        model_dir: Path,
        labels: Mapping[str, str] | None = None,
    ) -> ServerHandle:
        cmd = self.backend.command(image, "serve")
        port = free_port()
        env = process_environment(
            max(1, int(self.limits.cpus)),
            {"SM_MODEL_DIR": str(model_dir), "SM_SERVE_PORT": str(port),
             "SM_SERVE_HOST": "127.0.0.1", **label_environment(labels or {})},
        )  # fmt: skip
        log_path = Path(model_dir).parent / f"{name}.serve.log"
        with open(log_path, "ab") as log:
            proc = subprocess.Popen(
                cmd,
                cwd=model_dir,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # outlives the task; stopped through its handle
            )
        url = f"http://127.0.0.1:{port}"
        try:
            wait_healthy(
                url,
                timeout=self.limits.health_timeout,
                alive=lambda: proc.poll() is None,
                log_tail=lambda: _tail(log_path),
                what=f"The model server {name} ({image}, local process {proc.pid})",
            )
        except BaseException:
            self.stop(str(proc.pid))
            raise
        return ServerHandle("local", name, url, str(proc.pid), str(log_path))

    def image_digest(self, image: str) -> str:
        return self.backend.digest(image, "serve")

    def is_running(self, handle: str) -> bool:
        pid = int(handle)
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        with contextlib.suppress(ChildProcessError, OSError):
            done, _ = os.waitpid(pid, os.WNOHANG)  # reap it if it is our own exited child
            if done:
                return False
        try:  # a zombie that is not our child still shows up with kill 0
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
            return state != "Z"
        except OSError:
            return True

    def stop(self, handle: str) -> None:
        pid = int(handle)
        if not self.is_running(handle):
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE_SECONDS
        while time.monotonic() < deadline and self.is_running(handle):
            time.sleep(0.1)
        if self.is_running(handle):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)


class DockerServer(ModelServer):
    """`docker run IMAGE serve` with the model folder mounted read-only, a read-only root, a
    /tmp tmpfs, CPU/memory limits, the caller's uid, and no route out of the machine."""

    kind = "docker"

    def __init__(
        self,
        limits: ServeLimits | None = None,
        docker_conn_id: str | None = None,
        network: str | None = None,
    ) -> None:
        super().__init__(limits)
        # lazy: docker-py and Airflow's Docker provider load only when Docker serves
        from patient_ml.training.backends.docker import DockerBackend

        self.backend = DockerBackend(docker_conn_id=docker_conn_id)
        self.network = network or setting("PATIENT_ML_SERVING_NETWORK") or "patient-ml-serving"

    @property
    def client(self) -> docker.DockerClient:
        return self.backend.client

    def _network(self) -> str:
        import docker.errors

        try:
            self.client.networks.get(self.network)
        except docker.errors.NotFound:
            with contextlib.suppress(docker.errors.APIError):  # created concurrently
                self.client.networks.create(
                    self.network, driver="bridge", internal=True, labels={"patient-ml": "serving"}
                )
        return self.network

    def start(
        self,
        *,
        name: str,
        image: str,
        model_dir: Path,
        labels: Mapping[str, str] | None = None,
    ) -> ServerHandle:
        from patient_ml.training.backends.docker import (  # lazy, as above
            container_labels,
            container_name,
        )

        self.backend.ensure_image(image)
        cname = container_name(name)
        self.backend.remove_container(cname)  # a leftover of a crashed attempt
        container = self.client.containers.run(
            image,
            command=["serve"],
            name=cname,
            detach=True,
            environment={
                "SM_MODEL_DIR": CONTAINER_MODEL_DIR,
                "SM_SERVE_PORT": str(CONTAINER_PORT),
                "OMP_NUM_THREADS": str(max(1, int(self.limits.cpus))),
                "OPENBLAS_NUM_THREADS": str(max(1, int(self.limits.cpus))),
            },
            volumes={
                self.backend.host_path(model_dir): {"bind": CONTAINER_MODEL_DIR, "mode": "ro"}
            },
            network=self._network(),
            nano_cpus=int(self.limits.cpus * 1e9),
            mem_limit=f"{self.limits.memory_mb}m",
            read_only=True,
            tmpfs={"/tmp": "rw,size=256m"},
            user=f"{os.getuid()}:{os.getgid()}",
            labels=container_labels(name, labels or {}, kind="serve"),
        )
        try:
            container.reload()
            address = container.attrs["NetworkSettings"]["Networks"][self.network]["IPAddress"]
            if not address:
                raise ServingError(
                    f"Container {cname} got no address on network {self.network}.",
                    fix="check the Docker network (docker network inspect)",
                )
            url = f"http://{address}:{CONTAINER_PORT}"
            wait_healthy(
                url,
                timeout=self.limits.health_timeout,
                alive=lambda: self.is_running(container.id),
                log_tail=lambda: self._logs(container.id),
                what=f"The model server {name} ({image}, container {cname})",
            )
        except BaseException:
            self.stop(container.id)
            raise
        return ServerHandle("docker", name, url, container.id)

    def _logs(self, handle: str) -> str:
        try:
            data: bytes = self.client.containers.get(handle).logs(tail=40)
        except Exception:
            return "(no log)"
        return data.decode("utf-8", errors="replace")[-LOG_TAIL_CHARS:]

    def image_digest(self, image: str) -> str:
        found = self.client.images.get(image)
        repo_digests = found.attrs.get("RepoDigests") or []
        return repo_digests[0] if repo_digests else str(found.id)

    def is_running(self, handle: str) -> bool:
        import docker.errors

        try:
            container = self.client.containers.get(handle)
        except docker.errors.NotFound:
            return False
        return container.status in {"created", "running"}

    def stop(self, handle: str) -> None:
        import docker.errors

        try:
            container = self.client.containers.get(handle)
        except docker.errors.NotFound:
            return
        with contextlib.suppress(docker.errors.APIError):
            container.stop(timeout=int(STOP_GRACE_SECONDS))
        with contextlib.suppress(docker.errors.NotFound, docker.errors.APIError):
            container.remove(force=True)


def make_server(
    kind: str,
    *,
    limits: ServeLimits | None = None,
    docker_conn_id: str | None = None,
    aws_conn_id: str | None = None,
) -> ModelServer:
    """`local`, `docker`, `sagemaker` (an Amazon SageMaker endpoint, PATIENT_ML_SAGEMAKER_*)
    or `auto` (Docker when an engine answers, else a local process); any other kind is refused
    (patient_ml.hooks.docker.resolve_backend)."""
    from patient_ml.hooks.docker import resolve_backend  # lazy: Airflow's Docker provider

    resolved = resolve_backend(kind, docker_conn_id=docker_conn_id)
    if resolved == "sagemaker":
        from patient_ml.serving.sagemaker import SageMakerServer

        return SageMakerServer(limits, aws_conn_id=aws_conn_id)

    if resolved == "docker":
        return DockerServer(limits, docker_conn_id=docker_conn_id)
    return LocalServer(limits)


def server_for(kind: str, docker_conn_id: str | None = None) -> ModelServer:
    """The server class that can stop a recorded endpoint of this kind."""
    if kind == "sagemaker":
        from patient_ml.serving.sagemaker import SageMakerServer

        return SageMakerServer()
    return DockerServer(docker_conn_id=docker_conn_id) if kind == "docker" else LocalServer()
