"""MLflow mirrors what the product records about a run (docs/mlflow.md).

The product DB stays the system of record; `mirror_run` copies the part of it that MLflow
users look for, idempotently (every object is found by the product ids in its tags before it
is created, so any stage, a retry or `patient-ml runs mlflow-sync` fills in what is missing):

- the run: an MLflow run in the experiment `patient-ml/<model name>` (tag
  `patient_ml.run_id`), the best hyperparameters as params, the snapshot as its input dataset
  (digest: the snapshot's content hash);
- each trial that ended: a nested run (tag `mlflow.parentRunId`) with its hyperparameters, the
  objective's intermediate values as that metric's history (step = the trainer's step), its
  final metrics one step after the last, and its state: `complete` FINISHED, `pruned` KILLED,
  `failed` FAILED, the product's state in tag `patient_ml.trial_state`;
- an evaluated run: a version of the registered model `<model name>` holding the model artifact,
  the evaluation's challenger metrics (linked to the snapshot dataset; their 95 % intervals and
  the champion's values as tags), the snapshot id and artifact sha256;
- the champion: alias `champion` on its version, moved on every deployment (a rollback moves
  it back), with tags naming the deployment, the approval and the approvers.

An unreachable MLflow never fails the caller: `mirror_run` logs a warning, records the failure
on the run's audit trail (`run.mlflow.failed`) and returns it; a success is recorded too
(`run.mlflow.mirrored`, with the MLflow ids).
"""

from __future__ import annotations

import json
import logging
import math
from datetime import datetime
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from patient_ml.db.engine import session_scope
from patient_ml.db.models import Approval, Deployment, Metric, Model, Run, Snapshot, Trial
from patient_ml.exceptions import PatientMLError
from patient_ml.services import audit
from patient_ml.storage import ArtifactStore

if TYPE_CHECKING:
    from patient_ml.hooks.mlflow_tracking import MlflowTracker

log = logging.getLogger("patient_ml.mlflow")

CHAMPION_ALIAS = "champion"
RUN_TAG = "patient_ml.run_id"
TRIAL_TAG = "patient_ml.trial_number"
MIRRORED_TAG = "patient_ml.mirrored"
ROLE_TAG = "patient_ml.role"  # `run` (the product run) or `trial` (a nested trial run)
TRIAL_STATUS = {"complete": "FINISHED", "pruned": "KILLED", "failed": "FAILED"}


