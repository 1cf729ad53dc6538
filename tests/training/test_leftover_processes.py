"""A trainer whose task died is found and stopped by its labels (issue 34): the local backend
starts each trainer in a session of its own, which outlives a SIGKILLed task process, so the
retry (labels run + worker) and the run's end (label run) look for it by the labels in its
environment."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from patient_ml.training.backends.labelled import label_environment, labelled_groups
from tests.conftest import REPO_ROOT
from tests.training.helpers import backend

pytestmark = pytest.mark.skipif(not Path("/proc").is_dir(), reason="needs Linux /proc")

# a task process: runs one hanging trial of the scripted trainer with these labels; "ready"
# once the trainer wrote its line (killed before, it would die of the broken pipe on writing)
_TASK = """
import logging, sys
from dataclasses import replace
from pathlib import Path
from tests.training.helpers import backend, job

class Ready(logging.Handler):  # the trainer has written its first line: it will only sleep now
    def emit(self, record):
        if "about to hang" in record.getMessage():
            (Path(sys.argv[1]) / "ready").touch()

logging.getLogger("patient_ml.training").addHandler(Ready())
logging.getLogger("patient_ml.training").setLevel(logging.INFO)
labels = {"run": sys.argv[2], "worker": sys.argv[3]}
backend().run(replace(job(Path(sys.argv[1]), mode="hang", timeout=600), labels=labels))
"""


def _task(root: Path, run: str, worker: str) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONPATH": f"{REPO_ROOT / 'plugins'}{os.pathsep}{REPO_ROOT}"}
    return subprocess.Popen([sys.executable, "-c", _TASK, str(root), run, worker], env=env)


def _wait(check: object, what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not check():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def test_a_killed_tasks_trainer_is_found_and_stopped_by_its_labels(tmp_path: Path) -> None:
    run = uuid.uuid4().hex
    tasks = [_task(tmp_path / f"w{w}", run, str(w)) for w in (0, 1)]
    try:
        _wait(lambda: all((tmp_path / f"w{w}" / "ready").exists() for w in (0, 1)), "trainers")
        assert len(labelled_groups({"run": run})) == 2
        trainer_0 = labelled_groups({"run": run, "worker": "0"})
        assert len(trainer_0) == 1 and trainer_0[0] not in {t.pid for t in tasks}
        for task in tasks:
            task.send_signal(signal.SIGKILL)  # the worker dies; its trainer does not
            task.wait()
        time.sleep(0.5)
        assert len(labelled_groups({"run": run})) == 2, "the trainers outlive their task"

        # the retry of worker 0 stops its own trainer and leaves worker 1's alone
        assert backend().remove_leftovers({"run": run, "worker": "0"}) == 1
        assert labelled_groups({"run": run, "worker": "0"}) == []
        assert len(labelled_groups({"run": run, "worker": "1"})) == 1
        with pytest.raises(ProcessLookupError):
            os.killpg(trainer_0[0], 0)

        # the run's end stops everything labelled with the run; another run's label finds none
        assert backend().remove_leftovers({"run": uuid.uuid4().hex}) == 0
        assert backend().remove_leftovers({"run": run}) == 1
        assert labelled_groups({"run": run}) == []
        assert backend().remove_leftovers({}) == 0  # no labels: nothing, never everything
    finally:
        for task in tasks:
            if task.poll() is None:
                task.kill()
        for pid in labelled_groups({"run": run}):
            os.killpg(pid, signal.SIGKILL)


def test_labels_go_into_the_environment_by_key() -> None:
    assert label_environment({"run": "abc", "worker": "1"}) == {
        "PML_LABEL_RUN": "abc",
        "PML_LABEL_WORKER": "1",
    }
    assert labelled_groups({"run": "x"}, proc=Path("/nonexistent")) == []
