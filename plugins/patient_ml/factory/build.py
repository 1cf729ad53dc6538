"""One model config → one Airflow DAG:

    curate → tune (mapped trial workers) → evaluate → await_approval → deploy → record

`curate` starts the product run of the DAG run (or takes the one `patient-ml runs create` / the
REST API made, from `conf.runId`) and curates the snapshot; every later task gets the run id from
its XCom. `record` runs whatever happened before it and makes the product run reflect the DAG
run (a run stopped by a failed task ends `failed`; the DAG run fails with the task names).
"""

from __future__ import annotations

import io
import json
import pickle
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Any, TypedDict, cast

from airflow.sdk import (
    DAG,
    Asset,
    AssetAny,
    AssetOrTimeSchedule,
    CronTriggerTimetable,
    DeltaTriggerTimetable,
    Param,
    timezone,
)
from airflow.sdk.definitions.param import ParamsDict
from airflow.sdk.exceptions import AirflowTimetableInvalid, ParamValidationError

from patient_ml.config.limits import MAX_PARALLEL_TRIALS, MAX_TRIALS_LIMIT
from patient_ml.factory.catalog import ModelEntry, entry_problem
from patient_ml.naming import model_slug, monitor_dag_id_of
from patient_ml.operators.approval import AwaitApprovalOperator
from patient_ml.operators.config_error import ConfigErrorOperator
from patient_ml.operators.curate import CurateDatasetOperator
from patient_ml.operators.deploy import DeployModelOperator
from patient_ml.operators.evaluate import EvaluateModelOperator
from patient_ml.operators.monitor import DriftSignalOperator, MonitorModelOperator
from patient_ml.operators.record import RecordRunOperator
from patient_ml.operators.tune import TuneWorkerOperator

RUN_ID = "{{ ti.xcom_pull(task_ids='curate')['runId'] }}"
TAG = "patient-ml"
ASSET_GROUP = "patient-ml"
EPOCH = datetime(2024, 1, 1, tzinfo=UTC)
# Params of scheduled DAGs are validated when the DAG is built; naming draft-07 makes jsonschema
# check them against its small meta-schema (about 3x faster than the 2020-12 default).
# JSON-schema keywords of every DAG Param (Param(**kwargs) makes them its schema)
PARAM_SCHEMA: dict[str, Any] = {"$schema": "http://json-schema.org/draft-07/schema#"}


class Connections(TypedDict):
    """Keyword arguments of every product operator (ProductOperator)."""

    patient_ml_conn_id: str | None
    artifact_uri: str | None
    aws_conn_id: str


class Serving(Connections):
    """Keyword arguments of the operators that start model servers (ServingOperator)."""

    backend: str
    health_timeout: float
    cpus: float
    memory_mb: int
    docker_conn_id: str | None


class FactoryArguments(TypedDict, total=False):
    """The keyword arguments of `build_dags`: the fields of `FactoryOptions` (documented there;
    tests/factory/test_arguments.py keeps the two lists equal), so a DAG file's options are
    type-checked."""

    backend: str
    patient_ml_conn_id: str | None
    artifact_uri: str | None
    aws_conn_id: str
    docker_conn_id: str | None
    trial_timeout: float
    trial_cpus: float
    trial_memory_mb: int
    health_timeout: float
    approval_poll_interval: float
    retries: int
    retry_delay_s: float
    max_active_runs: int
    owner: str
    extra_tags: tuple[str, ...]


