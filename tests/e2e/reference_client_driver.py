"""Drive Patient ML's REST API with the reference client, unchanged: LifeOmic's `phc` SDK
(PyPI `phc==0.36.0`, its `phc.services.PatientML`), run by that SDK's own Python in its own
virtual environment (pydantic v1), never imported by the test session.

    <phc venv>/bin/python reference_client_driver.py STEP [ARG...]

Environment: PML_BASE_URL (the Airflow API server's root URL), PML_TOKEN (an Airflow JWT),
PML_ACCOUNT (the account the product reports; sent as LifeOmic-Account, ignored by the server).

Steps (each prints one JSON object on stdout):

    configs DATASET_JSON MODEL_JSON   create_dataset, then create_model on the new dataset id
                                      (MODEL_JSON without datasetId), get_datasets, get_dataset,
                                      get_models, get_model
    start MODEL_ID TIMEOUT_S          create_run, then get_run until the run has left `running`
                                      (status succeeded: trained and evaluated), get_runs
    approve MODEL_ID RUN_ID REASON    create_approval_decision("approved"), get_run
    show MODEL_ID RUN_ID              get_model, get_run
    create-run MODEL_ID               create_run only (e.g. with a viewer's token)

Every response is the SDK's own pydantic model (`parse_obj` of the reference shapes): the output
gives, per call, the model's class name, the classes the SDK picked for the union members, and
`.json(exclude_none=True)` of it. When the server refuses, the SDK raises its ApiError: the step
stops, prints {"apiError": {"call", "status", "data"}} and exits with code 3.
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Any

from phc import Session
from phc.errors import ApiError
from phc.services import PatientML
from phc.services.patient_ml import (
    ApprovalDecisionInput,
    DatasetConfigInput,
    ModelConfigInput,
)
from pydantic import BaseModel

API_ERROR_EXIT = 3


def client() -> PatientML:
    session = Session(token=os.environ["PML_TOKEN"], account=os.environ["PML_ACCOUNT"])
    # The SDK sets api_url from the token's issuer (LifeOmic's cloud); point it at the server
    # root. The SDK then urljoins absolute paths such as /v1/patient-ml/models onto it.
    session.api_url = os.environ["PML_BASE_URL"].rstrip("/") + "/"
    return PatientML(session)


def union_classes(value: Any) -> list[str]:
    """Class names the SDK chose for `__root__` unions (problem types, approaches, approvals)."""
    found: list[str] = []
    if isinstance(value, BaseModel):
        fields = value.__dict__
        if "__root__" in fields and isinstance(fields["__root__"], BaseModel):
            found.append(type(fields["__root__"]).__name__)
        for item in fields.values():
            found += union_classes(item)
    elif isinstance(value, list):
        for item in value:
            found += union_classes(item)
    return found


def result(response: BaseModel) -> dict[str, Any]:
    return {
        "type": type(response).__name__,
        "unions": sorted(set(union_classes(response))),
        "body": json.loads(response.json(exclude_none=True)),
    }


class Recorder:
    def __init__(self) -> None:
        self.out: dict[str, Any] = {}

    def call(self, name: str, fn: Any, *args: Any) -> Any:
        try:
            response = fn(*args)
        except ApiError as exc:
            self.out["apiError"] = {
                "call": name,
                "status": exc.response.status_code,
                "data": exc.response.data,
            }
            self.finish(API_ERROR_EXIT)
        self.out[name] = result(response)
        return response

    def finish(self, code: int = 0) -> None:
        print(json.dumps(self.out))
        sys.exit(code)


def configs(pml: PatientML, rec: Recorder, dataset_file: str, model_file: str) -> None:
    with open(dataset_file) as fh:
        dataset_input = DatasetConfigInput.parse_obj(json.load(fh))
    # Reference inputs ignore unknown fields (pydantic v1 Extra.ignore): what is sent is only
    # the reference fields.
    rec.out["sentDataset"] = json.loads(dataset_input.json(exclude_none=True))
    dataset = rec.call("create_dataset", pml.create_dataset, dataset_input).dataset
    with open(model_file) as fh:
        model_input = ModelConfigInput.parse_obj({**json.load(fh), "datasetId": dataset.id})
    rec.out["sentModel"] = json.loads(model_input.json(exclude_none=True))
    model = rec.call("create_model", pml.create_model, model_input).model
    rec.call("get_datasets", pml.get_datasets)
    rec.call("get_dataset", pml.get_dataset, dataset.id)
    rec.call("get_models", pml.get_models)
    rec.call("get_model", pml.get_model, model.id)


def start(pml: PatientML, rec: Recorder, model_id: str, timeout: str) -> None:
    run_id = rec.call("create_run", pml.create_run, model_id).runId
    deadline = time.monotonic() + float(timeout)
    polls = 0
    while True:
        run = pml.get_run(model_id, run_id).run
        polls += 1
        if run is not None and run.status != "running":
            break
        if time.monotonic() > deadline:
            rec.out["timeout"] = f"run {run_id} still running after {timeout} s"
            break
        time.sleep(2)
    rec.out["polls"] = polls
    rec.call("get_run", pml.get_run, model_id, run_id)
    rec.call("get_runs", pml.get_runs, model_id)


def approve(pml: PatientML, rec: Recorder, model_id: str, run_id: str, reason: str) -> None:
    decision = ApprovalDecisionInput(decision="approved", description=reason)
    rec.call("create_approval_decision", pml.create_approval_decision, model_id, run_id, decision)
    rec.call("get_run", pml.get_run, model_id, run_id)


def show(pml: PatientML, rec: Recorder, model_id: str, run_id: str) -> None:
    rec.call("get_model", pml.get_model, model_id)
    rec.call("get_run", pml.get_run, model_id, run_id)


def create_run(pml: PatientML, rec: Recorder, model_id: str) -> None:
    rec.call("create_run", pml.create_run, model_id)


STEPS = {
    "configs": configs,
    "start": start,
    "approve": approve,
    "show": show,
    "create-run": create_run,
}


def main(argv: list[str]) -> None:
    step, *args = argv
    rec = Recorder()
    STEPS[step](client(), rec, *args)
    rec.finish()


if __name__ == "__main__":
    main(sys.argv[1:])
