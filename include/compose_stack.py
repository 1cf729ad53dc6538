"""Build and run the Docker Compose stack (`docker-compose.yaml`) without reaching a registry.

The image (`Dockerfile`) installs Airflow and this package from a *wheelhouse built on this
host*, so no build step needs the network:

    python include/compose_stack.py wheelhouse   # var/compose/wheelhouse (`docker compose build`)
    python include/compose_stack.py image        # also builds the image, tag by content hash

The wheelhouse holds the project's wheel (built from the work tree) and the wheels of every
dependency with the `celery`, `postgres` and `samples` extras, pinned to the versions installed
in `.venv` (what `make test` checks), plus `uv` (which installs them inside the image).
Dependency wheels are cached in PATIENT_ML_COMPOSE_CACHE (default `~/.cache/patient-ml/compose`)
by a hash of pyproject.toml and those versions; the image is tagged `patient-ml/airflow:<hash of the
wheelhouse and the Dockerfile>`, so a second build with the same inputs is a no-op.

`ComposeStack` runs `docker compose` (v2) or `docker-compose` (1.29) for one project; the
end-to-end test (`tests/compose/test_compose_stack.py`) and `benchmarks/compose_stack.py` use it.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import requests

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from include.airflow_stack import ApiClient, free_port

ROOT = Path(__file__).resolve().parent.parent
COMPOSE_FILES = (ROOT / "docker-compose.yaml", ROOT / "docker-compose.local.yaml")
DAG_ID = "patient_ml__brain_mri_tumour_classifier"
MODEL = "brain-mri-tumour-classifier"
DOCKER_SOCKET = "/var/run/docker.sock"
DOCKERFILE = ROOT / "Dockerfile"
WHEELHOUSE = ROOT / "var" / "compose" / "wheelhouse"
CACHE = Path(
    os.environ.get("PATIENT_ML_COMPOSE_CACHE", Path.home() / ".cache" / "patient-ml" / "compose")
)
IMAGE_REPO = "patient-ml/airflow"
EXTRAS = ("celery", "postgres", "samples")
# Installed with --no-deps: stardist only ships the nuclei sample (its TensorFlow is not needed).
NO_DEPS = ("stardist==0.9.2",)
# Python of the base image (Debian bookworm's python3); wheels are resolved for it.
IMAGE_PYTHON = os.environ.get("PATIENT_ML_IMAGE_PYTHON", "3.11.2")
LOCAL_BASE = os.environ.get("PATIENT_ML_BASE_IMAGE", "patient-ml/base:bookworm")


class ComposeError(RuntimeError):
    pass


def run(argv: Sequence[str], *, env: Mapping[str, str] | None = None, cwd: Path = ROOT,
        timeout: float = 1800) -> str:  # fmt: skip
    done = subprocess.run(
        list(argv), cwd=cwd, env=dict(env) if env is not None else None, text=True,
        capture_output=True, timeout=timeout, check=False,
    )  # fmt: skip
    if done.returncode != 0:
        raise ComposeError(
            f"{' '.join(argv)} failed ({done.returncode}):\n{done.stdout[-4000:]}\n"
            f"{done.stderr[-4000:]}"
        )
    return done.stdout


def _sha256(*parts: bytes) -> str:
    digest = hashlib.sha256()
    for part in parts:
        digest.update(len(part).to_bytes(8, "big"))
        digest.update(part)
    return digest.hexdigest()


def venv_python() -> Path:
    return ROOT / ".venv" / "bin" / "python"


def _uv() -> str:
    found = ROOT / ".venv" / "bin" / "uv"
    return str(found) if found.exists() else (shutil.which("uv") or "uv")


def dependency_wheels(python: Path | None = None) -> Path:
    """The dependency wheels (cached): pinned to the versions installed in `.venv`."""
    python = python or venv_python()
    freeze = run([_uv(), "pip", "freeze", "--python", str(python), "--exclude-editable"])
    pins = "\n".join(line for line in freeze.splitlines() if "==" in line) + "\n"
    key = _sha256((ROOT / "pyproject.toml").read_bytes(), pins.encode(), repr(NO_DEPS).encode())
    folder = CACHE / f"deps-{key[:16]}"
    if (folder / "requirements.txt").exists():
        return folder
    tmp = Path(tempfile.mkdtemp(prefix="deps-", dir=CACHE.parent if CACHE.exists() else None))
    try:
        # The pins of .venv as *preferences* (uv keeps the versions of an existing output file
        # where it can): Debian bookworm's python3 is 3.11.2, and a few releases need a newer
        # 3.11 (soupsieve 4.1.3 needs 3.11.5), so those move to the newest that installs there.
        output = tmp / "compiled.txt"
        output.write_text(pins)
        run(
            [_uv(), "pip", "compile", str(ROOT / "pyproject.toml"),
             *[f"--extra={extra}" for extra in EXTRAS], "-o", str(output),
             "--python-version", IMAGE_PYTHON, "--no-header", "--no-annotate", "--quiet"],
        )  # fmt: skip
        compiled = output.read_text()
        requirements = "".join(
            line + "\n"
            for line in compiled.splitlines()
            if line.strip() and not line.startswith(("#", "-e", "patient-ml-airflow"))
        )
        uv_version = run([_uv(), "--version"]).split()[1]
        (tmp / "requirements.txt").write_text(requirements)
        (tmp / "nodeps.txt").write_text("\n".join(NO_DEPS) + "\n")
        wheels = tmp / "wheels"
        pip = [str(python), "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", str(wheels)]
        run([*pip, "-r", str(tmp / "requirements.txt"), f"uv=={uv_version}"], timeout=3600)
        run([*pip, "-w", str(tmp / "nodeps"), *NO_DEPS], timeout=1800)
        CACHE.mkdir(parents=True, exist_ok=True)
        if folder.exists():  # built concurrently
            return folder
        tmp.rename(folder)
        tmp = folder
    finally:
        if tmp != folder:
            shutil.rmtree(tmp, ignore_errors=True)
    return folder


def project_wheel(out: Path) -> Path:
    """This work tree's wheel (the web UI's build included: `make setup` made it)."""
    if not (ROOT / "plugins" / "patient_ml" / "ui" / "static" / "index.html").exists():
        raise ComposeError("the web UI is not built; run `make setup` first")
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("patient_ml_airflow-*.whl"):
        old.unlink()
    env = {**os.environ, "SOURCE_DATE_EPOCH": "1700000000"}  # same sources → same wheel bytes
    run([_uv(), "build", "--wheel", "--quiet", "--out-dir", str(out), str(ROOT)], env=env)
    (wheel,) = out.glob("patient_ml_airflow-*.whl")
    return wheel


def build_wheelhouse(dest: Path = WHEELHOUSE) -> Path:
    """`dest`/deps: the dependency wheels (hard links to the cache) and their requirements.txt,
    `dest`/deps/nodeps: wheels installed without dependencies, `dest`/project: this work tree's
    wheel. Two folders, so that the image's dependency layer stays cached when only the
    project changes."""
    deps = dependency_wheels()
    if dest.exists():
        shutil.rmtree(dest)
    (dest / "deps" / "nodeps").mkdir(parents=True)
    for src in [*(deps / "wheels").glob("*.whl"), *(deps / "nodeps").glob("*.whl")]:
        nodeps = src.parent.name == "nodeps"
        target = dest / "deps" / ("nodeps" if nodeps else "") / src.name
        try:
            os.link(src, target)
        except OSError:
            shutil.copy2(src, target)
    shutil.copy2(deps / "requirements.txt", dest / "deps" / "requirements.txt")
    project_wheel(dest / "project")
    (dest / "project" / ".gitignore").unlink(missing_ok=True)
    return dest


def content_hash(wheelhouse: Path, dockerfile: Path = DOCKERFILE, base: str = LOCAL_BASE) -> str:
    """Hash of what the image is made of: every wheel's bytes, the requirements, the Dockerfile
    and the base image's id."""
    parts = [dockerfile.read_bytes(), base.encode()]
    with contextlib.suppress(ComposeError):
        parts.append(run(["docker", "image", "inspect", "-f", "{{.Id}}", base]).encode())
    for path in sorted(wheelhouse.rglob("*")):
        if path.is_file():
            parts.append(str(path.relative_to(wheelhouse)).encode())
            parts.append(hashlib.sha256(path.read_bytes()).digest())
    return _sha256(*parts)[:16]