@dataclass(frozen=True)
class FactoryOptions:
    """How the factory's DAGs run; arguments of `build_dags` in the DAG file.

    :param backend: where trials train and models are served: `auto`, `local`, `docker`,
        `sagemaker` (default PATIENT_ML_BACKEND, else `auto`).
    :param patient_ml_conn_id: Airflow connection of the product DB (default: the package's
        resolution, PATIENT_ML_DATABASE_URL / PATIENT_ML_CONN_ID / SQLite).
    :param artifact_uri: artifact store (default PATIENT_ML_ARTIFACT_URI).
    :param aws_conn_id: AWS connection of an s3:// artifact store or image URLs.
    :param docker_conn_id: Docker connection (registry credentials).
    :param trial_timeout: seconds before a trial is stopped as timed out.
    :param trial_cpus: CPU limit (Docker) or thread count (local) of a trial and of a server.
    :param trial_memory_mb: memory limit of a trial or server container.
    :param health_timeout: seconds a model server may take to answer /ping.
    :param approval_poll_interval: seconds between two looks for a decision (triggerer).
    :param retries: Airflow retries of each task (tuning resumes its sweep on a retry).
    :param retry_delay_s: seconds between two tries.
    :param max_active_runs: runs of one model at the same time (a run waiting for approval
        counts).
    :param owner: the DAGs' owner shown in Airflow.
    :param extra_tags: tags added to every DAG.
    """

    backend: str = "auto"
    patient_ml_conn_id: str | None = None
    artifact_uri: str | None = None
    aws_conn_id: str = "aws_default"
    docker_conn_id: str | None = None
    trial_timeout: float = 3600.0
    trial_cpus: float = 1.0
    trial_memory_mb: int = 2048
    health_timeout: float = 120.0
    approval_poll_interval: float = 10.0
    retries: int = 1
    retry_delay_s: float = 60.0
    max_active_runs: int = 3
    owner: str = "patient-ml"
    extra_tags: tuple[str, ...] = field(default_factory=tuple)

    def connections(self) -> Connections:
        return Connections(
            patient_ml_conn_id=self.patient_ml_conn_id,
            artifact_uri=self.artifact_uri,
            aws_conn_id=self.aws_conn_id,
        )

    def serving(self) -> Serving:
        return Serving(
            **self.connections(),
            backend=self.backend,
            health_timeout=self.health_timeout,
            cpus=self.trial_cpus,
            memory_mb=self.trial_memory_mb,
            docker_conn_id=self.docker_conn_id,
        )

    def key(self) -> str:
        return json.dumps(asdict(self), sort_keys=True, default=str)


def schedule_of(training: dict[str, Any]) -> str | timedelta | None:
    """`trainingApproach.schedule` (cron or preset), else `retrainEvery` (ms), else manual."""
    if training.get("schedule"):
        return str(training["schedule"])
    every = training.get("retrainEvery")
    if every:
        return timedelta(milliseconds=float(every))
    return None


def snapshot_asset(entry: ModelEntry) -> Asset:
    slug = model_slug(entry.dataset_name) or "dataset"
    return Asset(
        name=f"patient_ml.dataset.{slug}.snapshot",
        uri=f"x-patient-ml://datasets/{slug}/snapshot",
        group=ASSET_GROUP,
    )


def champion_asset(entry: ModelEntry) -> Asset:
    return Asset(
        name=f"patient_ml.model.{entry.slug}.champion",
        uri=f"x-patient-ml://models/{entry.slug}/champion",
        group=ASSET_GROUP,
    )


def drift_asset(entry: ModelEntry) -> Asset:
    """Updated by the monitor DAG when a check of the deployed champion breaches a threshold."""
    return Asset(
        name=f"patient_ml.model.{entry.slug}.drift",
        uri=f"x-patient-ml://models/{entry.slug}/drift",
        group=ASSET_GROUP,
    )


def predictions_asset(slug: str) -> Asset:
    """Updated by a model's scoring DAG when a batch of its predictions has been written (its
    finish task); a chained model's training DAG is scheduled on its upstream model's."""
    return Asset(
        name=f"patient_ml.model.{slug}.predictions",
        uri=f"x-patient-ml://models/{slug}/predictions",
        group=ASSET_GROUP,
    )


def is_monitored(entry: ModelEntry) -> bool:
    """A model with a champion deployed to the cloud (served through the product) and
    monitoring enabled."""
    return (
        entry.champion_id is not None
        and entry.deploy.get("type") == "cloud"
        and entry.monitoring.get("enabled", True)
    )


def retrains_on_breach(entry: ModelEntry) -> bool:
    """Whether the training DAG is also scheduled on the drift Asset (from the config alone, so
    the schedule does not change when the champion does)."""
    return (
        entry.deploy.get("type") == "cloud"
        and entry.monitoring.get("enabled", True)
        and bool(entry.monitoring.get("retrainOnBreach"))
    )


