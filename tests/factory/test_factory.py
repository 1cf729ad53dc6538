"""The DAG factory through Airflow's own DagBag: configs in the product DB → DAG ids, tasks,
schedules, params and assets; a bad config reported without hiding the others; the
last-known-good configs when the DB is down; the parsing context; the build cache."""

from __future__ import annotations

import copy
import os
import stat
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from airflow.dag_processing.dagbag import DagBag
from airflow.serialization.serialized_objects import DagSerialization
from sqlalchemy import Engine, text

from patient_ml.db.engine import session_scope
from patient_ml.factory import build_dags
from patient_ml.factory.build_cache import BUILD_CACHE
from patient_ml.factory.catalog import LAST_KNOWN_GOOD, query_entries
from patient_ml.services.datasets import create_dataset
from patient_ml.services.models import create_model, get_model, model_to_wire, update_model
from tests.conftest import EXAMPLE_CONFIGS, REPO_ROOT

DAG_FILE = REPO_ROOT / "dags" / "patient_ml_dags.py"
BRAIN = "patient_ml__brain_mri_tumour_classifier"
NUCLEI = "patient_ml__nuclei_segmenter"
TASKS = ["curate", "tune", "evaluate", "await_approval", "deploy", "record"]


def _load(name: str) -> dict[str, Any]:
    return yaml.safe_load((EXAMPLE_CONFIGS / f"{name}.yaml").read_text())


@pytest.fixture
def stored(engine: Engine, db_url: str, monkeypatch: pytest.MonkeyPatch) -> Engine:
    """The example datasets and models in a product DB the DAG file reads."""
    monkeypatch.setenv("PATIENT_ML_DATABASE_URL", db_url)
    with session_scope(engine) as session:
        for name in ("brain_mri_dataset", "nuclei_dataset"):
            create_dataset(session, _load(name), actor="t")
        for name in ("brain_mri_model", "nuclei_model"):
            create_model(session, _load(name), actor="t")
    return engine


def parse() -> DagBag:
    return DagBag(dag_folder=str(DAG_FILE))


def _warnings(bag: DagBag) -> str:
    return "\n".join(w for ws in bag.captured_warnings.values() for w in ws)


def test_one_dag_per_model_config(stored: Engine) -> None:
    bag = parse()
    assert bag.import_errors == {}
    assert sorted(bag.dag_ids) == [BRAIN, NUCLEI]
    brain, nuclei = bag.dags[BRAIN], bag.dags[NUCLEI]
    for dag in (brain, nuclei):
        assert [t.task_id for t in dag.tasks] == TASKS
        assert dag.task_dict["record"].trigger_rule == "all_done"
        assert "patient-ml" in dag.tags and not dag.catchup
        assert dag.task_dict["deploy"].upstream_task_ids == {"await_approval"}
    # brain: retrainEvery (weekly, in ms); nuclei: a cron schedule
    assert brain.timetable.delta == timedelta(days=7)
    assert nuclei.timetable.expression == _load("nuclei_model")["trainingApproach"]["schedule"]
    # typed params: maxTrials defaults to the config's, runId empty
    assert brain.params["maxTrials"] == 8 and brain.params["runId"] is None
    assert brain.params.get_param("maxTrials").schema["type"] == "integer"
    # the tune stage maps one worker per parallel trial
    tune = brain.task_dict["tune"]
    assert tune.expand_input.value["worker_index"] == [0, 1]
    assert brain.task_dict["tune"].partial_kwargs["max_trials"] == "{{ params.maxTrials }}"
    # assets: a snapshot per dataset, the champion per model
    assert [a.uri for a in brain.task_dict["curate"].outlets] == [
        "x-patient-ml://datasets/brain_mri_tumour/snapshot"
    ]
    assert [a.uri for a in brain.task_dict["deploy"].outlets] == [
        "x-patient-ml://models/brain_mri_tumour_classifier/champion"
    ]
    assert "brain-mri-tumour-classifier" in brain.doc_md and "learning_rate" in brain.doc_md
    assert {"imgClf", "deploy:cloud"} <= brain.tags and {"imgSeg", "deploy:edge"} <= nuclei.tags


