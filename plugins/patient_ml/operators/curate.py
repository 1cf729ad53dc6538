"""CurateDatasetOperator: the first stage of every run (FHIR records → dataset snapshot)."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from airflow.sdk import Context

from patient_ml.exceptions import PatientMLError
from patient_ml.operators.common import (
    FhirSourceMixin,
    PatientMLBaseOperator,
    set_outlet_extra,
    triggering_actor,
)

if TYPE_CHECKING:
    from airflow.providers.openlineage.extractors import OperatorLineage
    from sqlalchemy import Engine


class CurateDatasetOperator(FhirSourceMixin, PatientMLBaseOperator):
    """Curate a dataset into an immutable, content-addressed snapshot and return its id.

    Re-running (a retry, or a new run on unchanged data) returns the same snapshot id and
    creates nothing new. The record source comes from the dataset config (`source`): a FHIR
    server through the Airflow connection `source.connId` (paged search, or `$export` when
    `source.bulkExport` is set and the server offers it) or NDJSON files.

    In a model's pipeline (`model_id` set) the task first starts the product run of its DAG run
    (or takes the one named by `conf.runId`), curates that model's dataset, links the snapshot to
    the run and returns `runId` with the snapshot; the task's outlets get an Asset event whose
    extra holds the snapshot id.

    :param dataset_id: dataset id or name (templated); not needed with `model_id`.
    :param run_id: product run to link the snapshot to (templated, optional).
    :param model_id: model id or name whose DAG run this task starts a run for (templated).
    :param fhir_conn_id: overrides the dataset's `source.connId`.
    :param allowed_file_roots: folders file:// image URLs may point into (default
        PATIENT_ML_ALLOWED_FILE_ROOTS); everything else is quarantined.
    :param allowed_http_hosts: hosts http(s):// image URLs may use (default
        PATIENT_ML_ALLOWED_HTTP_HOSTS).
    :param fetch_workers: images fetched and checked at once.
    Other parameters: those of `PatientMLBaseOperator` (patient_ml_conn_id, artifact_uri: where
    snapshots and images go, aws_conn_id: also for s3:// image URLs).
    """

    template_fields: Sequence[str] = ("dataset_id", "run_id", "model_id")
    ui_color = "#d8f3dc"

    def __init__(
        self,
        *,
        dataset_id: str | None = None,
        run_id: str | None = None,
        model_id: str | None = None,
        fhir_conn_id: str | None = None,
        allowed_file_roots: Sequence[str] | None = None,
        allowed_http_hosts: Sequence[str] | None = None,
        fetch_workers: int = 8,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if not dataset_id and not model_id:
            raise ValueError("CurateDatasetOperator needs dataset_id or model_id")
        self.dataset_id = dataset_id
        self.run_id = run_id
        self.model_id = model_id
        self.fhir_conn_id = fhir_conn_id
        self.allowed_file_roots = allowed_file_roots
        self.allowed_http_hosts = allowed_http_hosts
        self.fetch_workers = fetch_workers
        self._curated: tuple[str, str] | None = None  # (dataset, snapshot), for lineage

    def execute(self, context: Context) -> dict[str, Any]:
        from patient_ml.services.curation import curate
        from patient_ml.services.curation_inputs import build_curation_inputs

        engine = self.engine()
        run_id, dataset_id = self.run_id, self.dataset_id
        if self.model_id:
            run_id, dataset_id = self._start_run(engine, context)
        if not dataset_id:
            raise PatientMLError(
                f"Task {self.task_id} has no dataset to curate (dataset_id rendered empty).",
                fix="pass dataset_id (a dataset id or name) or model_id",
            )
        inputs = build_curation_inputs(
            engine,
            dataset_id,
            fhir_client_factory=self._fhir_client,
            artifact_uri=self.artifact_uri,
            aws_conn_id=self.aws_conn_id,
            allowed_file_roots=self.allowed_file_roots,
            allowed_http_hosts=self.allowed_http_hosts,
        )
        workdir = Path(tempfile.mkdtemp(prefix=f"curate-{os.getpid()}-"))
        result = curate(
            engine=engine,
            dataset_ref=dataset_id,
            source=inputs.source,
            store=inputs.store,
            fetcher=inputs.fetcher,
            workdir=workdir,
            actor=self.actor,
            run_id=run_id,
            workers=self.fetch_workers,
        )
        self._curated = (dataset_id, result.snapshot_id)
        summary = {
            "snapshotId": result.snapshot_id,
            "created": result.created,
            "exampleCount": result.example_count,
            "manifestUri": result.manifest_uri,
            "bySplit": result.report["examples"]["bySplit"],
            "quarantined": result.report["quarantined"]["total"],
        }
        set_outlet_extra(
            context,
            {"snapshotId": result.snapshot_id, "datasetId": dataset_id, "runId": run_id,
             "created": result.created, "exampleCount": result.example_count},
        )  # fmt: skip
        return {"runId": run_id, **summary} if run_id else summary

    def _start_run(self, engine: Engine, context: Context) -> tuple[str, str]:
        from patient_ml.db.engine import session_scope
        from patient_ml.db.models import Model
        from patient_ml.db.require import required
        from patient_ml.services.runs import start_run_for_dag_run

        dag_run = context["dag_run"]
        params = context.get("params") or {}
        conf = getattr(dag_run, "conf", None) or {}
        requested = params.get("runId") or conf.get("runId")
        with session_scope(engine) as session:
            run = start_run_for_dag_run(
                session,
                str(self.model_id),
                airflow_dag_id=self.dag_id,
                airflow_run_id=dag_run.run_id,
                actor=triggering_actor(dag_run),
                requested_run_id=requested,
            )
            model = required(session, Model, run.model_id, of=f"run {run.id}")
            run_id, dataset_id = run.id, model.dataset_id
        self.log.info(
            "product run %s of model %s (Airflow DAG run %s)", run_id, self.model_id, dag_run.run_id
        )
        return run_id, dataset_id

    def get_openlineage_facets_on_complete(self, task_instance: object) -> OperatorLineage | None:
        """OpenLineage (docs/lineage.md): the FHIR source in, the snapshot out."""
        from patient_ml.operators.lineage import lineage_or_none
        from patient_ml.services.lineage import curate_lineage

        if self._curated is None:  # failed before a snapshot existed
            return None
        dataset_id, snapshot_id = self._curated
        return lineage_or_none(
            self,
            lambda session: curate_lineage(session, dataset_id, snapshot_id, self._fhir_base_url),
        )

    def _fhir_base_url(self, conn_id: str) -> str | None:
        from patient_ml.hooks.fhir import fhir_base_url

        try:
            return fhir_base_url(self.fhir_conn_id or conn_id)
        except Exception as exc:  # lineage names the connection instead
            self.log.warning("no FHIR base URL for lineage from %s: %s", conn_id, exc)
            return None