def schedule_assets(entry: ModelEntry) -> list[Asset]:
    """The Assets any of which starts a training run (data-aware scheduling): the drift Asset
    when `monitoring.retrainOnBreach`, the upstream model's predictions Asset for a chained
    dataset (`source.fromModel`)."""
    assets = [drift_asset(entry)] if retrains_on_breach(entry) else []
    if entry.upstream_slug:
        assets.append(predictions_asset(entry.upstream_slug))
    return assets


def training_schedule(
    entry: ModelEntry,
) -> str | timedelta | list[Asset] | AssetAny | AssetOrTimeSchedule | None:
    """The training DAG's schedule: its own (cron, interval or manual), or also any of
    `schedule_assets` (an event of either starts a run)."""
    schedule = schedule_of(entry.training)
    assets = schedule_assets(entry)
    if not assets:
        return schedule
    # one Asset as a list (Airflow's usual form); several as "any of them"
    condition: list[Asset] | AssetAny = assets if len(assets) == 1 else AssetAny(*assets)
    if schedule is None:
        return condition
    timetable = (
        DeltaTriggerTimetable(schedule)
        if isinstance(schedule, timedelta)
        else CronTriggerTimetable(schedule, timezone="UTC")
    )
    return AssetOrTimeSchedule(timetable=timetable, assets=condition)


def build_monitor_dag(entry: ModelEntry, options: FactoryOptions) -> DAG:
    """`patient_ml_monitor__<slug>`: check → signal_drift, on `monitoring.schedule`."""
    monitoring = entry.monitoring
    schedule = str(monitoring.get("schedule") or "@hourly")
    common = options.connections()
    retrain = "starts the training DAG" if retrains_on_breach(entry) else "is only recorded"
    with DAG(
        monitor_dag_id_of(entry.slug),
        description=f"Monitor the deployed champion of {entry.name}"[:200],
        schedule=schedule,
        start_date=_start_date(entry),
        catchup=False,
        tags=[TAG, "monitoring", *options.extra_tags],
        doc_md=(
            f"# Monitoring of {entry.name}\n\nChecks the newest predictions of the deployed "
            "champion (prediction log) against its reference profile (test split at deploy): "
            "input drift, prediction drift, live performance. A breach is recorded "
            "(`GET /v1/patient-ml/models/{id}/monitoring`), audited and emits the Asset "
            f"`{drift_asset(entry).uri}`, which {retrain} "
            f"(`monitoring.retrainOnBreach`).\n\nSchedule: `{schedule}`.\n"
        ),
        default_args={
            "owner": options.owner,
            "retries": options.retries,
            "retry_delay": timedelta(seconds=options.retry_delay_s),
        },
        max_active_runs=1,
        max_consecutive_failed_dag_runs=0,
        auto_register=False,
    ) as dag:
        check = MonitorModelOperator(task_id="check", model_id=entry.model_id, **common)
        signal = DriftSignalOperator(
            task_id="signal_drift", check_task_id="check", outlets=[drift_asset(entry)]
        )
        check >> signal
    try:
        dag.validate()
    except AirflowTimetableInvalid as exc:
        raise ValueError(
            f"monitoring.schedule {schedule!r} is not a valid schedule ({exc}); use a cron "
            "expression such as '0 * * * *' or a preset such as '@hourly'"
        ) from exc
    return dag


@dataclass(frozen=True)
class DagVariant:
    """The values of a training DAG that differ between configs of one shape (`dag_shape`):
    ids, texts, dates, the maxTrials default and the per-model Assets. `build_dag` builds with
    them and `copy_dag` swaps them into a copy of another config's DAG of the same shape."""

    dag_id: str
    description: str
    start_date: datetime
    tags: tuple[str, ...]
    doc_md: str
    max_trials: int
    model_id: str
    snapshot: Asset
    champion: Asset


def _parallel(training: dict[str, Any]) -> int:
    return max(1, min(int(training.get("parallelTrials") or 1), MAX_PARALLEL_TRIALS))