def build_image(base: str = LOCAL_BASE) -> tuple[str, bool, float]:
    """(tag, built now?, seconds): the image of the wheelhouse from the base image, skipped when
    an image of the same content hash exists (cached deliberately between test runs)."""
    started = time.monotonic()
    wheelhouse = build_wheelhouse()
    tag = f"{IMAGE_REPO}:{content_hash(wheelhouse, base=base)}"
    exists = subprocess.run(["docker", "image", "inspect", tag], capture_output=True).returncode
    if exists == 0:
        return tag, False, time.monotonic() - started
    run(
        ["docker", "build", "--quiet", "--network", "none", "--build-arg", f"BASE_IMAGE={base}",
         "-t", tag, "-f", str(DOCKERFILE), str(ROOT)],
        timeout=1800,
    )  # fmt: skip
    # Only the newest build stays cached: earlier content hashes are removed (unless in use).
    for other in run(
        ["docker", "images", IMAGE_REPO, "--format", "{{.Repository}}:{{.Tag}}"]
    ).split():
        if other != tag:
            subprocess.run(["docker", "rmi", other], capture_output=True, check=False)
    return tag, True, time.monotonic() - started


def compose_command() -> list[str]:
    """`docker compose` (v2) when the plugin is there, else `docker-compose` (1.29)."""
    if subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0:
        return ["docker", "compose"]
    found = shutil.which("docker-compose")
    if not found:
        raise ComposeError("neither `docker compose` nor `docker-compose` is installed")
    return [found]


