"""Drive Patient ML's REST API with the reference client, unchanged: LifeOmic's `phc` SDK
(PyPI `phc==1.6.0`, its `phc.services.PatientML`, pydantic 2), run by that SDK's own Python in
its own virtual environment, never imported by the test session.

    <phc venv>/bin/python reference_client_driver.py STEP [ARG...]

Environment: PML_BASE_URL (the Airflow API server's root URL), PML_TOKEN (an Airflow JWT),
PML_ACCOUNT (the account the product reports; sent as LifeOmic-Account, ignored by the server).

Steps (each prints one JSON object on stdout):

    schema                            the JSON Schema of the SDK's models, as shipped in
                                      patient_ml/config/reference_schema.json
    configs DATASET_JSON MODEL_JSON   create_dataset, create_model on the new dataset id
                                      (MODEL_JSON without datasetId), get_datasets, get_dataset,
                                      get_models, get_model, update_model, update_dataset; then a
                                      scratch dataset and model: create, delete_model,
                                      delete_dataset
    dataset DATASET_JSON              create_dataset
    datasets                          get_datasets, get_models
    examples DATASET_ID               get_dataset_examples (all; unlabelled), get_dataset_example,
                                      put_dataset_label (confirmed class 1), get_dataset_example
    segmentation DATASET_ID FILE_JSON get_dataset_examples, put_dataset_label_file (FILE_JSON:
                                      LabelFileData without the example), put_dataset_label
                                      (mask = the returned fileId, draft), get_dataset_label_file
    start MODEL_ID TIMEOUT_S          create_run, then get_run until the run has left `running`
                                      (status succeeded: trained and evaluated), get_runs
    logs MODEL_ID RUN_ID              get_model_logs: a page of 2, the next page by marker, a
                                      filter
    artifact MODEL_ID RUN_ID          get_model_artifact
    approve MODEL_ID RUN_ID REASON    create_approval_decision("approved"), get_run
    show MODEL_ID RUN_ID              get_model, get_run, predict
    create-run MODEL_ID               create_run only (e.g. with a viewer's token)

Every response is the SDK's own pydantic model (it validates the reference shapes, forbidding
unknown fields where the reference does): the output gives, per call, the model's class name,
the classes the SDK picked for union members, and its JSON (`exclude_none`). When the server
refuses, the SDK raises its ApiError: the step stops, prints {"apiError": {"call", "status",
"data"}} and exits with code 3. When the SDK cannot read an answer (pydantic's
ValidationError), it prints {"invalidAnswer": {"call", "errors"}} and exits with code 4.
"""

from __future__ import annotations

import json
import os
import sys
import time
import warnings
from importlib import metadata
from typing import Any

from phc import Session
from phc.errors import ApiError
from phc.services import PatientML
from phc.services import patient_ml as pm
from pydantic import BaseModel, RootModel, ValidationError

API_ERROR_EXIT = 3
INVALID_ANSWER_EXIT = 4
# The SDK calls pydantic 1 names (parse_obj, .json) on pydantic 2: deprecation warnings only.
warnings.filterwarnings("ignore", category=DeprecationWarning)
SCHEMA_MODELS = (
    "ModelConfigInput",
    "ModelConfig",
    "DatasetConfigInput",
    "DatasetConfig",
    "ModelRun",
    "Example",
    "ImageClassificationPredictionResponse",
)


def client() -> PatientML:
    session = Session(token=os.environ["PML_TOKEN"], account=os.environ["PML_ACCOUNT"])
    # The SDK sets api_url from the token's issuer (LifeOmic's cloud); point it at the server
    # root. The SDK then urljoins absolute paths such as /v1/patient-ml/models onto it.
    session.api_url = os.environ["PML_BASE_URL"].rstrip("/") + "/"
    return PatientML(session)


def union_classes(value: Any) -> list[str]:
    """Class names the SDK chose for RootModel unions (problem types, approaches, approvals)."""
    found: list[str] = []
    if isinstance(value, RootModel):
        if isinstance(value.root, BaseModel):
            found.append(type(value.root).__name__)
        found += union_classes(value.root)
    elif isinstance(value, BaseModel):
        for item in value.__dict__.values():
            found += union_classes(item)
    elif isinstance(value, list):
        for item in value:
            found += union_classes(item)
    return found


