"""ApprovalTrigger's error budget: a brief outage is ridden out, a lasting one ends the wait
with the error instead of hiding it until the deadline (failures injected into the poll)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy.exc import OperationalError

from patient_ml.triggers.approval import ApprovalTrigger, ErrorBudget


def _trigger(**kwargs: Any) -> ApprovalTrigger:
    deadline = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    return ApprovalTrigger(run_id="r1", deadline=deadline, poll_interval=0.01, **kwargs)


def _events(trigger: ApprovalTrigger) -> list[dict[str, Any]]:
    async def collect() -> list[dict[str, Any]]:
        return [event.payload async for event in trigger.run()]

    return asyncio.run(asyncio.wait_for(collect(), timeout=10))


def _outage() -> OperationalError:
    return OperationalError("SELECT 1", {}, Exception("server closed the connection"))


def test_a_lasting_outage_ends_the_wait_with_the_error(monkeypatch: pytest.MonkeyPatch) -> None:
    trigger = _trigger(max_poll_errors=3)
    calls: list[int] = []

    def failing() -> None:
        calls.append(1)
        raise _outage()

    monkeypatch.setattr(trigger, "_poll", failing)
    [event] = _events(trigger)
    assert event["status"] == "error" and event["runId"] == "r1" and event["failures"] == 3
    assert event["error"].startswith("OperationalError:") and len(calls) == 3


def test_a_brief_outage_is_ridden_out(monkeypatch: pytest.MonkeyPatch) -> None:
    trigger = _trigger(max_poll_errors=2)
    answers: list[Any] = [_outage(), None, _outage(), None, {"status": "approved", "runId": "r1"}]

    def flaky() -> Any:
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    monkeypatch.setattr(trigger, "_poll", flaky)
    # two failures in all, never two in a row: the success in between resets the count
    assert _events(trigger) == [{"status": "approved", "runId": "r1"}]


def test_the_deadline_still_ends_the_wait(monkeypatch: pytest.MonkeyPatch) -> None:
    trigger = ApprovalTrigger(
        run_id="r1", deadline=datetime.now(UTC).isoformat(), poll_interval=0.01
    )
    monkeypatch.setattr(trigger, "_poll", lambda: None)
    assert _events(trigger) == [{"status": "timedOut", "runId": "r1"}]


def test_serialization_keeps_the_budget_and_the_task_instance() -> None:
    trigger = _trigger(max_poll_errors=4, ti_id="0190b1d2-0000-7000-8000-000000000001")
    path, kwargs = trigger.serialize()
    again = ApprovalTrigger(**kwargs)
    assert path == "patient_ml.triggers.approval.ApprovalTrigger"
    assert (again.max_poll_errors, again.ti_id) == (4, trigger.ti_id)


def test_a_decision_is_reported_even_when_closing_the_required_action_fails(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Closing the Required Action is bookkeeping: outside a triggerer (no Execution API
    channel here) it fails, and the decision still ends the wait."""
    trigger = _trigger(ti_id="0190b1d2-0000-7000-8000-000000000001")
    decision = {"status": "rejected", "runId": "r1", "actor": "user", "user": "dr-a",
                "description": "worse", "channel": "api"}  # fmt: skip
    monkeypatch.setattr(trigger, "_poll", lambda: decision)
    assert _events(trigger) == [decision]


def test_a_wrong_product_db_connection_ends_the_wait_with_its_name() -> None:
    """No injected failure: a connection that does not exist fails every poll for real, and
    the wait ends after the budget instead of waiting silently until the deadline."""
    trigger = _trigger(patient_ml_conn_id="pml_layers_no_such_conn", max_poll_errors=2)
    [event] = _events(trigger)
    assert event["status"] == "error" and event["failures"] == 2
    assert "pml_layers_no_such_conn" in event["error"]
    # the same budget when the wait polls in the worker (deferrable=False)
    slept: list[float] = []
    event = trigger.wait_in_worker(sleep=slept.append)
    assert event["status"] == "error" and "pml_layers_no_such_conn" in event["error"]
    assert len(slept) == 1  # one pause between the two failed polls


def test_the_error_budget_also_ends_on_time() -> None:
    now = [0.0]
    budget = ErrorBudget(max_errors=100, max_seconds=5.0, clock=lambda: now[0])
    for t in (0.0, 2.0, 4.0):
        now[0] = t
        assert budget.failure() is False
    now[0] = 6.0
    assert budget.failure() is True and budget.failures == 4
    budget.success()
    now[0] = 100.0
    assert budget.failure() is False  # a success started a new streak


def test_a_slow_poll_interval_still_ends_on_the_time_budget(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    trigger = _trigger(max_poll_errors=1000, max_error_seconds=0.05)
    monkeypatch.setattr(trigger, "_poll", lambda: (_ for _ in ()).throw(_outage()))
    [event] = _events(trigger)
    assert event["status"] == "error" and 2 <= event["failures"] < 1000


def test_waiting_in_the_worker_sees_decisions_and_the_deadline(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    trigger = _trigger()
    answers: list[Any] = [None, _outage(), {"status": "approved", "runId": "r1"}]

    def poll() -> Any:
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    monkeypatch.setattr(trigger, "_poll", poll)
    slept: list[float] = []
    assert trigger.wait_in_worker(sleep=slept.append) == {"status": "approved", "runId": "r1"}
    assert slept == [0.01, 0.01]
    late = ApprovalTrigger(run_id="r1", deadline=datetime.now(UTC).isoformat(), poll_interval=1)
    monkeypatch.setattr(late, "_poll", lambda: None)
    assert late.wait_in_worker(sleep=slept.append) == {"status": "timedOut", "runId": "r1"}


def test_serialization_keeps_the_time_budget() -> None:
    trigger = _trigger(max_error_seconds=42.0)
    assert ApprovalTrigger(**trigger.serialize()[1]).max_error_seconds == 42.0
