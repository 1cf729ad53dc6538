"""Wait in the triggerer for a decision on a run, polling the product DB."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent


class ApprovalTrigger(BaseTrigger):
    """Fires `{"status": "approved" | "rejected", ...}` when a decision is recorded, or
    `{"status": "timedOut"}` at the deadline. A failing poll (e.g. a brief database outage) is
    retried at the next interval rather than ending the wait."""

    def __init__(
        self,
        run_id: str,
        deadline: str,
        patient_ml_conn_id: str | None = None,
        poll_interval: float = 10.0,
    ) -> None:
        super().__init__()
        self.run_id = run_id
        self.deadline = deadline  # ISO 8601, UTC
        self.patient_ml_conn_id = patient_ml_conn_id
        self.poll_interval = poll_interval

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            "patient_ml.triggers.approval.ApprovalTrigger",
            {
                "run_id": self.run_id,
                "deadline": self.deadline,
                "patient_ml_conn_id": self.patient_ml_conn_id,
                "poll_interval": self.poll_interval,
            },
        )

    def _poll(self) -> dict[str, Any] | None:
        from patient_ml.db.engine import session_scope
        from patient_ml.hooks.product_db import product_engine
        from patient_ml.services.approvals import decision_event, latest_decision

        with session_scope(product_engine(self.patient_ml_conn_id)) as session:
            decision = latest_decision(session, self.run_id)
            return None if decision is None else decision_event(self.run_id, decision)

    async def run(self) -> AsyncIterator[TriggerEvent]:
        deadline = datetime.fromisoformat(self.deadline)
        if deadline.tzinfo is None:
            deadline = deadline.replace(tzinfo=UTC)
        while True:
            try:
                found = await asyncio.to_thread(self._poll)
            except Exception as exc:  # keep waiting through a transient outage
                self.log.warning("polling run %s failed (%s); retrying", self.run_id, exc)
                found = None
            if found is not None:
                yield TriggerEvent(found)
                return
            remaining = (deadline - datetime.now(UTC)).total_seconds()
            if remaining <= 0:
                yield TriggerEvent({"status": "timedOut", "runId": self.run_id})
                return
            await asyncio.sleep(min(self.poll_interval, remaining))