def result(response: BaseModel) -> dict[str, Any]:
    return {
        "type": type(response).__name__,
        "unions": sorted(set(union_classes(response))),
        "body": json.loads(response.model_dump_json(exclude_none=True)),
    }


class Recorder:
    def __init__(self) -> None:
        self.out: dict[str, Any] = {"sdk": metadata.version("phc")}

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
        except ValidationError as exc:
            errors = [
                {"loc": [str(p) for p in e["loc"]], "type": e["type"], "msg": e["msg"]}
                for e in exc.errors()
            ]
            self.out["invalidAnswer"] = {"call": name, "errors": errors[:20]}
            self.finish(INVALID_ANSWER_EXIT)
        self.out[name] = result(response)
        return response

    def finish(self, code: int = 0) -> None:
        print(json.dumps(self.out))
        sys.exit(code)


def _load(path: str) -> dict[str, Any]:
    with open(path) as fh:
        return dict(json.load(fh))


def schema(pml: PatientML, rec: Recorder) -> None:
    from pydantic.json_schema import models_json_schema

    _, defs = models_json_schema(
        [(getattr(pm, name), "validation") for name in SCHEMA_MODELS],
        ref_template="#/$defs/{model}",
    )
    rec.out = {
        "$comment": f"JSON Schema of the reference SDK's models (phc=={metadata.version('phc')}"
        ", phc/services/patient_ml.py, MIT), generated by "
        "tests/e2e/reference_client_driver.py schema",
        **defs,
    }


def configs(pml: PatientML, rec: Recorder, dataset_file: str, model_file: str) -> None:
    # Reference inputs keep unknown fields (extra="allow") but exclude_none drops nulls.
    dataset_input = pm.DatasetConfigInput.model_validate(_load(dataset_file))
    rec.out["sentDataset"] = json.loads(dataset_input.model_dump_json(exclude_none=True))
    dataset = rec.call("create_dataset", pml.create_dataset, dataset_input).dataset
    model_input = pm.ModelConfigInput.model_validate({**_load(model_file), "datasetId": dataset.id})
    rec.out["sentModel"] = json.loads(model_input.model_dump_json(exclude_none=True))
    model = rec.call("create_model", pml.create_model, model_input).model
    rec.call("get_datasets", pml.get_datasets)
    rec.call("get_dataset", pml.get_dataset, dataset.id)
    rec.call("get_models", pml.get_models)
    rec.call("get_model", pml.get_model, model.id)
    changed = model_input.model_copy(update={"description": model_input.description + " (v2)"})
    rec.call("update_model", pml.update_model, model.id, changed)
    changed_ds = dataset_input.model_copy(
        update={"description": dataset_input.description + " (v2)"}
    )
    rec.call("update_dataset", pml.update_dataset, dataset.id, changed_ds)
    # a scratch dataset and model, deleted again
    scratch_ds = dataset_input.model_copy(update={"name": dataset_input.name + "-scratch"})
    scratch = rec.call("create_dataset_scratch", pml.create_dataset, scratch_ds).dataset
    scratch_model = model_input.model_copy(
        update={"name": model_input.name + "-scratch", "datasetId": scratch.id}
    )
    made = rec.call("create_model_scratch", pml.create_model, scratch_model).model
    rec.call("delete_model", pml.delete_model, made.id)
    rec.call("delete_dataset", pml.delete_dataset, scratch.id)


def dataset(pml: PatientML, rec: Recorder, dataset_file: str) -> None:
    dataset_input = pm.DatasetConfigInput.model_validate(_load(dataset_file))
    rec.call("create_dataset", pml.create_dataset, dataset_input)


def datasets(pml: PatientML, rec: Recorder) -> None:
    rec.call("get_datasets", pml.get_datasets)
    rec.call("get_models", pml.get_models)