def test_dag_follows_config_changes_and_deletes(stored: Engine) -> None:
    with session_scope(stored) as session:
        doc = model_to_wire(get_model(session, "brain-mri-tumour-classifier"))
        doc["trainingApproach"]["parallelTrials"] = 3
        doc["trainingApproach"].pop("retrainEvery")
        update_model(session, doc["id"], doc, actor="t")
    bag = parse()
    brain = bag.dags[BRAIN]
    assert brain.task_dict["tune"].expand_input.value["worker_index"] == [0, 1, 2]
    assert not brain.timetable.can_be_scheduled  # manual only
    assert brain.is_paused_upon_creation is False  # so a product createRun runs at once
    assert bag.dags[NUCLEI].is_paused_upon_creation is None  # scheduled: Airflow's default
    with session_scope(stored) as session:
        session.execute(text("DELETE FROM pml_models WHERE slug = 'nuclei_segmenter'"))
    assert sorted(parse().dag_ids) == [BRAIN]


def test_bad_config_is_reported_and_others_stay(stored: Engine) -> None:
    broken = copy.deepcopy(_load("nuclei_model")["trainingApproach"])
    broken["schedule"] = "every full moon"  # got past validation (e.g. an edited row)
    with session_scope(stored) as session:
        session.execute(
            text("UPDATE pml_models SET training_approach = :ta WHERE slug = 'nuclei_segmenter'"),
            {"ta": __import__("json").dumps(broken)},
        )
    bag = parse()
    assert bag.import_errors == {}
    assert sorted(bag.dag_ids) == [BRAIN, NUCLEI]
    assert [t.task_id for t in bag.dags[BRAIN].tasks] == TASKS
    stand_in = bag.dags[NUCLEI]
    assert "config-error" in stand_in.tags and not stand_in.timetable.can_be_scheduled
    assert [t.task_id for t in stand_in.tasks] == ["config_error"]
    assert "every full moon" in stand_in.description
    assert "patient-ml models update nuclei-segmenter" in stand_in.doc_md
    assert "nuclei-segmenter" in _warnings(bag) and "every full moon" in _warnings(bag)


