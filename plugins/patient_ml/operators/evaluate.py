"""The evaluate stage: challenger and champion served and scored on the same test split."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from airflow.sdk import Context

from patient_ml.operators.common import ServingOperator, fail_run_on_last_try

if TYPE_CHECKING:
    from airflow.providers.openlineage.extractors import OperatorLineage
    from sqlalchemy import Engine

    from patient_ml.storage.base import ArtifactStore


class EvaluateModelOperator(ServingOperator):
    """Serve the run's best model and the champion at run time through the image's `serve`,
    send every confirmed test example to both, compute the test metrics in the platform,
    record them (challenger, champion, deltas) on the run, end the run as succeeded, and write
    its model card. A first run is scored alone; a champion that cannot be served fails the
    task with the reason. On the last failed try the run ends as failed. `on_kill` stops the
    model servers this try started. With an MLflow connection, the run, its trials and the
    challenger's model version are mirrored to MLflow (docs/mlflow.md; never fails the task).

    :param finish_tuning: first record the sweep's best trial on the run (what
        `FinishTuningOperator` does), so a pipeline needs no separate task for it; a sweep with
        no completed trial fails here with the trials' failure texts.
    Other parameters: those of `ServingOperator` and `RunOperator` (patient_ml.operators.common).
    """

    ui_color = "#e0f0ff"

    def __init__(self, *, finish_tuning: bool = False, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.finish_tuning = finish_tuning

    def execute(self, context: Context) -> dict[str, Any]:
        from patient_ml.exceptions import PatientMLError
        from patient_ml.services.evaluation_run import evaluate_run
        from patient_ml.services.model_cards import write_model_card

        engine, store = self.engine(), self.store()
        workdir = Path(tempfile.mkdtemp(prefix="evaluate-"))
        try:
            if self.finish_tuning:
                self._finish_tuning(engine, store)
            summary = evaluate_run(
                engine, store, self.server(), self.run_id, workdir, actor=self.actor
            )
        except PatientMLError as exc:
            fail_run_on_last_try(
                context, self.retries, self.patient_ml_conn_id, self.run_id, str(exc), self.actor
            )
            raise
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
        card = write_model_card(engine, store, self.run_id)
        self.log.info("model card: %s", card["markdown"])
        mirrored = self.mirror_to_mlflow()
        return {**summary, "modelCard": card, **({"mlflow": mirrored} if mirrored else {})}

    def _finish_tuning(self, engine: Engine, store: ArtifactStore) -> None:
        from patient_ml.db.engine import session_scope
        from patient_ml.services.runs import get_run
        from patient_ml.services.tuning import finish_tuning

        with session_scope(engine) as session:
            running = get_run(session, self.run_id).status == "running"
        if running:  # a retry after the run ended keeps what was recorded
            best = finish_tuning(engine, store, self.run_id, actor=self.actor)
            self.log.info(
                "best trial %s: %s, hyperparameters %s",
                best["bestTrial"],
                best["objective"],
                best["hyperparameters"],
            )

    def get_openlineage_facets_on_complete(self, task_instance: object) -> OperatorLineage | None:
        """OpenLineage (docs/lineage.md): the snapshot and the champion in, the challenger's
        artifact out, the metrics with their intervals."""
        from patient_ml.operators.lineage import lineage_or_none
        from patient_ml.services.lineage import evaluate_lineage

        return lineage_or_none(self, lambda session: evaluate_lineage(session, self.run_id))
