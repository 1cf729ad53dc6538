"""Builders for training tests."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

from sqlalchemy import Engine

from patient_ml.training.backends.base import TrainingJob
from patient_ml.training.backends.local import LocalBackend
from patient_ml.training.contract import JobLayout
from patient_ml.training.metrics import MetricParser

SCRIPTED = Path(__file__).parent / "scripted_trainer"
IMAGE = "patient-ml/scripted-trainer:1"
METRICS = [
    {"name": "validation:accuracy", "regex": r"val_accuracy=([0-9.]+)"},
    {"name": "validation:loss", "regex": r"val_loss=([0-9.eE+-]+)"},
]


def backend() -> LocalBackend:
    return LocalBackend({"patient-ml/scripted-trainer": SCRIPTED})


def job(root: Path, name: str | None = None, timeout: float = 60, **hps: Any) -> TrainingJob:
    layout = JobLayout(root).create()
    layout.write_config(hps, {"problemType": "imgClf", "labels": []})
    return TrainingJob(
        name=name or f"job-{uuid.uuid4().hex[:8]}",
        layout=layout,
        image=IMAGE,
        metric_parser=MetricParser.from_config(METRICS),
        timeout_seconds=timeout,
    )


def curated_run(
    engine: Engine, tmp_path: Path, model: dict[str, Any], *, patients: int, store: Any = None
) -> tuple[str, Any]:
    """A run of `model` (a model config without name and dataset) on a real curated snapshot of
    a synthetic cohort of `patients` patients; returns the run id and the artifact store (a
    local one under tmp_path unless `store` is given)."""
    from patient_ml.curation.fetch import FetchPolicy, ImageFetcher
    from patient_ml.curation.sources import NdjsonSource
    from patient_ml.db.engine import session_scope
    from patient_ml.services.curation import curate
    from patient_ml.services.datasets import create_dataset
    from patient_ml.services.models import create_model
    from patient_ml.services.runs import create_run
    from patient_ml.storage import LocalArtifactStore
    from tests.curation.cohort import Cohort, dataset_config

    name, code = f"ds-{uuid.uuid4().hex[:6]}", uuid.uuid4().hex[:8]
    with session_scope(engine) as session:
        dataset_id = create_dataset(session, dataset_config(name, code), actor="t").id
        create_model(session, {**model, "name": f"m-{name}", "datasetId": dataset_id}, actor="t")
        run_id = create_run(session, f"m-{name}", actor="t").id
    cohort = Cohort(tmp_path / "src", code, f"urn:test:{name}")
    cohort.add_patients(0, patients)
    store = store if store is not None else LocalArtifactStore(tmp_path / "artifacts")
    curate(
        engine=engine,
        dataset_ref=dataset_id,
        source=NdjsonSource(cohort.write_ndjson(tmp_path / "nd")),
        store=store,
        fetcher=ImageFetcher(FetchPolicy(allowed_file_roots=(cohort.images,))),
        workdir=tmp_path / "curate",
        run_id=run_id,
    )
    return run_id, store
