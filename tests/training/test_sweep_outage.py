"""A sweep on PostgreSQL through a database outage (a proxy cuts every connection and refuses
new ones for 10 s, as a server restart does): the worker waits and goes on; no task retry, no
trial lost or doubled, the product's trial records agree with the study."""

from __future__ import annotations

import logging
from typing import Any

import optuna
import pytest
from sqlalchemy import select

from patient_ml.db.engine import get_engine, session_scope
from patient_ml.db.models import Trial
from patient_ml.db.retry import retry_transient
from patient_ml.services import training as training_service
from patient_ml.training import sweep
from tests.conftest import _truncate
from tests.db_outage import outage_proxy
from tests.helpers import example
from tests.training.test_sweep import spec

pytestmark = pytest.mark.postgres


@pytest.fixture
def pg_url(_migrated_postgres: str) -> str:
    """The tests' PostgreSQL database, emptied (only PostgreSQL has a server to lose)."""
    _truncate(get_engine(_migrated_postgres))
    return _migrated_postgres


def _run_row(url: str) -> str:
    """A product run the trial records belong to."""
    from patient_ml.services import datasets, models, runs

    with session_scope(get_engine(url)) as session:
        datasets.create_dataset(session, example("brain_mri_dataset"), actor="t")
        model = models.create_model(session, example("brain_mri_model"), actor="t")
        return runs.create_run(session, model.id, actor="t").id


def test_a_ten_second_outage_mid_sweep_costs_a_wait_not_a_retry(
    pg_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="patient_ml.db")
    run_id = _run_row(pg_url)
    with outage_proxy(pg_url) as proxy:
        engine = get_engine(proxy.url)
        storage = sweep.optuna_storage(proxy.url)

        def trial(number: int, hps: dict[str, Any], on_metric: Any) -> sweep.TrialOutcome:
            value = 0.5 + number / 100
            for step in range(3):
                if number == 1 and step == 1:
                    proxy.outage(10)  # the server goes away mid-trial, after one report
                on_metric("validation:accuracy", value * (step + 1) / 3, step)

            def record() -> None:  # the product's write, as TuningWorker.record_trial does
                with session_scope(engine) as session:
                    training_service.record_trial(
                        session, run_id, number, state="complete", params=hps, worker="0",
                        value=value,
                    )  # fmt: skip

            retry_transient(record, f"trial {number}: record complete")
            return sweep.TrialOutcome("complete", value, None, {"validation:accuracy": value})

        outcomes = sweep.run_worker(engine, storage, spec(run_id, max_trials=4), "0", trial)
        assert proxy.cut > 0, "the outage cut no connection: the test proved nothing"
    assert [o.state for o in outcomes] == ["complete"] * 4
    study = optuna.load_study(study_name=sweep.study_name(run_id), storage=pg_url)
    assert [t.state.name for t in study.trials] == ["COMPLETE"] * 4
    assert study.trials[1].intermediate_values == pytest.approx({0: 0.17, 1: 0.34, 2: 0.51})
    with session_scope(get_engine(pg_url)) as session:
        rows = session.scalars(select(Trial).where(Trial.run_id == run_id)).all()
        assert sorted((t.number, t.state) for t in rows) == [(n, "complete") for n in range(4)]
    assert "the database is unreachable" in caplog.text


def test_an_outage_longer_than_the_budget_fails_with_the_database_error(
    pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from patient_ml.exceptions import DatabaseError

    monkeypatch.setenv("PATIENT_ML_DB_RETRY_SECONDS", "2")
    run_id = _run_row(pg_url)
    with outage_proxy(pg_url) as proxy:
        engine = get_engine(proxy.url)
        with session_scope(engine) as session:
            session.execute(select(1))  # a pooled connection, then the server goes away
        proxy.outage(30)

        def record() -> None:
            with session_scope(engine) as session:
                training_service.record_trial(
                    session, run_id, 0, state="running", params={}, worker="0"
                )

        with pytest.raises(DatabaseError, match="Cannot use the product database"):
            retry_transient(record, "trial 0: record running")