def examples(pml: PatientML, rec: Recorder, dataset_id: str) -> None:
    every = pm.GetDatasetExamplesParams(projectId="any")
    rec.call("get_dataset_examples", pml.get_dataset_examples, dataset_id, every)
    unlabelled = pm.GetDatasetExamplesParams(projectId="any", hasLabel="false")
    page = rec.call("get_dataset_examples_unlabelled", pml.get_dataset_examples, dataset_id,
                    unlabelled)  # fmt: skip
    example_id = page.examples[0].root.id
    one = pm.GetDatasetExampleParams(projectId="any")
    rec.call("get_dataset_example", pml.get_dataset_example, dataset_id, example_id, one)
    label = pm.Label(pm.ImageClassificationLabel(labelType="imgClf", classes=[1], isConfirmed=True))
    rec.call("put_dataset_label", pml.put_dataset_label, dataset_id, example_id, label)
    rec.call("get_dataset_example_labelled", pml.get_dataset_example, dataset_id, example_id, one)


def segmentation(pml: PatientML, rec: Recorder, dataset_id: str, label_file: str) -> None:
    every = pm.GetDatasetExamplesParams(projectId="any")
    page = rec.call("get_dataset_examples", pml.get_dataset_examples, dataset_id, every)
    example_id = page.examples[0].root.id
    data = pm.LabelFileData.model_validate(_load(label_file))
    file_id = rec.call(
        "put_dataset_label_file", pml.put_dataset_label_file, dataset_id, example_id, data
    ).fileId
    label = pm.Label(pm.ImageSegmentationLabel(labelType="imgSeg", mask=pm.Mask(fileId=file_id)))
    rec.call("put_dataset_label", pml.put_dataset_label, dataset_id, example_id, label)
    rec.call("get_dataset_label_file", pml.get_dataset_label_file, dataset_id, example_id)
    rec.out["exampleId"] = example_id


def start(pml: PatientML, rec: Recorder, model_id: str, timeout: str) -> None:
    run_id = rec.call("create_run", pml.create_run, model_id).runId
    deadline = time.monotonic() + float(timeout)
    polls = 0
    while True:
        run = rec.call("poll", pml.get_run, model_id, run_id).run
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


def logs(pml: PatientML, rec: Recorder, model_id: str, run_id: str) -> None:
    first = rec.call("get_model_logs", pml.get_model_logs, model_id, run_id,
                     pm.GetModelLogsParams(limit=2))  # fmt: skip
    rec.call("get_model_logs_next", pml.get_model_logs, model_id, run_id,
             pm.GetModelLogsParams(limit=2, marker=first.marker))  # fmt: skip
    rec.call("get_model_logs_filtered", pml.get_model_logs, model_id, run_id,
             pm.GetModelLogsParams(filter='"trial 0"'))  # fmt: skip


def artifact(pml: PatientML, rec: Recorder, model_id: str, run_id: str) -> None:
    rec.call("get_model_artifact", pml.get_model_artifact, model_id, run_id)


def approve(pml: PatientML, rec: Recorder, model_id: str, run_id: str, reason: str) -> None:
    decision = pm.ApprovalDecisionInput(decision="approved", description=reason)
    rec.call("create_approval_decision", pml.create_approval_decision, model_id, run_id, decision)
    rec.call("get_run", pml.get_run, model_id, run_id)


def show(pml: PatientML, rec: Recorder, model_id: str, run_id: str) -> None:
    rec.call("get_model", pml.get_model, model_id)
    rec.call("get_run", pml.get_run, model_id, run_id)
    rec.call("predict", pml.predict, model_id)


def create_run(pml: PatientML, rec: Recorder, model_id: str) -> None:
    rec.call("create_run", pml.create_run, model_id)


STEPS = {
    "schema": schema,
    "configs": configs,
    "dataset": dataset,
    "datasets": datasets,
    "examples": examples,
    "segmentation": segmentation,
    "start": start,
    "logs": logs,
    "artifact": artifact,
    "approve": approve,
    "show": show,
    "create-run": create_run,
}


def main(argv: list[str]) -> None:
    step, *args = argv
    rec = Recorder()
    STEPS[step](client() if step != "schema" else None, rec, *args)  # type: ignore[arg-type]
    rec.finish()


if __name__ == "__main__":
    main(sys.argv[1:])
