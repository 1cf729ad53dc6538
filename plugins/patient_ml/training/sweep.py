"""One Optuna study per run, in the product database, shared by N trial workers.

* Search space from the config: continuous/integer with `linear`, `log`, `reverseLog` or
  `auto` (log when min > 0 and max/min >= 1000, else linear), categorical as strings.
* Exactly `maxTrials` trials across all workers: a worker claims the next trial under a
  sweep lock (PostgreSQL advisory lock, or a file lock next to a SQLite database), counting
  every trial that is not a stale leftover.
* Reproducible: the sampler for trial n is TPE seeded with (seed, n), so the same snapshot,
  seed and history give the same proposals, whichever worker asks.
* Pruning: the objective metric's intermediate values go to a median pruner; a pruned trial's
  job is stopped.
* Few database round trips per trial: a worker keeps one cached view of its study (Optuna's
  cached RDB storage reads only the trials that changed since its last read); a claim reads
  it once and inserts the trial with its parameters and attributes in one transaction; the
  pruner judges the trial's own values from memory against the completed trials read at most
  every `PRUNER_REFRESH_SECONDS`; a trial's end is one state write; pooled connections are
  pinged only after they sat idle (`IDLE_PING_SECONDS`), and the study's commits do not wait
  for the disk (`commit_without_flush`).
* Resume: a worker that starts again (Airflow retry after a crash) first fails the trials its
  earlier attempt left running (marked `stale`, not counted), then the sweep goes on.
"""

from __future__ import annotations

import contextlib
import copy
import datetime
import fcntl
import functools
import hashlib
import logging
import math
import time
from collections.abc import Callable, Container, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from sqlalchemy import Engine, create_engine, event, exc, text
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool

from patient_ml.config.identifiers import require_safe_id
from patient_ml.db.retry import retry_transient

if TYPE_CHECKING:
    import optuna
    from optuna.distributions import BaseDistribution
    from optuna.storages._base import JSONSerializable
    from optuna.trial import FrozenTrial, TrialState
    from sqlalchemy.engine.interfaces import DBAPIConnection
    from sqlalchemy.pool import ConnectionPoolEntry, PoolProxiedConnection

log = logging.getLogger("patient_ml.training")

WORKER_ATTR = "worker"
STALE_ATTR = "stale"
FAILURE_ATTR = "failure"
HPARAMS_ATTR = "hyperparameters"
PROVENANCE_ATTR = "provenance"  # what trained a completed trial (training.provenance)
PRUNER_REFRESH_SECONDS = 5.0  # how old the completed trials the pruner compares with may be
IDLE_PING_SECONDS = 10.0  # a pooled connection idle longer than this is checked before use


@dataclass(frozen=True)
class Param:
    name: str
    distribution: BaseDistribution
    reverse: bool = False  # reverseLog: the study samples 1 - value on a log scale

    def value(self, sampled: object) -> object:
        if not self.reverse:
            return sampled
        if not isinstance(sampled, int | float):  # never: reverseLog is a float's
            raise TypeError(f"reverseLog samples numbers, not {type(sampled).__name__}")
        return 1.0 - sampled


def study_name(run_id: str) -> str:
    return f"patient-ml-run-{run_id}"


def search_space(params: list[dict[str, Any]]) -> list[Param]:
    from optuna.distributions import (
        CategoricalDistribution,
        FloatDistribution,
        IntDistribution,
    )

    space = []
    for p in params:
        kind, name = p["type"], p["name"]
        if kind == "categorical":
            space.append(Param(name, CategoricalDistribution([str(v) for v in p["values"]])))
            continue
        low, high, scale = p["min"], p["max"], p.get("scale", "auto")
        if scale == "auto":
            scale = "log" if low > 0 and high / low >= 1000 else "linear"
        if kind == "integer":
            space.append(Param(name, IntDistribution(int(low), int(high), log=scale == "log")))
        elif scale == "reverseLog":
            space.append(Param(name, FloatDistribution(1 - high, 1 - low, log=True), True))
        else:
            space.append(
                Param(name, FloatDistribution(float(low), float(high), log=scale == "log"))
            )
    return space


