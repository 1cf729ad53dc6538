"""Chained datasets (`source.fromModel`): a dataset whose examples are the images another
model's predictions select. The predictions are made by the scoring builder
(`patient_ml.scoring.observations`) and written by the scoring's NDJSON sink, as a batch does;
curation then reads them beside the labels. The scoring DAG end to end is in
tests/e2e/test_batch_scoring.py."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import orjson
import pytest

from patient_ml.curation.fetch import FetchPolicy, ImageFetcher
from patient_ml.curation.sources import NdjsonSource
from patient_ml.curation.upstream import NoUpstreamPredictionsError
from patient_ml.db import schema
from patient_ml.db.engine import get_engine, session_scope
from patient_ml.exceptions import ConfigValidationError, ConflictError
from patient_ml.scoring.observations import ScoredExample, ScoringModel, prediction_resources
from patient_ml.scoring.sinks import PREDICTIONS_FILE, NdjsonFolderPredictionSink
from patient_ml.services.curation import curate
from patient_ml.services.datasets import create_dataset, get_dataset, update_dataset
from patient_ml.services.labels import dataset_context
from patient_ml.services.models import create_model, delete_model
from patient_ml.storage import artifact_store_from_uri
from tests.curation.cohort import Cohort, dataset_config
from tests.operators.lifecycle import model_config


class Chain:
    """Dataset A + model A on an NDJSON folder, and the chained dataset B's config."""

    def __init__(self, engine: Any, root: Path, problem_type: str = "imgClf") -> None:
        self.engine, self.root = engine, root
        self.folder = root / "source"
        code = uuid.uuid4().hex[:8]
        self.cohort = Cohort(root / "src", code, "urn:test:a")
        self.cohort.add_patients(0, 20)
        self.cohort.write_ndjson(self.folder)
        self.source = {"type": "ndjson", "uri": f"file://{self.folder}"}
        self.code = code
        a = dataset_config("a", code)
        a["problemDefinition"]["problemType"] = problem_type
        a["problemDefinition"]["labelSystem"] = "urn:test:a"
        a["source"] = self.source
        with session_scope(engine) as session:
            self.dataset_a = create_dataset(session, a, actor="t").id
            self.model_a = create_model(session, model_config("model-a", "a"), actor="t").id
        self.store = artifact_store_from_uri(str(root / "artifacts"))

    def b_config(self, **from_model: Any) -> dict[str, Any]:
        b = dataset_config("b", self.code)
        b["problemDefinition"]["labelSystem"] = "urn:test:a"  # A's labels: a second reader
        b["source"] = {
            **self.source,
            "fromModel": {"model": "model-a", "labels": ["positive"], **from_model},
        }
        return b

    def score(self, decided: dict[str, int], batch: str = "b1", p1: float = 0.9) -> None:
        """Predictions of model A for these images, written as a batch writes them."""
        model = ScoringModel(
            model_id=self.model_a,
            model_name="model-a",
            run_id="run-1",
            problem_type="imgClf",
            label_system="urn:test:a",
            labels={0: "negative", 1: "positive"},
            batch_id=batch,
        )
        resources = []
        for doc_id, label in decided.items():
            confidence = p1 if label == 1 else 1 - p1
            output = {
                "predictions": [
                    {"index": 0, "name": "negative", "confidence": 1 - confidence},
                    {"index": 1, "name": "positive", "confidence": confidence},
                ],
                "operatingPoint": {"rule": "argmax", "label": label},
            }
            example = ScoredExample(doc_id, None, None, output)
            resources += prediction_resources(model, example, "2026-12-07T10:00:00+00:00")
        NdjsonFolderPredictionSink(self.folder).write(resources)

    def curate_b(self, ref: str = "b") -> Any:
        tag = uuid.uuid4().hex[:6]
        return curate(
            engine=self.engine,
            dataset_ref=ref,
            source=NdjsonSource(self.folder),
            store=self.store,
            fetcher=ImageFetcher(FetchPolicy(allowed_file_roots=(self.cohort.images,))),
            workdir=self.root / f"work-{tag}",
        )


