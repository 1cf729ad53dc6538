"""Batch scoring of a deployed model over its dataset's examples (the scoring DAG,
`patient_ml_score__<slug>`), with the predictions written back to the dataset's FHIR source.

* `plan_batch` selects the examples the dataset's source holds now (all, one split, the
  examples of patients no split holds yet, and/or those changed since an instant), in id order,
  and cuts them into chunks, one mapped task each (at most `MAX_CHUNKS`, so far below Airflow's
  `max_map_length`: larger batches get larger chunks). One batch per model and DAG run: a
  cleared or rerun DAG run finds its batch again instead of planning another.
  Each chunk keeps what scoring needs of its images (id, version, patient, attachment), so a
  chunk's task reads its own images and never the whole source again; an image whose
  attachment holds inline data is looked up in the dataset's index instead (such data is never
  copied into the product DB). A batch scores the images as they were when it was planned.
* `score_chunk` scores one chunk on the endpoint of the champion the batch was planned for
  (`MAX_BATCH` images per request, the next request in flight while the answers of the last
  become resources), writes one prediction Observation per example (and a
  Binary per mask) to the dataset's source in one write (`patient_ml.scoring`: `preliminary`,
  never final; the same resource id per model and example, so a rerun updates and never
  duplicates), keeps each as the example's newest prediction (the labeling pages' "has
  prediction" filter and hints), and marks the chunk done. A chunk already done is not scored
  again, whatever retried it; a chunk whose task died mid-way is scored again as a whole, which
  rewrites the same resources.
* `finish_batch` closes the batch: succeeded when every chunk is done, else failed.

An example whose image can no longer be read is skipped with its reason (the chunk's `skipped`),
never fatal; an endpoint that fails is (the task's retry scores the chunk again).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal, TypeGuard

from pydantic import Field
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

from patient_ml.config.wire import WireModel
from patient_ml.curation.quarantine import QuarantineError
from patient_ml.db.engine import read_scope, session_scope
from patient_ml.db.models import Model, Run, ScoringBatch, ScoringChunk, utcnow
from patient_ml.db.require import present
from patient_ml.evaluation.operating_point import ARGMAX, stored
from patient_ml.exceptions import (
    ConflictError,
    FieldError,
    InvalidInputError,
    NotFoundError,
)
from patient_ml.scoring.observations import ScoredExample, ScoringModel, prediction_resources
from patient_ml.services import audit, example_predictions, prediction_log
from patient_ml.services.common import get_by_id_or_name, to_millis
from patient_ml.services.endpoints import live_endpoints
from patient_ml.services.predictions import answer_fields
from patient_ml.services.wire import Millis
from patient_ml.serving.client import MAX_BATCH, invoke_batch

if TYPE_CHECKING:
    from patient_ml.curation.records import ImageRecord
    from patient_ml.services.labels import DatasetContext

log = logging.getLogger("patient_ml.scoring")

MAX_CHUNKS = 256
"""Chunks (mapped tasks) per batch at most: a larger batch gets larger chunks."""
DEFAULT_CHUNK_SIZE = 200
MAX_CHUNK_SIZE = 10_000
SPLITS = ("all", "train", "validation", "test", "unassigned")
Split = Literal["all", "train", "validation", "test", "unassigned"]

Say = Callable[[str], None]


class ScoringSelection(WireModel):
    """Which examples of the dataset a batch scores, and whether predictions are written back."""

    split: Split = Field(
        "all",
        description="all; train, validation or test (the split of the example's patient); "
        "unassigned: patients no split holds yet (e.g. new since the last curation).",
    )
    since: datetime | None = Field(
        None, description="Only examples whose image record changed at or after this instant."
    )
    write_back: bool = Field(
        True, description="Write each prediction to the dataset's FHIR source as an Observation."
    )


class ScoringChunkView(WireModel):
    """One chunk of a batch (one mapped score task) and what came of it."""

    position: int
    status: str
    examples: int
    attempts: int
    scored: int
    written: int
    skipped: list[dict[str, Any]] = Field(default_factory=list)
    seconds: float | None = None
    resumed: bool = Field(
        False, description="True when this call found the chunk already done (not scored again)."
    )


class ScoringBatchView(WireModel):
    """A batch scoring of a model (one scoring DAG run) with its progress over its chunks."""

    id: str
    model_id: str
    run_id: str
    dag_run_id: str
    selection: ScoringSelection
    chunk_size: int
    total: int
    chunks: int
    chunks_done: int
    scored: int
    written: int
    skipped: int
    status: str
    written_to: str | None = None
    actor: str
    created_at: Millis
    finished_at: Millis | None = None


def _is_split(value: object) -> TypeGuard[Split]:
    return value in SPLITS


def selection_of(
    split: object = "all", since: object = None, write_back: object = True
) -> ScoringSelection:
    """The DAG's params as a selection; a bad value is refused naming the param and the fix."""
    errors: list[FieldError] = []
    if not _is_split(split):
        errors.append(FieldError("split", f"must be one of {', '.join(SPLITS)}", split))
    when: datetime | None = None
    if since not in (None, ""):
        try:
            when = datetime.fromisoformat(str(since))
        except ValueError:
            errors.append(
                FieldError("since", "must be an ISO date or instant, e.g. 2026-12-01", since)
            )
        else:
            when = when if when.tzinfo else when.replace(tzinfo=UTC)
    if not isinstance(write_back, bool):
        errors.append(FieldError("writeBack", "must be true or false", write_back))
    # the checks again, for the type checker: `errors` is empty only when both hold
    if errors or not _is_split(split) or not isinstance(write_back, bool):
        raise InvalidInputError(
            "The batch scoring parameters are not valid: " + "; ".join(map(str, errors)) + ".",
            errors,
            fix="trigger the scoring DAG with valid params (split, since, writeBack)",
        )
    return ScoringSelection(split=split, since=when, write_back=write_back)


