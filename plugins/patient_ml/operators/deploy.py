"""The deploy stage: make an approved run the champion (edge) or serve it (cloud)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from airflow.sdk import Context

from patient_ml.operators.common import ServingOperator, set_outlet_extra

if TYPE_CHECKING:
    from airflow.providers.openlineage.extractors import OperatorLineage

    from patient_ml.serving.base import ServerHandle


class DeployModelOperator(ServingOperator):
    """Deploy an approved run. `edge`: it becomes champion, its artifact is the download.
    `cloud`: a new endpoint is started and health-checked, then the champion is swapped
    atomically and the old endpoint stopped; a failing endpoint leaves the old champion
    serving and records deployStatus=failed with the reason. Retries are idempotent. With an
    MLflow connection, the registry alias `champion` moves to the run's model version
    (docs/mlflow.md; an MLflow failure is reported, never fails the task). The
    task's outlets (the model's champion Asset in a factory DAG) get an event naming the run.

    `on_kill` stops the endpoint this try started unless the run already became the
    champion it serves (a killed deploy leaves the old champion serving, nothing half-started).

    Parameters: those of `ServingOperator` and `RunOperator` (patient_ml.operators.common).
    """

    ui_color = "#dff5e1"

    def execute(self, context: Context) -> dict[str, Any]:
        from patient_ml.deploy import deploy_run
        from patient_ml.services.model_cards import write_model_card

        engine, store = self.engine(), self.store()
        try:
            result = deploy_run(
                engine,
                store,
                self.run_id,
                actor=self.actor,
                server=self.server(),
                mlflow_conn_id=self.mlflow_conn_id,
            )
        finally:
            write_model_card(engine, store, self.run_id)
        self.log.info("deployed: %s", result)
        keys = ("deployType", "endpoint", "previousChampionId")
        set_outlet_extra(context, {"runId": self.run_id, **{k: result.get(k) for k in keys}})
        return result

    def _keep_on_kill(self, handle: ServerHandle) -> bool:
        """Keep an endpoint the run already serves as the champion."""
        from patient_ml.db.engine import session_scope
        from patient_ml.db.models import Model
        from patient_ml.services.runs import get_run

        try:
            with session_scope(self.engine()) as session:
                run = get_run(session, self.run_id)
                model = session.get(Model, run.model_id)
                return bool(
                    model is not None
                    and model.champion_id == run.id
                    and run.deploy_status == "succeeded"
                )
        except Exception as exc:  # the product DB is gone: keep it rather than cut a champion
            self.log.warning("cannot tell whether %s serves the champion: %s", handle.name, exc)
            return True

    def get_openlineage_facets_on_complete(self, task_instance: object) -> OperatorLineage | None:
        """OpenLineage (docs/lineage.md): the artifact in, the endpoint out."""
        from patient_ml.operators.lineage import lineage_or_none
        from patient_ml.services.lineage import deploy_lineage

        return lineage_or_none(self, lambda session: deploy_lineage(session, self.run_id))