def optuna_storage(url: str) -> optuna.storages.RDBStorage:
    import optuna

    sa_url = make_url(url)
    if sa_url.drivername in {"postgresql", "postgres"}:
        sa_url = sa_url.set(drivername="postgresql+psycopg")
    kwargs: dict[str, Any] = {}
    if sa_url.drivername.startswith("sqlite"):
        kwargs = {"connect_args": {"timeout": 60}}
    rendered = sa_url.render_as_string(hide_password=False)
    # RDBStorage creates Optuna's tables when they are missing; the mapped tune workers of a
    # run's first sweep start together, and two creating them at once failed ("table
    # study_directions already exists"), so creation is serialised across processes and hosts.
    lock_engine = create_engine(rendered, poolclass=NullPool)
    try:
        with sweep_lock(lock_engine, "optuna-schema"):
            storage = optuna.storages.RDBStorage(rendered, engine_kwargs=kwargs)
    finally:
        lock_engine.dispose()
    commit_without_flush(storage.engine)
    if not sa_url.drivername.startswith("sqlite"):
        ping_when_idle(storage.engine)
    return storage


def commit_without_flush(engine: Engine) -> None:
    """The study's commits return without waiting for the disk: a trial makes a dozen (claim,
    one per reported epoch, end), and waiting for each flush was most of a short trial's
    overhead (SQLite: an fsync of 10-25 ms per commit on a loaded machine).

    PostgreSQL: `synchronous_commit = off` on these connections. A commit is visible to the
    other workers at once; a server crash may lose the last fraction of a second of them, never
    leaves an inconsistent state, and the product's own writes (trial rows, the run's result)
    are synchronous and flush everything written before them.
    SQLite: WAL (as the product's engine sets it) with `synchronous = NORMAL`: a commit
    survives a crash of any process; only a power loss or an OS crash may roll the last ones
    back. Either way the worst case is a trial that looks RUNNING: its worker's retry fails
    it as stale and the sweep goes on (see `fail_stale_trials`)."""
    if engine.dialect.name == "sqlite" and engine.url.database in (None, "", ":memory:"):
        return  # nothing to flush, and the pool's connection holds the whole database

    @event.listens_for(engine, "connect")
    def _connect(dbapi_connection: DBAPIConnection, record: ConnectionPoolEntry) -> None:
        cursor = dbapi_connection.cursor()
        try:
            if engine.dialect.name == "sqlite":
                cursor.execute("PRAGMA journal_mode=WAL")
                cursor.execute("PRAGMA synchronous=NORMAL")
            else:
                cursor.execute("SET synchronous_commit TO off")
        finally:
            cursor.close()
        dbapi_connection.commit()  # a setting made in a transaction that rolls back is undone

    engine.dispose()  # the connection RDBStorage opened to set up its tables had no such setting


