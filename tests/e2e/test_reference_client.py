"""The reference client, unchanged, drives every call of the REST API on a running Airflow.

The reference client is LifeOmic's `phc` SDK in its current release (`phc==1.6.0` from PyPI,
pydantic 2, pins pandas 1.5), installed with uv into a virtual environment of its own and run as
a subprocess (`reference_client_driver.py`); its session's `api_url` is the Airflow API
server's root URL and its token an Airflow JWT from `POST /auth/token`. Every SDK method is
called: datasets and models (create, get, list, update, delete), examples and labels (imgClf
and an imgSeg label file), create_run, get_run polled until the run has trained and evaluated,
get_runs, logs, the model artifact, the approval decision, and predict() on the deployed
champion. Airflow runs the model's DAG (`patient_ml__<slug>`: curate → tune → evaluate →
await_approval → deploy) on the Br35H sample (real brain MRI slices as FHIR NDJSON).

The SDK's own pydantic models parse every answer, forbidding unknown fields where the reference
does, so any extension field in the default (reference) view fails the test. Checked on our
side with `view=extended`: the run is the one linked to the DAG run, it waited in
`await_approval`, the approval is recorded for the JWT's user and the run became the deployed
champion. A model the SDK cannot read (a non-ECR image, 40 trials) is left out of its lists and
named in the `Patient-ML-Omitted` header. A viewer's JWT gets the SDK's ApiError (403).
"""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import requests

from patient_ml.config import reference
from patient_ml.db.engine import session_scope
from patient_ml.db.models import Approval, Model, Run
from patient_ml.labels import rle
from patient_ml.naming import dag_id_of
from tests.conftest import REPO_ROOT
from tests.e2e.conftest import ECR_IMG_CLF_REPOSITORY, E2EDeployment
from tests.helpers import example
from tests.operators.lifecycle import model_config

REFERENCE_CLIENT = "phc==1.6.0"
DRIVER = Path(__file__).with_name("reference_client_driver.py")
UV = Path(sys.executable).with_name("uv")
API_ERROR_EXIT = 3  # the driver's exit code when the SDK raised ApiError
DATASET = "brain-mri-tumour"  # the Br35H sample's labels use urn:patient-ml:labels:<this name>
SEG_DATASET = "nuclei-segmentation"  # likewise for the nuclei sample
MODEL = "reference-client-classifier"
IMAGE = f"{ECR_IMG_CLF_REPOSITORY}:v1"  # the reference inputs accept AWS ECR names only
APPROVAL_REASON = "reference client: evaluated on the held-out test set"
V1 = "/v1/patient-ml"
EXTENSIONS = {"snapshotId", "evaluation", "approvalStatus", "approvalDeadline", "airflow"}


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
        [uv, "pip", "install", "-q", "--python", str(python), REFERENCE_CLIENT],
    ):
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=False)
        if done.returncode != 0:
            output = (done.stdout + done.stderr)[-2000:]
            if not _pypi_reachable():
                pytest.skip(f"PyPI is not reachable, so {REFERENCE_CLIENT} cannot be installed")
            pytest.fail(f"{' '.join(cmd)} failed ({done.returncode}):\n{output}")
    return python


def _sample(deployment: E2EDeployment, name: str, *options: str) -> Path:
    out = deployment.sources / name
    subprocess.run(
        [sys.executable, str(REPO_ROOT / "include" / "sample_data"), "build", name,
         "--out", str(out), *options],
        check=True, capture_output=True, timeout=300,
    )  # fmt: skip
    return out


@pytest.fixture(scope="module")
def br35h(airflow_deployment: E2EDeployment) -> Path:
    """The Br35H sample as FHIR NDJSON (a class-balanced 100 images) where curation may read."""
    return _sample(airflow_deployment, "br35h", "--limit", "100")


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


def _dataset_input(name: str, source: Path) -> dict[str, Any]:
    """The example dataset config `name` as a reference user writes it, plus our `source`
    extension (the SDK keeps unknown input fields; sent as an extension, it is used)."""
    config = example(name)
    config["problemDefinition"].pop("labelSystem", None)
    config.pop("curation", None)
    config["source"] = {"type": "ndjson", "uri": str(source)}
    return dict(config)


