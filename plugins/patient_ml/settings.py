"""Where patient_ml keeps its state, from environment variables with sensible defaults.

- PATIENT_ML_HOME: SQLite DB and local artifacts; default $AIRFLOW_HOME/patient_ml
  (~/airflow/patient_ml when AIRFLOW_HOME is unset).
- PATIENT_ML_DATABASE_URL: product DB as a SQLAlchemy URL; default SQLite under the home.
- PATIENT_ML_CONN_ID: an Airflow connection holding the product DB (used when no URL is set).
- PATIENT_ML_ARTIFACT_URI: where snapshots, images and models go; a folder, file:///folder or
  s3://bucket/prefix; default $PATIENT_ML_HOME/artifacts.
- PATIENT_ML_USER: actor written to audit events by the CLI; default the OS user.
- PATIENT_ML_ACCOUNT: `accountId` shown on the wire; default "default".
- PATIENT_ML_BACKEND: where the DAG factory's pipelines train and serve: `auto` (Docker when an
  engine answers, else local processes), `local`, `docker` or `sagemaker` (training jobs and
  endpoints on Amazon SageMaker, PATIENT_ML_SAGEMAKER_*); default `auto`.
- PATIENT_ML_FAILURE_CASES: failure cases per true label shown with saliency maps on a run's
  evaluation (imgClf; 0 turns them off); default 4, at most 16.
- PATIENT_ML_LINEAGE_SCHEMA_URL: where the OpenLineage facets' JSON schemas are published
  (their `_schemaURL`; patient_ml.services.lineage_facets); default the shipped folder.
- PATIENT_ML_MLFLOW_CONN_ID: the Airflow connection of the MLflow tracking server that mirrors
  runs, trials, model versions and the champion alias (docs/mlflow.md); default
  `mlflow_default`; mirroring is off while no such connection exists, or when set to `off`.
- PATIENT_ML_DAG_CACHE: folder of the DAG factory's last-known-good configs and build cache;
  default $PATIENT_ML_HOME/cache; `off` disables both.
"""

from __future__ import annotations

import getpass
import os
from pathlib import Path


def home() -> Path:
    explicit = os.environ.get("PATIENT_ML_HOME")
    if explicit:
        return Path(explicit).expanduser()
    airflow_home = os.environ.get("AIRFLOW_HOME") or "~/airflow"
    return Path(airflow_home).expanduser() / "patient_ml"


def default_database_url() -> str:
    return f"sqlite:///{home() / 'patient_ml.db'}"


def artifact_uri() -> str:
    """Where artifacts go: PATIENT_ML_ARTIFACT_URI, else file:///<home>/artifacts (absolute).

    Read by `patient_ml.storage.artifact_store_from_uri`.
    """
    explicit = os.environ.get("PATIENT_ML_ARTIFACT_URI")
    if explicit:
        return explicit
    return (home() / "artifacts").resolve().as_uri()


def current_user() -> str:
    explicit = os.environ.get("PATIENT_ML_USER")
    if explicit:
        return explicit
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


def account_id() -> str:
    return os.environ.get("PATIENT_ML_ACCOUNT", "default")


BACKENDS = ("auto", "local", "docker", "sagemaker")


def backend() -> str:
    """The DAG factory's training and serving backend (PATIENT_ML_BACKEND)."""
    value = os.environ.get("PATIENT_ML_BACKEND", "auto").strip().lower() or "auto"
    if value not in BACKENDS:
        from patient_ml.exceptions import PatientMLError

        raise PatientMLError(
            f"PATIENT_ML_BACKEND={value!r} is not a backend.",
            fix=f"use one of {', '.join(BACKENDS)}",
        )
    return value


def dag_cache_dir() -> Path | None:
    """The DAG factory's cache folder (PATIENT_ML_DAG_CACHE); None when set to `off`."""
    explicit = os.environ.get("PATIENT_ML_DAG_CACHE", "").strip()
    if explicit.lower() == "off":
        return None
    return Path(explicit).expanduser() if explicit else home() / "cache"


def mlflow_conn_id() -> str | None:
    """The MLflow connection id (PATIENT_ML_MLFLOW_CONN_ID); None when set to `off` or empty."""
    value = os.environ.get("PATIENT_ML_MLFLOW_CONN_ID", "mlflow_default").strip()
    return None if value.lower() in ("", "off", "none") else value


def env_number(name: str, default: float, *, low: float, high: float) -> float:
    """A number from environment variable `name` within [low, high]; `default` when unset."""
    text = os.environ.get(name, "").strip()
    if not text:
        return default
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not low <= value <= high:
        from patient_ml.exceptions import PatientMLError

        raise PatientMLError(
            f"{name}={text[:40]!r} is not a number from {low:g} to {high:g}.",
            fix=f"set {name} within that range, or unset it for the default ({default:g})",
        )
    return value


def failure_cases_per_class() -> int:
    """PATIENT_ML_FAILURE_CASES: most confident errors per true label explained (0: none)."""
    return int(env_number("PATIENT_ML_FAILURE_CASES", 4, low=0, high=16))