class ComposeStack:
    """One compose project (`-p name`) of docker-compose.yaml plus override files."""

    def __init__(self, project: str, files: Sequence[Path], env: Mapping[str, str]) -> None:
        self.project = project
        self.files = list(files)
        self.env = {**os.environ, **env, "COMPOSE_PROJECT_NAME": project}
        self.base = [*compose_command(), "-p", project]
        for file in self.files:
            self.base += ["-f", str(file)]

    def __call__(self, *args: str, timeout: float = 900) -> str:
        return run([*self.base, *args], env=self.env, timeout=timeout)

    def exec(self, service: str, *argv: str, env: Mapping[str, str] | None = None,
             timeout: float = 900) -> str:  # fmt: skip
        extra = [item for key, value in (env or {}).items() for item in ("-e", f"{key}={value}")]
        return self("exec", "-T", *extra, service, *argv, timeout=timeout)

    def containers(self, service: str | None = None) -> list[dict[str, Any]]:
        labels = [f"label=com.docker.compose.project={self.project}"]
        if service:
            labels.append(f"label=com.docker.compose.service={service}")
        argv = ["docker", "ps", "-a", "--no-trunc", "--format", "{{json .}}"]
        for label in labels:
            argv += ["--filter", label]
        return [json.loads(line) for line in run(argv).splitlines() if line.strip()]

    def logs(self, *services: str, tail: int = 60) -> str:
        try:
            return self("logs", "--no-color", f"--tail={tail}", *services, timeout=120)
        except ComposeError as exc:
            return str(exc)

    def down(self) -> None:
        self("down", "--volumes", "--remove-orphans", "--timeout", "20", timeout=300)


@dataclass
class ComposeFigures:
    """What one compose run measured (printed by `report`)."""

    project: str
    image: str = ""
    image_built: bool = False
    build_seconds: float = 0.0
    up_seconds: float = 0.0
    demo_seconds: float = 0.0
    dag_run_seconds: float = 0.0
    down_seconds: float = 0.0
    max_trials: int = 0
    dag_run_state: str = ""
    task_states: dict[str, str] = field(default_factory=dict)
    task_hosts: dict[str, str] = field(default_factory=dict)
    worker_hostnames: list[str] = field(default_factory=list)
    trials_by_host: dict[str, list[int]] = field(default_factory=dict)
    prediction: dict[str, Any] = field(default_factory=dict)
    leftovers: list[str] = field(default_factory=list)
    # containers on the serving network after the documented `demo.py ... stop` (should be none)
    left_by_stop: list[str] = field(default_factory=list)
    stop_output: str = ""
    databases: list[str] = field(default_factory=list)
    demo_output: str = ""

    def report(self) -> str:
        lines = [
            f"compose project {self.project}, image {self.image} "
            f"({'built' if self.image_built else 'cached'})",
            f"  wheelhouse + image: {self.build_seconds:.0f} s",
            f"  up (init, migrations, {len(self.worker_hostnames)} workers) until healthy: "
            f"{self.up_seconds:.0f} s",
            f"  demo run 1 (samples, registration, DAG run, approval, deploy, prediction): "
            f"{self.demo_seconds:.0f} s; its DAG run {self.dag_run_seconds:.0f} s "
            f"({self.dag_run_state}, {self.max_trials} trials)",
        ]
        for host, trials in sorted(self.trials_by_host.items()):
            tasks = sorted(t for t, h in self.task_hosts.items() if h == host)
            lines.append(f"  worker {host}: trials {trials}; tasks {', '.join(tasks)}")
        lines.append(
            f"  stop: endpoints left running {self.left_by_stop or 'none'}; down: "
            f"{self.down_seconds:.0f} s; left behind: {self.leftovers or 'nothing'}"
        )
        return "\n".join(lines)