def _model_input() -> dict[str, Any]:
    """The lifecycle tests' model (the client adds the dataset id), with the ECR image name the
    SDK requires and without `seed`, an extension."""
    config = model_config(MODEL, dataset="")
    del config["datasetId"], config["trainingApproach"]["seed"]
    config["description"] = "Flags brain MRI slices that show a tumour (reference client)."
    config["trainingApproach"]["trainingImage"] = IMAGE
    config["deployApproach"]["inferenceImage"] = IMAGE
    return config


def _unreadable_model(deployment: E2EDeployment, dataset_id: str) -> str:
    """A model the SDK cannot read (image outside its ECR pattern, 40 trials), made through our
    own API (PATIENT_ML_REFERENCE_STRICT is off in this deployment)."""
    config = model_config(f"{MODEL}-local-image", dataset_id)
    config["trainingApproach"]["maxTrials"] = 40
    return str(deployment.api.post(f"{V1}/models", config)["model"]["id"])


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


def test_the_shipped_reference_schema_is_the_sdks(reference_python: Path, tmp_path: Path) -> None:
    """patient_ml/config/reference_schema.json is what the tested SDK release produces."""
    driver = ReferenceClient(reference_python, "http://unused", "unused", tmp_path)
    assert driver("schema") == reference.schema()
    assert reference.sdk_release() == REFERENCE_CLIENT


def _label_file(dataset: dict[str, Any], side: int) -> dict[str, Any]:
    """A Label Studio RLE label file: a square of `nucleus` in a `side` x `side` tile."""
    [nucleus] = dataset["problemDefinition"]["labelDefinition"]["labels"]
    mask = np.zeros((side, side), dtype=np.uint8)
    mask[10:30, 20:40] = 255
    rgba = np.repeat(mask[:, :, None], 4, axis=2)
    return {
        "labelType": "imgSeg",
        "projectId": "any",
        "height": side,
        "width": side,
        "areas": [{"id": nucleus["id"], "rle": rle.encode(rgba)}],
    }


