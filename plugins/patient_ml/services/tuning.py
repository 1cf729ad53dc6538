"""The tune stage of a run, shared by the Airflow operators and the CLI: `TuningWorker` runs
trials of the run's sweep (`patient_ml.training.tuning.SweepWorker`) and records each one;
`finish_tuning` picks the best trial and records it on the run."""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import Engine

from patient_ml.db.engine import session_scope
from patient_ml.db.retry import retry_transient
from patient_ml.exceptions import PatientMLError
from patient_ml.services import provenance
from patient_ml.services import training as training_service
from patient_ml.services.runs import curated_snapshot, get_run
from patient_ml.storage import ArtifactStore
from patient_ml.training import sweep
from patient_ml.training.backends.base import Backend
from patient_ml.training.provenance import package_record
from patient_ml.training.tuning import (
    Limits,
    RunSpec,
    SweepWorker,
    sweep_spec,
    trial_artifact_key,
)

if TYPE_CHECKING:
    import optuna

log = logging.getLogger("patient_ml.training")


def load_run_spec(engine: Engine, run_id: str) -> RunSpec:
    with session_scope(engine) as session:
        run = get_run(session, run_id)
        snapshot = curated_snapshot(session, run, "there is nothing to train on")
        approach = dict(run.config["trainingApproach"])
        return RunSpec(run_id, snapshot.dataset_id, snapshot.id, approach)


class TuningWorker(SweepWorker):
    """One worker of run `run_id`'s sweep; each trial's state is recorded on the run."""

    def __init__(
        self,
        *,
        engine: Engine,
        store: ArtifactStore,
        backend: Backend,
        run_id: str,
        worker: str,
        workdir: Path,
        limits: Limits | None = None,
        max_trials: int | None = None,
    ) -> None:
        super().__init__(
            engine=engine,
            store=store,
            backend=backend,
            spec=load_run_spec(engine, run_id),
            worker=worker,
            workdir=workdir,
            limits=limits,
            max_trials=max_trials,
        )

    def record_trial(
        self,
        number: int,
        state: str,
        hps: dict[str, Any],
        *,
        value: float | None = None,
        failure: str | None = None,
        artifact_uri: str | None = None,
    ) -> None:
        def write() -> None:  # an upsert: safe to run again after a lost connection
            with session_scope(self.engine) as session:
                training_service.record_trial(
                    session,
                    self.spec.run_id,
                    number,
                    state=state,
                    params=hps,
                    worker=self.worker,
                    value=value,
                    failure=failure,
                    artifact_uri=artifact_uri,
                )

        retry_transient(write, f"trial {number}: record {state}")


_STATES = {"COMPLETE": "complete", "PRUNED": "pruned", "FAIL": "failed"}


def reconcile_trials(
    engine: Engine, run_id: str, storage: optuna.storages.BaseStorage | None = None
) -> int:
    """Once no worker of run `run_id` is left (tuning finished, or the run ended), no trial
    stays `running`: one still running in the study (its worker was killed and not retried) is
    failed there, and every trial the product still shows running takes the study's outcome.
    Returns how many of the product's trials changed; a run that never tuned has none."""
    import optuna

    storage = storage or sweep.optuna_storage(engine.url.render_as_string(hide_password=False))
    try:
        study = optuna.load_study(study_name=sweep.study_name(run_id), storage=storage)
    except KeyError:  # no study: the run stopped before its tune stage
        return 0
    sweep.fail_stale_trials(study, None, sweep.ENDED_FAILURE)
    by_number = {t.number: t for t in study.get_trials(deepcopy=False)}
    changed = 0
    with session_scope(engine) as session:
        for row in training_service.list_trials(session, run_id):
            trial = by_number.get(row.number)
            if row.state != "running" or trial is None or trial.state.name not in _STATES:
                continue
            training_service.record_trial(
                session,
                run_id,
                row.number,
                state=_STATES[trial.state.name],
                params=trial.user_attrs.get(sweep.HPARAMS_ATTR) or trial.params,
                worker=row.worker or "",
                value=trial.value if trial.state.name == "COMPLETE" else None,
                failure=trial.user_attrs.get(sweep.FAILURE_ATTR),
                artifact_uri=row.artifact_uri,
                optuna_trial_id=row.optuna_trial_id,
            )
            changed += 1
    if changed:
        log.warning("run %s: %d trial(s) still shown running were closed", run_id, changed)
    return changed


def finish_tuning(
    engine: Engine, store: ArtifactStore, run_id: str, *, actor: str
) -> dict[str, Any]:
    """Record the best trial on the run (after closing trials no worker is left to end); fail
    clearly when no trial completed."""
    spec = load_run_spec(engine, run_id)
    storage = sweep.optuna_storage(engine.url.render_as_string(hide_password=False))
    reconcile_trials(engine, run_id, storage)
    best = sweep.best_trial(storage, run_id)
    if best is None:
        with session_scope(engine) as session:
            trials = training_service.list_trials(session, run_id)
            failures = [f"trial {t.number}: {t.failure}" for t in trials if t.failure][:5]
        raise PatientMLError(
            f"No trial of run {run_id} completed ({len(trials)} tried). "
            + ("; ".join(failures) if failures else ""),
            fix="read the trials' failure texts and logs, fix the trainer or the search space",
        )
    key = trial_artifact_key(run_id, best.number)
    sha = hashlib.sha256(store.read_bytes(key)).hexdigest()
    metrics = {k: float(v) for k, v in (best.user_attrs.get("metrics") or {}).items()}
    directions = {spec.objective: spec.direction}
    hps = best.user_attrs.get(sweep.HPARAMS_ATTR) or best.params
    package = package_record()
    with session_scope(engine) as session:
        provenance.record_training(
            get_run(session, run_id),
            trial=best.user_attrs.get(sweep.PROVENANCE_ATTR),
            best_trial=best.number,
            seed=sweep_spec(spec).seed,
            package=package,
        )
        training_service.record_tuning_result(
            session,
            run_id,
            hyperparameters=hps,
            metrics=metrics,
            directions=directions,
            artifact_uri=store.uri(key),
            artifact_sha256=sha,
            actor=actor,
        )
    log.info(
        "best trial %d: %s=%g; model %s (sha256 %s)",
        best.number,
        spec.objective,
        best.value,
        store.uri(key),
        sha[:12],
    )
    return {
        "bestTrial": best.number,
        "objective": {spec.objective: best.value},
        "hyperparameters": {k: str(v) for k, v in hps.items()},
        "modelArtifactUri": store.uri(key),
        "modelArtifactSha256": sha,
    }
