"""What exactly trained a run: the images (as the engine resolved them), the trainer's Python
and key libraries, this package's version and source commit, and the sweep's sampler seed.

* **Images.** A reference such as `team/trainer:1.2` is a name that may move; what ran is
  recorded next to it: on Docker the image id the container was created from (`sha256:...`,
  the engine's own identity of the image) and the repository digests the engine knows; on the
  local backend a sha256 over the trainer folder's files (`local-sha256:...`); on SageMaker
  the image the job resolved (DescribeTrainingJob `AlgorithmSpecification.TrainingImage`) and
  its `@sha256:` digest when the reference pins one. `digest` is the value compared between
  runs (see `tag_moves`).
* **Trainer environment.** A trainer may write `environment.json` into its model folder
  (`{"python": "3.11.2", "libraries": {"torch": "2.3.0", ...}}`, see the container contract
  in include/trainers/README.md); it travels with the model artifact. Without one, the local
  backend reports the interpreter it started the trainer with and the versions of
  `KEY_LIBRARIES` installed there; a container that reports nothing has none recorded.
* **Package.** `importlib.metadata` gives the version; the source commit comes from the git
  checkout the package runs from (with a dirty flag for uncommitted changes under the
  package's folder), else from pip's `direct_url.json` (a VCS install), else from the
  setting PATIENT_ML_SOURCE_COMMIT (`[patient_ml] source_commit`), else `unknown`. A missing
  git never fails a run.

The records are pydantic models (camelCase on the wire); `patient_ml.services.provenance`
stores them on the run and compares runs.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import platform
import re
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field, ValidationError

from patient_ml.config.wire import WireModel
from patient_ml.exceptions import PatientMLError

if TYPE_CHECKING:  # docker-py ships no types: this names what it is
    import docker

log = logging.getLogger("patient_ml.training")

PACKAGE = "patient-ml-airflow"
ENVIRONMENT_FILE = "environment.json"
MAX_ENVIRONMENT_BYTES = 64 * 1024
MAX_LIBRARIES = 40
#: what the local backend reports of the interpreter it starts a trainer with
KEY_LIBRARIES = ("torch", "numpy", "scipy", "pillow", "scikit-learn", "optuna")
SOURCE_COMMIT_ENV = "PATIENT_ML_SOURCE_COMMIT"
_SOURCE_COMMIT = re.compile(r"^[0-9A-Za-z][0-9A-Za-z._+-]{0,63}$")
_DIGEST = re.compile(r"@(sha256:[0-9a-f]{64})$")
_VERSION_TEXT = re.compile(r"^[\w.+!-]{1,64}$")
_LIBRARY_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
GIT_TIMEOUT_SECONDS = 5.0

Backend = Literal["docker", "local", "sagemaker"]


class ImageRecord(WireModel):
    """One image as it ran."""

    role: Literal["training", "inference"]
    reference: str = Field(description="The image as the model config names it (tag or digest).")
    backend: str = Field(description="docker, local or sagemaker (the engine that ran it).")
    digest: str | None = Field(
        None,
        description="What is compared between runs: the Docker image id, the local trainer "
        "folder's sha256, the SageMaker image's pinned digest; absent when unknown.",
    )
    image_id: str | None = Field(None, description="Docker: the image id (sha256 of its config).")
    repo_digests: list[str] = Field(
        default_factory=list, description="Docker: the registry digests the engine knows."
    )
    resolved_image: str | None = Field(
        None, description="SageMaker: AlgorithmSpecification.TrainingImage of the job."
    )


class TrainerEnvironment(WireModel):
    """The trainer's interpreter and key libraries."""

    python: str | None = None
    implementation: str | None = None
    interpreter: str | None = Field(
        None, description="host: the interpreter's path (never shown on the model card)."
    )
    libraries: dict[str, str] = Field(default_factory=dict)
    reported_by: Literal["trainer", "host"] = Field(
        description="trainer: its environment.json; host: the local backend's interpreter."
    )


class PackageRecord(WireModel):
    name: str = PACKAGE
    version: str
    commit: str = Field(description="The source commit, or `unknown`.")
    dirty: bool | None = Field(
        None, description="Uncommitted changes under the package's source folder (git only)."
    )
    commit_source: Literal["git", "direct_url", "env", "unknown"]


class SamplerRecord(WireModel):
    name: str = "TPESampler"
    seed: int = Field(description="trainingApproach.seed of the run (0 when not set).")
    trial_seed: str = Field(
        "seed * 100003 + n", description="The seed of the sampler that proposes trial n."
    )
    pruner: str = "MedianPruner"