def test_reference_client_drives_every_call(
    airflow_deployment: E2EDeployment, reference_python: Path, br35h: Path, tmp_path: Path
) -> None:
    deployment = airflow_deployment
    stack, api = deployment.stack, deployment.api
    admin = ReferenceClient(reference_python, stack.url, _token(stack, "admin"), tmp_path)

    # 1. datasets and models: create, list, get, update, delete
    out = admin(
        "configs",
        admin.write("dataset.json", _dataset_input("brain_mri_dataset", br35h)),
        admin.write("model.json", _model_input()),
    )
    assert out["sdk"] == "1.6.0" and out["sentDataset"]["source"]["type"] == "ndjson"
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
    assert (dataset["source"]["type"], dataset["source"]["uri"]) == ("ndjson", str(br35h))
    assert dataset["problemDefinition"]["labelSystem"] == f"urn:patient-ml:labels:{DATASET}"
    assert {"CloudDeployApproach", "TuningJobTrainingApproach"} <= set(
        out["create_model"]["unions"]
    )
    assert model["datasetId"] == dataset["id"] and "championId" not in model
    assert model["trainingApproach"]["trainingImage"] == IMAGE
    assert dataset["id"] in [d["id"] for d in out["get_datasets"]["body"]["datasets"]]
    assert out["get_dataset"]["body"]["dataset"] == dataset
    assert model["id"] in [m["id"] for m in out["get_models"]["body"]["models"]]
    assert out["get_model"]["body"]["model"] == model
    updated = out["update_model"]["body"]["model"]
    assert updated["description"].endswith("(v2)") and updated["revision"] == 2
    updated_ds = out["update_dataset"]["body"]["dataset"]
    assert updated_ds["description"].endswith("(v2)") and updated_ds["source"]["type"] == "ndjson"
    scratch_model = out["create_model_scratch"]["body"]["model"]["id"]
    assert out["delete_model"]["body"] == {"id": scratch_model}
    scratch = out["create_dataset_scratch"]["body"]["dataset"]["id"]
    assert out["delete_dataset"]["body"] == {"id": scratch}
    assert api.get(f"{V1}/models/{scratch_model}", ok=(404,))["error"]["status"] == 404

    # 2. a stored model the SDK cannot read is left out of its lists, and named in a header
    unreadable = _unreadable_model(deployment, dataset["id"])
    out = admin("datasets")
    listed = [m["id"] for m in out["get_models"]["body"]["models"]]
    assert model["id"] in listed and unreadable not in listed
    answer = api.session.get(f"{stack.url}{V1}/models", timeout=60)
    omitted = answer.headers["Patient-ML-Omitted"]
    assert unreadable in omitted and "trainingApproach" in omitted and "view=extended" in omitted
    extended = api.get(f"{V1}/models?view=extended")["models"]
    assert unreadable in [m["id"] for m in extended]
    api.request("DELETE", f"{V1}/models/{unreadable}")

    # 3. examples and labels (imgClf), then an imgSeg dataset's label file
    out = admin("examples", dataset["id"])
    examples = out["get_dataset_examples"]["body"]["examples"]
    assert len(examples) == 100 and all(e["updatedAt"] > 0 for e in examples)
    unlabelled = out["get_dataset_examples_unlabelled"]["body"]["examples"]
    assert unlabelled and all("label" not in e for e in unlabelled)
    labelled = out["put_dataset_label"]["body"]
    assert labelled["id"] == unlabelled[0]["id"]
    assert labelled["label"]["classes"] == [1] and labelled["label"]["isConfirmed"] is True
    assert labelled["label"]["lastConfirmedBy"] == "admin"
    assert out["get_dataset_example_labelled"]["body"]["example"] == labelled

    nuclei = _sample(deployment, "nuclei")
    out = admin("dataset", admin.write("seg.json", _dataset_input("nuclei_dataset", nuclei)))
    seg = out["create_dataset"]["body"]["dataset"]
    label_file = admin.write("label-file.json", _label_file(seg, side=128))
    out = admin("segmentation", seg["id"], label_file)
    file_id = out["put_dataset_label_file"]["body"]["fileId"]
    assert file_id.startswith("label-file/")
    mask_label = out["put_dataset_label"]["body"]["label"]
    # saved as the example's label Observation (its mask inline), which is now the mask's file
    assert mask_label["mask"]["fileId"].startswith("Observation/")
    assert mask_label["isConfirmed"] is False
    back = out["get_dataset_label_file"]["body"]["labelData"]
    assert back["areas"] == json.loads(Path(label_file).read_text())["areas"]

    # Not the reference flow: the model's DAG exists only after the DAG processor's next parse
    # and starts paused (Airflow's default), so wait for it and unpause it, as an Airflow admin.
    dag_id = dag_id_of(api.get(f"{V1}/models/{model['id']}")["model"]["slug"])
    deployment.wait_for_dag(dag_id)

    # 4. A viewer may read but not start runs: the SDK's ApiError with 403
    viewer = ReferenceClient(reference_python, stack.url, _token(stack, "viewer"), tmp_path)
    refused = viewer("create-run", model["id"], exit_code=API_ERROR_EXIT)["apiError"]
    assert refused["call"] == "create_run" and refused["status"] == 403
    assert refused["data"]["error"]["status"] == 403

    # 5. create_run, then get_run (the SDK's ModelRun forbids unknown fields) until evaluated
    out = admin("start", model["id"], "300")
    assert "timeout" not in out, out
    run_id = out["create_run"]["body"]["runId"]
    run = out["get_run"]["body"]["run"]
    assert out["get_run"]["type"] == "GetRunResponse" and out["polls"] >= 1
    assert {"ImageClassificationProblem", "CloudDeployApproach"} <= set(out["get_run"]["unions"])
    assert run["id"] == run_id and run["modelId"] == model["id"]
    assert run["status"] == "succeeded" and run["approvals"] == []
    assert not EXTENSIONS & set(run)
    assert [p["name"] for p in run["hyperparameters"]] == ["epochs", "image_size"]
    evaluated = {m["name"] for m in run["metrics"]["challenger"] if m["stage"] == "evaluation"}
    assert "balancedAccuracy" in evaluated and run["metrics"]["champion"] == []
    assert run["modelArtifactUri"] and run["trainingApproach"]["maxTrials"] == 1
    assert [r["id"] for r in out["get_runs"]["body"]["runs"]] == [run_id]

    # the run the client created is the one linked to the model's DAG run, waiting for approval
    path = f"{V1}/models/{model['id']}/runs/{run_id}"
    linked = api.get(f"{path}?view=extended")["run"]
    assert linked["airflow"]["dagId"] == dag_id and linked["triggeredBy"] == "admin"
    dag_run_id = linked["airflow"]["runId"]
    assert api.dag_run(dag_id, dag_run_id)["conf"]["runId"] == run_id
    _wait_for_task(deployment, dag_id, dag_run_id, "await_approval")
    assert api.get(f"{path}?view=extended")["run"]["approvalStatus"] == "pending"

    # 6. logs (paged by marker, filtered) and the model artifact
    out = admin("logs", model["id"], run_id)
    first = out["get_model_logs"]["body"]
    assert len(first["events"]) == 2 and first["marker"]
    assert out["get_model_logs_next"]["body"]["events"][0] != first["events"][0]
    filtered = out["get_model_logs_filtered"]["body"]["events"]
    assert filtered and all("trial 0" in e["payload"] for e in filtered)
    url = admin("artifact", model["id"], run_id)["get_model_artifact"]["body"]["url"]
    download = api.session.get(url, timeout=60)
    assert download.status_code == 200 and gzip.decompress(download.content)

    # 7. create_approval_decision as the JWT's user; the DAG run deploys the run
    out = admin("approve", model["id"], run_id, APPROVAL_REASON)
    decision = out["create_approval_decision"]
    assert decision["type"] == "CreateApprovalDecisionResponse"
    # `channel` is an extension; the SDK's UserApprovalDecision allows extra fields
    assert decision["body"]["approvalDecision"] == {
        "actor": "user",
        "user": "admin",
        "decision": "approved",
        "description": APPROVAL_REASON,
        "timestamp": decision["body"]["approvalDecision"]["timestamp"],
        "channel": "api",
        # extension: the change-control gate as the approver saw it (no champion: no rules)
        "criteria": {
            "gate": {
                "rules": [],
                "objective": None,
                "overrideRequired": False,
                "duplicateOfRejected": [],
            }
        },
    }
    assert out["get_run"]["unions"].count("UserApprovalDecision") == 1
    assert _wait_for_dag_run(deployment, dag_id, dag_run_id) == "success"
    states = api.task_states(dag_id, dag_run_id)
    assert states["deploy"] == "success" and states["record"] == "success"

    # 8. the champion, and predict(): the SDK sends no example, so the first test example
    out = admin("show", model["id"], run_id)
    assert out["get_model"]["body"]["model"]["championId"] == run_id
    deployed = out["get_run"]["body"]["run"]
    assert deployed["deployStatus"] == "succeeded" and deployed["approvals"][0]["user"] == "admin"
    prediction = out["predict"]["body"]
    assert prediction["predictionType"] == "imgClf"
    assert sorted(p["index"] for p in prediction["predictions"]) == [0, 1]
    assert [p["value"] for p in prediction["predictions"]].count(True) == 1
    ours = api.get(f"{V1}/models/{model['id']}/predictions?view=extended")
    assert ours["runId"] == run_id and ours["exampleId"]
    with session_scope(deployment.engine) as session:
        stored = session.get(Model, model["id"])
        assert stored is not None and stored.champion_id == run_id
        stored_run = session.get(Run, run_id)
        assert stored_run is not None and stored_run.deploy_status == "succeeded"
        approvals = session.query(Approval).filter(Approval.run_id == run_id).all()
        assert [(a.decision, a.actor, a.user) for a in approvals] == [("approved", "user", "admin")]