def chunk_size_for(total: int, wanted: int, max_chunks: int = MAX_CHUNKS) -> int:
    """`wanted`, raised where `total` examples would need more than `max_chunks` chunks."""
    if not 1 <= wanted <= MAX_CHUNK_SIZE:
        raise InvalidInputError(
            f"chunkSize {wanted} is outside 1..{MAX_CHUNK_SIZE}.",
            [FieldError("chunkSize", f"must be 1..{MAX_CHUNK_SIZE}", wanted)],
            fix="trigger the scoring DAG with a chunkSize such as 200",
        )
    return max(wanted, math.ceil(total / max_chunks)) if total else wanted


@dataclass(frozen=True)
class PlannedImage:
    """What scoring needs of one image, as the batch was planned (`ScoringChunk.images`)."""

    id: str
    version: str | None
    patient_ref: str | None
    attachment: dict[str, Any]

    @classmethod
    def of(cls, image: ImageRecord) -> PlannedImage:
        return cls(image.id, image.version, image.patient_ref, dict(image.attachment))

    def to_row(self) -> dict[str, Any] | None:
        """The stored form; None for inline data (never copied into the product DB)."""
        if self.attachment.get("data"):
            return None
        return {"id": self.id, "version": self.version, "patient": self.patient_ref,
                "attachment": self.attachment}  # fmt: skip

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> PlannedImage:
        return cls(str(row["id"]), row.get("version"), row.get("patient"), row["attachment"])


def selected_ids(ctx: DatasetContext, selection: ScoringSelection) -> list[str]:
    """The ids (sorted) of the examples of `ctx` (services.labels.DatasetContext) the selection
    takes, as the dataset's source holds them now."""
    index = ctx.index()
    since_ms = selection.since.timestamp() * 1000 if selection.since else None
    chosen = []
    for example_id in index.ids:
        example = index.examples[example_id]
        if since_ms is not None and example.updated_ms < since_ms:
            continue
        if selection.split != "all" and (index.split(example) or "unassigned") != selection.split:
            continue
        chosen.append(example_id)
    return chosen


