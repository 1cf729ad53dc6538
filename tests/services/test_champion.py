"""The champion pointer: atomic changes, consistent append-only history, rollbacks."""

from __future__ import annotations

import threading

import pytest

from patient_ml.db.engine import session_scope
from patient_ml.exceptions import ConflictError
from patient_ml.services import audit, champion, datasets, models, runs
from tests.helpers import example


def _model_with_runs(engine, count: int) -> tuple[str, list[str]]:
    with session_scope(engine) as s:
        datasets.create_dataset(s, example("brain_mri_dataset"), actor="a")
        model_id = models.create_model(s, example("brain_mri_model"), actor="a").id
        run_ids = [runs.create_run(s, model_id, actor="a").id for _ in range(count)]
        for run_id in run_ids:
            runs.finish_run(s, run_id, status="succeeded", actor="a")
    return model_id, run_ids


def test_promote_then_rollback(engine) -> None:
    model_id, (first, second) = _model_with_runs(engine, 2)
    for run_id in (first, second, first):
        with session_scope(engine) as s:
            champion.promote(s, model_id, run_id, actor="approver", reason="ok")
    with session_scope(engine) as s:
        history = champion.deployment_history(s, model_id)
        assert models.get_model(s, model_id).champion_id == first
        events = [e.action for e in audit.events_for(s, "model", model_id)]
    assert [(d.action, d.previous_champion_id, d.run_id) for d in history] == [
        ("promote", None, first),
        ("promote", first, second),
        ("rollback", second, first),
    ]
    assert events[-3:] == [
        "model.champion.promote",
        "model.champion.promote",
        "model.champion.rollback",
    ]


def test_promoting_the_champion_again_is_a_no_op(engine) -> None:
    model_id, (run_id,) = _model_with_runs(engine, 1)
    with session_scope(engine) as s:
        first = champion.promote(s, model_id, run_id, actor="a").id
    with session_scope(engine) as s:
        assert champion.promote(s, model_id, run_id, actor="a").id == first
        assert len(champion.deployment_history(s, model_id)) == 1


def test_only_succeeded_runs_of_the_model_can_be_promoted(engine) -> None:
    model_id, _ = _model_with_runs(engine, 0)
    with session_scope(engine) as s:
        running = runs.create_run(s, model_id, actor="a").id
    with pytest.raises(ConflictError, match="only a succeeded run"), session_scope(engine) as s:
        champion.promote(s, model_id, running, actor="a")
    with session_scope(engine) as s:
        assert models.get_model(s, model_id).champion_id is None


def test_concurrent_promotions_leave_one_champion_and_a_consistent_history(engine) -> None:
    """Eight promotions race; each history record must name the champion it replaced."""
    workers = 8
    model_id, run_ids = _model_with_runs(engine, workers)
    barrier = threading.Barrier(workers)
    errors: list[BaseException] = []

    def promote(run_id: str) -> None:
        try:
            barrier.wait(timeout=30)
            with session_scope(engine) as s:
                champion.promote(s, model_id, run_id, actor=f"approver-{run_id[:4]}")
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=promote, args=(r,)) for r in run_ids]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert errors == []
    with session_scope(engine) as s:
        history = champion.deployment_history(s, model_id)
        final = models.get_model(s, model_id).champion_id
    assert len(history) == workers
    assert sorted(d.run_id for d in history) == sorted(run_ids)
    previous = None
    for record in history:
        assert record.previous_champion_id == previous, "a promotion read a stale champion"
        previous = record.run_id
    assert final == history[-1].run_id
