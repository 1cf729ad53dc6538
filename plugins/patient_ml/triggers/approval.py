"""Wait in the triggerer for a decision on a run: the product DB, and Airflow's Required Action."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

DEFAULT_MAX_POLL_ERRORS = 6


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
    - `{"status": "error", "error": ..., "failures": n}` after `max_poll_errors` polls in a row
      failed (e.g. the product DB is gone for `max_poll_errors * poll_interval` seconds): the
      task then fails with that error rather than waiting blind until the deadline. A poll that
      succeeds resets the count (a brief outage is ridden out).
    """

    def __init__(
        self,
        run_id: str,
        deadline: str,
        patient_ml_conn_id: str | None = None,
        poll_interval: float = 10.0,
        ti_id: str | None = None,
        max_poll_errors: int = DEFAULT_MAX_POLL_ERRORS,
    ) -> None:
        super().__init__()
        self.run_id = run_id
        self.deadline = deadline  # ISO 8601, UTC
        self.patient_ml_conn_id = patient_ml_conn_id
        self.poll_interval = poll_interval
        self.ti_id = ti_id  # the task instance whose Required Action is watched (None: none)
        self.max_poll_errors = max(1, int(max_poll_errors))

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
            },
        )

    def _poll(self) -> dict[str, Any] | None:
        from patient_ml.db.engine import session_scope
        from patient_ml.hooks.product_db import product_engine
        from patient_ml.services.approvals import decision_event, latest_decision

        with session_scope(product_engine(self.patient_ml_conn_id)) as session:
            decision = latest_decision(session, self.run_id)
            return None if decision is None else decision_event(self.run_id, decision)

    def _required_action_response(self) -> dict[str, Any] | None:
        """The response to the task's HITL request, if one was given (Airflow's SDK call)."""
        from uuid import UUID

        from airflow.sdk.execution_time.hitl import get_hitl_detail_content_detail

        assert self.ti_id is not None
        found = get_hitl_detail_content_detail(ti_id=UUID(self.ti_id))
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
        from uuid import UUID

        from patient_ml.operators.required_action import close

        assert self.ti_id is not None
        try:
            close(
                UUID(self.ti_id),
                decision=decision["status"],
                description=decision.get("description") or "",
                decided_by=decision.get("user") or decision.get("actor") or "unknown",
                channel=decision.get("channel"),
            )
        except Exception as exc:
            self.log.warning("could not close the Required Action of run %s: %s", self.run_id, exc)

    async def _look(self) -> dict[str, Any] | None:
        found = await asyncio.to_thread(self._poll)
        if self.ti_id:
            from asgiref.sync import sync_to_async

            if found is None:
                found = await sync_to_async(self._required_action_response)()
            elif found.get("channel") != "airflow-required-actions":
                await sync_to_async(self._close_required_action)(found)
        return found

    async def run(self) -> AsyncIterator[TriggerEvent]:
        deadline = datetime.fromisoformat(self.deadline)
        if deadline.tzinfo is None:
            deadline = deadline.replace(tzinfo=UTC)
        failures = 0
        while True:
            try:
                found = await self._look()
                failures = 0
            except Exception as exc:
                failures += 1
                error = f"{type(exc).__name__}: {exc}"
                if failures >= self.max_poll_errors:
                    self.log.error(
                        "polling run %s failed %d times in a row; giving up: %s",
                        self.run_id, failures, error,
                    )  # fmt: skip
                    yield TriggerEvent(
                        {
                            "status": "error",
                            "runId": self.run_id,
                            "error": error,
                            "failures": failures,
                        }
                    )
                    return
                self.log.warning(
                    "polling run %s failed (%d of %d allowed in a row): %s; retrying",
                    self.run_id, failures, self.max_poll_errors, error,
                )  # fmt: skip
                found = None
            if found is not None:
                yield TriggerEvent(found)
                return
            remaining = (deadline - datetime.now(UTC)).total_seconds()
            if remaining <= 0:
                yield TriggerEvent({"status": "timedOut", "runId": self.run_id})
                return
            await asyncio.sleep(min(self.poll_interval, remaining))
