"""Build and run the Docker Compose stack (`docker-compose.yaml`) without reaching a registry.

The image (`Dockerfile`) installs Airflow and this package from a *wheelhouse built on this
host*, so no build step needs the network:

    python include/compose_stack.py wheelhouse   # var/compose/wheelhouse (`docker compose build`)
    python include/compose_stack.py image        # also builds the image, tag by content hash

The wheelhouse holds the project's wheel (built from the work tree) and the wheels of every
dependency with the `celery` and `samples` extras, pinned to the versions installed in `.venv`
(what `make test` checks), plus `uv` (which installs them inside the image). Dependency wheels are
cached in PATIENT_ML_COMPOSE_CACHE (default `~/.cache/patient-ml/compose`) by a hash of
pyproject.toml and those versions; the image is tagged `patient-ml/airflow:<hash of the
wheelhouse and the Dockerfile>`, so a second build with the same inputs is a no-op.

`ComposeStack` runs `docker compose` (v2) or `docker-compose` (1.29) for one project; the
end-to-end test (`tests/e2e/test_compose_stack.py`) and `benchmarks/compose_stack.py` use it.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = ROOT / "Dockerfile"
WHEELHOUSE = ROOT / "var" / "compose" / "wheelhouse"
CACHE = Path(
    os.environ.get("PATIENT_ML_COMPOSE_CACHE", Path.home() / ".cache" / "patient-ml" / "compose")
)
IMAGE_REPO = "patient-ml/airflow"
EXTRAS = ("celery", "samples")
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
    """`dest`/: dependency wheels (hard links), the project's wheel, requirements.txt."""
    deps = dependency_wheels()
    if dest.exists():
        shutil.rmtree(dest)
    (dest / "nodeps").mkdir(parents=True)
    for src in [*(deps / "wheels").glob("*.whl"), *(deps / "nodeps").glob("*.whl")]:
        target = (dest / "nodeps" / src.name) if src.parent.name == "nodeps" else dest / src.name
        try:
            os.link(src, target)
        except OSError:
            shutil.copy2(src, target)
    wheel = project_wheel(dest / "project")
    shutil.move(str(wheel), dest / wheel.name)
    shutil.rmtree(dest / "project")
    requirements = (deps / "requirements.txt").read_text()
    extras = ",".join(EXTRAS)
    (dest / "requirements.txt").write_text(f"{requirements}patient-ml-airflow[{extras}]==0.1.0\n")
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