def _seconds(start: str | None, end: str | None) -> float:
    if not start or not end:
        return 0.0
    return (datetime.fromisoformat(end) - datetime.fromisoformat(start)).total_seconds()


def _wait_healthy(url: str, stack: ComposeStack, timeout: float = 600) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            health = requests.get(f"{url}/api/v2/monitor/health", timeout=5).json()
            parts = ("metadatabase", "scheduler", "triggerer", "dag_processor")
            if all((health.get(p) or {}).get("status") == "healthy" for p in parts):
                return
        except (requests.RequestException, ValueError):
            pass
        time.sleep(2)
    raise ComposeError(f"the stack was not healthy after {timeout:.0f} s:\n{stack.logs()}")


@contextlib.contextmanager
def _terminate_as_exit() -> Any:
    """Turn SIGTERM (CI's timeout, `kill`) into SystemExit while the stack is up, so the
    `finally` that brings it down runs; Python's default SIGTERM ends the process at once and
    would leave containers, networks, volumes and databases behind."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def _exit(signum: int, _frame: Any) -> None:
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, _exit)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def run_compose_demo(
    project: str, *, admin_url: str, max_trials: int = 4, workers: int = 2,
    base: str = LOCAL_BASE,
) -> ComposeFigures:  # fmt: skip
    """Build (or reuse) the image, bring the stack up with `workers` Celery workers against the
    machine's PostgreSQL (two new databases) and Redis (docker-compose.local.yaml), run the
    demo's run 1 in `airflow-cli`, collect what ran where, then bring everything down and drop
    the databases, whatever happened (an interrupt or SIGTERM included). `leftovers` lists what
    `down` left behind."""
    with _terminate_as_exit():
        return _run_compose_demo(project, admin_url=admin_url, max_trials=max_trials,
                                 workers=workers, base=base)  # fmt: skip


def _run_compose_demo(
    project: str, *, admin_url: str, max_trials: int, workers: int, base: str
) -> ComposeFigures:
    from sqlalchemy import create_engine, text

    figures = ComposeFigures(project=project, max_trials=max_trials)
    figures.image, figures.image_built, figures.build_seconds = build_image(base)
    slug = project.replace("-", "_")
    figures.databases = [f"{slug}_airflow", f"{slug}_pml"]
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    password = secrets.token_urlsafe(12)
    network = f"{project}-serving"
    env = {
        "PATIENT_ML_IMAGE": figures.image,
        "PATIENT_ML_BASE_IMAGE": base,
        "PATIENT_ML_TRAINER_BASE_IMAGE": base,
        "PATIENT_ML_JWT_SECRET": secrets.token_hex(64),
        "DOCKER_GID": str(os.stat(DOCKER_SOCKET).st_gid),
        "AIRFLOW_API_HOST_PORT": str(port),
        "AIRFLOW_BASE_URL": url,
        "PATIENT_ML_SERVING_NETWORK": network,
        "AIRFLOW_DATABASE_URL": f"postgresql+psycopg://postgres@postgres/{figures.databases[0]}",
        "PATIENT_ML_DATABASE_URL": f"postgresql://postgres@postgres/{figures.databases[1]}",
        "_AIRFLOW_WWW_USER_PASSWORD": password,
    }
    stack = ComposeStack(project, COMPOSE_FILES, env)
    demo = ["python", "include/demo.py", "--airflow-url", "http://airflow-apiserver:8080"]
    try:
        started = time.monotonic()
        try:
            stack("up", "-d", "--scale", f"airflow-worker={workers}", timeout=900)
        except ComposeError as exc:  # say why: the init's (or a service's) own output
            raise ComposeError(f"{exc}\n--- logs ---\n{stack.logs(tail=120)}") from None
        _wait_healthy(url, stack)
        figures.up_seconds = time.monotonic() - started
        for container in stack.containers("airflow-worker"):
            figures.worker_hostnames.append(
                run(["docker", "inspect", "-f", "{{.Config.Hostname}}", container["ID"]]).strip()
            )

        started = time.monotonic()
        try:
            figures.demo_output = stack(
                "run", "--rm", "-T", "airflow-cli", *demo, "--runs", "1", "--max-trials",
                str(max_trials), timeout=1200,
            )  # fmt: skip
        finally:
            figures.demo_seconds = time.monotonic() - started
            token = requests.post(
                f"{url}/auth/token", json={"username": "admin", "password": password}, timeout=30
            ).json()["access_token"]
            api = ApiClient(url, token)
            runs = api.get(f"/api/v2/dags/{DAG_ID}/dagRuns?limit=10", ok=(404,)) or {}
            for dag_run in (runs.get("dag_runs") or [])[:1]:
                figures.dag_run_state = dag_run["state"]
                figures.dag_run_seconds = _seconds(dag_run["start_date"], dag_run["end_date"])
                found = api.get(
                    f"/api/v2/dags/{DAG_ID}/dagRuns/{dag_run['dag_run_id']}/taskInstances?limit=100"
                )["task_instances"]
                for ti in found:
                    key = (
                        ti["task_id"]
                        if ti["map_index"] < 0
                        else f"{ti['task_id']}[{ti['map_index']}]"
                    )
                    figures.task_states[key] = ti["state"]
                    figures.task_hosts[key] = ti.get("hostname") or ""
        product = create_engine(admin_url.rsplit("/", 1)[0] + f"/{figures.databases[1]}")
        with product.connect() as conn:
            rows = conn.execute(text("SELECT worker, number FROM pml_trials ORDER BY number"))
            for worker, number in rows:
                host = figures.task_hosts.get(f"tune[{worker}]", f"tune[{worker}]")
                figures.trials_by_host.setdefault(host, []).append(int(number))
        product.dispose()
        figures.prediction = api.get(f"/v1/patient-ml/models/{MODEL}/predictions")
    finally:
        started = time.monotonic()
        try:  # the documented stop: the model endpoints (containers of the product)
            figures.stop_output = stack("run", "--rm", "-T", "airflow-cli", *demo, "stop",
                                        timeout=300)  # fmt: skip
        except ComposeError as exc:
            figures.stop_output = f"failed: {exc}"
        ids: list[str] = []
        with contextlib.suppress(ComposeError):
            ids = run(["docker", "ps", "-aq", "--filter", f"network={network}"]).split()
            own = run(["docker", "ps", "-aq", "--filter",
                       f"label=com.docker.compose.project={project}"]).split()  # fmt: skip
            ids = [i for i in ids if i not in own]  # the stack's services join that network too
        figures.left_by_stop = ids
        if ids:  # what the stop missed must not outlive the test (the test fails on it)
            subprocess.run(["docker", "rm", "-f", *ids], capture_output=True, check=False)
        stack.down()
        figures.down_seconds = time.monotonic() - started
        figures.leftovers = leftovers(project, network)
        admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            for name in figures.databases:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
    return figures


def leftovers(project: str, network: str) -> list[str]:
    """Containers, networks and volumes of the project still on the engine."""
    label = f"label=com.docker.compose.project={project}"
    found = []
    for kind, argv in (
        ("container", ["docker", "ps", "-aq", "--filter", label]),
        ("network", ["docker", "network", "ls", "-q", "--filter", label]),
        ("network", ["docker", "network", "ls", "-q", "--filter", f"name=^{network}$"]),
        ("volume", ["docker", "volume", "ls", "-q", "--filter", label]),
    ):
        found += [f"{kind} {name}" for name in run(argv).split()]
    return sorted(set(found))


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("what", choices=("wheelhouse", "image"))
    ap.add_argument("--base", default=LOCAL_BASE, help=f"base image (default {LOCAL_BASE})")
    args = ap.parse_args(argv)
    started = time.monotonic()
    if args.what == "wheelhouse":
        folder = build_wheelhouse()
        count = len(list(folder.rglob("*.whl")))
        print(f"{folder}: {count} wheels ({time.monotonic() - started:.0f} s)")
        return
    tag, built, seconds = build_image(args.base)
    print(f"{tag} ({'built' if built else 'cached'} in {seconds:.0f} s)")


if __name__ == "__main__":
    sys.exit(main())
