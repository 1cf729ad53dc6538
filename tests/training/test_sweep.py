"""Optuna sweeps stored in the product DB (SQLite and PostgreSQL): exact trial counts with
parallel worker processes, reproducible proposals, pruning, and resume after a crash."""

from __future__ import annotations

import math
import multiprocessing
import uuid
from pathlib import Path
from typing import Any

import optuna
import pytest
from sqlalchemy import Engine

from patient_ml.training import sweep
from patient_ml.training.backends.base import TrainingJob
from patient_ml.training.contract import JobLayout
from patient_ml.training.metrics import MetricParser
from tests.training.helpers import IMAGE, METRICS, backend

SPACE = [
    {"type": "continuous", "name": "learning_rate", "min": 1e-4, "max": 0.1, "scale": "log"},
    {"type": "integer", "name": "epochs", "min": 2, "max": 6, "scale": "linear"},
    {"type": "continuous", "name": "momentum", "min": 0.9, "max": 0.999, "scale": "reverseLog"},
    {"type": "categorical", "name": "size", "values": [64, 96]},
]


def spec(run_id: str, max_trials: int = 6, seed: int = 1) -> sweep.SweepSpec:
    return sweep.SweepSpec(
        run_id=run_id,
        space=sweep.search_space(SPACE),
        max_trials=max_trials,
        seed=seed,
        objective="validation:accuracy",
        direction="maximize",
    )


def quadratic(number: int, hps: dict[str, Any], on_metric: Any) -> sweep.TrialOutcome:
    """A deterministic objective of the hyperparameters (no process; sweep logic only)."""
    value = 1 - (math.log10(hps["learning_rate"]) + 2) ** 2 / 10
    for step in range(3):
        if on_metric("validation:accuracy", value * (step + 1) / 3, step):
            return sweep.TrialOutcome("pruned", None, None, {})
    return sweep.TrialOutcome("complete", value, None, {"validation:accuracy": value})


def test_search_space_mapping() -> None:
    space = {p.name: p for p in sweep.search_space(SPACE)}
    assert space["learning_rate"].distribution.log is True
    assert space["epochs"].distribution.low == 2 and space["epochs"].distribution.step == 1
    momentum = space["momentum"]
    assert momentum.reverse and math.isclose(momentum.distribution.low, 0.001)
    assert math.isclose(momentum.value(0.01), 0.99)
    assert space["size"].distribution.choices == ("64", "96")
    auto = sweep.search_space(
        [
            {"type": "continuous", "name": "a", "min": 1e-5, "max": 1.0, "scale": "auto"},
            {"type": "continuous", "name": "b", "min": 0.1, "max": 0.9, "scale": "auto"},
        ]
    )
    assert [p.distribution.log for p in auto] == [True, False]


def test_sweep_runs_exactly_max_trials_and_is_reproducible(engine: Engine, db_url: str) -> None:
    storage = sweep.optuna_storage(db_url)
    proposals = []
    for _ in range(2):
        run_id = str(uuid.uuid4())
        outcomes = sweep.run_worker(engine, storage, spec(run_id), "0", quadratic)
        assert len(outcomes) == 6
        study = optuna.load_study(study_name=sweep.study_name(run_id), storage=storage)
        proposals.append([t.user_attrs["hyperparameters"] for t in study.trials])
        best = sweep.best_trial(storage, run_id)
        assert best is not None and best.value == max(
            t.value for t in study.trials if t.value is not None
        )
    assert proposals[0] == proposals[1]
    assert 0.9 <= proposals[0][0]["momentum"] <= 0.999


def test_pruned_trials_are_recorded_as_pruned(engine: Engine, db_url: str) -> None:
    storage = sweep.optuna_storage(db_url)
    run_id = str(uuid.uuid4())
    states = []

    def worse_each_time(number: int, hps: dict[str, Any], on_metric: Any) -> sweep.TrialOutcome:
        value = 1.0 / (number + 1)
        for step in range(4):
            if on_metric("validation:accuracy", value, step):
                states.append("pruned")
                return sweep.TrialOutcome("pruned", None, None, {})
        states.append("complete")
        return sweep.TrialOutcome("complete", value, None, {})

    sweep.run_worker(engine, storage, spec(run_id, max_trials=6), "0", worse_each_time)
    study = optuna.load_study(study_name=sweep.study_name(run_id), storage=storage)
    assert [t.state.name for t in study.trials].count("PRUNED") == states.count("pruned") >= 1


def test_a_crashed_worker_resumes_and_the_sweep_finishes(engine: Engine, db_url: str) -> None:
    storage = sweep.optuna_storage(db_url)
    run_id = str(uuid.uuid4())
    sweep.create_study(storage, run_id, "maximize")
    # Attempt 1 of worker 0 claims a trial and dies before telling its result.
    claimed = sweep.claim_trial(engine, storage, spec(run_id, max_trials=4), "0")
    assert claimed is not None
    # Attempt 2 (an Airflow retry) fails the leftover and runs the sweep to the end.
    handed: list[int] = []
    outcomes = sweep.run_worker(
        engine, storage, spec(run_id, max_trials=4), "0", quadratic,
        lambda trials: handed.extend(t.number for t in trials),
    )  # fmt: skip
    study = optuna.load_study(study_name=sweep.study_name(run_id), storage=storage)
    stale = [t for t in study.trials if t.user_attrs.get("stale")]
    assert handed == [stale[0].number]  # for the product's records
    assert len(stale) == 1 and stale[0].state == optuna.trial.TrialState.FAIL
    assert "crash" in stale[0].user_attrs["failure"]
    assert len(outcomes) == 4 and len(study.trials) == 5
    assert all(t.state != optuna.trial.TrialState.RUNNING for t in study.trials)


