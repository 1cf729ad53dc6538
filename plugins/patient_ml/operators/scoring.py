"""The scoring DAG's tasks (`patient_ml_score__<slug>`): plan a batch over the dataset, score
it in mapped chunks on the deployed champion's endpoint with the predictions written back to the
dataset's FHIR source, then close it and emit the model's predictions Asset event
(`patient_ml.services.scoring`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from airflow.sdk import Context

from patient_ml.operators.common import FhirSourceMixin, PatientMLBaseOperator, set_outlet_extra

if TYPE_CHECKING:
    from patient_ml.services.labels import DatasetContext


class _ScoringOperator(FhirSourceMixin, PatientMLBaseOperator):
    """What the scoring tasks share: the model and its dataset's context.

    :param model_id: the model (id or name; templated).
    :param fhir_conn_id: overrides the dataset's `source.connId`.
    Other parameters: those of `PatientMLBaseOperator` (patient_ml.operators.common).
    """

    template_fields: Sequence[str] = ("model_id",)

    def __init__(self, *, model_id: str, fhir_conn_id: str | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.model_id = model_id
        self.fhir_conn_id = fhir_conn_id

    def dataset(self) -> DatasetContext:
        from patient_ml.db.engine import read_scope
        from patient_ml.db.models import Model
        from patient_ml.services.common import get_by_id_or_name
        from patient_ml.services.labels import dataset_context

        engine = self.engine()
        with read_scope(engine) as session:
            dataset_id = get_by_id_or_name(session, Model, self.model_id).dataset_id
        return dataset_context(engine, dataset_id, fhir_client_factory=self._fhir_client)


class PlanScoringOperator(_ScoringOperator):
    """Plan this DAG run's batch (or find it again on a rerun) and return its chunk positions,
    which the score task is mapped over; the batch id goes to the XCom key `batch_id`.

    :param split: all, train, validation, test or unassigned (templated).
    :param since: only examples changed at or after this ISO instant; empty: all (templated).
    :param chunk_size: examples per chunk, raised where there would be more than
        `patient_ml.services.scoring.MAX_CHUNKS` chunks (templated).
    :param write_back: write predictions to the dataset's FHIR source (templated).
    """

    template_fields: Sequence[str] = ("model_id", "split", "since", "chunk_size", "write_back")
    ui_color = "#e0f0ff"

    def __init__(
        self,
        *,
        split: str = "all",
        since: str | None = None,
        chunk_size: int | str = 200,
        write_back: bool | str = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.split = split
        self.since = since
        self.chunk_size = chunk_size
        self.write_back = write_back

    def execute(self, context: Context) -> list[int]:
        from patient_ml.services.scoring import plan_batch, selection_of

        write_back = self.write_back
        if isinstance(write_back, str):  # a rendered template
            write_back = {"true": True, "false": False}.get(write_back.strip().lower(), write_back)
        selection = selection_of(self.split, self.since, write_back)
        dag_run = context["dag_run"]
        batch = plan_batch(
            self.engine(),
            self.dataset(),
            self.model_id,
            dag_run_id=str(dag_run.run_id),
            selection=selection,
            chunk_size=int(self.chunk_size),
            actor=self.actor,
        )
        self.log.info(
            "batch %s: %d examples (%s) in %d chunks of up to %d, %d already done; champion run %s",
            batch.id,
            batch.total,
            selection.to_wire(),
            batch.chunks,
            batch.chunk_size,
            batch.chunks_done,
            batch.run_id,
        )
        context["ti"].xcom_push(key="batch_id", value=batch.id)
        return list(range(batch.chunks))  # what the score task is mapped over


class ScoreChunkOperator(_ScoringOperator):
    """Score one chunk of the batch (map it over the plan's chunk positions); a chunk a
    previous try or run already finished is not scored again.

    :param batch_id: the batch (templated, from the plan task's XCom).
    :param position: the chunk's position (mapped).
    """

    template_fields: Sequence[str] = ("model_id", "batch_id")
    ui_color = "#cce6ff"

    def __init__(self, *, batch_id: str, position: int = 0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.batch_id = batch_id
        self.position = position

    def execute(self, context: Context) -> dict[str, Any]:
        from patient_ml.services.scoring import score_chunk

        chunk = score_chunk(
            self.engine(), self.dataset(), self.batch_id, int(self.position), say=self.log.info
        )
        return chunk.to_wire()


class FinishScoringOperator(_ScoringOperator):
    """Close the batch after every chunk task ended: succeeded (the task succeeds and its
    outlet, the model's predictions Asset, gets an event naming the batch) or failed (the task
    fails: some chunk could not be scored; clearing the DAG run scores only those).

    :param batch_id: the batch (templated, from the plan task's XCom).
    """

    template_fields: Sequence[str] = ("model_id", "batch_id")
    ui_color = "#b3d9ff"

    def __init__(self, *, batch_id: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.batch_id = batch_id

    def execute(self, context: Context) -> dict[str, Any]:
        from airflow.sdk.exceptions import AirflowSkipException

        from patient_ml.exceptions import PatientMLError
        from patient_ml.services.scoring import finish_batch

        if self.batch_id in (None, "", "None"):
            raise AirflowSkipException("no batch was planned (the plan task did not succeed)")
        batch = finish_batch(self.engine(), self.batch_id, actor=self.actor)
        summary = batch.to_wire()
        summary.pop("selection", None)
        self.log.info("batch %s %s: %s", batch.id, batch.status, summary)
        if batch.status != "succeeded":
            raise PatientMLError(
                f"Scoring batch {batch.id}: {batch.chunks - batch.chunks_done} of {batch.chunks} "
                "chunks were not scored.",
                fix="see the failed score tasks' logs, then clear this DAG run: chunks already "
                "scored are not scored again",
            )
        set_outlet_extra(
            context,
            {
                "batchId": batch.id,
                "runId": batch.run_id,
                "scored": batch.scored,
                "written": batch.written,
                "writtenTo": batch.written_to,
            },
        )
        return {"batchId": batch.id, "scored": batch.scored, "written": batch.written,
                "skipped": batch.skipped}  # fmt: skip
