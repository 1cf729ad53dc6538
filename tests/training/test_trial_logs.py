"""Trial logs kept for the logs API: the backend records every line it logs (JSON lines), and
a tuning worker uploads each trial's log object, whether the trial completed, failed or its
backend crashed, on a real curated snapshot with real trainer processes."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine

from patient_ml.log_records import decode
from patient_ml.services.run_logs import run_logs_page
from patient_ml.services.tuning import TuningWorker
from patient_ml.storage import LocalArtifactStore
from patient_ml.training.backends.base import TrainingJob, TrainingOutcome
from patient_ml.training.backends.docker import DockerBackend
from patient_ml.training.backends.local import LocalBackend
from patient_ml.training.tuning import trial_log_key
from tests.docker_engine import build_image
from tests.training.helpers import IMAGE, METRICS, SCRIPTED, backend, curated_run, job


def records(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_the_backend_records_every_line_it_logs(tmp_path: Path) -> None:
    training = job(tmp_path / "job", epochs=2, score=0.8)
    training.log_prefix = "[trial 7] "
    training.log_file = tmp_path / "logs" / "trial-7.jsonl"
    before = time.time() * 1000
    result = backend().run(training)
    assert result.succeeded
    lines = records(training.log_file)
    assert [r["message"] for r in lines][1:] == [
        "[trial 7] epoch=1 val_loss=0.6000 val_accuracy=0.4000",
        "[trial 7] epoch=2 val_loss=0.2000 val_accuracy=0.8000",
        "[trial 7] done",
    ]
    assert lines[0]["message"].startswith("[trial 7] training on 0 examples")
    stamps = [r["timestamp"] for r in lines]
    assert stamps == sorted(stamps) and before <= stamps[0] <= time.time() * 1000
    assert len(lines) == result.log_lines


def test_the_docker_backend_records_the_containers_lines(
    docker_engine: Any, tmp_path: Path
) -> None:
    build_image(docker_engine, SCRIPTED, IMAGE)
    training = job(tmp_path / "job", epochs=1, score=0.9)
    training.log_prefix = "[trial 2] "
    training.log_file = tmp_path / "trial-2.jsonl"
    assert DockerBackend(client=docker_engine).run(training).succeeded
    assert [r["message"] for r in records(training.log_file)][-2:] == [
        "[trial 2] epoch=1 val_loss=0.1000 val_accuracy=0.9000",
        "[trial 2] done",
    ]


def test_pruning_and_timeouts_are_recorded_too(tmp_path: Path) -> None:
    pruned = job(tmp_path / "p", epochs=50, delay=0.2)
    pruned.log_file = tmp_path / "pruned.jsonl"
    backend().run(pruned, on_metric=lambda name, value, step: step >= 1)
    assert any("pruned at validation:" in r["message"] for r in records(pruned.log_file))
    slow = job(tmp_path / "t", mode="hang", timeout=1)
    slow.log_file = tmp_path / "slow.jsonl"
    backend().run(slow)
    assert [r["message"] for r in records(slow.log_file)][-2:] == [
        "about to hang",
        f"{slow.name} timed out after 1 s",
    ]


def test_garbage_lines_stay_valid_json(tmp_path: Path) -> None:
    training = job(tmp_path / "job", mode="garbage", epochs=1)
    training.log_file = tmp_path / "garbage.jsonl"
    backend().run(training)
    messages = [m for _, _, m in decode(training.log_file.read_bytes())]
    assert any(m.startswith("\x00\xff garbage") and len(m) > 20_000 for m in messages)
    assert len(messages) == len(training.log_file.read_bytes().splitlines())


class FlakyBackend(LocalBackend):
    """Failure injection around real trainer processes: trial 1 gets a trainer that fails,
    trial 2's backend crashes after the job has logged."""

    def run(self, job: TrainingJob, on_metric: Any = None) -> TrainingOutcome:
        if job.name.endswith("-t1"):
            hps_file = job.layout.config_dir / "hyperparameters.json"
            hps = json.loads(hps_file.read_text())
            hps_file.write_text(json.dumps({**hps, "mode": "fail"}))
        result = super().run(job, on_metric)
        if job.name.endswith("-t2"):
            raise RuntimeError("the worker lost its backend")
        return result


@pytest.fixture
def run_with_snapshot(engine: Engine, tmp_path: Path) -> tuple[str, LocalArtifactStore]:
    """A run of a 3-trial scripted-trainer model on a real curated snapshot."""
    model = {
        "trainingApproach": {
            "type": "tuningJob",
            "trainingImage": IMAGE,
            "metricDefinitions": METRICS,
            "objective": {"metric": "validation:accuracy", "direction": "maximize"},
            "searchSpace": [{"type": "integer", "name": "epochs", "min": 2, "max": 3}],
            "maxTrials": 3,
            "seed": 1,
        },
        "deployApproach": {"type": "edge", "inferenceImage": IMAGE},
    }
    return curated_run(engine, tmp_path, model, patients=40)


def test_every_trial_uploads_its_log(
    engine: Engine, tmp_path: Path, run_with_snapshot: tuple[str, LocalArtifactStore]
) -> None:
    run_id, store = run_with_snapshot
    worker = TuningWorker(
        engine=engine,
        store=store,
        backend=FlakyBackend({"patient-ml/scripted-trainer": SCRIPTED}),
        run_id=run_id,
        worker="0",
        workdir=tmp_path / "tune",
    )
    with pytest.raises(RuntimeError, match="lost its backend"):
        worker.run()
    keys = set(store.list_keys(f"runs/{run_id}/logs"))
    assert keys == {trial_log_key(run_id, n) for n in range(3)}
    assert keys == {f"runs/{run_id}/logs/training/trial-{n}.jsonl" for n in range(3)}
    complete = [m for _, _, m in decode(store.read_bytes(trial_log_key(run_id, 0)))]
    assert complete[0].startswith("[trial 0] training on ") and complete[-1] == "[trial 0] done"
    assert any(m.startswith("[trial 0] epoch=1 val_loss=") for m in complete)
    failed = [m for _, _, m in decode(store.read_bytes(trial_log_key(run_id, 1)))]
    assert failed and all(m.startswith("[trial 1] ") for m in failed)
    assert "done" not in failed[-1]
    crashed = [m for _, _, m in decode(store.read_bytes(trial_log_key(run_id, 2)))]
    assert crashed[-1] == "[trial 2] done"
    assert not list((tmp_path / "tune" / "logs").iterdir())  # uploaded, then removed
    # What the logs API serves from them: stage training, one sorted stream.
    events = run_logs_page(store, run_id)["events"]
    assert len(events) == len(complete) + len(failed) + len(crashed)
    assert {e["stage"] for e in events} == {"training"}
    assert [e["timestamp"] for e in events] == sorted(e["timestamp"] for e in events)
    only_trial_1 = run_logs_page(store, run_id, filter_pattern='"[trial 1]"')["events"]
    assert [e["payload"] for e in only_trial_1] == failed
