"""The Helm values and the KubernetesExecutor pod template of deploy/ parse and agree.

The chart cannot be downloaded here (no internet), so its structure is written down below:
the keys of the official chart `apache-airflow/airflow` 1.22.0 (its values.yaml and parameters
reference) that deploy/helm/values.yaml may use. The chart's values.schema.json forbids
unknown top-level keys, so a misspelt key would fail `helm install`; this test fails first.
The pod template is read with Airflow's own deserialiser (cncf.kubernetes provider, as the
KubernetesExecutor reads `pod_template_file`), and must survive a round trip through the
Kubernetes client's models unchanged (a misspelt field would be dropped and show up here).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from patient_ml.settings import BACKENDS, catalog

ROOT = Path(__file__).resolve().parents[2]
VALUES = ROOT / "deploy" / "helm" / "values.yaml"
POD_TEMPLATE = ROOT / "deploy" / "kubernetes" / "pod_template.yaml"

CHART_VERSION = "1.22.0"
RESOURCES = {"requests": None, "limits": None}
COMPONENT = {"enabled": None, "replicas": None, "resources": RESOURCES, "env": None,
             "nodeSelector": None, "tolerations": None, "affinity": None,
             "serviceAccount": {"create": None, "name": None, "annotations": None}}  # fmt: skip
#: chart 1.22.0: the keys values.yaml may use (None: any value)
CHART_KEYS: dict[str, Any] = {
    "airflowVersion": None,
    "defaultAirflowRepository": None,
    "defaultAirflowTag": None,
    "defaultAirflowDigest": None,
    "images": {"airflow": {"repository": None, "tag": None, "digest": None, "pullPolicy": None}},
    "executor": None,
    "env": None,
    "secret": None,
    "extraEnv": None,
    "extraEnvFrom": None,
    "extraSecrets": None,
    "extraConfigMaps": None,
    "data": {"metadataSecretName": None, "metadataConnection": None},
    "fernetKey": None,
    "fernetKeySecretName": None,
    "postgresql": {"enabled": None},
    "redis": {"enabled": None},
    "dags": {
        "persistence": {"enabled": None, "existingClaim": None, "size": None},
        "gitSync": {
            "enabled": None,
            "repo": None,
            "branch": None,
            "rev": None,
            "subPath": None,
            "sshKeySecret": None,
        },
    },
    "logs": {"persistence": {"enabled": None, "existingClaim": None}},
    "scheduler": COMPONENT,
    "apiServer": COMPONENT,
    "dagProcessor": COMPONENT,
    "triggerer": COMPONENT,
    "workers": COMPONENT,
    "podTemplate": None,
    "config": None,
}
EXECUTORS = {"KubernetesExecutor", "CeleryExecutor", "LocalExecutor", "CeleryKubernetesExecutor"}


def unknown_keys(values: Any, schema: Any, path: str = "") -> list[str]:
    if schema is None or not isinstance(values, dict):
        return []
    found = []
    for key, value in values.items():
        if key not in schema:
            found.append(f"{path}{key}")
        else:
            found += unknown_keys(value, schema[key], f"{path}{key}.")
    return found


@pytest.fixture(scope="module")
def values() -> dict[str, Any]:
    return yaml.safe_load(VALUES.read_text())


@pytest.fixture(scope="module")
def pod() -> Any:
    from airflow.providers.cncf.kubernetes.pod_generator import PodGenerator

    return PodGenerator.deserialize_model_file(str(POD_TEMPLATE))


def test_values_use_only_keys_of_the_chart(values: dict[str, Any]) -> None:
    assert CHART_VERSION in VALUES.read_text()
    assert unknown_keys(values, CHART_KEYS) == []
    assert values["executor"] in EXECUTORS and values["executor"] == "KubernetesExecutor"
    assert re.fullmatch(r"3\.\d+\.\d+", values["airflowVersion"])
    for item in values["env"]:
        assert set(item) == {"name", "value"} and isinstance(item["value"], str), item
    for item in values["secret"]:
        assert set(item) == {"envName", "secretName", "secretKey"}, item
    for section, options in values["config"].items():
        assert re.fullmatch(r"[a-z_]+", section) and isinstance(options, dict), section


def test_values_configure_what_the_dags_need(values: dict[str, Any]) -> None:
    env = {item["name"]: item["value"] for item in values["env"]}
    secrets = {item["envName"] for item in values["secret"]}
    assert env["PATIENT_ML_BACKEND"] in BACKENDS and env["PATIENT_ML_BACKEND"] != "docker"
    assert env["PATIENT_ML_ARTIFACT_URI"].startswith("s3://")  # pods share no disk
    # product DB, AWS (artifact store, SageMaker) and FHIR connections come from Secrets
    assert {"PATIENT_ML_DATABASE_URL", "AIRFLOW_CONN_AWS_DEFAULT",
            "AIRFLOW_CONN_FHIR_DEFAULT"} <= secrets  # fmt: skip
    assert not secrets & set(env)
    declared = {f"PATIENT_ML_{key.upper()}" for key in catalog()}  # the docs' tables
    for name in [*env, *secrets]:
        if name.startswith("PATIENT_ML_"):
            assert name in declared, f"{name} is not in settings.yaml (nor in the docs)"


def test_pod_template_is_a_valid_executor_pod(pod: Any, values: dict[str, Any]) -> None:
    from kubernetes.client import ApiClient

    raw = yaml.safe_load(POD_TEMPLATE.read_text())
    assert ApiClient().sanitize_for_serialization(pod) == raw  # no field was dropped
    (base,) = pod.spec.containers
    assert base.name == "base"
    assert pod.spec.restart_policy == "Never"
    assert pod.spec.security_context.run_as_non_root is True
    assert base.security_context.allow_privilege_escalation is False
    assert base.image == f"{values['images']['airflow']['repository']}:" + str(
        values["images"]["airflow"]["tag"]
    )


def test_pod_template_matches_the_values(pod: Any, values: dict[str, Any]) -> None:
    (base,) = pod.spec.containers
    plain = {e.name: e.value for e in base.env if e.value_from is None}
    from_secrets = {
        e.name: (e.value_from.secret_key_ref.name, e.value_from.secret_key_ref.key)
        for e in base.env
        if e.value_from is not None
    }
    assert plain == {item["name"]: item["value"] for item in values["env"]}
    assert from_secrets == {
        item["envName"]: (item["secretName"], item["secretKey"]) for item in values["secret"]
    }
    resources = values["workers"]["resources"]
    assert base.resources.requests == {**resources["requests"], "ephemeral-storage": "4Gi"}
    assert base.resources.limits == {**resources["limits"], "ephemeral-storage": "20Gi"}
    assert pod.spec.service_account_name == values["workers"]["serviceAccount"]["name"]
    mounts = {m.mount_path for m in base.volume_mounts}
    assert {"/tmp", "/opt/airflow/airflow.cfg", values_env(values, "PATIENT_ML_HOME")} <= mounts


def values_env(values: dict[str, Any], name: str) -> str:
    return next(item["value"] for item in values["env"] if item["name"] == name)


def test_trials_are_mapped_tasks_one_pod_each() -> None:
    """Under the KubernetesExecutor every task instance is a pod: the factory's `tune` task is
    mapped over `parallelTrials` workers, so a run's trials spread over that many pods."""
    from airflow.sdk.definitions.mappedoperator import MappedOperator

    from patient_ml.factory.build import FactoryOptions, build_dag
    from patient_ml.factory.catalog import ModelEntry

    config = yaml.safe_load((ROOT / "include" / "configs" / "brain_mri_model.yaml").read_text())
    entry = ModelEntry(
        model_id="m1", name=config["name"], slug="brain-mri", description="", dataset_id="d1",
        dataset_name="brain", problem_type="imgClf",
        training={**config["trainingApproach"], "parallelTrials": 3},
        deploy=config["deployApproach"], approval={}, revision=1,
        created_at="2026-01-01T00:00:00+00:00", updated_at="2026-01-01T00:00:00+00:00",
    )  # fmt: skip
    dag = build_dag(entry, FactoryOptions(backend="sagemaker"))
    tune = dag.get_task("tune")
    assert isinstance(tune, MappedOperator)
    assert tune.expand_input.value == {"worker_index": [0, 1, 2]}
    assert tune.partial_kwargs["backend"] == "sagemaker"
