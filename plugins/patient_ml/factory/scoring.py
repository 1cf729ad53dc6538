"""The scoring DAG of a deployed model (`patient_ml_score__<slug>`): plan → score (mapped over
the batch's chunks) → finish, which emits the model's predictions Asset (docs/batch-scoring.md).

Built for every model whose champion is deployed to the cloud (served through the product's
endpoint). Manual: trigger it with its params (split, since, chunkSize, writeBack) from Airflow's
UI, its REST API or `airflow dags trigger`. Another DAG can be scheduled on its predictions Asset.
"""

from __future__ import annotations

from datetime import timedelta

from airflow.sdk import DAG, Param
from airflow.sdk.definitions.param import ParamsDict

from patient_ml.factory.build import (
    PARAM_SCHEMA,
    TAG,
    FactoryOptions,
    _start_date,
    predictions_asset,
)
from patient_ml.factory.catalog import ModelEntry
from patient_ml.naming import scoring_dag_id_of
from patient_ml.operators.scoring import (
    FinishScoringOperator,
    PlanScoringOperator,
    ScoreChunkOperator,
)

BATCH_ID = "{{ ti.xcom_pull(task_ids='plan', key='batch_id') }}"
MAX_ACTIVE_CHUNKS = 4
"""Chunks of one batch scored at the same time (each sends its images to the one endpoint)."""


def is_scored(entry: ModelEntry) -> bool:
    """A model with a champion deployed to the cloud gets a scoring DAG."""
    return entry.champion_id is not None and entry.deploy.get("type") == "cloud"


def scoring_params() -> ParamsDict:
    return ParamsDict(
        {
            "split": Param(
                "all",
                type="string",
                enum=["all", "train", "validation", "test", "unassigned"],
                title="Split",
                description="Which examples: all, one split, or unassigned (patients no split "
                "holds yet, e.g. new since the last curation).",
                **PARAM_SCHEMA,
            ),
            "since": Param(
                "",
                type="string",
                title="Changed since",
                description="Only examples whose image record changed at or after this ISO "
                "date or instant (e.g. 2026-12-01); empty: all.",
                **PARAM_SCHEMA,
            ),
            "chunkSize": Param(
                200,
                type="integer",
                minimum=1,
                maximum=10_000,
                title="Chunk size",
                description="Examples per mapped score task (raised when a batch would need "
                "more than 256 chunks).",
                **PARAM_SCHEMA,
            ),
            "writeBack": Param(
                True,
                type="boolean",
                title="Write back to FHIR",
                description="Write each prediction to the dataset's FHIR source as a "
                "preliminary Observation.",
                **PARAM_SCHEMA,
            ),
        }
    )


def build_scoring_dag(entry: ModelEntry, options: FactoryOptions) -> DAG:
    common = options.connections()
    asset = predictions_asset(entry.slug)
    with DAG(
        scoring_dag_id_of(entry.slug),
        description=f"Batch scoring with the deployed champion of {entry.name}"[:200],
        schedule=None,
        start_date=_start_date(entry),
        catchup=False,
        is_paused_upon_creation=False,  # manual only: a trigger runs at once
        tags=[TAG, "scoring", *options.extra_tags],
        params=scoring_params(),
        doc_md=(
            f"# Batch scoring with {entry.name}\n\nScores the examples of dataset "
            f"`{entry.dataset_name}` (all, one split, or those changed since a date) on the "
            "deployed champion's endpoint, in chunks (one mapped `score` task each), and writes "
            "each prediction back to the dataset's FHIR source as a preliminary Observation "
            "(the same resource per model and image: a rerun updates it). A chunk already "
            "scored is not scored again when the run is retried or cleared. The `finish` task "
            f"emits the Asset `{asset.uri}`.\n\nProgress: `GET /v1/patient-ml/models/"
            "{id}/scoring-batches`, the model page, and each task's log.\n"
        ),
        default_args={
            "owner": options.owner,
            "retries": options.retries,
            "retry_delay": timedelta(seconds=options.retry_delay_s),
        },
        max_active_runs=1,
        max_active_tasks=MAX_ACTIVE_CHUNKS + 1,
        max_consecutive_failed_dag_runs=0,
        auto_register=False,
    ) as dag:
        plan = PlanScoringOperator(
            task_id="plan",
            model_id=entry.model_id,
            split="{{ params.split }}",
            since="{{ params.since }}",
            chunk_size="{{ params.chunkSize }}",
            write_back="{{ params.writeBack }}",
            **common,
        )
        score = ScoreChunkOperator.partial(
            task_id="score",
            model_id=entry.model_id,
            batch_id=BATCH_ID,
            max_active_tis_per_dagrun=MAX_ACTIVE_CHUNKS,
            **common,
        ).expand(position=plan.output)
        finish = FinishScoringOperator(
            task_id="finish",
            model_id=entry.model_id,
            batch_id=BATCH_ID,
            trigger_rule="all_done",
            outlets=[asset],
            **common,
        )
        plan >> score >> finish
    return dag
