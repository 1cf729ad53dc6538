"""Evaluated runs for the gate's tests, made by the product's own code from synthetic model
answers: the run is created, linked to a registered snapshot and given its tuning result by the
services; its answers are scored by the evaluation's `Scorer` (operating point chosen on
synthetic validation answers by `operating_point.choose`, the champion at its stored point),
compared by `build_report` (the shared cluster bootstrap) and recorded by
`record_evaluation`. Only serving is skipped: the answers are drawn here, so a test can make a
challenger that is worse on one metric by a known amount."""

from __future__ import annotations

import logging
import uuid
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import Engine

from patient_ml.db.engine import session_scope
from patient_ml.db.models import Run
from patient_ml.evaluation.evaluate import (
    Contender,
    Scored,
    Scorer,
    TestExample,
    TestSet,
    build_report,
    contender,
)
from patient_ml.evaluation.operating_point import choose, for_champion, resolve
from patient_ml.evaluation.subgroups import SubgroupPlan
from patient_ml.log_records import ProgressLog
from patient_ml.services import champion as champions
from patient_ml.services import training
from patient_ml.services.datasets import create_dataset
from patient_ml.services.evaluations import record_evaluation
from patient_ml.services.models import create_model, update_model
from patient_ml.services.runs import create_run, get_run
from patient_ml.services.snapshots import link_run_to_snapshot, register_snapshot
from patient_ml.storage import LocalArtifactStore
from tests.curation.cohort import dataset_config
from tests.operators.lifecycle import model_config

LABELS = ((0, "negative"), (1, "positive"))  # the cohort dataset's labels
TEST_IMAGES = 240  # 120 patients of 2 images
HPS = {"epochs": "3", "image_size": "16"}
SITES = ("site-a", "site-b", "site-c")  # patient p is at SITES[p % 3]
SEXES = ("female", "male")  # patient p is SEXES[(p // 3) % 2]


def model_with_policy(engine: Engine, policy: dict[str, Any], **extra: Any) -> str:
    name = f"gate-{uuid.uuid4().hex[:6]}"
    with session_scope(engine) as session:
        dataset = create_dataset(session, dataset_config(name, "g1"), actor="t").id
        config = model_config(f"m-{name}", dataset, approvalPolicy=policy, **extra)
        return str(create_model(session, config, actor="t").id)


def set_policy(engine: Engine, model_id: str, policy: dict[str, Any]) -> None:
    from patient_ml.services.models import get_model, model_to_wire

    with session_scope(engine) as session:
        config = model_to_wire(get_model(session, model_id))
        config["approvalPolicy"] = policy
        update_model(session, model_id, config, actor="t")


def answers(y: np.ndarray, miss: float | np.ndarray, seed: int) -> np.ndarray:
    """A model's confidences: it sees label 1 in most label-1 images, except a share `miss` of
    them, which it scores like label-0 images."""
    rng = np.random.default_rng(seed)
    seen = (y == 1) & (rng.uniform(size=len(y)) >= miss)
    score = np.clip(np.where(seen, 0.72, 0.28) + rng.normal(0, 0.12, len(y)), 0.01, 0.99)
    return np.column_stack([1 - score, score])