def dag_variant(entry: ModelEntry, options: FactoryOptions) -> DagVariant:
    training = entry.training
    return DagVariant(
        dag_id=entry.dag_id,
        description=_first_line(entry.description) or f"Patient ML model {entry.name}",
        start_date=_start_date(entry),
        tags=(
            TAG,
            entry.problem_type,
            f"deploy:{entry.deploy.get('type', '?')}",
            *options.extra_tags,
        ),
        doc_md=doc_md(entry, _parallel(training)),
        max_trials=int(training.get("maxTrials") or 10),
        model_id=entry.model_id,
        snapshot=snapshot_asset(entry),
        champion=champion_asset(entry),
    )


def dag_shape(entry: ModelEntry) -> tuple[Any, ...]:
    """What a training DAG holds besides its `DagVariant`: two configs of one shape build DAGs
    that differ only in the variant's values (tests/factory/test_fast_path.py checks it on
    Airflow's serialized DAGs). Any config value `build_dag` uses outside `dag_variant` must be
    part of the shape. A drift-Asset schedule names the model, so such a DAG is its own shape."""
    training = entry.training
    start = _start_date(entry)
    return (
        repr(schedule_of(training)),
        entry.slug if retrains_on_breach(entry) else None,
        entry.upstream_slug,
        _parallel(training),
        str(start.tzinfo),
        str(start.utcoffset()),
    )


def build_dag(entry: ModelEntry, options: FactoryOptions) -> DAG:
    problem = entry_problem(entry)
    if problem:
        raise ValueError(f"stored model config refused: {problem}")
    training = entry.training
    variant = dag_variant(entry, options)
    parallel = _parallel(training)
    common = options.connections()
    serving = options.serving()
    schedule = training_schedule(entry)
    with DAG(
        variant.dag_id,
        description=variant.description,
        schedule=schedule,
        start_date=variant.start_date,
        catchup=False,
        # A manual-only DAG runs nothing by itself: unpaused, a product createRun proceeds at
        # once. A scheduled one follows Airflow's dags_are_paused_at_creation.
        # The drift Asset alone (retrainOnBreach without a schedule) runs only on a breach.
        is_paused_upon_creation=False if schedule_of(training) is None else None,
        tags=list(variant.tags),
        doc_md=variant.doc_md,
        params=_params(variant.max_trials),
        default_args={
            "owner": options.owner,
            "retries": options.retries,
            "retry_delay": timedelta(seconds=options.retry_delay_s),
        },
        max_active_runs=options.max_active_runs,
        max_active_tasks=max(16, parallel + 2),
        max_consecutive_failed_dag_runs=0,
        auto_register=False,  # the factory puts each DAG in the DAG file's namespace itself
    ) as dag:
        curate = CurateDatasetOperator(
            task_id="curate",
            model_id=variant.model_id,
            outlets=[variant.snapshot],
            **common,
        )
        tune = TuneWorkerOperator.partial(
            task_id="tune",
            run_id=RUN_ID,
            max_trials="{{ params.maxTrials }}",
            backend=options.backend,
            trial_timeout=options.trial_timeout,
            cpus=options.trial_cpus,
            memory_mb=options.trial_memory_mb,
            docker_conn_id=options.docker_conn_id,
            **common,
        ).expand(worker_index=list(range(parallel)))
        evaluate = EvaluateModelOperator(
            task_id="evaluate", run_id=RUN_ID, finish_tuning=True, **serving
        )
        await_approval = AwaitApprovalOperator(
            task_id="await_approval",
            run_id=RUN_ID,
            poll_interval=options.approval_poll_interval,
            **common,
        )
        deploy = DeployModelOperator(
            task_id="deploy", run_id=RUN_ID, outlets=[variant.champion], **serving
        )
        record = RecordRunOperator(
            task_id="record",
            backend=options.backend,
            docker_conn_id=options.docker_conn_id,
            **common,
        )
        curate >> tune >> evaluate >> await_approval >> deploy >> record
    try:
        dag.validate()  # what Airflow checks when it bags the DAG (e.g. the cron expression)
    except AirflowTimetableInvalid as exc:
        field = "schedule" if training.get("schedule") else "retrainEvery"
        raise ValueError(
            f"trainingApproach.{field} {training.get(field)!r} is not a valid schedule ({exc}); "
            "use a cron expression such as '0 3 * * 1', a preset such as '@weekly', or "
            "retrainEvery in milliseconds"
        ) from exc
    return dag


