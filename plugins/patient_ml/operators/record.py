"""The last task of a model's pipeline: the product run reflects how its DAG run went."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from airflow.sdk import Context
from airflow.sdk.exceptions import AirflowFailException

from patient_ml.operators.common import PatientMLBaseOperator

if TYPE_CHECKING:
    from sqlalchemy import Engine

FAILED_STATES = ("failed", "upstream_failed")
_MAP_SUFFIX = re.compile(r"_\d+$")


class RecordRunOperator(PatientMLBaseOperator):
    """Runs after every other task (trigger rule `all_done`) and closes the product run.

    A run that a failed task stopped before evaluation ended it is marked `failed` with the
    failed tasks' names; the DAG run then fails too, so Airflow and the product agree. A rejected
    or timed-out run (deploy skipped) is recorded as it is and the DAG run succeeds. The run's
    summary (status, approval, deploy, champion) goes to the log and to XCom.

    No worker of the run is left when it runs, so nothing of the run stays running: trials still
    `running` are failed (`reconcile_trials`), and trainer jobs and evaluation servers labelled
    with the run that a dead task left behind are stopped and removed (`Backend.remove_leftovers`
    on the run's backend).

    :param backend: the backend the run's trials and evaluation ran on (as the tune task's).
    :param docker_conn_id: the Docker connection, for the Docker backend.
    Other parameters: those of `PatientMLBaseOperator` (the artifact store holds the model
    card).
    """

    template_fields: Sequence[str] = ()
    ui_color = "#eeeeee"

    def __init__(
        self,
        *,
        trigger_rule: str = "all_done",
        backend: str = "auto",
        docker_conn_id: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(trigger_rule=trigger_rule, **kwargs)
        self.backend = backend
        self.docker_conn_id = docker_conn_id

    def execute(self, context: Context) -> dict[str, Any]:
        from patient_ml.db.engine import session_scope
        from patient_ml.db.models import Model
        from patient_ml.services.approval_state import approval_status
        from patient_ml.services.runs import find_run_for_dag_run, finish_run
        from patient_ml.services.tuning import reconcile_trials

        dag_run = context["dag_run"]
        failed = self._failed_tasks(context)
        where = f"Airflow DAG run {self.dag_id}/{dag_run.run_id}"
        engine = self.engine()
        with session_scope(engine) as session:
            found = find_run_for_dag_run(session, self.dag_id, dag_run.run_id)
            run_id = found.id if found is not None else None
        if run_id is not None:  # no worker is left: no trial of the run stays `running`
            reconcile_trials(engine, run_id)
            self._remove_leftovers(run_id)
        with session_scope(engine) as session:
            run = find_run_for_dag_run(session, self.dag_id, dag_run.run_id)
            if run is None:
                raise AirflowFailException(
                    f"No product run was started for {where}: task(s) {', '.join(failed) or '?'} "
                    "failed first; read their logs."
                )
            if run.status == "running":
                stopped = ", ".join(failed) or "an earlier task"
                finish_run(
                    session,
                    run.id,
                    status="failed",
                    actor=self.actor,
                    error=f"The pipeline stopped at {stopped}; read the task logs of {where}.",
                )
            model = session.get(Model, run.model_id)
            summary = {
                "runId": run.id,
                "slug": run.slug,
                "status": run.status,
                "error": run.error,
                "snapshotId": run.snapshot_id,
                "approvalStatus": approval_status(session, run),
                "deployStatus": run.deploy_status,
                "championId": model.champion_id if model else None,
                "isChampion": bool(model and model.champion_id == run.id),
            }
        if summary["status"] == "succeeded":
            self._write_card(engine, run.id)
        self.log.info("run %s (%s): %s", summary["runId"], summary["slug"], summary)
        if failed or summary["status"] == "failed":
            raise AirflowFailException(
                f"Run {summary['runId']} ended {summary['status']}"
                + (f"; failed task(s): {', '.join(failed)}" if failed else "")
                + (f": {summary['error']}" if summary["error"] else "")
            )
        return summary

    def _remove_leftovers(self, run_id: str) -> None:
        """Trainer jobs and evaluation servers of the run that a dead task left running, and
        the tune scratch folders it left here (its own cleanup never ran); a failure to look is
        logged, the record goes on."""
        from patient_ml.operators.tune import make_backend, remove_scratch_folders

        if remove_scratch_folders(run_id):
            self.log.info("removed the tune scratch folders of run %s left on this machine", run_id)
        try:
            backend = make_backend(
                self.backend, docker_conn_id=self.docker_conn_id, aws_conn_id=self.aws_conn_id
            )
            removed = backend.remove_leftovers({"run": run_id})
        except Exception as exc:
            self.log.warning("could not look for leftover jobs of run %s: %s", run_id, exc)
            return
        if removed:
            self.log.warning(
                "stopped and removed %d trainer job(s) or model server(s) of run %s that a dead "
                "task left running",
                removed,
                run_id,
            )

    def _failed_tasks(self, context: Context) -> list[str]:
        ti, dag_run = context["ti"], context["dag_run"]
        try:
            states = ti.get_task_states(dag_id=self.dag_id, run_ids=[dag_run.run_id])
        except Exception as exc:  # older API server: fall back to the product run's state
            self.log.warning("cannot read the task states of this DAG run: %s", exc)
            return []
        failed = {
            _MAP_SUFFIX.sub("", task) if task not in self.dag.task_ids else task
            for task, state in (states.get(dag_run.run_id) or {}).items()
            if state in FAILED_STATES
        }
        failed.discard(self.task_id)
        return sorted(failed)

    def _write_card(self, engine: Engine, run_id: str) -> None:
        from patient_ml.services.model_cards import write_model_card

        try:
            write_model_card(engine, self.store(), run_id)
        except Exception as exc:  # the card is a convenience; the record stands without it
            self.log.warning("model card of run %s not rewritten: %s", run_id, exc)