class _Record(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class TrialRecord(_Record):
    number: int
    state: str
    params: dict[str, str]
    objective: str
    intermediate: list[tuple[int, float]]
    metrics: dict[str, float]
    value: float | None = None
    failure: str | None = None
    worker: str | None = None
    started_ms: int
    ended_ms: int | None = None


class EvaluationRecord(_Record):
    metrics: list[tuple[str, float]]
    tags: dict[str, str]


class SnapshotRecord(_Record):
    id: str
    manifest_uri: str
    example_count: int
    by_split: dict[str, int]


class RunRecord(_Record):
    run_id: str
    slug: str
    model_id: str
    model_name: str
    status: str
    started_ms: int
    ended_ms: int | None = None
    hyperparameters: dict[str, str]
    snapshot: SnapshotRecord | None = None
    trials: list[TrialRecord]
    evaluation: EvaluationRecord | None = None
    artifact_uri: str | None = None
    artifact_sha256: str | None = None
    tags: dict[str, str]


class ChampionRecord(_Record):
    model_name: str
    run_id: str
    deployment_id: int
    action: str
    deployed_by: str
    deployed_ms: int
    approval_id: int | None = None
    approved_by: str | None = None
    approvers: list[str]
    approval_channel: str | None = None
    justification: str | None = None


class MirrorReport(_Record):
    """What one mirroring did (`mirrored`) or why it did not (`error`)."""

    mirrored: bool
    tracking_uri: str
    experiment_id: str | None = None
    mlflow_run_id: str | None = None
    trials_added: int = 0
    model_version: str | None = None
    champion_version: str | None = None
    error: str | None = None

    def to_wire(self) -> dict[str, Any]:
        return self.model_dump(mode="json", exclude_none=True)


def _ms(moment: datetime | None) -> int | None:
    return int(moment.timestamp() * 1000) if moment is not None else None


def _study_trials(engine: Engine, run_id: str) -> dict[int, Any]:
    """The run's Optuna trials by number (intermediate values, final metrics); {} when the
    run has no study."""
    import optuna

    from patient_ml.training import sweep

    storage = sweep.optuna_storage(engine.url.render_as_string(hide_password=False))
    try:
        study = optuna.load_study(study_name=sweep.study_name(run_id), storage=storage)
    except KeyError:
        return {}
    return {t.number: t for t in study.get_trials(deepcopy=False)}


def run_record(session: Session, engine: Engine, run_id: str) -> RunRecord | None:
    run = session.get(Run, run_id)
    if run is None:
        return None
    model = session.get(Model, run.model_id)
    approach = run.config.get("trainingApproach") or {}
    objective = str((approach.get("objective") or {}).get("metric") or "objective")
    study = _study_trials(engine, run.id)
    trials = []
    for row in session.scalars(select(Trial).where(Trial.run_id == run.id).order_by(Trial.number)):
        if row.state not in TRIAL_STATUS:
            continue  # still running: a later mirroring adds it
        frozen = study.get(row.number)
        intermediate = sorted((frozen.intermediate_values if frozen else {}).items())
        final = (frozen.user_attrs.get("metrics") if frozen else None) or {}
        trials.append(
            TrialRecord(
                number=row.number,
                state=row.state,
                params={str(k): str(v) for k, v in (row.params or {}).items()},
                objective=objective,
                intermediate=[(int(s), float(v)) for s, v in intermediate if math.isfinite(v)],
                metrics={
                    str(k): float(v)
                    for k, v in final.items()
                    if isinstance(v, int | float) and math.isfinite(v)
                },
                value=row.value if row.value is not None and math.isfinite(row.value) else None,
                failure=row.failure,
                worker=row.worker,
                started_ms=_ms(row.started_at) or 0,
                ended_ms=_ms(row.ended_at),
            )
        )
    snapshot = session.get(Snapshot, run.snapshot_id) if run.snapshot_id else None
    snap = None
    if snapshot is not None:
        by_split = (snapshot.counts or {}).get("bySplit") or {}
        snap = SnapshotRecord(
            id=snapshot.id,
            manifest_uri=snapshot.manifest_uri,
            example_count=snapshot.example_count,
            by_split={str(k): int(v) for k, v in by_split.items()},
        )
    return RunRecord(
        run_id=run.id,
        slug=run.slug,
        model_id=run.model_id,
        model_name=model.name if model else run.model_id,
        status=run.status,
        started_ms=_ms(run.started_at) or 0,
        ended_ms=_ms(run.ended_at),
        hyperparameters={str(h["name"]): str(h["value"]) for h in run.hyperparameters or []},
        snapshot=snap,
        trials=trials,
        evaluation=_evaluation(session, run),
        artifact_uri=run.model_artifact_uri,
        artifact_sha256=run.model_artifact_sha256,
        tags={
            RUN_TAG: run.id,
            ROLE_TAG: "run",
            "patient_ml.model_id": run.model_id,
            "patient_ml.status": run.status,
            "patient_ml.objective": objective,
            **({"patient_ml.snapshot_id": run.snapshot_id} if run.snapshot_id else {}),
            **({"patient_ml.airflow_dag_id": run.airflow_dag_id} if run.airflow_dag_id else {}),
            **({"patient_ml.airflow_run_id": run.airflow_run_id} if run.airflow_run_id else {}),
        },
    )


def _evaluation(session: Session, run: Run) -> EvaluationRecord | None:
    if run.status != "succeeded" or not run.evaluation:
        return None
    rows = list(
        session.scalars(
            select(Metric)
            .where(Metric.run_id == run.id, Metric.stage == "evaluation")
            .order_by(Metric.id)
        )
    )
    metrics = [(m.name, m.value) for m in rows if m.subject == "challenger"]
    tags: dict[str, str] = {}
    for m in rows:
        prefix = "patient_ml.metric" if m.subject == "challenger" else "patient_ml.champion_metric"
        tags[f"{prefix}.{m.name}"] = f"{m.value:.6g}"
        if m.low is not None and m.high is not None:
            tags[f"{prefix}.{m.name}.interval95"] = f"[{m.low:.6g}, {m.high:.6g}]"
    return EvaluationRecord(metrics=metrics, tags=tags)


def champion_record(session: Session, model_id: str) -> ChampionRecord | None:
    model = session.get(Model, model_id)
    if model is None or not model.champion_id:
        return None
    deployment = session.scalars(
        select(Deployment)
        .where(Deployment.model_id == model.id, Deployment.run_id == model.champion_id)
        .order_by(Deployment.id.desc())
        .limit(1)
    ).first()
    if deployment is None:
        return None
    approvals = session.scalars(
        select(Approval).where(Approval.run_id == model.champion_id).order_by(Approval.id)
    )
    approved = [a for a in approvals if a.decision == "approved"]
    newest = approved[-1] if approved else None
    approvers: list[str] = []
    for a in approved:
        who = a.user or a.actor
        if who not in approvers:
            approvers.append(who)
    return ChampionRecord(
        model_name=model.name,
        run_id=model.champion_id,
        deployment_id=deployment.id,
        action=deployment.action,
        deployed_by=deployment.actor,
        deployed_ms=_ms(deployment.created_at) or 0,
        approval_id=newest.id if newest else None,
        approved_by=(newest.user or newest.actor) if newest else None,
        approvers=approvers,
        approval_channel=newest.channel if newest else None,
        justification=newest.description if newest else None,
    )


def mirror_run(
    engine: Engine,
    store: ArtifactStore | None,
    run_id: str,
    tracker: MlflowTracker | None,
    *,
    actor: str,
) -> MirrorReport | None:
    """Mirror run `run_id` (and its model's champion) to MLflow; None when mirroring is off
    (`tracker` None). Never raises: a failure is logged, audited and returned."""
    if tracker is None:
        return None
    uri = tracker.settings.tracking_uri
    try:
        report = _mirror(engine, store, run_id, tracker)
    except Exception as exc:  # MLflow mirrors the product; it never fails the product's work
        error = getattr(exc, "message", None) or f"{type(exc).__name__}: {exc}"
        log.warning("run %s: not mirrored to MLflow (the run goes on): %s", run_id, error)
        report = MirrorReport(mirrored=False, tracking_uri=uri, error=str(error)[:2000])
        _audit(engine, run_id, actor, "run.mlflow.failed", report)
        return report
    log.info(
        "run %s mirrored to MLflow at %s: run %s, %d new trial(s)%s%s",
        run_id,
        uri,
        report.mlflow_run_id,
        report.trials_added,
        f", model version {report.model_version}" if report.model_version else "",
        f", alias champion -> version {report.champion_version}" if report.champion_version else "",
    )
    _audit(engine, run_id, actor, "run.mlflow.mirrored", report)
    return report


def mirror_with_connection(
    engine: Engine, store: ArtifactStore | None, run_id: str, conn_id: str | None, *, actor: str
) -> MirrorReport | None:
    """`mirror_run` through the MLflow connection `conn_id` (default: the setting
    PATIENT_ML_MLFLOW_CONN_ID); None when mirroring is off. Never raises."""
    from patient_ml import settings

    conn_id = conn_id if conn_id is not None else settings.mlflow_conn_id()
    if not conn_id or conn_id.strip().lower() in ("off", "none"):
        return None  # off: not even the connection look-up
    try:
        from patient_ml.hooks.mlflow_tracking import mirror_tracker

        tracker = mirror_tracker(conn_id)
    except Exception as exc:  # a broken connection is reported like an unreachable server
        error = getattr(exc, "message", None) or f"{type(exc).__name__}: {exc}"
        log.warning("run %s: not mirrored to MLflow (the run goes on): %s", run_id, error)
        report = MirrorReport(mirrored=False, tracking_uri=f"connection {conn_id}",
                              error=str(error)[:2000])  # fmt: skip
        _audit(engine, run_id, actor, "run.mlflow.failed", report)
        return report
    return mirror_run(engine, store, run_id, tracker, actor=actor)


def _audit(engine: Engine, run_id: str, actor: str, action: str, report: MirrorReport) -> None:
    try:
        with session_scope(engine) as session:
            audit.record(session, actor=actor, action=action, entity_type="run",
                         entity_id=run_id, after=report.to_wire())  # fmt: skip
    except PatientMLError as exc:  # the report is in the task log either way
        log.warning("run %s: MLflow report not recorded: %s", run_id, exc.message)


def _mirror(
    engine: Engine, store: ArtifactStore | None, run_id: str, tracker: MlflowTracker
) -> MirrorReport:
    with session_scope(engine) as session:
        record = run_record(session, engine, run_id)
        if record is None:
            raise PatientMLError(f"Run {run_id} does not exist.")
        champion = champion_record(session, record.model_id)
        champion_run = (
            run_record(session, engine, champion.run_id)
            if champion is not None and champion.run_id != run_id
            else None
        )
    experiment_id, mlflow_run_id, added, version = _mirror_one(tracker, store, record)
    champion_version = None
    if champion is not None:
        if champion.run_id == run_id:
            champion_version = version
        elif champion_run is not None:  # e.g. rolled back to a run MLflow never saw
            champion_version = _mirror_one(tracker, store, champion_run)[3]
        if champion_version is not None:
            _set_champion(tracker, champion, champion_version)
    return MirrorReport(
        mirrored=True,
        tracking_uri=tracker.settings.tracking_uri,
        experiment_id=experiment_id,
        mlflow_run_id=mlflow_run_id,
        trials_added=added,
        model_version=version,
        champion_version=champion_version,
    )


def _mirror_one(
    tracker: MlflowTracker, store: ArtifactStore | None, record: RunRecord
) -> tuple[str, str, int, str | None]:
    """(experiment id, MLflow run id, trials added, registered version or None)."""
    experiment_id = tracker.experiment_id(
        record.model_name, {"patient_ml.model_id": record.model_id}
    )
    found = tracker.find_run(experiment_id, {RUN_TAG: record.run_id, ROLE_TAG: "run"})
    if found is None:
        parent = tracker.create_run(
            experiment_id, name=record.slug, start_ms=record.started_ms, tags=record.tags
        )
    else:
        parent = str(found.info.run_id)
    tracker.log(parent, params=record.hyperparameters, tags=record.tags)
    added = _mirror_trials(tracker, experiment_id, parent, record)
    version = None
    if record.evaluation is not None:
        existing = tracker.version_of(record.model_name, record.run_id)
        if existing is not None:
            version = str(existing.version)
        else:
            version = _register(tracker, store, experiment_id, parent, record)
    if record.status in ("succeeded", "failed") and (
        found is None or found.info.status == "RUNNING"
    ):
        status = "FINISHED" if record.status == "succeeded" else "FAILED"
        tracker.end_run(parent, status, record.ended_ms)
    return experiment_id, parent, added, version


def _mirror_trials(
    tracker: MlflowTracker, experiment_id: str, parent: str, record: RunRecord
) -> int:
    if not record.trials:
        return 0
    done: dict[int, Any] = {}
    partial: dict[int, str] = {}
    for child in tracker.runs_under(experiment_id, parent):
        number = child.data.tags.get(TRIAL_TAG)
        if number is None or not number.isdigit():
            continue
        if child.data.tags.get(MIRRORED_TAG) == "true":
            done[int(number)] = child
        else:
            partial[int(number)] = str(child.info.run_id)
    added = 0
    for trial in record.trials:
        if trial.number in done:
            continue
        tags = {
            "mlflow.parentRunId": parent,
            RUN_TAG: record.run_id,
            ROLE_TAG: "trial",
            TRIAL_TAG: str(trial.number),
            "patient_ml.trial_state": trial.state,
            **({"patient_ml.worker": trial.worker} if trial.worker else {}),
            **({"patient_ml.failure": trial.failure[:4000]} if trial.failure else {}),
        }
        child_id = partial.get(trial.number) or tracker.create_run(
            experiment_id, name=f"trial {trial.number} of {record.slug}",
            start_ms=trial.started_ms, tags=tags,
        )  # fmt: skip
        stamp = trial.ended_ms or trial.started_ms
        metrics = [(trial.objective, v, stamp, step) for step, v in trial.intermediate]
        last = max((step for step, _ in trial.intermediate), default=-1) + 1
        metrics += [(k, v, stamp, last) for k, v in sorted(trial.metrics.items())]
        if trial.value is not None:
            metrics.append(("objective_value", trial.value, stamp, 0))
        tracker.log(child_id, params=trial.params, metrics=metrics, tags=tags)
        tracker.end_run(child_id, TRIAL_STATUS[trial.state], trial.ended_ms)
        tracker.log(child_id, tags={MIRRORED_TAG: "true"})
        added += 1
    return added


def _register(
    tracker: MlflowTracker,
    store: ArtifactStore | None,
    experiment_id: str,
    parent: str,
    record: RunRecord,
) -> str:
    dataset = None
    if record.snapshot is not None:
        snap = record.snapshot
        name = f"snapshot-{snap.id[:12]}"
        profile = {"exampleCount": snap.example_count, "bySplit": snap.by_split}
        tracker.log_dataset(
            parent,
            name=name,
            digest=snap.id,
            source=json.dumps({"uri": snap.manifest_uri, "snapshotId": snap.id}),
            profile=json.dumps(profile),
        )
        dataset = (name, snap.id[:36])
    artifact = _artifact_bytes(store, record)
    evaluation = record.evaluation
    tags = {
        RUN_TAG: record.run_id,
        "patient_ml.model_id": record.model_id,
        **({"patient_ml.snapshot_id": record.snapshot.id} if record.snapshot else {}),
        **({"patient_ml.artifact_uri": record.artifact_uri} if record.artifact_uri else {}),
        **(
            {"patient_ml.artifact_sha256": record.artifact_sha256} if record.artifact_sha256 else {}
        ),
        **(evaluation.tags if evaluation else {}),
    }
    return tracker.register(
        experiment_id=experiment_id,
        mlflow_run_id=parent,
        model_name=record.model_name,
        artifact=artifact,
        metrics=list(evaluation.metrics) if evaluation else [],
        dataset=dataset,
        tags=tags,
        description=f"Patient ML run {record.slug} ({record.run_id}); mirrored from the product.",
    )


def _artifact_bytes(store: ArtifactStore | None, record: RunRecord) -> bytes | None:
    if store is None or not record.artifact_uri:
        return None
    try:
        return store.read_bytes(store.key_of(record.artifact_uri))
    except Exception as exc:  # the version is registered without the file; the tag names it
        log.warning("run %s: model artifact not copied to MLflow: %s", record.run_id, exc)
        return None


def _set_champion(tracker: MlflowTracker, champion: ChampionRecord, version: str) -> None:
    tracker.set_alias(champion.model_name, CHAMPION_ALIAS, version)
    tags = {
        "patient_ml.deployment_id": str(champion.deployment_id),
        "patient_ml.deploy_action": champion.action,
        "patient_ml.deployed_by": champion.deployed_by,
        **({"patient_ml.approval_id": str(champion.approval_id)} if champion.approval_id else {}),
        **({"patient_ml.approved_by": champion.approved_by} if champion.approved_by else {}),
        **({"patient_ml.approvers": ", ".join(champion.approvers)} if champion.approvers else {}),
        **(
            {"patient_ml.approval_channel": champion.approval_channel}
            if champion.approval_channel
            else {}
        ),
        **(
            {"patient_ml.approval_justification": champion.justification[:4000]}
            if champion.justification
            else {}
        ),
    }
    tracker.tag_version(champion.model_name, version, tags)
    tracker.tag_model(
        champion.model_name,
        {"patient_ml.champion_run_id": champion.run_id,
         "patient_ml.champion_deployment_id": str(champion.deployment_id)},
    )  # fmt: skip