def _params(max_trials: int) -> dict[str, Param]:
    return {
        "maxTrials": Param(
            max_trials,
            type="integer",
            minimum=1,
            maximum=MAX_TRIALS_LIMIT,
            title="Max trials",
            description="Trials of this run's sweep (default: the config's maxTrials).",
            **PARAM_SCHEMA,
        ),
        "runId": Param(
            None,
            type=["null", "string"],
            title="Product run id",
            description="Set by `patient-ml runs create` and the REST API; leave empty.",
            **PARAM_SCHEMA,
        ),
    }


@lru_cache(maxsize=256)
def _params_valid(max_trials: int) -> bool:
    """Whether Airflow accepts these param defaults on a scheduled DAG (what `DAG.__init__`
    checks), once per value: a parse of many configs has only a few distinct maxTrials."""
    try:
        ParamsDict(_params(max_trials)).validate()
    except ParamValidationError:
        return False
    return True


# The objects of a template DAG that `copy_dag` replaces while unpickling (pickle's persistent
# ids), so every place that holds one (a task's outlets and its recorded init arguments, the
# DAG's and each task's start date) gets the config's own, shared as `build_dag` shares them.
_SWAPPED = ("start_date", "snapshot", "champion")


class _TemplatePickler(pickle.Pickler):
    def __init__(self, file: io.BytesIO, swapped: dict[int, str]) -> None:
        super().__init__(file, protocol=pickle.HIGHEST_PROTOCOL)
        self._swapped = swapped

    def persistent_id(self, obj: object) -> str | None:
        return self._swapped.get(id(obj))


class _CopyUnpickler(pickle.Unpickler):
    def __init__(self, file: io.BytesIO, values: dict[str, Any]) -> None:
        super().__init__(file)
        self._values = values

    def persistent_load(self, pid: str) -> object:
        return self._values[pid]


def dag_template(dag: DAG) -> bytes:
    """A `build_dag` DAG pickled for `copy_dag`."""
    tasks = dag.task_dict
    objects = (dag.start_date, tasks["curate"].outlets[0], tasks["deploy"].outlets[0])
    out = io.BytesIO()
    _TemplatePickler(out, {id(o): name for o, name in zip(objects, _SWAPPED, strict=True)}).dump(
        dag
    )
    return out.getvalue()


def copy_dag(template: bytes, entry: ModelEntry, options: FactoryOptions) -> DAG | None:
    """The config's training DAG made from `template` (`dag_template` of another config's DAG
    of the same `dag_shape`, built with the same options): a copy with the `DagVariant`
    values in place of the template's, set where Airflow's constructors put them. It costs
    about a quarter of building the DAG (whose operators deep-copy the DAG's params once per
    class of their hierarchy, and whose params are validated by jsonschema).

    None when the fast path does not apply (a refused row, param defaults Airflow would
    refuse); the caller then builds the DAG with `build_dag`, which reports the error."""
    if entry_problem(entry):
        return None
    variant = dag_variant(entry, options)
    start_date = timezone.convert_to_utc(variant.start_date)  # as DAG.__init__ stores it
    values = {"start_date": start_date, "snapshot": variant.snapshot, "champion": variant.champion}
    dag: DAG = _CopyUnpickler(io.BytesIO(template), values).load()
    if dag.timetable.can_be_scheduled and not _params_valid(variant.max_trials):
        return None
    dag.dag_id = variant.dag_id
    dag.dag_display_name = variant.dag_id  # Airflow's default: the id
    dag.description = variant.description
    dag.doc_md = variant.doc_md
    dag.tags = set(variant.tags)
    for params in (dag.params, *(task.params for task in dag.task_dict.values())):
        cast(ParamsDict, params).get_param("maxTrials").value = variant.max_trials
    cast(CurateDatasetOperator, dag.task_dict["curate"]).model_id = variant.model_id
    return dag