class TagMove(WireModel):
    """The image reference `reference` named another image in an earlier run of the model."""

    role: Literal["training", "inference"]
    reference: str
    digest: str
    previous_digest: str
    previous_run_id: str
    previous_run_slug: str


class RunProvenance(WireModel):
    """A run's provenance as stored (`pml_runs.provenance`) and sent (plus `tagMoved`)."""

    training: ImageRecord | None = None
    inference: ImageRecord | None = None
    trainer: TrainerEnvironment | None = None
    package: PackageRecord | None = None
    sampler: SamplerRecord | None = None
    best_trial: int | None = Field(None, description="The trial whose model the run kept.")
    tag_moved: list[TagMove] = Field(
        default_factory=list,
        description="Read-only: images whose reference named another digest in the newest "
        "earlier run of the same model that used it.",
    )


# ----------------------------------------------------------------------------- images


def pinned_digest(reference: str) -> str | None:
    """`sha256:...` when `reference` pins one (`name@sha256:...`), else None."""
    found = _DIGEST.search(reference.strip())
    return found.group(1) if found else None


def folder_digest(folder: Path, *shared: Path) -> str:
    """`local-sha256:<hex>`: the sha256 of a trainer folder's files (names and contents,
    sorted; `__pycache__` left out), and of the `shared` folders it imports from (e.g. the
    reference trainers' `../common`), what the local backend runs for an image name."""
    digest = hashlib.sha256()
    for root, prefix in ((Path(folder), ""), *((Path(p), f"../{Path(p).name}/") for p in shared)):
        for path in sorted(p for p in root.rglob("*") if p.is_file()):
            if "__pycache__" in path.parts:
                continue
            digest.update((prefix + path.relative_to(root).as_posix()).encode() + b"\0")
            digest.update(hashlib.sha256(path.read_bytes()).digest())
    return f"local-sha256:{digest.hexdigest()}"


def docker_image_record(
    client: docker.DockerClient, image: str, reference: str, role: str
) -> ImageRecord:
    """The record of `image` (a reference or an image id) on this Docker engine."""
    found = client.images.get(image)
    attrs = getattr(found, "attrs", None) or {}
    image_id = str(attrs.get("Id") or found.id)
    return ImageRecord(
        role=role,  # type: ignore[arg-type]
        reference=reference,
        backend="docker",
        digest=image_id,
        image_id=image_id,
        repo_digests=sorted(str(d) for d in attrs.get("RepoDigests") or []),
    )


def sagemaker_image_record(reference: str, resolved: str | None, role: str) -> ImageRecord:
    resolved = (resolved or "").strip() or None
    return ImageRecord(
        role=role,  # type: ignore[arg-type]
        reference=reference,
        backend="sagemaker",
        digest=pinned_digest(resolved or reference),
        resolved_image=resolved,
    )


# ----------------------------------------------------------------------------- environment


def read_trainer_environment(model_dir: Path) -> TrainerEnvironment | None:
    """The trainer's `environment.json` in its model folder; None when it wrote none. A file
    that is too large or not the documented shape is ignored with a warning (it never fails a
    trial)."""
    path = Path(model_dir) / ENVIRONMENT_FILE
    try:
        if not path.is_file():
            return None
        if path.stat().st_size > MAX_ENVIRONMENT_BYTES:
            raise ValueError(f"larger than {MAX_ENVIRONMENT_BYTES} bytes")
        raw = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(raw, dict):
            raise ValueError("not a JSON object")
        libraries = raw.get("libraries") or {}
        if not isinstance(libraries, dict):
            raise ValueError("libraries is not an object")
        kept = {
            str(k): str(v)
            for k, v in sorted(libraries.items())[:MAX_LIBRARIES]
            if _LIBRARY_NAME.match(str(k)) and _VERSION_TEXT.match(str(v))
        }
        python = raw.get("python")
        implementation = raw.get("implementation")
        return TrainerEnvironment(
            python=str(python) if python and _VERSION_TEXT.match(str(python)) else None,
            implementation=(
                str(implementation)
                if implementation and _VERSION_TEXT.match(str(implementation))
                else None
            ),
            libraries=kept,
            reported_by="trainer",
        )
    except (OSError, ValueError, ValidationError) as exc:
        log.warning(
            "the trainer's %s is ignored (%s); its environment is not recorded. Fix: write "
            '{"python": "3.x.y", "libraries": {"name": "version"}} (include/trainers/README.md)',
            ENVIRONMENT_FILE,
            str(exc).splitlines()[0][:200],
        )
        return None


