"""Airflow's own metadata DB as a hook: trigger a model's DAG run for the product's createRun.

Used where the product runs next to Airflow (the `patient-ml` CLI on an Airflow machine, the REST
API inside the Airflow API server): Airflow's metadata DB comes from Airflow's configuration
(AIRFLOW_HOME / AIRFLOW__DATABASE__SQL_ALCHEMY_CONN), exactly as for `airflow dags trigger`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from patient_ml.exceptions import ConfigValidationError, ConflictError, FieldError, NotFoundError


@dataclass(frozen=True)
class TriggeredDagRun:
    dag_id: str
    run_id: str
    state: str
    paused: bool


class AirflowDagRunHook:
    """Trigger DAG runs through Airflow's `trigger_dag` (the code path of `airflow dags trigger`).

    :param triggered_by: `cli` or `rest_api` (how Airflow records who triggered the run).
    """

    def __init__(self, triggered_by: str = "cli") -> None:
        self.triggered_by = triggered_by

    def require_runnable(self, dag_id: str, *, wait_seconds: float | None = None) -> None:
        """Refuse (409) before anything is saved unless Airflow has the DAG, unpaused. Waits up
        to `wait_seconds` (default PATIENT_ML_DAG_WAIT_SECONDS, 20) for a model saved moments
        ago to be parsed; a paused DAG is an operator's decision and is never unpaused here."""
        import time

        from patient_ml.settings import env_number

        if wait_seconds is None:
            wait_seconds = env_number("PATIENT_ML_DAG_WAIT_SECONDS", 20, low=0, high=600)

        from airflow.models.dag import DagModel
        from airflow.utils.session import create_session

        deadline = time.monotonic() + wait_seconds
        while True:
            with create_session() as session:
                model = DagModel.get_current(dag_id, session=session)
                found, paused = model is not None, bool(model and model.is_paused)
            if found or time.monotonic() >= deadline:
                break
            time.sleep(1.0)
        if not found:
            raise ConflictError(
                f"Airflow has not parsed the DAG {dag_id!r} yet; no run was started.",
                fix="retry in a few seconds; if it persists, check "
                "`airflow dags list-import-errors`",
            )
        if paused:
            raise ConflictError(
                f"Airflow DAG {dag_id!r} is paused; no run was started.",
                fix=f"unpause it (Airflow UI, or `airflow dags unpause {dag_id}`), then retry",
            )

    def trigger(self, dag_id: str, run_id: str, conf: dict[str, Any], user: str) -> TriggeredDagRun:
        from airflow.api.common.trigger_dag import trigger_dag
        from airflow.exceptions import DagNotFound, DagRunAlreadyExists
        from airflow.models.dag import DagModel
        from airflow.utils.session import create_session
        from airflow.utils.types import DagRunTriggeredByType

        try:
            dag_run = trigger_dag(
                dag_id,
                triggered_by=DagRunTriggeredByType(self.triggered_by),
                triggering_user_name=user,
                run_id=run_id,
                conf=conf,
            )
        except DagNotFound as exc:
            raise NotFoundError(
                f"Airflow has no DAG {dag_id!r} yet.",
                fix="wait for Airflow's DAG processor to parse dags/patient_ml_dags.py (a few "
                "seconds after the model was saved), and check `airflow dags list-import-errors`",
            ) from exc
        except DagRunAlreadyExists as exc:
            raise ConflictError(
                f"Airflow DAG {dag_id!r} already has a run {run_id!r}.", fix="start a new run"
            ) from exc
        except ValueError as exc:  # conf rejected by the DAG's params
            raise ConfigValidationError(
                f"run conf for {dag_id}", [FieldError("conf", str(exc), conf)]
            ) from exc
        with create_session() as session:
            model = DagModel.get_current(dag_id, session=session)
            paused = bool(model and model.is_paused)
        state = str(getattr(dag_run, "state", "queued") or "queued")
        return TriggeredDagRun(dag_id, run_id, state, paused)

    def dag_run_state(self, dag_id: str, run_id: str) -> str | None:
        """The state of Airflow's DAG run (`queued`, `running`, `success`, `failed`), or None
        when Airflow has no such run."""
        from airflow.models.dagrun import DagRun
        from airflow.utils.session import create_session
        from sqlalchemy import select

        with create_session() as session:
            state = session.scalar(
                select(DagRun.state).where(DagRun.dag_id == dag_id, DagRun.run_id == run_id)
            )
        return None if state is None else str(getattr(state, "value", state))
