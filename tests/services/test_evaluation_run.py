"""The evaluation keeps its progress messages as the run's `evaluation` log object, on
success (a real trained model served by a real `serve` process) and on failure, and never the
per-example answers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine

from patient_ml.db import schema
from patient_ml.db.engine import get_engine, session_scope
from patient_ml.evaluation.evaluate import EvaluationError, evaluation_log_key
from patient_ml.log_records import decode
from patient_ml.services.evaluation_run import evaluate_run
from patient_ml.services.run_logs import run_logs_page
from patient_ml.services.runs import create_run
from patient_ml.serving.servers import LocalServer
from tests.operators.lifecycle import Project


@pytest.fixture
def sqlite_engine(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Engine:
    url = f"sqlite:///{tmp_path / 'product.db'}"
    schema.upgrade(get_engine(url, check_schema=False))
    monkeypatch.setenv("PATIENT_ML_DATABASE_URL", url)  # what the tune operators resolve
    return get_engine(url)


def messages(project: Project, run_id: str) -> list[str]:
    return [m for _, _, m in decode(project.store.read_bytes(evaluation_log_key(run_id)))]


def test_progress_is_kept_and_answers_are_not(sqlite_engine: Engine, tmp_path: Path) -> None:
    p = Project(sqlite_engine, tmp_path / "p")
    run_id = p.trained_run()
    summary: dict[str, Any] = evaluate_run(
        sqlite_engine, p.store, LocalServer(), run_id, tmp_path / "eval", actor="t"
    )
    assert summary
    kept = messages(p, run_id)
    assert kept[0].startswith(f"evaluating run {run_id} on ")
    assert any(f"The challenger (run {run_id}) is served at" in m for m in kept)
    assert any(f"The challenger (run {run_id}) scored in" in m for m in kept)
    assert any(m.endswith("this is the model's first run") for m in kept)
    assert kept[-1].startswith("intervals: 2000 resamples of the ")
    assert "independent clusters" in kept[0]
    report = p.store.read_bytes(f"runs/{run_id}/evaluation/report.json").decode()
    example_id = report.split('"testExampleIds": [', 1)[1].split('"')[1]
    assert example_id and not any(example_id in m for m in kept)
    events = run_logs_page(p.store, run_id, filter_pattern="?served ?scored")["events"]
    assert [e["stage"] for e in events] == ["evaluation", "evaluation"]


def test_a_failed_evaluation_keeps_its_failure(sqlite_engine: Engine, tmp_path: Path) -> None:
    p = Project(sqlite_engine, tmp_path / "p")
    with session_scope(sqlite_engine) as session:
        run_id = create_run(session, p.model_id, actor="t").id  # never curated
    with pytest.raises(EvaluationError, match="has no snapshot"):
        evaluate_run(sqlite_engine, p.store, LocalServer(), run_id, tmp_path / "eval", actor="t")
    [failure] = messages(p, run_id)
    assert failure.startswith(f"evaluation of run {run_id} failed: Run {run_id} has no snapshot")
