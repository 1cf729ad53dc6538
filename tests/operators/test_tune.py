"""The tune stage through its operators (`op.execute(context)`): mapped workers on a real
curated snapshot with real trainer processes, then the best trial recorded on the run."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, select

from patient_ml.db.engine import session_scope
from patient_ml.db.models import AuditEvent, Metric, Trial
from patient_ml.exceptions import PatientMLError
from patient_ml.operators.tune import FinishTuningOperator, TuneWorkerOperator
from patient_ml.services.runs import get_run
from patient_ml.services.tuning import TuningWorker
from patient_ml.storage import artifact_store_from_uri
from tests.training.helpers import IMAGE, METRICS, SCRIPTED, backend, curated_run


def model_config(name: str, dataset: str, **approach: Any) -> dict[str, Any]:
    return {
        "name": name,
        "datasetId": dataset,
        "trainingApproach": {
            "type": "tuningJob",
            "trainingImage": IMAGE,
            "metricDefinitions": METRICS,
            "objective": {"metric": "validation:accuracy", "direction": "maximize"},
            "searchSpace": [
                {"type": "continuous", "name": "score", "min": 0.1, "max": 0.9},
                {"type": "integer", "name": "epochs", "min": 2, "max": 4},
            ],
            "maxTrials": 4,
            "seed": 3,
            **approach,
        },
        "deployApproach": {"type": "edge", "inferenceImage": IMAGE},
    }


@pytest.fixture
def run_with_snapshot(
    engine: Engine, db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Any:
    def make(**approach: Any) -> str:
        monkeypatch.setenv("PATIENT_ML_DATABASE_URL", db_url)  # what the operators resolve
        monkeypatch.setenv("PATIENT_ML_LOCAL_TRAINERS", f"patient-ml/scripted-trainer={SCRIPTED}")
        config = model_config("", "", **approach)
        del config["name"], config["datasetId"]
        store = artifact_store_from_uri(str(tmp_path / "artifacts"))
        # 80 patients: enough that every split gets confirmed examples
        run_id, _ = curated_run(engine, tmp_path, config, patients=80, store=store)
        return run_id

    return make


def test_mapped_workers_then_the_best_trial_is_recorded(
    engine: Engine, db_url: str, tmp_path: Path, run_with_snapshot: Any
) -> None:
    run_id = run_with_snapshot()
    artifacts = str(tmp_path / "artifacts")
    done = [
        TuneWorkerOperator(
            task_id=f"tune_{w}", run_id=run_id, worker_index=w, backend="local",
            artifact_uri=artifacts,
        ).execute({})
        for w in range(2)
    ]  # fmt: skip
    assert sum(sum(d.values()) for d in done) == 4
    result = FinishTuningOperator(task_id="finish", run_id=run_id, artifact_uri=artifacts).execute(
        {}
    )

    with session_scope(engine) as session:
        trials = session.scalars(select(Trial).where(Trial.run_id == run_id)).all()
        assert len(trials) == 4 and {t.state for t in trials} <= {"complete", "pruned"}
        best = max((t for t in trials if t.state == "complete"), key=lambda t: t.value or 0)
        assert result["bestTrial"] == best.number
        run = get_run(session, run_id)
        store = artifact_store_from_uri(artifacts)
        data = store.read_bytes(run.model_artifact_uri.removeprefix(store.uri("")))
        assert hashlib.sha256(data).hexdigest() == run.model_artifact_sha256
        assert {h["name"] for h in run.hyperparameters} == {"score", "epochs"}
        metrics = {
            m.name: m.value
            for m in session.scalars(select(Metric).where(Metric.run_id == run_id)).all()
        }
        assert metrics["validation:accuracy"] == pytest.approx(best.value)
        actions = session.scalars(
            select(AuditEvent.action).where(AuditEvent.entity_id == run_id)
        ).all()
        assert "run.tuned" in actions
    # Idempotent: finishing again changes nothing.
    again = FinishTuningOperator(task_id="f2", run_id=run_id, artifact_uri=artifacts).execute({})
    assert again == result


def test_no_completed_trial_fails_with_the_failure_texts(
    tmp_path: Path, run_with_snapshot: Any
) -> None:
    run_id = run_with_snapshot(
        searchSpace=[{"type": "categorical", "name": "mode", "values": ["fail"]}], maxTrials=2
    )
    artifacts = str(tmp_path / "artifacts")
    TuneWorkerOperator(task_id="t", run_id=run_id, backend="local", artifact_uri=artifacts).execute(
        {}
    )
    with pytest.raises(PatientMLError, match="learning_rate='abc' is not a number"):
        FinishTuningOperator(task_id="f", run_id=run_id, artifact_uri=artifacts).execute({})


def test_objective_regex_that_never_matches_fails_the_trial(
    engine: Engine, tmp_path: Path, run_with_snapshot: Any
) -> None:
    run_id = run_with_snapshot(
        metricDefinitions=[
            {"name": "validation:accuracy", "regex": r"val_acc_typo=([0-9.]+)"},
        ],
        maxTrials=1,
    )
    TuneWorkerOperator(
        task_id="t", run_id=run_id, backend="local", artifact_uri=str(tmp_path / "artifacts")
    ).execute({})
    with session_scope(engine) as session:
        trial = session.scalars(select(Trial).where(Trial.run_id == run_id)).one()
    assert trial.state == "failed" and "never appeared in the training log" in trial.failure


def test_a_pruned_trial_keeps_the_value_it_was_pruned_at(
    engine: Engine, tmp_path: Path, run_with_snapshot: Any
) -> None:
    """The trials chart shows pruned trials at their last reported objective value (as Optuna
    keeps it), not at a later line the job logged while it stopped."""
    run_id = run_with_snapshot()
    worker = TuningWorker(
        engine=engine,
        store=artifact_store_from_uri(str(tmp_path / "artifacts")),
        backend=backend(),
        run_id=run_id,
        worker="w0",
        workdir=tmp_path / "w0",
    )
    worker.problem = {"problemType": "imgClf", "labels": []}
    seen: list[tuple[str, float, int]] = []

    def prune_at_second_epoch(name: str, value: float, step: int) -> bool:
        seen.append((name, value, step))
        return name == "validation:accuracy" and step == 1

    # score 0.8 over 4 epochs reports 0.2, 0.4, 0.6, 0.8: pruned at 0.4
    hps = {"score": "0.8", "epochs": "4", "delay": "0.3"}
    outcome = worker.execute(0, hps, prune_at_second_epoch)
    assert outcome.state == "pruned" and outcome.value == pytest.approx(0.4)
    with session_scope(engine) as session:
        trial = session.scalars(select(Trial).where(Trial.run_id == run_id)).one()
        assert trial.state == "pruned" and trial.value == pytest.approx(0.4)
        assert trial.failure is None and trial.artifact_uri is None
    assert ("validation:accuracy", pytest.approx(0.4), 1) in seen


def _attempt_dies_mid_trial(engine: Engine, db_url: str, run_id: str, worker: str) -> int:
    """What a worker killed mid-trial leaves: a trial running in the study and in the product."""
    from patient_ml.services import training as training_service
    from patient_ml.services.tuning import load_run_spec
    from patient_ml.training import sweep
    from patient_ml.training.tuning import sweep_spec

    storage = sweep.optuna_storage(db_url)
    spec = sweep_spec(load_run_spec(engine, run_id))
    sweep.create_study(storage, run_id, spec.direction)
    claimed = sweep.claim_trial(engine, storage, spec, worker)
    assert claimed is not None
    _, trial = claimed
    with session_scope(engine) as session:
        training_service.record_trial(
            session, run_id, trial.number, state="running", params={}, worker=worker
        )
    return trial.number


def test_no_trial_stays_running_after_its_worker_died(
    engine: Engine, db_url: str, tmp_path: Path, run_with_snapshot: Any
) -> None:
    """Worker 0 dies mid-trial and is retried: the retry fails that trial in the study and in
    the product. Worker 1 dies mid-trial and is not retried: finishing the tune stage closes
    its trial in both. Nothing is shown `running` once the stage is over."""
    import optuna

    from patient_ml.training import sweep

    run_id = run_with_snapshot(maxTrials=3)
    artifacts = str(tmp_path / "artifacts")
    retried = _attempt_dies_mid_trial(engine, db_url, run_id, "0")
    abandoned = _attempt_dies_mid_trial(engine, db_url, run_id, "1")
    done = TuneWorkerOperator(
        task_id="tune", run_id=run_id, worker_index=0, backend="local", artifact_uri=artifacts
    ).execute({})
    # its own stale trial is not counted; worker 1's (may still come back) is: 2 + 1 = 3
    assert sum(done.values()) == 2
    with session_scope(engine) as session:
        states = {t.number: t for t in session.scalars(select(Trial).where(Trial.run_id == run_id))}
        assert states[retried].state == "failed" and "crash" in (states[retried].failure or "")
        assert states[abandoned].state == "running"  # worker 1 may still come back
    FinishTuningOperator(task_id="finish", run_id=run_id, artifact_uri=artifacts).execute({})
    study = optuna.load_study(study_name=sweep.study_name(run_id), storage=db_url)
    assert all(t.state != optuna.trial.TrialState.RUNNING for t in study.trials)
    with session_scope(engine) as session:
        trials = session.scalars(select(Trial).where(Trial.run_id == run_id)).all()
        assert "running" not in {t.state for t in trials}
        left = next(t for t in trials if t.number == abandoned)
        assert left.state == "failed" and "run ended" in (left.failure or "")
        assert left.ended_at is not None
