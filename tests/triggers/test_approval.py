"""ApprovalTrigger's error budget: a brief outage is ridden out, a lasting one ends the wait
with the error instead of hiding it until the deadline (failures injected into the poll)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy.exc import OperationalError

from patient_ml.triggers.approval import ApprovalTrigger


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
