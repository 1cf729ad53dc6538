"""Provenance of a trial: the package's version and source commit (git checkout with a dirty
flag, else PATIENT_ML_SOURCE_COMMIT, else `unknown`; a missing git never fails), the trainer's
environment.json, image records of the local and SageMaker backends, and tag moves."""

from __future__ import annotations

import json
import logging
import platform
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest

from patient_ml.exceptions import PatientMLError
from patient_ml.training import provenance
from patient_ml.training.provenance import (
    ImageRecord,
    RunProvenance,
    folder_digest,
    package_record,
    pinned_digest,
    read_trainer_environment,
    sagemaker_image_record,
    short_digest,
    tag_move_text,
    tag_moves,
)
from tests.training.helpers import SCRIPTED, backend, job

PACKAGE_DIR = Path(provenance.__file__).resolve().parents[1]
DIGEST = "sha256:" + "ab" * 32


def git(where: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-C", str(where), *args], check=True, capture_output=True, text=True
    ).stdout.strip()


@pytest.fixture(autouse=True)
def fresh_cache() -> None:
    provenance._package_record.cache_clear()


def test_the_commit_of_this_checkout_is_recorded() -> None:
    record = package_record()
    assert record.version == metadata.version("patient-ml-airflow")
    assert record.commit_source == "git"
    assert record.commit == git(PACKAGE_DIR, "rev-parse", "HEAD")
    dirty = bool(git(PACKAGE_DIR, "status", "--porcelain", "--untracked-files=no", "--", "."))
    assert record.dirty is dirty


def test_a_dirty_package_folder_is_flagged(tmp_path: Path) -> None:
    package = tmp_path / "repo" / "patient_ml"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (tmp_path / "repo" / "README").write_text("x")
    git(tmp_path / "repo", "init", "-q")
    git(tmp_path / "repo", "add", ".")
    git(tmp_path / "repo", "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", "x")
    clean = package_record(package)
    assert (clean.commit_source, clean.dirty) == ("git", False)
    assert clean.commit == git(tmp_path / "repo", "rev-parse", "HEAD")
    (tmp_path / "repo" / "README").write_text("changed outside the package")
    provenance._package_record.cache_clear()
    assert package_record(package).dirty is False  # only the package's own folder counts
    (package / "__init__.py").write_text("changed = True\n")
    provenance._package_record.cache_clear()
    assert package_record(package).dirty is True


def test_without_git_the_setting_or_unknown(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "no-git-here"))  # git is not installed
    assert provenance.git_commit(PACKAGE_DIR) is None
    monkeypatch.delenv("PATIENT_ML_SOURCE_COMMIT", raising=False)
    unknown = package_record()
    assert (unknown.commit, unknown.commit_source, unknown.dirty) == ("unknown", "unknown", None)
    monkeypatch.setenv("PATIENT_ML_SOURCE_COMMIT", "0123abc")
    configured = package_record()
    assert (configured.commit, configured.commit_source) == ("0123abc", "env")
    monkeypatch.setenv("PATIENT_ML_SOURCE_COMMIT", "rm -rf /")
    with pytest.raises(PatientMLError) as raised:
        package_record()
    assert "PATIENT_ML_SOURCE_COMMIT='rm -rf /'" in raised.value.message
    assert "git rev-parse HEAD" in (raised.value.fix or "")


def test_a_folder_that_git_does_not_track_has_no_commit(tmp_path: Path) -> None:
    git(tmp_path, "init", "-q")  # a repository around a package it does not track
    package = tmp_path / "venv" / "patient_ml"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    assert provenance.git_commit(package) is None


