"""Builders for the back-half tests: a real curated snapshot, a real img_clf sweep (one small
trial, host process), so evaluation, approval and deploy work on real models."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

from sqlalchemy import Engine

from patient_ml.curation.fetch import FetchPolicy, ImageFetcher
from patient_ml.curation.sources import NdjsonSource
from patient_ml.db.engine import session_scope
from patient_ml.deploy import deploy_run
from patient_ml.operators.tune import FinishTuningOperator, TuneWorkerOperator
from patient_ml.services.approvals import decide
from patient_ml.services.curation import curate
from patient_ml.services.datasets import create_dataset
from patient_ml.services.evaluation_run import evaluate_run
from patient_ml.services.models import create_model
from patient_ml.services.runs import create_run
from patient_ml.serving.servers import LocalServer
from patient_ml.storage import artifact_store_from_uri
from tests.curation.cohort import Cohort, dataset_config

IMAGE = "patient-ml/img-clf-trainer:0.1.0"


def model_config(name: str, dataset: str, **extra: Any) -> dict[str, Any]:
    return {
        "name": name,
        "description": "Test classifier: flags positive synthetic images.",
        "datasetId": dataset,
        "trainingApproach": {
            "type": "tuningJob",
            "trainingImage": IMAGE,
            "metricDefinitions": [
                {"name": "validation:balancedAccuracy", "regex": r"val_balanced_accuracy=([0-9.]+)"}
            ],
            "objective": {"metric": "validation:balancedAccuracy", "direction": "maximize"},
            "searchSpace": [
                {"type": "categorical", "name": "epochs", "values": ["3"]},
                {"type": "categorical", "name": "image_size", "values": ["16"]},
            ],
            "maxTrials": 1,
            "seed": 1,
        },
        "deployApproach": {"type": "cloud", "inferenceImage": IMAGE},
        **extra,
    }


class Project:
    """One dataset + model on a product DB, with a cohort that can grow between runs."""

    def __init__(self, engine: Engine, root: Path, **model_extra: Any) -> None:
        self.engine = engine
        self.root = root
        self.artifacts = str(root / "artifacts")
        self.store = artifact_store_from_uri(self.artifacts)
        name = f"ds-{uuid.uuid4().hex[:6]}"
        code = uuid.uuid4().hex[:8]
        with session_scope(engine) as session:
            self.dataset_id = create_dataset(session, dataset_config(name, code), actor="t").id
            self.model_id = create_model(
                session, model_config(f"m-{name}", self.dataset_id, **model_extra), actor="t"
            ).id
        self.cohort = Cohort(root / "src", code, f"urn:test:{name}")
        self.cohort.add_patients(0, 60)

    def trained_run(self) -> str:
        """A new run, curated and tuned (its best model recorded), not yet evaluated."""
        with session_scope(self.engine) as session:
            run_id = create_run(session, self.model_id, actor="t").id
        tag = uuid.uuid4().hex[:6]
        curate(
            engine=self.engine,
            dataset_ref=self.dataset_id,
            source=NdjsonSource(self.cohort.write_ndjson(self.root / f"nd-{tag}")),
            store=self.store,
            fetcher=ImageFetcher(FetchPolicy(allowed_file_roots=(self.cohort.images,))),
            workdir=self.root / f"work-{tag}",
            run_id=run_id,
        )
        TuneWorkerOperator(
            task_id="tune", run_id=run_id, backend="local", artifact_uri=self.artifacts
        ).execute({})
        FinishTuningOperator(task_id="finish", run_id=run_id, artifact_uri=self.artifacts).execute(
            {}
        )
        return run_id

    def deployed_run(self, *, reason: str, actor: str = "t", approver: str = "dr.ada") -> str:
        """A new run trained (`trained_run`), evaluated, approved by `approver` (with `reason`)
        and deployed on a local `serve` endpoint as the model's champion. The caller stops the
        endpoint: `patient_ml.deploy.stop_old_endpoints(engine, model_id, keep=None, ...)`."""
        run_id = self.trained_run()
        workdir = self.root / f"eval-{uuid.uuid4().hex[:6]}"
        evaluate_run(self.engine, self.store, LocalServer(), run_id, workdir, actor=actor)
        with session_scope(self.engine) as session:
            decide(session, run_id, "approved", user=approver, reason=reason, channel="cli")
        deploy_run(self.engine, self.store, run_id, actor=actor, server=LocalServer())
        return run_id
