"""Airflow's Required Action of a run's approval, answered where a decision is made elsewhere.

A decision through the REST API or the Patient ML pages is made in Airflow's API server (the
product's routes are its plugin). Right after the product records a decision that settles the
run, this hook writes it as the Required Action's response, in Airflow's metadata database,
the way Airflow's own `PATCH .../hitlDetails` route does: the response (the option, the
justification naming the decider and the channel, the decider as responder) and, when the task
waits (`deferred`, or `awaiting_input`), its resume event, so the task goes on without a
triggerer. From then on Airflow itself refuses another response (409 "already updated"): one
decision, one record, whatever is down.

Where Airflow's metadata database cannot be reached (the product's API served alone, the CLI on
a machine without Airflow's database) nothing is written here, and the approval task's trigger
closes the Required Action when it next looks (`patient_ml.triggers.required_action.close`).
"""

from __future__ import annotations

import logging
from typing import Literal

log = logging.getLogger("patient_ml.hooks.airflow_required_actions")

Answered = Literal["answered", "had-response", "no-request", "unavailable"]
APPROVAL_TASK = "await_approval"
_WAITING = ("deferred", "awaiting_input")


class RequiredActionHook:
    """Answers the approval task's Required Action of one DAG run in Airflow's metadata DB."""

    def __init__(self, task_id: str = APPROVAL_TASK, map_index: int = -1) -> None:
        self.task_id = task_id
        self.map_index = map_index

    def answer(
        self,
        dag_id: str,
        dag_run_id: str,
        *,
        options: list[str],
        params_input: dict[str, str],
        user_id: str,
        user_name: str,
    ) -> Answered:
        """Write the response unless the request has one: the first of `options` the request
        offers (e.g. "Approve with override", then "Approve"), `params_input` as its form's
        values, the decider as responder; resume the task if it waits. Never raises: the
        product's decision stands whatever Airflow's database does."""
        try:
            return self._answer(dag_id, dag_run_id, options, params_input, user_id, user_name)
        except Exception as exc:  # no metadata DB here, or it failed: the trigger closes it
            log.warning(
                "the Required Action of %s/%s was not answered here (%s); the approval task's "
                "trigger closes it when it next looks",
                dag_id,
                dag_run_id,
                str(exc).splitlines()[0] if str(exc) else type(exc).__name__,
            )
            return "unavailable"

    def _answer(
        self,
        dag_id: str,
        dag_run_id: str,
        options: list[str],
        params_input: dict[str, str],
        user_id: str,
        user_name: str,
    ) -> Answered:
        from airflow._shared.timezones import timezone
        from airflow.models.hitl import HITLDetail, HITLUser
        from airflow.models.taskinstance import TaskInstance
        from airflow.models.trigger import handle_event_submit
        from airflow.triggers.base import TriggerEvent
        from airflow.utils.session import create_session
        from sqlalchemy import select

        with create_session() as session:
            # Locks in Airflow's order (the task instance, then its request), so a response
            # racing this one, or the task's own park, waits for it.
            ti = session.scalar(
                select(TaskInstance)
                .where(
                    TaskInstance.dag_id == dag_id,
                    TaskInstance.run_id == dag_run_id,
                    TaskInstance.task_id == self.task_id,
                    TaskInstance.map_index == self.map_index,
                )
                .with_for_update(of=TaskInstance)
            )
            if ti is None:
                return "no-request"
            detail = session.scalar(
                select(HITLDetail).where(HITLDetail.ti_id == ti.id).with_for_update(of=HITLDetail)
            )
            if detail is None:
                return "no-request"
            if detail.response_received:
                return "had-response"
            offered = [option for option in options if option in (detail.options or [])]
            if not offered:
                return "no-request"  # another request than the approval's: leave it alone
            option = offered[0]
            detail.responded_by = HITLUser(id=user_id, name=user_name)
            detail.responded_at = timezone.utcnow()
            detail.chosen_options = [option]
            detail.params_input = dict(params_input)
            session.add(detail)
            if ti.state in _WAITING:
                resume = TriggerEvent(detail.as_resume_event_payload())
                handle_event_submit(resume, task_instance=ti, session=session)
        log.info("answered the Required Action of %s/%s: %s", dag_id, dag_run_id, option)
        return "answered"