def test_the_trainers_environment_file(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    assert read_trainer_environment(tmp_path) is None
    (tmp_path / "environment.json").write_text(
        json.dumps(
            {
                "python": "3.11.2",
                "implementation": "CPython",
                "libraries": {"torch": "1.13.1", "numpy": "1.24.2", "bad name!": "1", "x": "$(rm)"},
            }
        )
    )
    found = read_trainer_environment(tmp_path)
    assert found is not None and found.reported_by == "trainer"
    assert (found.python, found.libraries) == ("3.11.2", {"numpy": "1.24.2", "torch": "1.13.1"})
    caplog.set_level(logging.WARNING, logger="patient_ml.training")
    (tmp_path / "environment.json").write_text("[1, 2]")
    assert read_trainer_environment(tmp_path) is None
    assert "environment.json is ignored (not a JSON object)" in caplog.text
    (tmp_path / "environment.json").write_text("x" * (provenance.MAX_ENVIRONMENT_BYTES + 1))
    assert read_trainer_environment(tmp_path) is None


def test_the_local_backend_records_its_trainer_folder_and_interpreter(tmp_path: Path) -> None:
    result = backend().run(job(tmp_path / "job", epochs=1, score=0.7))
    assert result.succeeded
    assert result.image == ImageRecord(
        role="training",
        reference="patient-ml/scripted-trainer:1",
        backend="local",
        digest=folder_digest(SCRIPTED),
    )
    env = result.environment  # the scripted trainer writes no environment.json
    assert env is not None and env.reported_by == "host"
    assert (env.python, env.interpreter) == (platform.python_version(), sys.executable)
    assert env.libraries["numpy"] == metadata.version("numpy")
    assert env.libraries["optuna"] == metadata.version("optuna")


def test_a_changed_trainer_folder_has_another_digest(tmp_path: Path) -> None:
    import shutil

    copy = tmp_path / "trainer"
    shutil.copytree(SCRIPTED, copy)
    before = folder_digest(copy)
    assert before.startswith("local-sha256:") and before == folder_digest(SCRIPTED)
    (copy / "train").write_text((copy / "train").read_text() + "\n# changed\n")
    assert folder_digest(copy) != before


def test_sagemaker_records_the_resolved_image() -> None:
    ecr = "123456789012.dkr.ecr.eu-west-1.amazonaws.com/trainer"
    pinned = sagemaker_image_record(f"{ecr}:1", f"{ecr}@{DIGEST}", "training")
    assert (pinned.digest, pinned.resolved_image) == (DIGEST, f"{ecr}@{DIGEST}")
    by_tag = sagemaker_image_record(f"{ecr}:1", f"{ecr}:1", "training")
    assert by_tag.digest is None and by_tag.resolved_image == f"{ecr}:1"
    assert pinned_digest(f"{ecr}:1@{DIGEST}") == DIGEST and pinned_digest(f"{ecr}:1") is None


def record(reference: str, digest: str | None, backend: str = "docker") -> ImageRecord:
    return ImageRecord(role="training", reference=reference, backend=backend, digest=digest)


def test_tag_moves_compare_with_the_newest_earlier_run_of_the_same_reference() -> None:
    now = RunProvenance(training=record("t:1", "sha256:" + "2" * 64))
    earlier = [
        ("r3", "run-three", {"training": record("t:2", "sha256:" + "9" * 64).to_wire()}),
        ("r2", "run-two", {"training": record("t:1", "sha256:" + "1" * 64).to_wire()}),
        ("r1", "run-one", {"training": record("t:1", "sha256:" + "2" * 64).to_wire()}),
    ]
    (move,) = tag_moves(now, earlier)
    assert (move.previous_run_slug, move.previous_digest) == ("run-two", "sha256:" + "1" * 64)
    assert tag_move_text(move) == (
        "The training image tag t:1 moved between runs: run run-two used sha256:111111111111, "
        "this run sha256:222222222222."
    )
    # the same digest as the newest earlier use: no move (run-one's older digest is not asked)
    assert tag_moves(now, earlier[2:]) == []
    # another backend, or an unknown digest on either side, is no evidence of a move
    assert tag_moves(now, [("r", "s", {"training": record("t:1", "x", "local").to_wire()})]) == []
    assert tag_moves(RunProvenance(training=record("t:1", None)), earlier) == []
    assert short_digest("local-sha256:" + "f" * 64) == "local-sha256:ffffffffffff"


def test_a_reference_trainers_digest_covers_its_shared_code(tmp_path: Path) -> None:
    import shutil

    from patient_ml.training.backends.local import REFERENCE_TRAINERS, LocalBackend

    copy = tmp_path / "trainers"
    shutil.copytree(REFERENCE_TRAINERS, copy, ignore=shutil.ignore_patterns("__pycache__"))
    local = LocalBackend({"patient-ml/img-clf-trainer": copy / "img_clf"})
    before = local.digest("patient-ml/img-clf-trainer:0.1.0")
    assert before == local.image_record("patient-ml/img-clf-trainer:0.1.0").digest
    assert (
        before
        == folder_digest(copy / "img_clf", copy / "common")
        != folder_digest(copy / "img_clf")
    )
    contract = copy / "common" / "contract.py"
    contract.write_text(contract.read_text() + "\n# changed\n")
    assert local.digest("patient-ml/img-clf-trainer:0.1.0") != before
