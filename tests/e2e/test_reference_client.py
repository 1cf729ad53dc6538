"""The reference client, unchanged, drives the REST API on the running Airflow API server.

The reference client is LifeOmic's `phc` SDK (`phc==0.36.0` from PyPI, pydantic v1), installed
with uv into a virtual environment of its own and run as a subprocess
(`reference_client_driver.py`); its session's `api_url` is the Airflow API server's root URL and
its token an Airflow JWT from `POST /auth/token`. It creates a dataset and a model, starts a run,
follows it with get_run, and approves it; Airflow runs the model's DAG
(`patient_ml__<slug>`: curate → tune → evaluate → await_approval → deploy) on the Br35H sample
(real brain MRI slices as FHIR NDJSON). Checked on our side: every call returned the reference
shapes (parsed by the SDK's own pydantic models), the run is the one linked to the DAG run, it
waited in `await_approval`, the approval is recorded for the JWT's user and the run became the
deployed champion. A viewer's JWT gets the SDK's ApiError (403) from create_run.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import requests

from patient_ml.db.engine import session_scope
from patient_ml.db.models import Approval, Model, Run
from patient_ml.naming import dag_id_of
from tests.conftest import REPO_ROOT
from tests.e2e.conftest import ECR_IMG_CLF_REPOSITORY, E2EDeployment
from tests.operators.lifecycle import model_config

REFERENCE_CLIENT = "phc==0.36.0"
# phc 0.36.0 needs pandas<2, whose wheels are built against numpy 1: with numpy 2 (what a plain
# `pip install phc==0.36.0` resolves today) `import phc` fails ("numpy.dtype size changed").
REFERENCE_CLIENT_CONSTRAINTS = ("numpy<2",)
DRIVER = Path(__file__).with_name("reference_client_driver.py")
UV = Path(sys.executable).with_name("uv")
API_ERROR_EXIT = 3  # the driver's exit code when the SDK raised ApiError
DATASET = "brain-mri-tumour"  # the Br35H sample's labels use urn:patient-ml:labels:<this name>
MODEL = "reference-client-classifier"
IMAGE = f"{ECR_IMG_CLF_REPOSITORY}:v1"  # the reference inputs accept AWS ECR names only
APPROVAL_REASON = "reference client: evaluated on the held-out test set"


def _pypi_reachable() -> bool:
    try:
        return requests.head("https://pypi.org/simple/phc/", timeout=10).status_code < 500
    except requests.RequestException:
        return False


@pytest.fixture(scope="session")
def reference_python(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The Python of a fresh virtual environment holding only the reference client."""
    venv = tmp_path_factory.mktemp("reference-client") / "venv"
    uv = str(UV) if UV.exists() else "uv"
    python = venv / "bin" / "python"
    for cmd in (
        [uv, "venv", "-q", "-p", "3.11", str(venv)],
        [uv, "pip", "install", "-q", "--python", str(python), REFERENCE_CLIENT,
         *REFERENCE_CLIENT_CONSTRAINTS],
    ):  # fmt: skip
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=False)
        if done.returncode != 0:
            output = (done.stdout + done.stderr)[-2000:]
            if not _pypi_reachable():
                pytest.skip(f"PyPI is not reachable, so {REFERENCE_CLIENT} cannot be installed")
            pytest.fail(f"{' '.join(cmd)} failed ({done.returncode}):\n{output}")
    return python


@pytest.fixture(scope="module")
def br35h(airflow_deployment: E2EDeployment) -> Path:
    """The Br35H sample as FHIR NDJSON (a class-balanced 100 images) where curation may read."""
    out = airflow_deployment.sources / "br35h"
    subprocess.run(
        [sys.executable, str(REPO_ROOT / "include" / "sample_data"), "build", "br35h",
         "--out", str(out), "--limit", "100"],
        check=True, capture_output=True, timeout=300,
    )  # fmt: skip
    return out


class ReferenceClient:
    """The driver, run by the reference client's own Python, as one Airflow user."""

    def __init__(self, python: Path, url: str, token: str, workdir: Path) -> None:
        self.python = python
        self.env = {"PML_BASE_URL": f"{url}/", "PML_TOKEN": token, "PML_ACCOUNT": "default"}
        self.workdir = workdir

    def __call__(self, step: str, *args: str, exit_code: int = 0) -> dict[str, Any]:
        done = subprocess.run(
            [str(self.python), str(DRIVER), step, *args],
            env=self.env, cwd=self.workdir, capture_output=True, text=True, timeout=600,
            check=False,
        )  # fmt: skip
        assert done.returncode == exit_code, (
            f"driver {step} exited {done.returncode}:\n{done.stdout[-3000:]}{done.stderr[-3000:]}"
        )
        return dict(json.loads(done.stdout))

    def write(self, name: str, data: dict[str, Any]) -> str:
        path = self.workdir / name
        path.write_text(json.dumps(data))
        return str(path)


