"""Airflow hook for an MLflow tracking server (connection type `patient_ml_mlflow`, or a plain
`http` connection); the optional extra `mlflow` installs the client (docs/mlflow.md).

The product stays the system of record: `MlflowTracker` only *mirrors* what the product DB
holds (patient_ml.services.mlflow_mirror says what), and every call is bounded: MLflow's own
HTTP session (urllib3 `Retry`) gets `max_retries` retries with `backoff_factor`, and each request
`timeout` seconds, so an unreachable server costs seconds, never a stuck task. Every failure
becomes `MlflowUnavailableError`, which the callers log and report instead of failing.

Connection fields:
- host: the tracking URI, e.g. `http://mlflow.example.org:5000` (a host without a scheme is
  completed from `schema` (http/https, default http) and `port`); `extra.tracking_uri` wins.
- login / password: HTTP basic credentials of the tracking server (MLflow's basic auth).
- extra: `token` (bearer), `registry_uri`, `timeout` (seconds per request, default 10),
  `max_retries` (default 2), `backoff_factor` (seconds, default 1), `insecure` (true: do not
  verify TLS), `experiment_prefix` (default `patient-ml/`; the experiment of a model is the
  prefix + the model's name).
"""

from __future__ import annotations

import logging
import os
import tempfile
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from airflow.sdk import BaseHook, Connection

from patient_ml.exceptions import PatientMLError

if TYPE_CHECKING:  # mlflow is optional (the `mlflow` extra); imported where it is used
    from mlflow import MlflowClient
    from mlflow.entities import Metric, Param, Run, RunTag
    from mlflow.entities.model_registry import ModelVersion
    from mlflow.utils.async_logging.run_operations import RunOperations

log = logging.getLogger("patient_ml.mlflow")

T = TypeVar("T")

PARENT_TAG = "mlflow.parentRunId"
RUN_TAG = "patient_ml.run_id"
TRIAL_TAG = "patient_ml.trial_number"


class MlflowUnavailableError(PatientMLError):
    """The MLflow server did not answer, or refused a write; the product's record is intact."""

    http_status = 502


@dataclass(frozen=True)
class MlflowSettings:
    tracking_uri: str
    registry_uri: str | None = None
    username: str | None = None
    password: str | None = None
    token: str | None = None
    timeout: int = 10
    max_retries: int = 2
    backoff_factor: int = 1
    insecure: bool = False
    experiment_prefix: str = "patient-ml/"

    def environment(self) -> dict[str, str | None]:
        """MLflow's client reads its credentials, retries and timeouts from the environment
        at each request; these are the values of this connection (None: unset)."""
        return {
            "MLFLOW_TRACKING_USERNAME": self.username,
            "MLFLOW_TRACKING_PASSWORD": self.password,
            "MLFLOW_TRACKING_TOKEN": self.token,
            "MLFLOW_TRACKING_INSECURE_TLS": "true" if self.insecure else None,
            "MLFLOW_HTTP_REQUEST_MAX_RETRIES": str(self.max_retries),
            "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": str(self.backoff_factor),
            "MLFLOW_HTTP_REQUEST_BACKOFF_JITTER": "0",
            "MLFLOW_HTTP_REQUEST_TIMEOUT": str(self.timeout),
            # the client's "View run at ..." lines on stdout are noise in a task log
            "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true",
        }


class MlflowHook(BaseHook):
    conn_name_attr = "mlflow_conn_id"
    default_conn_name = "mlflow_default"
    conn_type = "patient_ml_mlflow"
    hook_name = "MLflow tracking server (Patient ML mirror)"

    def __init__(
        self, mlflow_conn_id: str = default_conn_name, *, logger_name: str | None = None
    ) -> None:
        super().__init__(logger_name=logger_name)
        self.mlflow_conn_id = mlflow_conn_id
        self._tracker: MlflowTracker | None = None

    @classmethod
    def get_ui_field_behaviour(cls) -> dict[str, Any]:
        return {
            "hidden_fields": [],
            "relabeling": {"host": "Tracking URI"},
            "placeholders": {
                "host": "http://mlflow.example.org:5000",
                "extra": '{"timeout": 10, "max_retries": 2, "backoff_factor": 1, '
                '"experiment_prefix": "patient-ml/"}',
            },
        }

    def get_settings(self) -> MlflowSettings:
        return settings_of(self.mlflow_conn_id, self.get_connection(self.mlflow_conn_id))

    def get_tracker(self) -> MlflowTracker:
        """The MLflow client of this connection (built once per hook)."""
        if self._tracker is None:
            self._tracker = MlflowTracker(self.get_settings())
        return self._tracker

    def test_connection(self) -> tuple[bool, str]:
        try:
            tracker = self.get_tracker()
            tracker.call("list experiments", lambda c: c.search_experiments(max_results=1))
        except PatientMLError as exc:
            return False, str(exc)
        return True, f"MLflow at {tracker.settings.tracking_uri} answered."


