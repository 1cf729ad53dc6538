"""Wait in the triggerer for a decision on a run: the product DB, and Airflow's Required Action."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from airflow.triggers.base import BaseTrigger, TriggerEvent

from patient_ml.exceptions import PatientMLError

DEFAULT_MAX_POLL_ERRORS = 6
DEFAULT_MAX_ERROR_SECONDS = 600.0


class ErrorBudget:
    """Failed polls in a row, and for how long: spent when `max_errors` polls in a row failed
    or the failures have lasted `max_seconds` (whichever comes first). A success resets it."""

    def __init__(
        self,
        max_errors: int,
        max_seconds: float | None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_errors = max(1, int(max_errors))
        self.max_seconds = max_seconds
        self.clock = clock
        self.failures = 0
        self.since: float | None = None

    def success(self) -> None:
        self.failures, self.since = 0, None

    def failure(self) -> bool:
        """Count one failure; True when the budget is spent."""
        self.failures += 1
        now = self.clock()
        if self.since is None:
            self.since = now
        lasted = now - self.since
        return self.failures >= self.max_errors or (
            self.max_seconds is not None and self.failures > 1 and lasted >= self.max_seconds
        )


class ApprovalTrigger(BaseTrigger):
    """Fires when the wait for a decision on `run_id` ends:

    - `{"status": "approved" | "rejected", ...}`: a decision was recorded in the product DB
      (REST API, Patient ML pages, CLI); the task's Required Action (`ti_id`) is answered with
      it first, so Airflow's page does not keep offering it;
    - the HITL payload (`chosen_options`, `params_input`, `responded_by_user`, ...): someone
      responded to the run's Required Action in Airflow (`ti_id` given). Airflow's API server
      normally resumes the task itself; this covers a response that arrived before the task
      was deferred;
    - `{"status": "timedOut"}` at the deadline;
    - `{"status": "error", "error": ..., "failures": n}` when the error budget is spent:
      `max_poll_errors` polls in a row failed, or polls have kept failing for
      `max_error_seconds` (e.g. a wrong connection, or the product DB gone): the task then
      fails with that error rather than waiting blind until the deadline. A poll that succeeds
      resets the budget (a brief outage is ridden out).

    `wait_in_worker` runs the same loop synchronously (the operator's `deferrable=False`).
    """

    def __init__(
        self,
        run_id: str,
        deadline: str,
        patient_ml_conn_id: str | None = None,
        poll_interval: float = 10.0,
        ti_id: str | None = None,
        max_poll_errors: int = DEFAULT_MAX_POLL_ERRORS,
        max_error_seconds: float | None = DEFAULT_MAX_ERROR_SECONDS,
    ) -> None:
        super().__init__()
        self.run_id = run_id
        self.deadline = deadline  # ISO 8601, UTC
        self.patient_ml_conn_id = patient_ml_conn_id
        self.poll_interval = poll_interval
        self.ti_id = ti_id  # the task instance whose Required Action is watched (None: none)
        self.max_poll_errors = max(1, int(max_poll_errors))
        self.max_error_seconds = max_error_seconds

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            "patient_ml.triggers.approval.ApprovalTrigger",
            {
                "run_id": self.run_id,
                "deadline": self.deadline,
                "patient_ml_conn_id": self.patient_ml_conn_id,
                "poll_interval": self.poll_interval,
                "ti_id": self.ti_id,
                "max_poll_errors": self.max_poll_errors,
                "max_error_seconds": self.max_error_seconds,
            },
        )

    def _poll(self) -> dict[str, Any] | None:
        from patient_ml.db.engine import session_scope
        from patient_ml.hooks.product_db import product_engine
        from patient_ml.services.approvals import decision_event, settled_decision

        with session_scope(product_engine(self.patient_ml_conn_id)) as session:
            decision = settled_decision(session, self.run_id)  # partial approvals: wait on
            return None if decision is None else decision_event(self.run_id, decision)

    def _required_action_response(self) -> dict[str, Any] | None:
        """The response to the task's HITL request, if one was given (Airflow's SDK call)."""
        from airflow.sdk.execution_time.hitl import get_hitl_detail_content_detail

        found = get_hitl_detail_content_detail(ti_id=UUID(self._ti_id()))
        if not (found.response_received and found.chosen_options):
            return None
        responder = found.responded_by_user
        return {
            "chosen_options": list(found.chosen_options),
            "params_input": found.params_input or {},
            "responded_at": found.responded_at,
            "responded_by_user": (
                None if responder is None else {"id": responder.id, "name": responder.name}
            ),
            "timedout": False,
        }

    def _close_required_action(self, decision: dict[str, Any]) -> None:
        """Answer the task's Required Action with the decision recorded elsewhere, so that
        Airflow's page does not keep offering it (bookkeeping: a failure is only logged)."""
        from patient_ml.triggers.required_action import close

        try:
            close(
                UUID(self._ti_id()),
                decision=decision["status"],
                description=decision.get("description") or "",
                decided_by=decision.get("user") or decision.get("actor") or "unknown",
                channel=decision.get("channel"),
                override=bool(decision.get("override")),
            )
        except Exception as exc:
            self.log.warning("could not close the Required Action of run %s: %s", self.run_id, exc)

    def _ti_id(self) -> str:
        if not self.ti_id:
            raise PatientMLError(
                f"The approval wait of run {self.run_id} has no task instance to watch.",
                fix="pass ti_id (the operator does when required_actions is on)",
            )
        return self.ti_id

    async def _look(self) -> dict[str, Any] | None:
        found = await asyncio.to_thread(self._poll)
        if self.ti_id:
            from asgiref.sync import sync_to_async

            if found is None:
                found = await sync_to_async(self._required_action_response)()
            elif found.get("channel") != "airflow-required-actions":
                await sync_to_async(self._close_required_action)(found)
        return found

    def _look_in_worker(self) -> dict[str, Any] | None:
        found = self._poll()
        if self.ti_id:
            if found is None:
                found = self._required_action_response()
            elif found.get("channel") != "airflow-required-actions":
                self._close_required_action(found)
        return found

    def _deadline(self) -> datetime:
        deadline = datetime.fromisoformat(self.deadline)
        return deadline if deadline.tzinfo is not None else deadline.replace(tzinfo=UTC)

    def _failed(self, budget: ErrorBudget, exc: Exception) -> dict[str, Any] | None:
        """Count a failed poll; the error event when the budget is spent."""
        error = f"{type(exc).__name__}: {exc}"
        if budget.failure():
            self.log.error(
                "polling run %s failed %d times in a row; giving up: %s",
                self.run_id, budget.failures, error,
            )  # fmt: skip
            return {"status": "error", "runId": self.run_id, "error": error,
                    "failures": budget.failures}  # fmt: skip
        self.log.warning(
            "polling run %s failed (%d of %d allowed in a row): %s; retrying",
            self.run_id, budget.failures, self.max_poll_errors, error,
        )  # fmt: skip
        return None

    def _remaining(self, deadline: datetime) -> float:
        return (deadline - datetime.now(UTC)).total_seconds()

    async def run(self) -> AsyncIterator[TriggerEvent]:
        deadline = self._deadline()
        budget = ErrorBudget(self.max_poll_errors, self.max_error_seconds)
        while True:
            try:
                found = await self._look()
                budget.success()
            except Exception as exc:
                found = self._failed(budget, exc)
            if found is not None:
                yield TriggerEvent(found)
                return
            remaining = self._remaining(deadline)
            if remaining <= 0:
                yield TriggerEvent({"status": "timedOut", "runId": self.run_id})
                return
            await asyncio.sleep(min(self.poll_interval, remaining))

    def wait_in_worker(self, sleep: Callable[[float], None] = time.sleep) -> dict[str, Any]:
        """The same wait, polled in the worker (no triggerer); returns the event `run` fires."""
        deadline = self._deadline()
        budget = ErrorBudget(self.max_poll_errors, self.max_error_seconds)
        while True:
            try:
                found = self._look_in_worker()
                budget.success()
            except Exception as exc:
                found = self._failed(budget, exc)
            if found is not None:
                return found
            remaining = self._remaining(deadline)
            if remaining <= 0:
                return {"status": "timedOut", "runId": self.run_id}
            sleep(min(self.poll_interval, remaining))