def plan_batch(
    engine: Engine,
    ctx: DatasetContext,
    model_ref: str,
    *,
    dag_run_id: str,
    selection: ScoringSelection,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    actor: str,
    max_chunks: int = MAX_CHUNKS,
) -> ScoringBatchView:
    """The batch of this DAG run (planned now, or found again on a rerun)."""
    with read_scope(engine) as session:
        model = get_by_id_or_name(session, Model, model_ref)
        existing = session.scalar(
            select(ScoringBatch).where(
                ScoringBatch.model_id == model.id, ScoringBatch.dag_run_id == dag_run_id
            )
        )
        if existing is not None:
            return batch_view(session, existing)
        if model.champion_id is None:
            raise ConflictError(
                f"Model {model.name!r} has no champion, so there is nothing to score with.",
                fix="approve a run of this model and let it deploy",
            )
        run_id, model_id = model.champion_id, model.id
    ids = selected_ids(ctx, selection)
    examples = ctx.index().examples
    rows = [PlannedImage.of(examples[example_id].image).to_row() for example_id in ids]
    size = chunk_size_for(len(ids), chunk_size, max_chunks)
    with session_scope(engine) as session:
        batch = ScoringBatch(
            model_id=model_id,
            run_id=run_id,
            dag_run_id=dag_run_id,
            selection=selection.to_wire(),
            chunk_size=size,
            total=len(ids),
            status="running",
            actor=actor,
        )
        session.add(batch)
        session.flush()
        for position, start in enumerate(range(0, len(ids), size)):
            session.add(
                ScoringChunk(
                    batch_id=batch.id,
                    position=position,
                    example_ids=ids[start : start + size],
                    images=rows[start : start + size],
                )
            )
        audit.record(
            session,
            actor=actor,
            action="scoring.planned",
            entity_type="model",
            entity_id=model_id,
            after={
                "batchId": batch.id,
                "runId": run_id,
                "total": len(ids),
                "chunkSize": size,
                "selection": selection.to_wire(),
            },
        )
        session.flush()
        return batch_view(session, batch)