def _token(stack: Any, user: str) -> str:
    header = str(stack.client(user).session.headers["Authorization"])
    return header.removeprefix("Bearer ")


def _dataset_input(br35h: Path) -> dict[str, Any]:
    """What a reference user writes, plus our `source` extension (the SDK drops it)."""
    return {
        "name": DATASET,
        "description": "Axial brain MRI slices (Br35H sample), tumour or not.",
        "problemDefinition": {
            "problemType": "imgClf",
            "labelDefinition": {
                "labels": [
                    {"name": "no_tumour", "description": "No tumour visible."},
                    {"name": "tumour", "description": "A tumour is visible."},
                ]
            },
            "trainingDataFilter": {
                "filterType": "FhirCodesFilter",
                "codes": ["http://loinc.org|24590-2"],
            },
        },
        "source": {"type": "ndjson", "uri": str(br35h)},
    }


def _model_input() -> dict[str, Any]:
    """The lifecycle tests' model (the client adds the dataset id), with the ECR image name the
    SDK requires and without `seed`, an extension the SDK cannot send."""
    config = model_config(MODEL, dataset="")
    del config["datasetId"], config["trainingApproach"]["seed"]
    config["description"] = "Flags brain MRI slices that show a tumour (reference client)."
    config["trainingApproach"]["trainingImage"] = IMAGE
    config["deployApproach"]["inferenceImage"] = IMAGE
    return config


def _wait_for_task(deployment: E2EDeployment, dag_id: str, dag_run_id: str, task: str) -> None:
    def deferred() -> bool:
        states = deployment.api.task_states(dag_id, dag_run_id)
        failed = {t: s for t, s in states.items() if s in ("failed", "upstream_failed")}
        assert not failed, f"tasks failed: {states}"
        return states.get(task) == "deferred"

    deployment.stack.wait_for(deferred, 300, f"{task} to be deferred in {dag_run_id}")


def _wait_for_dag_run(deployment: E2EDeployment, dag_id: str, dag_run_id: str) -> str:
    def ended() -> str | None:
        state = deployment.api.dag_run(dag_id, dag_run_id)["state"]
        return state if state in ("success", "failed") else None

    return str(deployment.stack.wait_for(ended, 300, f"DAG run {dag_run_id} to end"))