@functools.lru_cache(maxsize=4)
def host_environment(libraries: tuple[str, ...] = KEY_LIBRARIES) -> TrainerEnvironment:
    """This interpreter (the local backend starts Python trainers with it) and the versions of
    `libraries` installed for it (read once per process: a sweep asks after every trial)."""
    versions = {}
    for name in libraries:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return TrainerEnvironment(
        python=platform.python_version(),
        implementation=platform.python_implementation(),
        interpreter=sys.executable,
        libraries=versions,
        reported_by="host",
    )


# ----------------------------------------------------------------------------- package


def _git(source: Path, *args: str) -> str | None:
    try:
        done = subprocess.run(
            ["git", "-c", "safe.directory=*", "-C", str(source), *args],
            capture_output=True,
            text=True,
            timeout=GIT_TIMEOUT_SECONDS,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):  # no git, or it hung
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def git_commit(source: Path) -> tuple[str, bool] | None:
    """(HEAD, dirty) of the git checkout that tracks `source`, or None when there is none (no
    git, not a checkout, or a checkout that does not track the package, e.g. a virtualenv
    inside someone's repository)."""
    commit = _git(source, "rev-parse", "HEAD")
    if not commit or not re.fullmatch(r"[0-9a-f]{40,64}", commit):
        return None
    tracked = _git(source, "ls-files", "--", "__init__.py")
    if not tracked:
        return None
    status = _git(source, "status", "--porcelain", "--untracked-files=no", "--", ".")
    return commit, bool(status)


def _direct_url_commit() -> str | None:
    try:
        text = metadata.distribution(PACKAGE).read_text("direct_url.json")
    except metadata.PackageNotFoundError:
        return None
    try:
        commit = (json.loads(text or "{}").get("vcs_info") or {}).get("commit_id")
    except ValueError:
        return None
    return str(commit) if commit else None


def package_version() -> str:
    try:
        return metadata.version(PACKAGE)
    except metadata.PackageNotFoundError:
        from patient_ml import __version__

        return __version__


def package_record(source: Path | None = None) -> PackageRecord:
    """The package's version and source commit (see the module's doc for the order)."""
    from patient_ml.settings import setting

    return _package_record(
        source or Path(__file__).resolve().parents[1], setting(SOURCE_COMMIT_ENV) or ""
    )


@functools.lru_cache(maxsize=8)
def _package_record(source: Path, configured: str) -> PackageRecord:
    version = package_version()
    found = git_commit(source)
    if found is not None:
        return PackageRecord(version=version, commit=found[0], dirty=found[1], commit_source="git")
    vcs = _direct_url_commit()
    if vcs:
        return PackageRecord(version=version, commit=vcs, commit_source="direct_url")
    configured = configured.strip()
    if configured:
        if not _SOURCE_COMMIT.match(configured):
            raise PatientMLError(
                f"{SOURCE_COMMIT_ENV}={configured[:80]!r} is not a commit or version name.",
                fix="set it to the commit the package was built from (letters, digits, . _ + -; "
                "at most 64 characters), e.g. the output of `git rev-parse HEAD`, or unset it",
            )
        return PackageRecord(version=version, commit=configured, commit_source="env")
    return PackageRecord(version=version, commit="unknown", commit_source="unknown")


# ----------------------------------------------------------------------------- comparison


def short_digest(digest: str | None, length: int = 12) -> str:
    """`sha256:0123456789ab` from a digest, image id or `local-sha256:` value."""
    if not digest:
        return "unknown"
    prefix, _, hexpart = digest.rpartition(":")
    return f"{prefix}:{hexpart[:length]}" if prefix else digest[:length]


def tag_moves(
    current: RunProvenance, earlier: list[tuple[str, str, dict[str, Any]]]
) -> list[TagMove]:
    """Images of `current` whose reference named another digest in the newest run of
    `earlier` (run id, slug, stored provenance; newest first) that recorded the same
    reference, role and backend with a digest."""
    moves = []
    for record in (current.training, current.inference):
        if record is None or not record.digest:
            continue
        for run_id, slug, stored in earlier:
            before = (stored or {}).get(record.role) or {}
            if (
                before.get("reference") != record.reference
                or before.get("backend") != record.backend
                or not before.get("digest")
            ):
                continue
            if before["digest"] != record.digest:
                moves.append(
                    TagMove(
                        role=record.role,
                        reference=record.reference,
                        digest=record.digest,
                        previous_digest=str(before["digest"]),
                        previous_run_id=run_id,
                        previous_run_slug=slug,
                    )
                )
            break
    return moves


def tag_move_text(move: TagMove) -> str:
    """One sentence for the run page and the model card."""
    return (
        f"The {move.role} image tag {move.reference} moved between runs: run "
        f"{move.previous_run_slug} used {short_digest(move.previous_digest)}, this run "
        f"{short_digest(move.digest)}."
    )