def score_chunk(
    engine: Engine,
    ctx: DatasetContext,
    batch_id: str,
    position: int,
    *,
    sink_factory: Callable[[], Any] | None = None,
    say: Say = log.info,
) -> ScoringChunkView:
    """Score chunk `position` of the batch (see the module docstring); a chunk already done is
    returned as it is (`resumed`). `sink_factory` (default: the dataset's,
    `ctx.prediction_sink_factory`) gives where the prediction resources are written."""
    started = time.perf_counter()
    with session_scope(engine) as session:
        batch = present(session.get(ScoringBatch, batch_id), f"scoring batch {batch_id}")
        chunk = _chunk(session, batch_id, position)
        if chunk.status == "done":
            say(f"chunk {position}: already scored ({chunk.scored} examples), not scored again")
            return chunk_view(chunk, resumed=True)
        chunk.attempts += 1
        model = present(session.get(Model, batch.model_id), f"model {batch.model_id}")
        run = present(session.get(Run, batch.run_id), f"run {batch.run_id}")
        url = _endpoint_url(session, model, run.id)
        labels = {
            int(x["index"]): str(x["name"])
            for x in run.config["problemDefinition"]["labelDefinition"]["labels"]
            if x.get("index") is not None
        }
        problem_type = str(run.config["problemDefinition"]["problemType"])
        point = stored(run.operating_point) or ARGMAX
        scoring_model = ScoringModel(
            model_id=model.id,
            model_name=model.name,
            run_id=run.id,
            problem_type=problem_type,
            label_system=ctx.view.label_system,
            labels=labels,
            batch_id=batch.id,
        )
        example_ids = list(chunk.example_ids)
        planned = list(chunk.images or [None] * len(example_ids))
        write_back = bool(batch.selection.get("writeBack", True))
    readable: list[tuple[PlannedImage, bytes]] = []
    skipped: list[dict[str, Any]] = []
    read_index = 0
    for example_id, row in zip(example_ids, planned, strict=True):
        try:
            if row is not None:  # as planned: no read of the dataset's source
                image = PlannedImage.from_row(row)
            else:  # inline data, or a chunk planned before images were stored
                read_index += 1
                image = PlannedImage.of(ctx.index().get(example_id).image)
            readable.append((image, bytes(ctx.fetcher.fetch(image.attachment))))
        except NotFoundError:
            skipped.append({"exampleId": example_id, "reason": "no longer in the source"})
        except QuarantineError as exc:
            skipped.append({"exampleId": example_id, "reason": str(exc.reason)[:200]})
    sink_factory = sink_factory or ctx.prediction_sink_factory
    writing = write_back and sink_factory is not None
    issued = datetime.now(UTC).isoformat(timespec="seconds")
    scored: list[tuple[Any, dict[str, Any]]] = []
    resources: list[dict[str, Any]] = []
    parts = [readable[start : start + MAX_BATCH] for start in range(0, len(readable), MAX_BATCH)]
    # One request in flight while the answers of the previous one become resources: the
    # endpoint's work and this process's (answers, FHIR validation) overlap.
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="scoring-invoke") as pool:
        ahead = [pool.submit(invoke_batch, url, [data for _, data in part]) for part in parts[:1]]
        for number, part in enumerate(parts):
            answers = ahead.pop().result()
            if number + 1 < len(parts):
                ahead.append(pool.submit(invoke_batch, url, [d for _, d in parts[number + 1]]))
            for (image, _), answer in zip(part, answers, strict=True):
                fields = answer_fields(problem_type, labels, point, answer, url)
                output = {"problemType": problem_type, **fields}
                scored.append((image, output))
                if writing:
                    resources += prediction_resources(
                        scoring_model,
                        ScoredExample(
                            example_id=image.id,
                            image_version=image.version,
                            patient_ref=image.patient_ref,
                            output=output,
                        ),
                        issued,
                    )
    written = 0
    written_to = None
    if writing and scored and sink_factory is not None:
        sink = sink_factory()
        written = int(sink.write(resources))
        written_to = str(getattr(sink, "description", ""))[:500] or None
    seconds = time.perf_counter() - started
    with session_scope(engine) as session:
        example_predictions.record_many(
            session,
            model_id=scoring_model.model_id,
            run_id=scoring_model.run_id,
            predictions=[
                (image.id, image.version, prediction_log.output_summary(problem_type, output))
                for image, output in scored
            ],
        )
        chunk = _chunk(session, batch_id, position)
        chunk.status, chunk.scored, chunk.written = "done", len(scored), written
        chunk.skipped, chunk.seconds, chunk.finished_at = skipped, seconds, utcnow()
        if written_to:
            batch = present(session.get(ScoringBatch, batch_id), f"scoring batch {batch_id}")
            batch.written_to = written_to
        session.flush()
        view = chunk_view(chunk)
    rate = len(scored) / seconds if seconds > 0 else 0.0
    say(
        f"chunk {position}: {len(scored)} of {len(example_ids)} examples scored in "
        f"{seconds:.1f} s ({rate:.0f}/s), {written} resources written"
        + (f" to {written_to}" if written_to else "")
        + (f", {len(skipped)} skipped" if skipped else "")
        + (f"; {read_index} looked up in the dataset's index" if read_index else "")
    )
    return view


def finish_batch(engine: Engine, batch_id: str, *, actor: str) -> ScoringBatchView:
    """Close the batch: succeeded when every chunk is done, else failed (audited either way)."""
    with session_scope(engine) as session:
        batch = present(session.get(ScoringBatch, batch_id), f"scoring batch {batch_id}")
        view = batch_view(session, batch)
        batch.status = "succeeded" if view.chunks_done == view.chunks else "failed"
        batch.finished_at = utcnow()
        audit.record(
            session,
            actor=actor,
            action=f"scoring.{batch.status}",
            entity_type="model",
            entity_id=batch.model_id,
            after={
                "batchId": batch.id,
                "runId": batch.run_id,
                "total": view.total,
                "scored": view.scored,
                "written": view.written,
                "skipped": view.skipped,
                "chunks": view.chunks,
                "chunksDone": view.chunks_done,
            },
        )
        session.flush()
        return batch_view(session, batch)