def test_the_study_commits_without_waiting_for_the_disk(db_url: str) -> None:
    """Set on every connection of the study's pool, and kept after a rolled-back transaction
    (PostgreSQL undoes a SET made in one)."""
    from sqlalchemy import text

    storage = sweep.optuna_storage(db_url)
    for _ in range(2):
        with storage.engine.connect() as conn:
            if conn.dialect.name == "sqlite":
                mode = conn.execute(text("PRAGMA journal_mode")).scalar()
                assert (mode, conn.execute(text("PRAGMA synchronous")).scalar()) == ("wal", 1)
            else:
                assert conn.execute(text("SHOW synchronous_commit")).scalar() == "off"
            conn.rollback()


def _worker(db_url: str, run_id: str, worker: str, start: Any) -> int:
    from patient_ml.db.engine import get_engine

    storage = sweep.optuna_storage(db_url)
    engine = get_engine(db_url)
    start.wait(timeout=120)  # spawned processes start up to seconds apart; trials take ~ms
    return len(sweep.run_worker(engine, storage, spec(run_id, max_trials=9), worker, quadratic))


def test_parallel_worker_processes_share_one_study(engine: Engine, db_url: str) -> None:
    run_id = str(uuid.uuid4())
    sweep.create_study(sweep.optuna_storage(db_url), run_id, "maximize")
    ctx = multiprocessing.get_context("spawn")
    with ctx.Manager() as manager, ctx.Pool(3) as pool:
        start = manager.Barrier(3)
        done = pool.starmap(_worker, [(db_url, run_id, str(w), start) for w in range(3)])
    study = optuna.load_study(
        study_name=sweep.study_name(run_id), storage=sweep.optuna_storage(db_url)
    )
    assert sum(done) == 9 == len(study.trials)
    assert sorted(t.number for t in study.trials) == list(range(9))
    assert {t.state for t in study.trials} <= {
        optuna.trial.TrialState.COMPLETE,
        optuna.trial.TrialState.PRUNED,
    }
    assert len({t.user_attrs["worker"] for t in study.trials}) >= 2


def test_sweep_with_real_training_processes(engine: Engine, db_url: str, tmp_path: Path) -> None:
    """The local backend as the executor: failures keep their text, the best trial wins."""
    storage = sweep.optuna_storage(db_url)
    run_id = str(uuid.uuid4())
    local = backend()

    def execute(number: int, hps: dict[str, Any], on_metric: Any) -> sweep.TrialOutcome:
        layout = JobLayout(tmp_path / f"trial-{number}").create()
        mode = "fail" if number == 1 else "success"
        layout.write_config({**hps, "mode": mode, "score": hps["learning_rate"] * 10}, {})
        job = TrainingJob(
            f"t{number}", layout, IMAGE, MetricParser.from_config(METRICS), timeout_seconds=30
        )
        result = local.run(job, on_metric)
        state = {"succeeded": "complete", "stopped": "pruned"}.get(result.status, "failed")
        value = result.metrics.get("validation:accuracy") if state == "complete" else None
        return sweep.TrialOutcome(state, value, result.failure, result.metrics)

    sweep.run_worker(engine, storage, spec(run_id, max_trials=3), "0", execute)
    study = optuna.load_study(study_name=sweep.study_name(run_id), storage=storage)
    failed = [t for t in study.trials if t.state == optuna.trial.TrialState.FAIL]
    assert len(failed) == 1 and failed[0].user_attrs["failure"] == (
        "learning_rate='abc' is not a number"
    )
    assert sweep.best_trial(storage, run_id) is not None


@pytest.fixture(autouse=True)
def _quiet_optuna() -> None:
    optuna.logging.set_verbosity(optuna.logging.WARNING)


def _open_storage(url: str, barrier: Any) -> None:
    barrier.wait()
    sweep.optuna_storage(url)


def test_workers_starting_together_create_optunas_tables_once(tmp_path: Path) -> None:
    """The mapped tune workers of a run's first sweep open the study storage at the same moment
    on a database without Optuna's tables; each must get it (before, all but one could fail
    with 'table study_directions already exists' and waited for a retry)."""

    context = multiprocessing.get_context("fork")
    failed = 0
    for attempt in range(3):
        url = f"sqlite:///{tmp_path / f'fresh-{attempt}.db'}"
        barrier = context.Barrier(4)
        workers = [context.Process(target=_open_storage, args=(url, barrier)) for _ in range(4)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(timeout=120)
        failed += sum(worker.exitcode != 0 for worker in workers)
    assert failed == 0