@pytest.fixture
def chain(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Chain:
    monkeypatch.setenv("PATIENT_ML_EXAMPLES_CACHE_SECONDS", "0")  # every index read afresh
    url = f"sqlite:///{tmp_path / 'product.db'}"
    schema.upgrade(get_engine(url, check_schema=False))
    return Chain(get_engine(url), tmp_path)


def _manifest_ids(chain: Chain, result: Any) -> set[str]:
    lines = chain.store.read_bytes(chain.store.key_of(result.manifest_uri)).splitlines()
    return {orjson.loads(line)["id"] for line in lines[1:]}  # the first line: the header


def test_a_chained_dataset_takes_the_images_its_upstream_model_flagged(chain: Chain) -> None:
    docs = sorted(chain.cohort.good_ids)
    flagged = set(docs[::3])
    chain.score({d: int(d in flagged) for d in docs[:-4]})  # the last 4 never scored
    with session_scope(chain.engine) as session:
        stored = create_dataset(session, chain.b_config(), actor="t")
        assert stored.source["fromModel"]["model"] == chain.model_a  # kept by id
    result = chain.curate_b()
    assert _manifest_ids(chain, result) == flagged - set(docs[-4:])
    upstream = result.report["upstream"]
    assert upstream["modelId"] == chain.model_a
    assert upstream["imagesSelected"] == len(flagged - set(docs[-4:]))
    assert upstream["leftOutWithoutPrediction"] == 4
    assert upstream["leftOutNotSelected"] == len(docs) - 4 - upstream["imagesSelected"]
    assert upstream["batches"] == [
        {"batchId": "b1", "runId": "run-1", "predictions": len(docs) - 4,
         "selected": upstream["imagesSelected"]}
    ]  # fmt: skip
    assert result.report["quarantined"]["total"] == 0

    # the labeling pages (and a chained model's own scoring) see the same examples
    assert set(_index_ids(chain)) == flagged - set(docs[-4:])

    # a later batch flips every prediction: the newest one per image decides
    chain.score({d: int(d not in flagged) for d in docs}, batch="b2")
    again = chain.curate_b()
    assert _manifest_ids(chain, again) == set(docs) - flagged
    assert {b["batchId"] for b in again.report["upstream"]["batches"]} == {"b2"}
    assert set(_index_ids(chain)) == set(docs) - flagged


def _index_ids(chain: Chain) -> list[str]:
    ctx = dataset_context(chain.engine, "b", fhir_client_factory=lambda _conn: None)
    return list(ctx.index().ids)


def test_min_probability_narrows_the_selection(chain: Chain) -> None:
    docs = sorted(chain.cohort.good_ids)
    chain.score({d: 1 for d in docs[:10]}, p1=0.6)
    chain.score({d: 1 for d in docs[10:20]}, batch="b2", p1=0.95)
    with session_scope(chain.engine) as session:
        create_dataset(session, chain.b_config(minProbability=0.9), actor="t")
    assert _manifest_ids(chain, chain.curate_b()) == set(docs[10:20])


def test_without_any_prediction_curation_fails_and_says_what_to_run(chain: Chain) -> None:
    with session_scope(chain.engine) as session:
        create_dataset(session, chain.b_config(), actor="t")
    with pytest.raises(NoUpstreamPredictionsError, match="scoring DAG"):
        chain.curate_b()


def test_predictions_of_another_model_select_nothing(chain: Chain) -> None:
    docs = sorted(chain.cohort.good_ids)
    chain.score({d: 1 for d in docs})
    lines = (
        (chain.folder / PREDICTIONS_FILE)
        .read_bytes()
        .replace(chain.model_a.encode(), b"another-model")
    )
    (chain.folder / PREDICTIONS_FILE).write_bytes(lines)
    with session_scope(chain.engine) as session:
        create_dataset(session, chain.b_config(), actor="t")
    with pytest.raises(NoUpstreamPredictionsError):
        chain.curate_b()


def _field_errors(exc: pytest.ExceptionInfo[ConfigValidationError]) -> dict[str, str]:
    return {e.field: e.message for e in exc.value.errors}


def test_the_config_is_checked_against_the_upstream_model(chain: Chain) -> None:
    b = chain.b_config(minProbability=0.5)
    b["source"]["fromModel"].update(model="no-such-model")
    with session_scope(chain.engine) as session, pytest.raises(ConfigValidationError) as exc:
        create_dataset(session, b, actor="t")
    assert "names no model" in _field_errors(exc)["source.fromModel.model"]

    b = chain.b_config()
    b["source"]["fromModel"]["labels"] = ["positive", "tumour"]
    b["source"]["uri"] = "file:///elsewhere"
    with session_scope(chain.engine) as session, pytest.raises(ConfigValidationError) as exc:
        create_dataset(session, b, actor="t")
    errors = _field_errors(exc)
    assert "not a label of dataset 'a'" in errors["source.fromModel.labels[1]"]
    assert "'negative', 'positive'" in errors["source.fromModel.labels[1]"]
    assert "is not where model 'model-a' writes its predictions" in errors["source"]


def test_no_model_feeds_its_own_dataset(chain: Chain) -> None:
    with session_scope(chain.engine) as session:
        create_dataset(session, chain.b_config(), actor="t")
        create_model(session, model_config("model-b", "b"), actor="t")
    a = dataset_config("a", chain.code)
    a["problemDefinition"]["labelSystem"] = "urn:test:a"
    a["source"] = {**chain.source, "fromModel": {"model": "model-b", "labels": ["positive"]}}
    with session_scope(chain.engine) as session, pytest.raises(ConfigValidationError) as exc:
        update_dataset(session, "a", a, actor="t")
    assert (
        "would make a cycle (a <- model-b <- model-a)"
        in _field_errors(exc)["source.fromModel.model"]
    )
    with session_scope(chain.engine) as session:
        assert "fromModel" not in get_dataset(session, "a").source


def test_the_upstream_model_cannot_be_deleted_while_a_dataset_uses_it(chain: Chain) -> None:
    with session_scope(chain.engine) as session:
        create_dataset(session, chain.b_config(), actor="t")
    with session_scope(chain.engine) as session, pytest.raises(ConflictError, match="'b'"):
        delete_model(session, "model-a", actor="t")