def list_batches(session: Session, model_ref: str, *, limit: int = 20) -> list[ScoringBatchView]:
    """The model's newest batches first (at most `limit`)."""
    model = get_by_id_or_name(session, Model, model_ref)
    batches = session.scalars(
        select(ScoringBatch)
        .where(ScoringBatch.model_id == model.id)
        .order_by(ScoringBatch.created_at.desc(), ScoringBatch.id)
        .limit(max(1, min(limit, 100)))
    )
    return [batch_view(session, b) for b in batches]


def get_batch(session: Session, model_id: str, batch_id: str) -> ScoringBatchView | None:
    """One batch of the model; None when the model has no such batch."""
    batch = session.get(ScoringBatch, batch_id)
    if batch is None or batch.model_id != model_id:
        return None
    return batch_view(session, batch)


def chunks_of(session: Session, batch_id: str) -> list[ScoringChunkView]:
    rows = session.scalars(
        select(ScoringChunk)
        .where(ScoringChunk.batch_id == batch_id)
        .order_by(ScoringChunk.position)
    )
    return [chunk_view(c) for c in rows]


def batch_view(session: Session, batch: ScoringBatch) -> ScoringBatchView:
    chunks, done, scored, written = session.execute(
        select(
            func.count(ScoringChunk.id),
            func.count(ScoringChunk.id).filter(ScoringChunk.status == "done"),
            func.coalesce(func.sum(ScoringChunk.scored), 0),
            func.coalesce(func.sum(ScoringChunk.written), 0),
        ).where(ScoringChunk.batch_id == batch.id)
    ).one()
    skipped_lists: Sequence[Any] = session.scalars(
        select(ScoringChunk.skipped).where(
            ScoringChunk.batch_id == batch.id, ScoringChunk.status == "done"
        )
    ).all()
    return ScoringBatchView(
        id=batch.id,
        model_id=batch.model_id,
        run_id=batch.run_id,
        dag_run_id=batch.dag_run_id,
        selection=ScoringSelection.model_validate(batch.selection),
        chunk_size=batch.chunk_size,
        total=batch.total,
        chunks=int(chunks),
        chunks_done=int(done),
        scored=int(scored),
        written=int(written),
        skipped=sum(len(s or []) for s in skipped_lists),
        status=batch.status,
        written_to=batch.written_to,
        actor=batch.actor,
        created_at=to_millis(batch.created_at) or 0,
        finished_at=to_millis(batch.finished_at),
    )


def chunk_view(chunk: ScoringChunk, *, resumed: bool = False) -> ScoringChunkView:
    return ScoringChunkView(
        position=chunk.position,
        status=chunk.status,
        examples=len(chunk.example_ids),
        attempts=chunk.attempts,
        scored=chunk.scored,
        written=chunk.written,
        skipped=list(chunk.skipped or []),
        seconds=chunk.seconds,
        resumed=resumed,
    )


def _chunk(session: Session, batch_id: str, position: int) -> ScoringChunk:
    chunk = session.scalar(
        select(ScoringChunk).where(
            ScoringChunk.batch_id == batch_id, ScoringChunk.position == position
        )
    )
    if chunk is None:
        raise NotFoundError(
            f"Scoring batch {batch_id} has no chunk {position}.",
            fix="score the chunks its plan task returned",
        )
    return chunk


def _endpoint_url(session: Session, model: Model, run_id: str) -> str:
    """The URL of a healthy endpoint of the run the batch was planned with."""
    for endpoint in reversed(live_endpoints(session, model.id)):
        if endpoint.run_id == run_id and endpoint.url:
            return str(endpoint.url)
    raise ConflictError(
        f"Model {model.name!r} has no running endpoint for run {run_id}, the champion this "
        "batch was planned with.",
        fix="deploy that run again, or trigger a new scoring run for the current champion",
    )