def ping_when_idle(engine: Engine, idle_seconds: float = IDLE_PING_SECONDS) -> None:
    """Pessimistic disconnect handling without a round trip per checkout (`pool_pre_ping`
    costs one per transaction, and a trial makes dozens): a pooled connection that sat idle
    longer than `idle_seconds` (e.g. while a trial trained) is pinged before use and replaced
    when the server dropped it."""

    @event.listens_for(engine, "checkin")
    def _checkin(dbapi_connection: DBAPIConnection, record: ConnectionPoolEntry) -> None:
        record.info["pml_idle_since"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _checkout(
        dbapi_connection: DBAPIConnection,
        record: ConnectionPoolEntry,
        proxy: PoolProxiedConnection,
    ) -> None:
        since = record.info.get("pml_idle_since")
        if since is None or time.monotonic() - since < idle_seconds:
            return
        try:
            cursor = dbapi_connection.cursor()
            try:
                cursor.execute("SELECT 1")
            finally:
                cursor.close()
        except Exception as error:
            raise exc.DisconnectionError(f"stale pooled connection: {error}") from error


_DIRECTIONS: dict[str, Literal["minimize", "maximize"]] = {
    "minimize": "minimize",
    "maximize": "maximize",
}


def create_study(storage: optuna.storages.BaseStorage, run_id: str, direction: str) -> optuna.Study:
    import optuna

    return optuna.create_study(
        study_name=study_name(run_id),
        storage=storage,
        direction=_DIRECTIONS[direction],
        load_if_exists=True,
    )


@contextlib.contextmanager
def sweep_lock(engine: Engine, run_id: str) -> Iterator[None]:
    """Serialize trial claims of one run across processes and hosts."""
    if engine.dialect.name == "postgresql":
        key = int.from_bytes(hashlib.sha256(run_id.encode()).digest()[:8], "big", signed=True)
        with engine.connect() as conn:
            conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": key})
            try:
                yield
            finally:
                conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": key})
                conn.commit()
        return
    database = engine.url.database or ""
    lock_dir = Path(database).parent if database and database != ":memory:" else Path("/tmp")
    lock_path = lock_dir / f".patient-ml-sweep-{require_safe_id(run_id, 'run id')}.lock"
    with open(lock_path, "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def counted(trial: FrozenTrial) -> bool:
    return not trial.user_attrs.get(STALE_ATTR)


STALE_FAILURE = "the worker stopped before the trial ended (crash?)"
ENDED_FAILURE = "the run ended before the trial did: its worker stopped (crash or kill)"


def fail_stale_trials(
    study: optuna.Study, worker: str | None, failure: str = STALE_FAILURE
) -> list[FrozenTrial]:
    """Fail the trials an earlier attempt of `worker` left running (it crashed), or, with
    `worker=None` once every worker has stopped, all trials still running; returns them (as
    they were: number, hyperparameters) so the product's records can follow."""
    import optuna

    stale = []
    for trial in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        if worker is not None and trial.user_attrs.get(WORKER_ATTR) != worker:
            continue
        study._storage.set_trial_user_attr(trial._trial_id, STALE_ATTR, True)
        study._storage.set_trial_user_attr(trial._trial_id, FAILURE_ATTR, failure)
        study._storage.set_trial_state_values(trial._trial_id, optuna.trial.TrialState.FAIL)
        stale.append(trial)
    if stale:
        who = f"worker {worker}" if worker is not None else "the ended sweep"
        log.warning("%s: failed %d stale trial(s) left running", who, len(stale))
    return stale


@dataclass
class TrialOutcome:
    state: str  # complete | pruned | failed
    value: float | None
    failure: str | None
    metrics: dict[str, float]
    # a completed trial's image and trainer environment (wire shapes of training.provenance)
    provenance: dict[str, Any] | None = None


# execute(trial_number, hyperparameters, on_metric) -> TrialOutcome
Executor = Callable[[int, dict[str, Any], Callable[[str, float, int], bool]], TrialOutcome]


@dataclass
class SweepSpec:
    run_id: str
    space: list[Param]
    max_trials: int
    seed: int
    objective: str
    direction: str  # maximize | minimize
    fixed: dict[str, Any] | None = None  # hyperparameters passed to every trial


def open_study(storage: optuna.storages.BaseStorage, spec: SweepSpec) -> optuna.Study:
    """The worker's view of the study, kept across its trials: Optuna's cached storage reads
    only the trials that changed since its last read."""
    import optuna

    return optuna.load_study(
        study_name=study_name(spec.run_id),
        storage=storage,
        sampler=_sampler(spec, 0),
        pruner=optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=1),
    )


def _sampler(spec: SweepSpec, trials: int) -> optuna.samplers.TPESampler:
    import optuna

    return optuna.samplers.TPESampler(
        seed=spec.seed * 100_003 + trials, n_startup_trials=min(5, spec.max_trials)
    )


def claim_trial(
    engine: Engine,
    storage: optuna.storages.BaseStorage,
    spec: SweepSpec,
    worker: str,
    study: optuna.Study | None = None,
) -> tuple[optuna.Study, ClaimedTrial] | None:
    """(study, the next trial) or None when the sweep has all its trials. Pass the `study` of
    an earlier claim (`open_study`) to reuse its cache.

    Under the sweep lock: one read of the trials that changed, the proposal of the seeded
    sampler from that read, and one insert of the trial with its parameters, worker and
    hyperparameters (`study.ask` would read the trials three more times and write the trial,
    each parameter and each attribute in a transaction of its own)."""
    with sweep_lock(engine, spec.run_id):
        if study is None:
            study = open_study(storage, spec)
        trials = study._storage.get_all_trials(study._study_id, deepcopy=False)
        if sum(1 for t in trials if counted(t)) >= spec.max_trials:
            return None
        study.sampler = _sampler(spec, len(trials))
        template = _propose(study, spec, trials)
        hps = dict(spec.fixed or {})
        hps.update({p.name: p.value(template.params[p.name]) for p in spec.space})
        template.user_attrs = {WORKER_ATTR: worker, HPARAMS_ATTR: hps}
        trial_id = study._storage.create_new_trial(study._study_id, template_trial=template)
        template._trial_id = trial_id
        template.number = _trial_number(study, trial_id, len(trials))
        return study, ClaimedTrial(study, template, trials)


def _propose(study: optuna.Study, spec: SweepSpec, trials: list[FrozenTrial]) -> FrozenTrial:
    """The next trial as a template (RUNNING, its parameters proposed), the way `Trial` asks
    the sampler: `before_trial`, the relative search space and its sample, then each other
    parameter independently; the sampler reads `trials` (read under the lock) instead of the
    database, and what it records about the trial (TPE's relative parameters, which its
    constant liar reads on other workers) goes into the template, written in the same insert."""
    import optuna

    template = optuna.trial.FrozenTrial(
        number=len(trials),
        state=optuna.trial.TrialState.RUNNING,
        value=None,
        datetime_start=datetime.datetime.now(),
        datetime_complete=None,
        params={},
        distributions={},
        user_attrs={},
        system_attrs={},
        intermediate_values={},
        trial_id=-1,
    )
    view = copy.copy(study)  # the same study, its storage as _ProposalStorage
    # a duck-typed stand-in: it answers the two calls a sampler makes, the rest it delegates
    view._storage = _ProposalStorage(study._storage, trials, template)  # type: ignore[assignment]
    view._thread_local = type(study._thread_local)()
    view._thread_local.cached_all_trials = trials
    sampler = study.sampler
    sampler.before_trial(view, template)
    relative_space = sampler.infer_relative_search_space(view, template)
    relative = sampler.sample_relative(view, template, relative_space)
    for param in spec.space:
        name, distribution = param.name, param.distribution
        if distribution.single():
            value = optuna.distributions._get_single_value(distribution)
        elif name in relative and _relative_fits(relative_space, relative, name, distribution):
            value = relative[name]
        else:
            value = sampler.sample_independent(view, template, name, distribution)
        distribution.to_internal_repr(value)  # as Trial does: rejects e.g. NaN
        template.params[name] = value
        template.distributions[name] = distribution
    return template


def _relative_fits(
    space: dict[str, BaseDistribution], relative: dict[str, Any], name: str, dist: BaseDistribution
) -> bool:
    """Trial._is_relative_param: the relative sample is used when it lies in `dist`."""
    import optuna

    optuna.distributions.check_distribution_compatibility(space[name], dist)
    return bool(dist._contains(dist.to_internal_repr(relative[name])))


class _ProposalStorage:
    """The study's storage as a sampler sees it while it proposes a trial that is not in the
    database yet: the trials as read once under the sweep lock, and the trial's system
    attributes kept on its template. Everything else goes to the real storage."""

    def __init__(
        self, storage: optuna.storages.BaseStorage, trials: list[FrozenTrial], template: FrozenTrial
    ) -> None:
        self._storage = storage
        self._trials = trials
        self._template = template

    def get_all_trials(
        self, study_id: int, deepcopy: bool = True, states: Container[TrialState] | None = None
    ) -> list[FrozenTrial]:
        trials = [t for t in self._trials if states is None or t.state in states]
        return copy.deepcopy(trials) if deepcopy else trials

    def set_trial_system_attr(self, trial_id: int, key: str, value: JSONSerializable) -> None:
        if trial_id != self._template._trial_id:
            raise RuntimeError(f"a sampler wrote trial {trial_id} while proposing a new one")
        self._template.system_attrs[key] = value

    def __getattr__(self, name: str) -> object:
        return getattr(self._storage, name)


def _trial_number(study: optuna.Study, trial_id: int, expected: int) -> int:
    """The number the database gave the new trial: the count of its study's earlier trials,
    which under the sweep lock is `expected` (the cached storage knows it without a query)."""
    storage = study._storage
    if storage.get_trial_id_from_study_id_trial_number(study._study_id, expected) == trial_id:
        return expected
    return int(storage.get_trial(trial_id).number)


class ClaimedTrial:
    """A trial this worker runs. Its reported values are kept in memory as well, so the
    pruner judges them without reading the trial back."""

    def __init__(self, study: optuna.Study, frozen: FrozenTrial, trials: list[FrozenTrial]) -> None:
        self.study = study
        self.frozen = frozen
        self.pruner_view = _PrunerView(study, trials)

    @property
    def number(self) -> int:
        return int(self.frozen.number)

    @property
    def params(self) -> dict[str, Any]:
        return dict(self.frozen.params)

    def set_user_attr(self, key: str, value: object) -> None:
        storage, trial_id = self.study._storage, self.frozen._trial_id
        retry_transient(
            lambda: storage.set_trial_user_attr(trial_id, key, value), f"trial {self.number}"
        )
        self.frozen.user_attrs[key] = value

    def report(self, value: float, step: int) -> None:
        if step in self.frozen.intermediate_values:  # as Trial.report: the first value stays
            return
        storage, trial_id = self.study._storage, self.frozen._trial_id
        retry_transient(
            lambda: storage.set_trial_intermediate_value(trial_id, step, value),
            f"trial {self.number}: report {value:g} at step {step}",
        )
        self.frozen.intermediate_values[step] = value

    def should_prune(self) -> bool:
        # a duck-typed stand-in for the study: it answers what the median pruner reads of one
        view = self.pruner_view
        return bool(self.study.pruner.prune(view, self.frozen))  # type: ignore[arg-type]

    def finish(self, state: TrialState, value: float | None = None) -> None:
        """`study.tell` in one state write (tell reads the trial back first). As tell does,
        a pruned trial keeps its last reported value."""
        import optuna

        values = None
        if state == optuna.trial.TrialState.COMPLETE:
            values = [float(value)]  # type: ignore[arg-type]
        elif state == optuna.trial.TrialState.PRUNED:
            reported = self.frozen.intermediate_values
            last = reported[max(reported)] if reported else None
            if last is not None and math.isfinite(last):
                values = [float(last)]
        storage, trial_id = self.study._storage, self.frozen._trial_id
        tries = 0

        def write() -> None:
            nonlocal tries
            tries += 1
            try:
                storage.set_trial_state_values(trial_id, state, values)
            except optuna.exceptions.UpdateFinishedTrialError:
                # an earlier try reached the database before its connection died
                if tries == 1 or storage.get_trial(trial_id).state != state:
                    raise

        retry_transient(write, f"trial {self.number}: end as {state.name}")


class _PrunerView:
    """What the median pruner reads of the study (its direction and completed trials), the
    completed trials read at most every `PRUNER_REFRESH_SECONDS`, starting with those read
    when the trial was claimed: a trial that completes on another worker meanwhile joins the
    comparison a few seconds later."""

    def __init__(self, study: optuna.Study, trials: list[FrozenTrial]) -> None:
        import optuna

        complete = optuna.trial.TrialState.COMPLETE
        self._study = study
        self._completed = [t for t in trials if t.state == complete]
        self._read_at = time.monotonic()

    @property
    def direction(self) -> optuna.study.StudyDirection:
        direction: optuna.study.StudyDirection = self._study.direction
        return direction

    def get_trials(
        self, deepcopy: bool = False, states: Sequence[TrialState] | None = None
    ) -> list[FrozenTrial]:
        import optuna

        complete = optuna.trial.TrialState.COMPLETE
        if states is not None and tuple(states) != (complete,):
            found: list[Any] = self._study.get_trials(deepcopy=deepcopy, states=states)
            return found
        now = time.monotonic()
        if now - self._read_at >= PRUNER_REFRESH_SECONDS:
            self._completed = self._study.get_trials(deepcopy=False, states=(complete,))
            self._read_at = now
        return self._completed


def run_worker(
    engine: Engine,
    storage: optuna.storages.BaseStorage,
    spec: SweepSpec,
    worker: str,
    execute: Executor,
    on_stale: Callable[[list[Any]], None] | None = None,
) -> list[TrialOutcome]:
    """Claim and run trials until the sweep has `max_trials`; returns this worker's outcomes.
    First the trials an earlier attempt of `worker` left running are failed (and handed to
    `on_stale`, which records them elsewhere)."""
    import optuna

    retry_transient(lambda: create_study(storage, spec.run_id, spec.direction), "open the sweep")
    study = retry_transient(lambda: open_study(storage, spec), "open the sweep")
    stale = retry_transient(lambda: fail_stale_trials(study, worker), "fail stale trials")
    if stale and on_stale is not None:
        on_stale(stale)
    outcomes = []
    while True:
        claimed = retry_transient(
            functools.partial(claim_trial, engine, storage, spec, worker, study),
            f"worker {worker}: claim",
        )
        if claimed is None:
            break
        study, trial = claimed
        hps = trial.frozen.user_attrs[HPARAMS_ATTR]
        log.info("worker %s: trial %d with %s", worker, trial.number, _fmt(hps))

        def on_metric(name: str, value: float, step: int, trial: ClaimedTrial = trial) -> bool:
            if name != spec.objective:
                return False
            trial.report(value, step)
            return trial.should_prune()

        result = execute(trial.number, hps, on_metric)
        if result.failure:
            trial.set_user_attr(FAILURE_ATTR, result.failure[:4000])
        trial.set_user_attr("metrics", result.metrics)
        if result.provenance:
            trial.set_user_attr(PROVENANCE_ATTR, result.provenance)
        if result.state == "complete" and result.value is not None and math.isfinite(result.value):
            trial.finish(optuna.trial.TrialState.COMPLETE, result.value)
        elif result.state == "pruned":
            trial.finish(optuna.trial.TrialState.PRUNED)
        else:
            trial.finish(optuna.trial.TrialState.FAIL)
        log.info(
            "worker %s: trial %d %s%s",
            worker,
            trial.number,
            result.state,
            f" {spec.objective}={result.value:g}" if result.value is not None else "",
        )
        outcomes.append(result)
    return outcomes


def best_trial(storage: optuna.storages.BaseStorage, run_id: str) -> FrozenTrial | None:
    import optuna

    study = optuna.load_study(study_name=study_name(run_id), storage=storage)
    complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    if not complete:
        return None
    return study.best_trial


def _fmt(hps: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in hps.items())
