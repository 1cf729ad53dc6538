"""Run the trainer's image as SageMaker does (`docker run IMAGE train`) through docker-py.

No network; the config and channels mounted read-only; the model and output folders the only
writable mounts besides a /tmp tmpfs; CPU and memory limits; the container runs as the
Airflow worker's uid so its files stay readable; logs streamed live into the task log; the
container stopped on prune, timeout or `on_kill` and always removed. Registry credentials
come from an Airflow Docker connection (`docker_conn_id`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import re
import threading
import time
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

from patient_ml.exceptions import PatientMLError
from patient_ml.hooks.docker import docker_client
from patient_ml.training.backends.base import (
    Backend,
    MetricCallback,
    TrainingJob,
    TrainingOutcome,
    follow,
    outcome,
    pump_lines,
)
from patient_ml.training.contract import CONTAINER_ROOT, JobLayout, sm_environment
from patient_ml.training.provenance import ImageRecord, docker_image_record

if TYPE_CHECKING:  # docker-py ships no types: these name what it returns
    import docker
    from docker.models.containers import Container

log = logging.getLogger("patient_ml.training")

STOP_GRACE_SECONDS = 10


LABEL_PREFIX = "patient-ml."


def container_labels(name: str, labels: Mapping[str, str], kind: str = "job") -> dict[str, str]:
    """A container's labels: its name under `kind` (a training `job`, a model server `serve`)
    and who started it (`TrainingJob.labels`, an evaluation server's run), all under
    `patient-ml.`, as `remove_leftovers` filters them."""
    return {f"{LABEL_PREFIX}{kind}": name, **{LABEL_PREFIX + k: v for k, v in labels.items()}}


def container_name(job_name: str) -> str:
    return re.sub(r"[^a-zA-Z0-9_.-]", "-", job_name)[:120]


_CONTAINER_ID = re.compile(r"/containers/([0-9a-f]{64})/")


def own_container_id(mountinfo: str = "/proc/self/mountinfo") -> str | None:
    """The id of the container this process runs in, or None on a host: Docker bind-mounts
    `/var/lib/docker/containers/<id>/hostname` (and resolv.conf, hosts) into every container."""
    try:
        with open(mountinfo, encoding="utf-8", errors="replace") as file:
            text = file.read()
    except OSError:
        return None
    found = _CONTAINER_ID.search(text)
    return found.group(1) if found else None


class HostPaths:
    """Paths of this process as the Docker engine sees them.

    A worker that runs in a container (Docker Compose) and starts trainer or model-server
    containers through the host engine's socket gives bind-mount sources that the *engine*
    resolves on the host. A path under one of the worker container's own mounts (a named volume
    or a bind mount) is translated to that mount's source on the host; on a host, paths are
    unchanged. A path outside every mount of the container cannot be shared and is refused.
    """

    def __init__(self, client: docker.DockerClient, container_id: str | None = None) -> None:
        self.container_id = container_id if container_id is not None else own_container_id()
        self.mounts: list[tuple[str, str]] = []
        if self.container_id:
            import docker.errors

            try:
                attrs = client.api.inspect_container(self.container_id)
            except docker.errors.NotFound:  # another engine's container (Docker in Docker)
                self.container_id = None
                return
            self.mounts = sorted(
                ((m["Destination"].rstrip("/") or "/", m["Source"]) for m in attrs["Mounts"]),
                key=lambda mount: len(mount[0]),
                reverse=True,
            )

    def __call__(self, path: str) -> str:
        if not self.container_id:
            return path
        for inside, source in self.mounts:
            if path == inside or path.startswith(inside + "/"):
                return source + path[len(inside) :]
        raise PatientMLError(
            f"{path} is inside this worker's container ({self.container_id[:12]}) but on no "
            "volume or bind mount, so a container started on the host engine cannot mount it.",
            fix="put PATIENT_ML_HOME and TMPDIR on volumes (see docker-compose.yaml)",
        )


def _lines(chunks: Iterator[bytes]) -> Iterator[str]:
    """docker-py streams arbitrary chunks; the log loop wants lines."""
    pending = b""
    for chunk in chunks:
        pending += chunk
        *lines, pending = pending.split(b"\n")
        for line in lines:
            yield line.decode("utf-8", errors="replace")
    if pending:
        yield pending.decode("utf-8", errors="replace")


class DockerBackend(Backend):
    name = "docker"

    def __init__(
        self, docker_conn_id: str | None = None, client: docker.DockerClient | None = None
    ) -> None:
        self.docker_conn_id = docker_conn_id
        self._client = client
        self._lock = threading.Lock()
        self._host_paths: HostPaths | None = None
        self._present: set[str] = set()
        self._records: dict[str, ImageRecord] = {}

    @property
    def client(self) -> docker.DockerClient:
        if self._client is None:  # DockerHook: engine URL, TLS, the connection's registry login
            self._client = docker_client(self.docker_conn_id)
        return self._client

    def host_path(self, path: str | os.PathLike[str]) -> str:
        """`path` as the engine sees it (see HostPaths)."""
        if self._host_paths is None:
            self._host_paths = HostPaths(self.client)
        return self._host_paths(str(path))

    def ensure_image(self, image: str) -> None:
        import docker.errors

        if image in self._present:  # a sweep's trials share one image: ask the engine once
            return
        try:
            self.client.images.get(image)
            self._present.add(image)
            return
        except docker.errors.ImageNotFound:
            pass
        try:  # the client logged in to the Docker connection's registry (DockerHook)
            self.client.images.pull(image)
            self._present.add(image)
        except docker.errors.APIError as exc:
            raise PatientMLError(
                f"Training image {image!r} is not on this Docker engine and could not be "
                f"pulled: {exc.explanation or exc}.",
                fix="build the image here (see include/trainers) or fix the registry "
                "credentials in the Docker connection",
            ) from None

    def run(self, job: TrainingJob, on_metric: MetricCallback | None = None) -> TrainingOutcome:
        import docker.errors

        self.ensure_image(job.image)
        inside = JobLayout(CONTAINER_ROOT)
        at = self.host_path
        volumes = {
            at(job.layout.config_dir): {"bind": str(inside.config_dir), "mode": "ro"},
            at(job.layout.model_dir): {"bind": str(inside.model_dir), "mode": "rw"},
            at(job.layout.output_dir): {"bind": str(inside.output_dir), "mode": "rw"},
        }
        for channel in ("train", "validation"):
            real = at(os.path.realpath(job.layout.channel(channel)))
            volumes[real] = {"bind": str(inside.channel(channel)), "mode": "ro"}
        name = container_name(job.name)
        settings: dict[str, Any] = dict(
            command=["train"],
            name=name,
            environment={
                **sm_environment(job.layout, num_cpus=max(1, int(job.cpus)), seen_as=inside),
                # BLAS sees the host's cores, not the --cpus limit
                "OMP_NUM_THREADS": str(max(1, int(job.cpus))),
                "OPENBLAS_NUM_THREADS": str(max(1, int(job.cpus))),
            },
            volumes=volumes,
            network_mode="none",
            nano_cpus=int(job.cpus * 1e9),
            mem_limit=f"{job.memory_mb}m",
            read_only=True,
            tmpfs={"/tmp": "rw,size=512m"},
            user=f"{os.getuid()}:{os.getgid()}",
            labels=container_labels(job.name, job.labels),
        )
        container = self._create(job.image, settings)
        image = self.image_record(str((container.attrs or {}).get("Image") or ""), job.image)
        started = time.monotonic()
        try:
            container.start()
            sink: queue.Queue[Any] = queue.Queue(maxsize=10_000)
            pump_lines(_lines(container.logs(stream=True, follow=True)), sink)

            def running() -> bool:
                try:
                    container.reload()
                    return container.status in {"created", "running"}
                except docker.errors.NotFound:
                    return False

            stopped, lines = follow(
                job,
                sink,
                is_running=running,
                stop=lambda: self._stop_async(container),
                on_metric=on_metric,
                started=started,
            )
            status = container.wait(timeout=STOP_GRACE_SECONDS * 3)
            exit_code = int(status.get("StatusCode", -1))
        finally:
            self.remove_container(name)
        return outcome(job, stopped, exit_code, lines, started, image)

    def image_record(self, image_id: str, reference: str) -> ImageRecord:
        """What the container was created from: its image id (the engine's answer at create,
        so a tag moved meanwhile cannot mislead) and the image's repository digests. Best
        effort: an engine that does not answer leaves the reference alone recorded."""
        key = image_id or reference
        if key not in self._records:
            try:
                record = docker_image_record(self.client, key, reference, "training")
            except Exception as exc:  # provenance never fails a trial
                log.warning("the image of %s could not be inspected: %s", reference, exc)
                return ImageRecord(role="training", reference=reference, backend="docker")
            if not image_id:
                return record  # not cached by reference: a tag may move
            self._records[key] = record
        return self._records[key].model_copy(update={"reference": reference})

    def _create(self, image: str, settings: dict[str, Any]) -> Container:
        """Create the container; a leftover of a crashed attempt that holds the name is
        removed first (found by the engine's conflict answer, not by asking before every
        create: one API call less per trial)."""
        import docker.errors

        try:
            return self.client.containers.create(image, **settings)
        except docker.errors.ImageNotFound:  # removed since this backend last saw it
            self._present.discard(image)
            self.ensure_image(image)
        except docker.errors.APIError as exc:
            if exc.status_code != 409:  # 409: the name is in use
                raise
            self.remove_container(settings["name"])
        return self.client.containers.create(image, **settings)

    def remove_leftovers(self, labels: Mapping[str, str]) -> int:
        """Containers labelled with all of `labels` (`container_labels`), running or not: a
        worker killed mid-trial leaves its trainer running beside the engine; its retry stops
        and removes them before it claims a trial."""
        if not labels:
            return 0
        wanted = [f"{LABEL_PREFIX}{key}={value}" for key, value in sorted(labels.items())]
        found = self.client.api.containers(all=True, quiet=True, filters={"label": wanted})
        for container in found:
            self.remove_container(container["Id"])
        return len(found)

    def kill(self, job_name: str) -> None:
        import docker.errors

        try:
            container = self.client.containers.get(container_name(job_name))
        except docker.errors.NotFound:
            return
        self._stop_async(container)

    @staticmethod
    def _stop_async(container: Container) -> None:
        def stop() -> None:
            with contextlib.suppress(Exception):  # already gone
                container.stop(timeout=STOP_GRACE_SECONDS)

        threading.Thread(target=stop, daemon=True).start()

    def remove_container(self, name: str) -> None:
        """Remove the container and wait until it is gone (a removal may be in progress). One
        API call when nothing is in the way: a forced removal returns once it is done."""
        import docker.errors

        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                self.client.api.remove_container(name, force=True)
                return
            except docker.errors.NotFound:
                return
            except docker.errors.APIError as exc:
                if exc.status_code != 409:  # 409: removal already in progress
                    raise
            time.sleep(0.2)
