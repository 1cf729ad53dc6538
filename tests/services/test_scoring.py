"""Batch scoring on a real deployed model (a real sweep, a real local `serve` endpoint) over a
dataset held by a real FHIR server (sekmet): plan, chunks scored with their predictions written
back as Observations (found by a FHIR search, one per image), a rerun that scores nothing
again, a chunk whose task died mid-way scored again without duplicates, the batch closed and
audited; and the selection's rules."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from patient_ml.db import schema
from patient_ml.db.engine import get_engine, read_scope, session_scope
from patient_ml.db.models import AuditEvent, Dataset, ExamplePrediction, ScoringChunk
from patient_ml.deploy import stop_old_endpoints
from patient_ml.exceptions import ConflictError, InvalidInputError
from patient_ml.fhir import mapping
from patient_ml.fhir.client import FhirClient
from patient_ml.scoring.observations import identifier_value
from patient_ml.services import scoring
from patient_ml.services.labels import dataset_context
from tests.fhir_server import FhirServer
from tests.operators.lifecycle import Project

PREDICTION_CODE = f"{mapping.LABEL_CODE_SYSTEM}|{mapping.PREDICTION_CODE}"


@pytest.fixture
def deployed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fhir_server: FhirServer) -> Any:
    """A model deployed on a local endpoint; its dataset's records on the FHIR server."""
    url = f"sqlite:///{tmp_path / 'product.db'}"
    schema.upgrade(get_engine(url, check_schema=False))
    monkeypatch.setenv("PATIENT_ML_DATABASE_URL", url)
    monkeypatch.setenv("PATIENT_ML_EXAMPLES_CACHE_SECONDS", "0")
    engine = get_engine(url)
    p = Project(engine, tmp_path / "p")
    monkeypatch.setenv("PATIENT_ML_ARTIFACT_URI", p.artifacts)
    monkeypatch.setenv("PATIENT_ML_ALLOWED_FILE_ROOTS", str(p.cohort.images))
    run_id = p.deployed_run(reason="scoring test")
    client = FhirClient(fhir_server.base_url)
    client.transaction(p.cohort.transaction())
    with session_scope(engine) as session:  # the dataset's records now live on the server
        dataset = session.get(Dataset, p.dataset_id)
        assert dataset is not None
        dataset.source = {"type": "fhirServer", "connId": "fhir_default"}
    try:
        yield p, run_id, client
    finally:
        stop_old_endpoints(engine, p.model_id, keep=None, actor="test-cleanup")


class _NoIndex:
    """A dataset context whose whole example index must not be read."""

    def __init__(self, ctx: Any) -> None:
        self._ctx = ctx

    def __getattr__(self, name: str) -> Any:
        return getattr(self._ctx, name)

    def index(self) -> Any:
        raise AssertionError("a chunk read the dataset's whole example index")


def _context(p: Project, client: FhirClient) -> Any:
    return dataset_context(p.engine, p.dataset_id, fhir_client_factory=lambda _conn: client)


def _predictions(client: FhirClient, p: Project, example_ids: list[str]) -> dict[str, list[Any]]:
    """The prediction Observations of each example on the server (by identifier)."""
    return {
        example_id: list(
            client.search(
                "Observation",
                {
                    "identifier": f"{mapping.PREDICTION_IDENTIFIER_SYSTEM}|"
                    f"{identifier_value(p.model_id, example_id)}"
                },
            )
        )
        for example_id in example_ids
    }


def _all_predictions(client: FhirClient, model_id: str) -> list[dict[str, Any]]:
    """Every prediction Observation of this model on the (session-wide) server."""
    return [
        o
        for o in client.search("Observation", {"code": PREDICTION_CODE})
        if o["identifier"][0]["value"].startswith(f"{model_id}|")
    ]