def test_product_db_down_uses_last_known_good(
    stored: Engine, db_url: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    assert sorted(parse().dag_ids) == [BRAIN, NUCLEI]  # saves the last-known-good configs
    cache = Path(os.environ["PATIENT_ML_HOME"]) / "cache"
    assert stat.S_IMODE((cache / LAST_KNOWN_GOOD).stat().st_mode) == 0o600
    # the DB goes away: a server that does not answer / a file that is gone
    down = (
        "postgresql+psycopg://postgres@127.0.0.1:1/none"
        if db_url.startswith("postgresql")
        else f"sqlite:///{tmp_path / 'gone' / 'patient_ml.db'}"
    )
    monkeypatch.setenv("PATIENT_ML_DATABASE_URL", down)
    bag = parse()
    assert bag.import_errors == {}
    assert sorted(bag.dag_ids) == [BRAIN, NUCLEI]
    assert [t.task_id for t in bag.dags[BRAIN].tasks] == TASKS
    assert "last-known-good" in _warnings(bag)
    # without saved configs there is nothing to build, and the warning says how to fix it
    monkeypatch.setenv("PATIENT_ML_DAG_CACHE", str(tmp_path / "empty-cache"))
    bag = parse()
    assert bag.dag_ids == [] and bag.import_errors == {}
    assert "patient-ml db upgrade" in _warnings(bag)


def test_parsing_context_builds_only_the_dag_a_task_needs(
    stored: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("_AIRFLOW_PARSING_CONTEXT_DAG_ID", NUCLEI)
    assert parse().dag_ids == [NUCLEI]
    monkeypatch.setenv("_AIRFLOW_PARSING_CONTEXT_DAG_ID", "someone_elses_dag")
    assert parse().dag_ids == []


def test_build_cache_reuses_unchanged_dags_only(stored: Engine) -> None:
    first: dict[str, Any] = {}
    assert build_dags(first).built == 2
    second: dict[str, Any] = {}
    result = build_dags(second)
    assert (result.built, result.cached) == (0, 2)
    for dag_id in (BRAIN, NUCLEI):  # a cached DAG is the DAG the config builds
        assert second[dag_id] is not first[dag_id]
        assert DagSerialization.to_dict(second[dag_id]) == DagSerialization.to_dict(first[dag_id])
    with session_scope(stored) as session:
        doc = model_to_wire(get_model(session, "nuclei-segmenter"))
        doc["trainingApproach"]["maxTrials"] = 3
        update_model(session, doc["id"], doc, actor="t")
    third: dict[str, Any] = {}
    result = build_dags(third)
    assert (result.built, result.cached) == (1, 1)
    assert third[NUCLEI].params["maxTrials"] == 3
    # options are part of the key: other options rebuild everything
    assert build_dags({}, retries=4).built == 2


def test_build_cache_written_by_someone_else_is_ignored(stored: Engine) -> None:
    build_dags({})
    cache = Path(os.environ["PATIENT_ML_HOME"]) / "cache" / BUILD_CACHE
    assert stat.S_IMODE(cache.stat().st_mode) == 0o600
    cache.chmod(0o666)
    assert build_dags({}).built == 2
    cache.write_bytes(b"not a pickle")
    cache.chmod(0o600)
    assert build_dags({}).built == 2


def test_stored_rows_that_skipped_the_checks_build_no_dag_from_unsafe_values(
    stored: Engine,
) -> None:
    """Rows edited around the config checks (issue 16): an unsafe slug builds nothing, a
    control character in stored text gives the config-error stand-in, never a DAG with it."""
    with session_scope(stored) as session:
        session.execute(
            text("UPDATE pml_models SET description = :d WHERE slug = 'nuclei_segmenter'"),
            {"d": "clears the screen \x1b[2J"},
        )
        session.execute(
            text("UPDATE pml_models SET slug = '../evil' WHERE slug = :s"),
            {"s": BRAIN.removeprefix("patient_ml__")},
        )
    bag = parse()
    assert bag.import_errors == {}
    assert sorted(bag.dag_ids) == [NUCLEI]
    stand_in = bag.dags[NUCLEI]
    assert "config-error" in stand_in.tags
    assert "control character U+001B" in stand_in.description
    assert "\x1b" not in stand_in.description


def test_deployed_model_gets_a_monitor_dag_and_retrains_on_its_drift_asset(
    stored: Engine,
) -> None:
    from airflow.sdk import AssetOrTimeSchedule

    from patient_ml.db.models import Model
    from patient_ml.services.runs import create_run

    monitor = "patient_ml_monitor__brain_mri_tumour_classifier"
    with session_scope(stored) as session:
        doc = model_to_wire(get_model(session, "brain-mri-tumour-classifier"))
        doc["monitoring"] = {"schedule": "15 * * * *", "retrainOnBreach": True}
        update_model(session, doc["id"], doc, actor="t")
        # the factory reads only the champion pointer (deploy sets it; see tests/e2e)
        model = session.get(Model, doc["id"])
        model.champion_id = create_run(session, doc["id"], actor="t").id
    bag = parse()
    assert bag.import_errors == {} and monitor in bag.dag_ids
    dag = bag.dags[monitor]
    assert [t.task_id for t in dag.tasks] == ["check", "signal_drift"]
    assert dag.timetable.expression == "15 * * * *" and not dag.catchup
    drift = "x-patient-ml://models/brain_mri_tumour_classifier/drift"
    assert [a.uri for a in dag.task_dict["signal_drift"].outlets] == [drift]
    # retrainOnBreach: the weekly schedule or the drift Asset, whichever comes first
    brain = bag.dags[BRAIN]
    assert isinstance(brain.timetable, AssetOrTimeSchedule)
    assert [a.uri for a in brain.timetable.asset_condition.objects] == [drift]
    assert "monitoring breach" in brain.doc_md
    # an edge model has no endpoint to watch; monitoring can be switched off
    doc["monitoring"] = {"enabled": False}
    with session_scope(stored) as session:
        update_model(session, doc["id"], doc, actor="t")
    bag = parse()
    assert monitor not in bag.dag_ids and not isinstance(bag.dags[BRAIN].timetable,
                                                         AssetOrTimeSchedule)  # fmt: skip


def test_a_chained_model_trains_when_its_upstream_model_publishes_predictions(
    stored: Engine,
) -> None:
    """`source.fromModel`: the second model's training DAG runs on the first one's predictions
    Asset (the scoring DAG's outlet), and also on its own drift Asset when it retrains on a
    breach: either event starts a run."""
    from airflow.sdk import AssetAny

    second = "patient_ml__brain_mri_tumour_second_read"
    predictions = "x-patient-ml://models/brain_mri_tumour_classifier/predictions"
    with session_scope(stored) as session:
        create_dataset(session, _load("brain_mri_flagged_dataset"), actor="t")
        create_model(session, _load("brain_mri_second_read_model"), actor="t")
    bag = parse()
    assert bag.import_errors == {}
    dag = bag.dags[second]
    assert [a.uri for a in dag.timetable.asset_condition.objects] == [predictions]
    serialized = DagSerialization.to_dict(dag)
    assert predictions in str(serialized["dag"]["timetable"])
    assert "whenever model `brain_mri_tumour_classifier` publishes predictions" in dag.doc_md
    # a task's parse reads its own model's row only: the upstream slug still comes along
    (entry,) = query_entries(slug="brain_mri_tumour_second_read")
    assert entry.upstream_slug == "brain_mri_tumour_classifier"

    doc = _load("brain_mri_second_read_model")
    doc["monitoring"] = {"retrainOnBreach": True}
    with session_scope(stored) as session:
        update_model(session, doc["name"], doc, actor="t")
    dag = parse().dags[second]
    either = dag.timetable.asset_condition
    assert isinstance(either, AssetAny)
    assert [a.uri for a in either.objects] == [
        "x-patient-ml://models/brain_mri_tumour_second_read/drift",
        predictions,
    ]


def test_deployed_model_gets_a_scoring_dag_mapped_over_its_chunks(stored: Engine) -> None:
    from airflow.sdk.definitions.param import ParamsDict

    from patient_ml.db.models import Model
    from patient_ml.services.runs import create_run

    scoring = "patient_ml_score__brain_mri_tumour_classifier"
    assert scoring not in parse().dag_ids  # no champion: nothing to score with
    with session_scope(stored) as session:
        doc = model_to_wire(get_model(session, "brain-mri-tumour-classifier"))
        model = session.get(Model, doc["id"])
        model.champion_id = create_run(session, doc["id"], actor="t").id
    bag = parse()
    assert bag.import_errors == {} and scoring in bag.dag_ids
    dag = bag.dags[scoring]
    assert type(dag.timetable).__name__ == "NullTimetable" and not dag.catchup
    assert [t.task_id for t in dag.topological_sort()] == ["plan", "score", "finish"]
    assert dag.task_dict["finish"].trigger_rule == "all_done"
    assert [a.uri for a in dag.task_dict["finish"].outlets] == [
        "x-patient-ml://models/brain_mri_tumour_classifier/predictions"
    ]
    params = ParamsDict(dag.params).dump()
    assert params == {"split": "all", "since": "", "chunkSize": 200, "writeBack": True}
    # the scoring DAG serialises (what the DAG processor stores) with its mapped task
    serialized = DagSerialization.to_dict(dag)
    assert DagSerialization.from_dict(serialized).task_dict["score"].is_mapped
    # an edge model is not served by the product: no scoring DAG
    doc["deployApproach"] = {**doc["deployApproach"], "type": "edge"}
    with session_scope(stored) as session:
        update_model(session, doc["id"], doc, actor="t")
    assert scoring not in parse().dag_ids