def _test_set(snapshot_id: str) -> TestSet:
    y = np.arange(TEST_IMAGES) % 2
    examples = tuple(
        TestExample(f"ex-{i:04d}", f"images/{i}.png", int(y[i]), None, f"patientKey:p{i // 2}",
                    attributes=(("sex", SEXES[(i // 2 // 3) % 2]), ("site", SITES[i // 2 % 3])))
        for i in range(TEST_IMAGES)
    )  # fmt: skip
    return TestSet("ds", snapshot_id, "imgClf", LABELS, examples, cluster_field="patientKey")


def _scored(store: LocalArtifactStore, who: Contender, test: TestSet, miss: float,
            seed: int, site_miss: dict[str, float] | None = None) -> Scored:  # fmt: skip
    truths = np.array([e.label for e in test.examples])
    sites = [dict(e.attributes)["site"] for e in test.examples]
    per_example = np.array([(site_miss or {}).get(s, miss) for s in sites])
    probabilities = answers(truths, per_example, seed)
    if who.role == "champion":
        point = for_champion(who.stored_point, test.labels)
    else:
        y_val = np.arange(120) % 2
        point = choose(resolve(who.operating_rule, test.labels), [0, 1], y_val,
                       answers(y_val, miss, seed + 1000))  # fmt: skip
    scorer = Scorer(store, test, f"The {who.role} (run {who.run_id})")
    metrics, statistic = scorer.score(probabilities.tolist(), point)
    result = {
        "runId": who.run_id,
        "image": who.image,
        "serverKind": "local",
        "imageDigest": "local-sha256:" + "0" * 64,
        "metrics": metrics,
        "answers": [],
        "seconds": 0.0,
    }
    return Scored(result, statistic)


def evaluated_run(
    engine: Engine,
    root: Path,
    model_id: str,
    *,
    miss: float,
    seed: int = 1,
    champion_miss: float = 0.1,
    snapshot_id: str = "a" * 64,
    hyperparameters: dict[str, str] | None = None,
    site_miss: dict[str, float] | None = None,
    subgroups: SubgroupPlan | None = None,
) -> str:
    """A new run of the model, evaluated against the model's champion (if any): its model
    misses a share `miss` of label-1 images (`site_miss`: another share at these sites), the
    champion `champion_miss`; with `subgroups`, the report has subgroup strata (by the
    examples' `sex` and `site`)."""
    store = LocalArtifactStore(root / "artifacts")
    with session_scope(engine) as session:
        run = create_run(session, model_id, actor="t")
        run_id = run.id
        register_snapshot(
            session, snapshot_id=snapshot_id, dataset_id=_dataset_of(session, model_id),
            manifest_uri=f"file:///snapshots/{snapshot_id}/manifest.jsonl",
            example_count=TEST_IMAGES, counts={}, report={}, actor="t",
        )  # fmt: skip
        link_run_to_snapshot(session, run_id, snapshot_id, actor="t")
        training.record_tuning_result(
            session, run_id, hyperparameters=hyperparameters or HPS, metrics={},
            directions={}, artifact_uri=f"file:///runs/{run_id}/model.tar.gz",
            artifact_sha256="0" * 64, actor="t",
        )  # fmt: skip
        challenger = contender(get_run(session, run_id), "challenger")
        champion_run = session.get(Run, run.champion_id) if run.champion_id else None
        champion = contender(champion_run, "champion") if champion_run else None
    test = _test_set(snapshot_id)
    scored = {"challenger": _scored(store, challenger, test, miss, seed, site_miss)}
    if champion is not None:
        scored["champion"] = _scored(store, champion, test, champion_miss, seed + 7)
    report = build_report(run_id, test, scored, challenger, champion,
                          progress=ProgressLog(logging.getLogger("t")),
                          subgroups=subgroups)  # fmt: skip
    with session_scope(engine) as session:
        record_evaluation(session, run_id, report, report_uri="file:///report.json", actor="t")
    return run_id


def _dataset_of(session: Any, model_id: str) -> str:
    from patient_ml.db.models import Model

    model = session.get(Model, model_id)
    assert model is not None
    return str(model.dataset_id)


def make_champion(engine: Engine, run_id: str) -> None:
    with session_scope(engine) as session:
        champions.promote(session, get_run(session, run_id).model_id, run_id, actor="t")


def model_with_champion(engine: Engine, root: Path, policy: dict[str, Any]) -> str:
    """A model with this approval policy whose first run (its model missing 10 % of label-1
    images) was approved, by the policy or by people (dr-a, and dr-b under the two-person
    rule), and is champion."""
    from patient_ml.services import approvals
    from patient_ml.services.auto_approval import try_auto_approve

    model_id = model_with_policy(engine, policy)
    first = evaluated_run(engine, root, model_id, miss=0.1)
    with session_scope(engine) as session:
        approval, _ = try_auto_approve(session, first)
        if approval is None:
            for user in ("dr-a", "dr-b")[: int(policy.get("minApprovers", 1))]:
                approvals.decide(session, first, "approved", user=user, reason="first",
                                 channel="api")  # fmt: skip
    make_champion(engine, first)
    return model_id
