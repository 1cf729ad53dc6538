"""Where patient_ml keeps its state, and every other setting: the Airflow config section
`[patient_ml]`, declared in `settings.yaml` (`airflow config list` shows it; docs/configuration.md
draws its table from it).

`setting("PATIENT_ML_<KEY>")` reads `key`, first found wins, from the environment variable
PATIENT_ML_<KEY> (the names the product has always read), then AIRFLOW__PATIENT_ML__<KEY> (Airflow's
own spelling), then `[patient_ml] key` in airflow.cfg when Airflow's configuration is loaded in
this process (its scheduler, workers, API server, DAG processor); None when none is set, and
the caller applies its default. Nothing here imports Airflow: the CLI and the trainers' tools
run without it.
"""

from __future__ import annotations

import getpass
import os
import sys
from pathlib import Path
from typing import Any

SECTION = "patient_ml"
CATALOG = Path(__file__).with_name("settings.yaml")


def setting(name: str) -> str | None:
    """The value of setting `name` (`PATIENT_ML_<KEY>`), or None when it is not set anywhere."""
    value = os.environ.get(name)
    if value is not None:
        return value
    key = name.removeprefix("PATIENT_ML_").lower()
    value = os.environ.get(f"AIRFLOW__{SECTION.upper()}__{key.upper()}")
    if value is not None:
        return value
    configuration = sys.modules.get("airflow.configuration")  # loaded: an Airflow process
    conf = getattr(configuration, "conf", None)
    if conf is not None:
        try:
            found = conf.get(SECTION, key, fallback=None)
        except Exception:  # a broken airflow.cfg is Airflow's to report
            found = None
        if found not in (None, ""):
            return str(found)
    return None


def catalog() -> dict[str, dict[str, Any]]:
    """Every setting: key -> description, type, default (as the docs say it), group."""
    import yaml

    loaded: dict[str, dict[str, Any]] = yaml.safe_load(CATALOG.read_text())
    return loaded


def home() -> Path:
    explicit = setting("PATIENT_ML_HOME")
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
    explicit = setting("PATIENT_ML_ARTIFACT_URI")
    if explicit:
        return explicit
    return (home() / "artifacts").resolve().as_uri()


def current_user() -> str:
    explicit = setting("PATIENT_ML_USER")
    if explicit:
        return explicit
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


def account_id() -> str:
    return setting("PATIENT_ML_ACCOUNT") or "default"


BACKENDS = ("auto", "local", "docker", "sagemaker")


def backend() -> str:
    """The DAG factory's training and serving backend (PATIENT_ML_BACKEND)."""
    value = (setting("PATIENT_ML_BACKEND") or "auto").strip().lower() or "auto"
    if value not in BACKENDS:
        from patient_ml.exceptions import PatientMLError

        raise PatientMLError(
            f"PATIENT_ML_BACKEND={value!r} is not a backend.",
            fix=f"use one of {', '.join(BACKENDS)}",
        )
    return value


def dag_cache_dir() -> Path | None:
    """The DAG factory's cache folder (PATIENT_ML_DAG_CACHE); None when set to `off`."""
    explicit = (setting("PATIENT_ML_DAG_CACHE") or "").strip()
    if explicit.lower() == "off":
        return None
    return Path(explicit).expanduser() if explicit else home() / "cache"


def mlflow_conn_id() -> str | None:
    """The MLflow connection id (PATIENT_ML_MLFLOW_CONN_ID); None when set to `off` or empty."""
    value = (setting("PATIENT_ML_MLFLOW_CONN_ID") or "mlflow_default").strip()
    return None if value.lower() in ("", "off", "none") else value


def env_number(name: str, default: float, *, low: float, high: float) -> float:
    """A number from setting `name` (`setting`) within [low, high]; `default` when unset."""
    text = (setting(name) or "").strip()
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