def test_reference_client_create_run_approve_deploy(
    airflow_deployment: E2EDeployment, reference_python: Path, br35h: Path, tmp_path: Path
) -> None:
    deployment = airflow_deployment
    stack, api = deployment.stack, deployment.api
    admin = ReferenceClient(reference_python, stack.url, _token(stack, "admin"), tmp_path)

    # 1. create_dataset, create_model (+ get_datasets, get_dataset, get_models, get_model)
    out = admin(
        "configs",
        admin.write("dataset.json", _dataset_input(br35h)),
        admin.write("model.json", _model_input()),
    )
    assert "source" not in out["sentDataset"]  # pydantic v1 Extra.ignore: reference fields only
    dataset = out["create_dataset"]["body"]["dataset"]
    model = out["create_model"]["body"]["model"]
    assert out["create_dataset"]["type"] == "CreateDatasetResponse"
    assert out["create_dataset"]["unions"] == ["ImageClassificationProblem"]
    labels = dataset["problemDefinition"]["labelDefinition"]
    assert [(label["name"], label["index"]) for label in labels["labels"]] == [
        ("no_tumour", 0),
        ("tumour", 1),
    ]
    assert labels["maxLabelIndex"] == 1 and dataset["accountId"] == "default"
    assert out["create_model"]["type"] == "CreateModelResponse"
    unions = set(out["create_model"]["unions"])
    assert unions >= {"CloudDeployApproach", "TuningJobTrainingApproach"}
    assert model["datasetId"] == dataset["id"] and "championId" not in model
    assert model["trainingApproach"]["trainingImage"] == IMAGE
    assert out["get_datasets"]["type"] == "GetDatasetsResponse"
    assert dataset["id"] in [d["id"] for d in out["get_datasets"]["body"]["datasets"]]
    assert out["get_dataset"]["body"]["dataset"] == dataset
    assert out["get_models"]["type"] == "GetModelsResponse"
    assert model["id"] in [m["id"] for m in out["get_models"]["body"]["models"]]
    assert out["get_model"]["body"]["model"] == model

    # The reference DatasetConfigInput has no `source` (and the SDK drops unknown fields), so the
    # dataset was created with the default source (the FHIR server of `fhir_default`). Point it
    # at the sample NDJSON through our REST API, outside the reference client (PUT, admin's JWT;
    # the reference client's own update_dataset would send reference fields only as well).
    ours = api.get(f"/v1/patient-ml/datasets/{dataset['id']}")["dataset"]
    assert ours["source"]["type"] == "fhirServer"
    assert ours["problemDefinition"]["labelSystem"] == f"urn:patient-ml:labels:{DATASET}"
    ours["source"] = {"type": "ndjson", "uri": str(br35h)}
    api.request("PUT", f"/v1/patient-ml/datasets/{dataset['id']}", ours)

    # Not the reference flow: the model's DAG exists only after the DAG processor's next parse
    # (create_run before that answers 404 "no DAG yet") and starts paused (Airflow's default; a
    # run of a paused DAG stays queued), so wait for it and unpause it, as an Airflow admin.
    slug = api.get(f"/v1/patient-ml/models/{model['id']}")["model"]["slug"]
    dag_id = dag_id_of(slug)
    deployment.wait_for_dag(dag_id)

    # 2. A viewer may read but not start runs: the SDK's ApiError with 403
    viewer = ReferenceClient(reference_python, stack.url, _token(stack, "viewer"), tmp_path)
    refused = viewer("create-run", model["id"], exit_code=API_ERROR_EXIT)["apiError"]
    assert refused["call"] == "create_run" and refused["status"] == 403
    assert refused["data"]["error"]["status"] == 403

    # 3. create_run, then get_run until the run is trained and evaluated
    out = admin("start", model["id"], "300")
    assert "timeout" not in out, out
    run_id = out["create_run"]["body"]["runId"]
    assert out["create_run"]["type"] == "CreateRunResponse"
    run = out["get_run"]["body"]["run"]
    assert out["get_run"]["type"] == "GetRunResponse"
    assert {"ImageClassificationProblem", "CloudDeployApproach"} <= set(out["get_run"]["unions"])
    assert run["id"] == run_id and run["modelId"] == model["id"]
    assert run["status"] == "succeeded" and run["approvals"] == []
    assert [p["name"] for p in run["hyperparameters"]] == ["epochs", "image_size"]
    evaluated = {m["name"] for m in run["metrics"]["challenger"] if m["stage"] == "evaluation"}
    assert "balancedAccuracy" in evaluated and run["metrics"]["champion"] == []
    assert run["modelArtifactUri"] and run["trainingApproach"]["maxTrials"] == 1
    assert [r["id"] for r in out["get_runs"]["body"]["runs"]] == [run_id]

    # the run the client created is the one linked to the model's DAG run, waiting for approval
    linked = api.get(f"/v1/patient-ml/models/{model['id']}/runs/{run_id}")["run"]
    assert linked["airflow"]["dagId"] == dag_id and linked["triggeredBy"] == "admin"
    dag_run_id = linked["airflow"]["runId"]
    dag_run = api.dag_run(dag_id, dag_run_id)
    assert dag_run["conf"]["runId"] == run_id
    _wait_for_task(deployment, dag_id, dag_run_id, "await_approval")
    assert api.get(f"/v1/patient-ml/models/{model['id']}/runs/{run_id}")["run"][
        "approvalStatus"
    ] == "pending"  # fmt: skip

    # 4. create_approval_decision as the JWT's user; the DAG run deploys the run
    out = admin("approve", model["id"], run_id, APPROVAL_REASON)
    decision = out["create_approval_decision"]
    assert decision["type"] == "CreateApprovalDecisionResponse"
    assert decision["body"]["approvalDecision"] == {
        "actor": "user",
        "user": "admin",
        "decision": "approved",
        "description": APPROVAL_REASON,
        "timestamp": decision["body"]["approvalDecision"]["timestamp"],
    }
    assert out["get_run"]["unions"].count("UserApprovalDecision") == 1
    assert _wait_for_dag_run(deployment, dag_id, dag_run_id) == "success"
    states = api.task_states(dag_id, dag_run_id)
    assert states["deploy"] == "success" and states["record"] == "success"

    out = admin("show", model["id"], run_id)
    assert out["get_model"]["body"]["model"]["championId"] == run_id
    deployed = out["get_run"]["body"]["run"]
    assert deployed["deployStatus"] == "succeeded" and deployed["approvals"][0]["user"] == "admin"
    with session_scope(deployment.engine) as session:
        stored = session.get(Model, model["id"])
        assert stored is not None and stored.champion_id == run_id
        stored_run = session.get(Run, run_id)
        assert stored_run is not None and stored_run.deploy_status == "succeeded"
        approvals = session.query(Approval).filter(Approval.run_id == run_id).all()
        assert [(a.decision, a.actor, a.user) for a in approvals] == [("approved", "user", "admin")]