def mirror_tracker(conn_id: str | None) -> MlflowTracker | None:
    """The tracker of Airflow connection `conn_id`, or None (one info line) when no such
    connection exists or the `mlflow` package is not installed: mirroring is off."""
    if not conn_id or conn_id.strip().lower() in ("off", "none"):
        return None
    from airflow.exceptions import AirflowNotFoundException

    try:
        hook = MlflowHook(conn_id)
        hook.get_connection(conn_id)
    except AirflowNotFoundException:
        log.info("MLflow mirroring is off: no Airflow connection %r", conn_id)
        return None
    try:
        import mlflow  # noqa: F401
    except ImportError:
        log.info(
            "MLflow mirroring is off: connection %r exists but the `mlflow` package is not "
            "installed (pip install 'patient-ml-airflow[mlflow]')",
            conn_id,
        )
        return None
    return hook.get_tracker()


def settings_of(conn_id: str, conn: Connection) -> MlflowSettings:
    extra = conn.extra_dejson or {}
    uri = str(extra.get("tracking_uri") or "").strip() or _uri_of(conn)
    if not uri:
        raise MlflowUnavailableError(
            f"Airflow connection {conn_id!r} names no MLflow tracking URI.",
            fix="set its host to the tracking URI, e.g. http://mlflow.example.org:5000",
        )
    return MlflowSettings(
        tracking_uri=uri.rstrip("/"),
        registry_uri=extra.get("registry_uri") or None,
        username=conn.login or None,
        password=conn.password or None,
        token=extra.get("token") or None,
        timeout=_whole(conn_id, extra, "timeout", 10, 1, 600),
        max_retries=_whole(conn_id, extra, "max_retries", 2, 0, 10),
        backoff_factor=_whole(conn_id, extra, "backoff_factor", 1, 0, 60),
        insecure=str(extra.get("insecure", "")).lower() in ("true", "1", "yes"),
        experiment_prefix=str(extra.get("experiment_prefix", "patient-ml/")),
    )


def _uri_of(conn: Connection) -> str:
    host = str(conn.host or "").strip()
    if not host or "://" in host:
        return host
    schema = str(conn.schema or "").strip().lower()
    scheme = schema if schema in ("http", "https") else "http"
    hostname, _, path = host.partition("/")
    if conn.port and ":" not in hostname:
        hostname = f"{hostname}:{conn.port}"
    return f"{scheme}://{hostname}/{path}".rstrip("/")


def _whole(
    conn_id: str, extra: dict[str, Any], name: str, default: int, low: int, high: int
) -> int:
    value = extra.get(name)
    if value in (None, ""):
        return default
    try:
        number = int(value)
    except (TypeError, ValueError):
        number = low - 1
    if not low <= number <= high:
        raise MlflowUnavailableError(
            f"Airflow connection {conn_id!r} has extra.{name}={value!r}.",
            fix=f"set extra.{name} to a whole number from {low} to {high}",
        )
    return number


_env_lock = threading.Lock()