def config_error_dag(entry: ModelEntry, error: str) -> DAG:
    """A stand-in for a model whose stored config cannot become a DAG: same DAG id (history and
    pause state are kept), no schedule, the error in its description and docs, and one task that
    fails with it."""
    fix = f"fix the config: `patient-ml models update {entry.name} -f CONFIG.yaml`"
    with DAG(
        entry.dag_id,
        description=f"CONFIG ERROR: {error}"[:1000],
        schedule=None,
        start_date=EPOCH,
        catchup=False,
        tags=[TAG, "config-error"],
        doc_md=f"## {entry.name}: config error\n\n```\n{error}\n```\n\nFix: {fix}.\n",
        max_consecutive_failed_dag_runs=0,
        auto_register=False,
    ) as dag:
        ConfigErrorOperator(task_id="config_error", message=f"{error} Fix: {fix}.")
    return dag


def doc_md(entry: ModelEntry, parallel: int) -> str:
    training = entry.training
    objective = training.get("objective") or {}
    space = training.get("searchSpace") or []
    policy = entry.approval or {}
    schedule = schedule_of(training)
    rows = "\n".join(f"| `{p.get('name')}` | {p.get('type')} | {_range(p)} |" for p in space)
    approvers = ", ".join(policy.get("approvers") or []) or "any user with the decision right"
    auto = (policy.get("autoApproval") or {}).get("enabled", False)
    return (
        f"# {entry.name}\n\n{entry.description}\n\n"
        f"- **Dataset**: {entry.dataset_name} (`{entry.dataset_id}`), {entry.problem_type}\n"
        f"- **Training image**: `{training.get('trainingImage')}`\n"
        f"- **Objective**: {objective.get('direction', '?')} `{objective.get('metric', '?')}`\n"
        f"- **Trials**: {training.get('maxTrials')} ({parallel} at a time); override with the "
        "`maxTrials` param\n"
        f"- **Schedule**: {_schedule_text(schedule)}"
        f"{'; and on a monitoring breach (drift Asset)' if retrains_on_breach(entry) else ''}"
        f"{_upstream_text(entry)}\n"
        f"- **Deploy**: {entry.deploy.get('type')} (`{entry.deploy.get('inferenceImage')}`)\n"
        f"- **Approval**: by {approvers}; waits {policy.get('timeoutHours', 72)} h; automatic "
        f"approval {'on' if auto else 'off'}\n"
        f"- **Model id**: `{entry.model_id}`, config revision {entry.revision}\n\n"
        "| Hyperparameter | Type | Values |\n|---|---|---|\n"
        f"{rows}\n\n"
        "Decide a waiting run in Airflow's **Required Actions** (Approve / Reject with a "
        "justification), through the REST API, or with "
        "`patient-ml runs approve --run RUN_ID --reason '...'` (or `reject`); deciding needs "
        "the right to edit this DAG's human-in-the-loop details. Start a run from the product "
        "with "
        f"`patient-ml runs create {entry.name}`.\n"
    )


def _upstream_text(entry: ModelEntry) -> str:
    if not entry.upstream_slug:
        return ""
    return (
        f"; and whenever model `{entry.upstream_slug}` publishes predictions (its scoring "
        f"DAG's Asset `{predictions_asset(entry.upstream_slug).uri}`): this model's dataset "
        "takes its examples from them"
    )


def _range(param: dict[str, Any]) -> str:
    if param.get("type") == "categorical":
        return ", ".join(str(v) for v in param.get("values") or [])
    return f"{param.get('min')} … {param.get('max')} ({param.get('scale', 'auto')})"


def _schedule_text(schedule: str | timedelta | None) -> str:
    if schedule is None:
        return "manual (trigger from Airflow, its REST API or `patient-ml runs create`)"
    if isinstance(schedule, timedelta):
        return f"every {schedule}"
    return f"`{schedule}`"


def _start_date(entry: ModelEntry) -> datetime:
    try:
        moment = datetime.fromisoformat(entry.created_at)
    except ValueError:
        return EPOCH
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.replace(microsecond=0)


def _first_line(text: str) -> str:
    return (text or "").strip().split("\n", 1)[0][:200]