def test_a_batch_writes_one_prediction_per_image_and_resumes_without_duplicates(
    deployed: Any,
) -> None:
    p, run_id, client = deployed
    ctx = _context(p, client)
    selection = scoring.selection_of("all", None, True)
    batch = scoring.plan_batch(
        p.engine, ctx, p.model_id, dag_run_id="manual__1", selection=selection, chunk_size=50,
        actor="t",
    )  # fmt: skip
    ids = sorted(ctx.index().ids)
    assert batch.total == len(ids) == 120 and batch.chunks == 3 and batch.run_id == run_id
    lines: list[str] = []
    for position in range(batch.chunks):  # each chunk reads its own images, not the source
        chunk = scoring.score_chunk(p.engine, _NoIndex(ctx), batch.id, position, say=lines.append)
        assert chunk.status == "done" and not chunk.resumed and chunk.scored == chunk.examples
    assert any("examples scored in" in line and "resources written" in line for line in lines)

    found = _predictions(client, p, ids)
    assert {k: len(v) for k, v in found.items()} == dict.fromkeys(ids, 1)
    observation = found[ids[0]][0]
    assert observation["status"] == "preliminary"
    assert observation["derivedFrom"] == [{"reference": f"DocumentReference/{ids[0]}"}]
    assert observation["meta"]["versionId"] == "1"
    assert len(_all_predictions(client, p.model_id)) == 120

    # A rerun of the DAG run (same dag_run_id) finds its batch: nothing is scored again.
    again = scoring.plan_batch(
        p.engine, ctx, p.model_id, dag_run_id="manual__1", selection=selection, chunk_size=7,
        actor="t",
    )  # fmt: skip
    assert again.id == batch.id and again.chunks_done == 3
    resumed = scoring.score_chunk(p.engine, ctx, batch.id, 0, say=lines.append)
    assert resumed.resumed and resumed.attempts == 1
    assert _predictions(client, p, ids[:3])[ids[0]][0]["meta"]["versionId"] == "1"

    # A chunk whose task died after writing (still pending) is scored again as a whole: the same
    # resources get a new version, none is duplicated.
    with session_scope(p.engine) as session:
        row = session.scalar(
            select(ScoringChunk).where(ScoringChunk.batch_id == batch.id,
                                       ScoringChunk.position == 1)
        )  # fmt: skip
        assert row is not None
        row.status = "pending"
        row.images = None  # as a chunk planned before images were kept: read through the index
        chunk_ids = list(row.example_ids)
    redone = scoring.score_chunk(p.engine, ctx, batch.id, 1, say=lines.append)
    assert redone.attempts == 2 and redone.scored == len(chunk_ids)
    assert lines[-1].endswith(f"; {len(chunk_ids)} looked up in the dataset's index")
    refound = _predictions(client, p, chunk_ids)
    assert all(len(v) == 1 and v[0]["meta"]["versionId"] == "2" for v in refound.values())
    assert len(_all_predictions(client, p.model_id)) == 120

    done = scoring.finish_batch(p.engine, batch.id, actor="t")
    assert done.status == "succeeded" and done.scored == 120 and done.written == 120
    assert done.written_to and "FHIR" in done.written_to
    with read_scope(p.engine) as session:
        hints = session.scalars(
            select(ExamplePrediction.example_id).where(ExamplePrediction.model_id == p.model_id)
        ).all()
        actions = Counter(
            session.scalars(
                select(AuditEvent.action).where(AuditEvent.action.like("scoring.%"))
            ).all()
        )
        listed = scoring.list_batches(session, p.model_id)
    assert sorted(hints) == ids  # the labeling pages' "has prediction"
    assert actions == {"scoring.planned": 1, "scoring.succeeded": 1}
    assert [b.id for b in listed] == [batch.id] and listed[0].chunks_done == 3


def test_a_selection_scores_only_what_it_names(deployed: Any) -> None:
    p, _run_id, client = deployed
    ctx = _context(p, client)
    index = ctx.index()
    test_ids = sorted(i for i in index.ids if index.split(index.examples[i]) == "test")
    assert test_ids
    batch = scoring.plan_batch(
        p.engine, ctx, p.model_id, dag_run_id="r-test",
        selection=scoring.selection_of("test", None, False), chunk_size=200, actor="t",
    )  # fmt: skip
    assert batch.total == len(test_ids) and batch.chunks == 1
    chunk = scoring.score_chunk(p.engine, ctx, batch.id, 0, say=lambda _l: None)
    assert chunk.scored == len(test_ids) and chunk.written == 0  # writeBack false
    assert not _all_predictions(client, p.model_id)

    future = (datetime.now(UTC) + timedelta(days=1)).date().isoformat()
    empty = scoring.plan_batch(
        p.engine, ctx, p.model_id, dag_run_id="r-future",
        selection=scoring.selection_of("all", future, True), chunk_size=200, actor="t",
    )  # fmt: skip
    assert empty.total == 0 and empty.chunks == 0
    assert scoring.finish_batch(p.engine, empty.id, actor="t").status == "succeeded"


def test_a_batch_needs_the_endpoint_of_the_champion_it_was_planned_with(deployed: Any) -> None:
    p, run_id, client = deployed
    ctx = _context(p, client)
    batch = scoring.plan_batch(
        p.engine, ctx, p.model_id, dag_run_id="r-gone",
        selection=scoring.selection_of(), chunk_size=200, actor="t",
    )  # fmt: skip
    stop_old_endpoints(p.engine, p.model_id, keep=None, actor="t")
    with pytest.raises(ConflictError, match=f"no running endpoint for run {run_id}"):
        scoring.score_chunk(p.engine, ctx, batch.id, 0, say=lambda _l: None)
    failed = scoring.finish_batch(p.engine, batch.id, actor="t")
    assert failed.status == "failed" and failed.chunks_done == 0


@pytest.mark.parametrize(
    ("split", "since", "write_back", "field"),
    [
        ("everything", None, True, "split"),
        ("all", "last tuesday", True, "since"),
        ("all", None, "yes", "writeBack"),
    ],
)
def test_bad_params_are_refused_naming_the_param(
    split: Any, since: Any, write_back: Any, field: str
) -> None:
    with pytest.raises(InvalidInputError) as caught:
        scoring.selection_of(split, since, write_back)
    assert [e.field for e in caught.value.errors] == [field]
    assert caught.value.fix and "params" in caught.value.fix


def test_chunks_grow_so_a_batch_never_needs_more_than_max_chunks() -> None:
    assert scoring.chunk_size_for(1000, 200) == 200
    assert scoring.chunk_size_for(100_000, 200) == 391  # 256 chunks at most
    assert scoring.chunk_size_for(0, 200) == 200
    with pytest.raises(InvalidInputError, match="chunkSize 0"):
        scoring.chunk_size_for(10, 0)
    assert scoring.selection_of("all", "2026-12-01", True).since == datetime(
        2026, 12, 1, tzinfo=UTC
    )