class MlflowTracker:
    """MLflow's `MlflowClient` for one connection, every call bounded and its failure an
    `MlflowUnavailableError`. The writes are idempotent: runs, model versions and aliases
    are found by the product ids in their tags before anything is created."""

    def __init__(self, settings: MlflowSettings) -> None:
        self.settings = settings
        self._client: MlflowClient | None = None

    @contextmanager
    def _environment(self) -> Iterator[None]:
        with _env_lock:
            saved = {k: os.environ.get(k) for k in self.settings.environment()}
            try:
                for key, value in self.settings.environment().items():
                    if value is None:
                        os.environ.pop(key, None)
                    else:
                        os.environ[key] = value
                yield
            finally:
                for key, value in saved.items():
                    if value is None:
                        os.environ.pop(key, None)
                    else:
                        os.environ[key] = value

    def call(self, what: str, action: Callable[[MlflowClient], T]) -> T:
        """`action(client)` within this connection's bounds; MlflowUnavailableError naming
        `what` when it fails."""
        with self._environment():
            try:
                if self._client is None:
                    from mlflow import MlflowClient

                    self._client = MlflowClient(
                        tracking_uri=self.settings.tracking_uri,
                        registry_uri=self.settings.registry_uri,
                    )
                return action(self._client)
            except Exception as exc:
                text = getattr(exc, "message", None) or f"{type(exc).__name__}: {exc}"
                raise MlflowUnavailableError(
                    f"MLflow at {self.settings.tracking_uri} failed to {what}: "
                    f"{' '.join(str(text).split())[:500]}",
                    fix="check that the tracking server answers and the connection's "
                    "credentials; the product's record is complete, and the run's next stage "
                    "mirrors what is missing",
                ) from None

    # -- experiments and runs ---------------------------------------------------------------

    def experiment_id(self, model_name: str, tags: dict[str, str]) -> str:
        name = f"{self.settings.experiment_prefix}{model_name}"

        def ensure(client: MlflowClient) -> str:
            found = client.get_experiment_by_name(name)
            if found is not None:
                if found.lifecycle_stage == "deleted":
                    client.restore_experiment(found.experiment_id)
                return str(found.experiment_id)
            return str(client.create_experiment(name, tags=tags))

        return self.call(f"find or create experiment {name!r}", ensure)

    def find_run(self, experiment_id: str, tags: dict[str, str]) -> Run | None:
        """The newest run of the experiment whose tags have these values, or None."""
        where = " and ".join(f"tags.`{k}` = '{_quoted(v)}'" for k, v in tags.items())
        found = self.call(
            f"search runs with {where}",
            lambda c: c.search_runs([experiment_id], filter_string=where, max_results=1),
        )
        return found[0] if found else None

    def runs_under(self, experiment_id: str, parent_run_id: str) -> list[Run]:
        where = f"tags.`{PARENT_TAG}` = '{parent_run_id}'"
        return list(
            self.call(
                "list nested runs",
                lambda c: c.search_runs([experiment_id], filter_string=where, max_results=5000),
            )
        )

    def create_run(
        self, experiment_id: str, *, name: str, start_ms: int | None, tags: dict[str, str]
    ) -> str:
        run = self.call(
            f"create run {name!r}",
            lambda c: c.create_run(experiment_id, start_time=start_ms, tags=tags, run_name=name),
        )
        return str(run.info.run_id)

    def log(
        self,
        run_id: str,
        *,
        params: dict[str, str] | None = None,
        metrics: list[tuple[str, float, int, int]] | None = None,
        tags: dict[str, str] | None = None,
    ) -> None:
        """Params, metrics `(key, value, timestamp ms, step)` and tags in batches of MLflow's
        limits (100 params, 1000 metrics, 100 tags a request)."""
        from mlflow.entities import Metric, Param, RunTag

        param_list = [Param(k, str(v)[:6000]) for k, v in (params or {}).items()]
        metric_list = [Metric(k, float(v), int(t), int(s)) for k, v, t, s in metrics or []]
        tag_list = [RunTag(k, str(v)[:8000]) for k, v in (tags or {}).items()]
        while param_list or metric_list or tag_list:
            p, param_list = param_list[:100], param_list[100:]
            m, metric_list = metric_list[:900], metric_list[900:]
            t, tag_list = tag_list[:100], tag_list[100:]
            self.call("log params, metrics and tags", partial(_log_batch, run_id, m, p, t))

    def end_run(self, run_id: str, status: str, end_ms: int | None) -> None:
        self.call(
            f"end run {run_id} as {status}",
            lambda c: c.set_terminated(run_id, status=status, end_time=end_ms),
        )

    def log_dataset(
        self,
        run_id: str,
        *,
        name: str,
        digest: str,
        source: str,
        profile: str,
        context: str = "train",
    ) -> None:
        from mlflow.entities import Dataset, DatasetInput, InputTag

        dataset = Dataset(
            name=name, digest=digest[:36], source_type="patient_ml", source=source, profile=profile
        )
        entry = DatasetInput(dataset, tags=[InputTag("mlflow.data.context", context)])
        self.call(f"log input dataset {name!r}", lambda c: c.log_inputs(run_id, [entry]))

    # -- the model registry --------------------------------------------------------------------

    def version_of(self, model_name: str, product_run_id: str) -> ModelVersion | None:
        """The registered version of `model_name` that mirrors the product run, or None."""
        where = f"name = '{_quoted(model_name)}' and tags.`{RUN_TAG}` = '{product_run_id}'"
        found = self.call(
            f"search versions of {model_name!r}",
            lambda c: c.search_model_versions(filter_string=where, max_results=1),
        )
        return found[0] if found else None

    def register(
        self,
        *,
        experiment_id: str,
        mlflow_run_id: str,
        model_name: str,
        artifact: bytes | None,
        metrics: list[tuple[str, float]],
        dataset: tuple[str, str] | None,
        tags: dict[str, str],
        description: str,
    ) -> str:
        """A new version of registered model `model_name` (created when missing): an MLflow
        logged model of the run holding `artifact` (model.tar.gz) and `metrics` (linked to
        `dataset` = (name, digest)), registered with `tags`. Its version number."""

        def ensure_model(client: MlflowClient) -> None:
            from mlflow.exceptions import MlflowException

            try:
                client.get_registered_model(model_name)
            except MlflowException as exc:
                if getattr(exc, "error_code", "") != "RESOURCE_DOES_NOT_EXIST":
                    raise
                client.create_registered_model(
                    model_name, tags={"patient_ml.mirror": "true"},
                    description="Mirrored by Patient ML; the product is the system of record.",
                )  # fmt: skip

        self.call(f"find or create registered model {model_name!r}", ensure_model)
        logged = self.call(
            "create a logged model",
            lambda c: c.create_logged_model(
                experiment_id, name="model", source_run_id=mlflow_run_id, tags=tags
            ),
        )
        if artifact is not None:
            with tempfile.TemporaryDirectory(prefix="pml-mlflow-") as folder:
                path = Path(folder) / "model.tar.gz"
                path.write_bytes(artifact)
                self.call(
                    "upload the model artifact",
                    lambda c: c.log_model_artifact(logged.model_id, str(path)),
                )
        name, digest = dataset if dataset else (None, None)
        for key, value in metrics:
            log_one = partial(_log_metric, mlflow_run_id, key, value, name, digest, logged.model_id)
            self.call(f"log metric {key}", log_one)
        self.call("finalize the logged model",
                  lambda c: c.finalize_logged_model(logged.model_id, "READY"))  # fmt: skip
        version = self.call(
            f"register a version of {model_name!r}",
            lambda c: c.create_model_version(
                model_name,
                source=logged.artifact_location,
                run_id=mlflow_run_id,
                tags=tags,
                description=description,
                model_id=logged.model_id,
                await_creation_for=0,
            ),
        )
        return str(version.version)

    def set_alias(self, model_name: str, alias: str, version: str) -> None:
        self.call(
            f"set alias {alias!r} of {model_name!r} to version {version}",
            lambda c: c.set_registered_model_alias(model_name, alias, version),
        )

    def tag_version(self, model_name: str, version: str, tags: dict[str, str]) -> None:
        for key, value in tags.items():
            tag = partial(_tag_version, model_name, version, key, str(value)[:5000])
            self.call(f"tag version {version} of {model_name!r}", tag)

    def tag_model(self, model_name: str, tags: dict[str, str]) -> None:
        for key, value in tags.items():
            tag = partial(_tag_model, model_name, key, str(value)[:5000])
            self.call(f"tag registered model {model_name!r}", tag)


def _log_batch(
    run_id: str, metrics: list[Metric], params: list[Param], tags: list[RunTag], c: MlflowClient
) -> RunOperations | None:
    return c.log_batch(run_id, metrics=metrics, params=params, tags=tags)


def _log_metric(
    run_id: str, key: str, value: float, dataset: str | None, digest: str | None, model_id: str,
    c: MlflowClient,
) -> RunOperations | None:  # fmt: skip
    return c.log_metric(run_id, key, value, dataset_name=dataset, dataset_digest=digest,
                        model_id=model_id)  # fmt: skip


def _tag_version(model_name: str, version: str, key: str, value: str, c: MlflowClient) -> None:
    return c.set_model_version_tag(model_name, version, key, value)


def _tag_model(model_name: str, key: str, value: str, c: MlflowClient) -> None:
    return c.set_registered_model_tag(model_name, key, value)


def _quoted(value: str) -> str:
    return str(value).replace("'", "\\'")
