"""The evaluate stage of a run: read the run, its snapshot and its champion at run time, score
both on the run's test split (`patient_ml.evaluation.evaluate`; imgClf: the challenger's
operating point chosen on the validation split) and record the result on the run, with the
operating point stored on it. Its progress messages, and the failure if it fails, are kept as
the run's evaluation log.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from sqlalchemy import Engine

from patient_ml import settings
from patient_ml.config.models import CurationSettings
from patient_ml.db.engine import session_scope
from patient_ml.db.models import Dataset, Run
from patient_ml.evaluation.evaluate import (
    EvaluationError,
    contender,
    evaluate_contenders,
    keep_evaluation_log,
    load_split,
    load_test_set,
)
from patient_ml.evaluation.subgroups import SubgroupPlan
from patient_ml.exceptions import PatientMLError
from patient_ml.log_records import ProgressLog
from patient_ml.services import evaluations
from patient_ml.services.runs import curated_snapshot, get_run
from patient_ml.serving.base import ModelServing
from patient_ml.storage import ArtifactStore

log = logging.getLogger("patient_ml.evaluation")


def subgroup_plan(dataset: Dataset | None) -> SubgroupPlan:
    """The dataset's current `curation.subgroups` as evaluation needs them (none: no dataset)."""
    if dataset is None:
        return SubgroupPlan()
    found = CurationSettings.model_validate(dataset.curation or {}).subgroups
    return SubgroupPlan(tuple(found.attributes), found.min_clusters, found.pairs)


def evaluate_run(
    engine: Engine,
    store: ArtifactStore,
    server: ModelServing,
    run_id: str,
    workdir: Path,
    *,
    actor: str,
) -> dict[str, Any]:
    """Score challenger and champion on the run's test split and record both on the run.

    Its progress messages, and the failure if it fails, are kept as the run's evaluation log.
    """
    progress = ProgressLog(log)
    try:
        return _evaluate_run(engine, store, server, run_id, workdir, actor=actor, progress=progress)
    except Exception as exc:
        reason = exc.message if isinstance(exc, PatientMLError) else type(exc).__name__
        progress.error("evaluation of run %s failed: %s", run_id, reason)
        raise
    finally:
        keep_evaluation_log(store, run_id, progress)


def _evaluate_run(
    engine: Engine,
    store: ArtifactStore,
    server: ModelServing,
    run_id: str,
    workdir: Path,
    *,
    actor: str,
    progress: ProgressLog,
) -> dict[str, Any]:
    with session_scope(engine) as session:
        run = get_run(session, run_id)
        snapshot = curated_snapshot(session, run, "there is no test split", EvaluationError)
        challenger = contender(run, "challenger")
        champion_run = session.get(Run, run.champion_id) if run.champion_id else None
        if run.champion_id and champion_run is None:
            raise EvaluationError(
                f"The champion of run {run_id} (run {run.champion_id}) no longer exists.",
                fix="approve another run as champion",
            )
        champion = contender(champion_run, "champion") if champion_run else None
        dataset_id, snapshot_id = snapshot.dataset_id, snapshot.id
        subgroups = subgroup_plan(session.get(Dataset, dataset_id))
    test = load_test_set(store, dataset_id, snapshot_id)
    validation = (
        load_split(store, dataset_id, snapshot_id, "validation")
        if test.problem_type == "imgClf"
        else None
    )
    report, report_uri = evaluate_contenders(
        run_id,
        challenger,
        champion,
        test,
        store,
        server,
        workdir,
        progress=progress,
        validation=validation,
        failure_cases=settings.failure_cases_per_class(),
        subgroups=subgroups,
    )
    with session_scope(engine) as session:
        summary = evaluations.record_evaluation(
            session, run_id, report, report_uri=report_uri, actor=actor
        )
    return summary
