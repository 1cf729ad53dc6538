"""Typed shapes of the REST API, for its OpenAPI document and for checking what it sends.

The shapes are the reference Patient ML API's (the `phc` SDK's generated models: camelCase
names, the same required fields) plus the fields this platform adds, which are declared here
too and marked "Extension". Every response model allows unknown fields (`extra="allow"`) so a
service that adds a key never loses it on the wire.

Three rules keep today's wire bytes unchanged when a route declares one of these models:

- routes use `response_model_exclude_unset=True`, so a key the service leaves out stays out
  (no added nulls) and a key it sends as null stays null;
- fields are declared in the order the services build their dicts, because pydantic writes
  declared fields in declaration order;
- numbers that may be integers or floats are `Number` (validated as either, documented as JSON
  `number`), so an integer is never rewritten as `1.0`.

Parts of stored configs (trainingApproach, deployApproach, curation, ...) are what the config
models in `patient_ml.config.models` wrote (`to_wire()`), so they are documented with those
models' schemas but passed through unchanged (`Stored*`): re-validating them on every read
would turn a config stored before a rule changed into a 500.

The shapes of datasets and models (`DatasetConfig`, `ModelConfig`) and the types above are
defined in `patient_ml.services.wire`, because the services write stored rows with them: the
API, the CLI and the audit trail send the one shape.

Request bodies of models and datasets are documented with the same config models
(`ModelConfigInput`, `DatasetConfigInput`) but reach the services as raw dicts, so that their
field-level validation errors (422 with `errors: [{field, message, value}]`) keep the product's
wording.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Any, Literal

from fastapi import Body, FastAPI
from pydantic import BaseModel, ConfigDict, Field, RootModel

from patient_ml.config import models as config
from patient_ml.config.wire import WireModel
from patient_ml.services.wire import (
    DatasetConfig,
    DocumentedAs,
    Millis,
    MlProblemDefinition,
    ModelConfig,
    Number,
    StoredDeployApproach,
    StoredTrainingApproach,
    WireResponse,
)
from patient_ml.training.provenance import RunProvenance

Direction = Literal["minimize", "maximize"]


# ----------------------------------------------------------------------------- errors


class FieldErrorDetail(BaseModel):
    field: str = Field(description="Wire path of the field, e.g. `trainingApproach.maxTrials`.")
    message: str = Field(description="What is wrong and how to fix it.")
    value: Any = Field(None, description="The value that was given (null when missing).")


class ErrorDetail(BaseModel):
    status: int = Field(description="The HTTP status, repeated.")
    message: str
    fix: str | None = Field(None, description="What to do about it (absent when obvious).")
    errors: list[FieldErrorDetail] | None = Field(
        None, description="One entry per invalid field (422 only; absent otherwise)."
    )


class ErrorResponse(BaseModel):
    """The one error shape of the API (`patient_ml.api.errors`); never a stack trace."""

    error: ErrorDetail


_ERROR_DESCRIPTIONS = {
    400: "The body cannot be read (e.g. it is not UTF-8 text).",
    401: "No credentials: send an Airflow JWT as `Authorization: Bearer <token>`.",
    403: "Invalid credentials, or the user may not do this.",
    404: "The model, dataset, run or example does not exist.",
    409: "The request contradicts stored state (taken name, decided run, no champion, ...).",
    422: "The request or the config is invalid; `errors` names each field.",
    500: "Internal error; the API server's log has the traceback.",
    502: "A service this request needs answered badly.",
    503: "The product database is unavailable.",
}


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """`responses=` for a route: each status documented with the shared ErrorResponse schema.
    401 and 403 are added to every route (every route needs an authenticated user); 400 for
    an unreadable body is added to every route with a body by `document_error_shape`."""
    wanted = sorted({401, 403, *statuses})
    return {
        status: {"model": ErrorResponse, "description": _ERROR_DESCRIPTIONS[status]}
        for status in wanted
    }


def document_error_shape(app: FastAPI) -> None:
    """Make the app's OpenAPI document tell the error shape `patient_ml.api.errors` answers
    on every route, including routes that declare no error responses: FastAPI documents its
    own 422 body (`{"detail": [...]}`) there, and nothing for a body it cannot read (400)."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            _use_error_response(generate())
        return app.openapi_schema  # type: ignore[return-value]

    app.openapi = openapi  # type: ignore[method-assign]


def _use_error_response(document: dict[str, Any]) -> None:
    schemas = document.setdefault("components", {}).setdefault("schemas", {})
    if "ErrorResponse" not in schemas:
        generated = ErrorResponse.model_json_schema(ref_template="#/components/schemas/{model}")
        schemas.update(generated.pop("$defs", {}))
        schemas["ErrorResponse"] = generated
    fastapi_422 = "#/components/schemas/HTTPValidationError"
    for path_item in document.get("paths", {}).values():
        for operation in path_item.values():
            responses = operation.setdefault("responses", {})
            content = responses.get("422", {}).get("content", {})
            if content.get("application/json", {}).get("schema", {}).get("$ref") == fastapi_422:
                responses["422"] = _error_entry(422)
            if "requestBody" in operation:
                responses.setdefault("400", _error_entry(400))
            operation["responses"] = dict(sorted(responses.items()))
    schemas.pop("HTTPValidationError", None)
    schemas.pop("ValidationError", None)


def _error_entry(status: int) -> dict[str, Any]:
    return {
        "description": _ERROR_DESCRIPTIONS[status],
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorResponse"}}},
    }


# ----------------------------------------------------------------------------- request bodies


_READ_ONLY = "Read-only: accepted and ignored, so a fetched config can be sent back unchanged."


class _ReturnedFields(WireModel):
    """Fields the API returns with a config; accepted and ignored on input
    (`patient_ml.config.loading.READ_ONLY_FIELDS`)."""

    account_id: str | None = Field(None, description=_READ_ONLY)
    slug: str | None = Field(None, description=_READ_ONLY)
    dag_id: str | None = Field(None, description=_READ_ONLY)
    revision: int | None = Field(None, description=_READ_ONLY)
    created_at: Number | None = Field(None, description=_READ_ONLY)
    updated_at: Number | None = Field(None, description=_READ_ONLY)


class ModelConfigInput(_ReturnedFields, config.ModelConfig):
    """The reference ModelConfigInput plus extensions (approvalPolicy, parallelTrials, seed,
    schedule). Rules across fields (objective metric defined, dataset exists, ...) are checked
    by the service and reported as 422 with one entry per field."""


class DatasetConfigInput(_ReturnedFields, config.DatasetConfig):
    """The reference DatasetConfigInput plus extensions (labelSystem, curation, source). Label
    ids and indices are assigned by the service when left out and never change."""


_MODEL_EXAMPLE: dict[str, Any] = {
    "name": "brain-mri-tumour-classifier",
    "description": "Flags brain MRI slices that show a tumour.",
    "datasetId": "brain-mri-tumour",
    "trainingApproach": {
        "type": "tuningJob",
        "trainingImage": "patient-ml/img-clf-trainer:0.1.0",
        "metricDefinitions": [
            {"name": "validation:balancedAccuracy", "regex": "val_balanced_accuracy=([0-9.]+)"}
        ],
        "objective": {"metric": "validation:balancedAccuracy", "direction": "maximize"},
        "searchSpace": [
            {
                "type": "continuous",
                "name": "learning_rate",
                "min": 0.0001,
                "max": 0.1,
                "scale": "log",
            }
        ],
        "maxTrials": 4,
    },
    "deployApproach": {"type": "cloud", "inferenceImage": "patient-ml/img-clf-trainer:0.1.0"},
}
_DATASET_EXAMPLE: dict[str, Any] = {
    "name": "brain-mri-tumour",
    "description": "Axial brain MRI slices labelled as showing a tumour or not.",
    "problemDefinition": {
        "problemType": "imgClf",
        "labelDefinition": {
            "labels": [
                {"name": "no_tumour", "description": "No tumour visible.", "index": 0},
                {"name": "tumour", "description": "A tumour is visible.", "index": 1},
            ]
        },
        "trainingDataFilter": {
            "filterType": "FhirCodesFilter",
            "codes": ["http://loinc.org|24590-2"],
        },
    },
}
CONFIG_EXAMPLES = {"model": _MODEL_EXAMPLE, "dataset": _DATASET_EXAMPLE}

ModelConfigBody = Annotated[
    dict[str, Any],
    Body(
        description="The model config (reference ModelConfigInput, camelCase, plus extensions).",
        openapi_examples={"imgClf": {"summary": "An image classifier", "value": _MODEL_EXAMPLE}},
    ),
    DocumentedAs(ModelConfigInput),
]
DatasetConfigBody = Annotated[
    dict[str, Any],
    Body(
        description="The dataset config (reference DatasetConfigInput, camelCase, plus "
        "extensions).",
        openapi_examples={"imgClf": {"summary": "Two labels", "value": _DATASET_EXAMPLE}},
    ),
    DocumentedAs(DatasetConfigInput),
]


# ----------------------------------------------------------------------------- datasets


class CreateDatasetResponse(BaseModel):
    dataset: DatasetConfig


class GetDatasetsResponse(BaseModel):
    datasets: list[DatasetConfig]


class GetDatasetResponse(BaseModel):
    dataset: DatasetConfig


class UpdateDatasetResponse(BaseModel):
    dataset: DatasetConfig


class DeleteDatasetResponse(BaseModel):
    id: str = Field(description="The id of the dataset that was deleted.")


# ----------------------------------------------------------------------------- models


class CreateModelResponse(BaseModel):
    model: ModelConfig


class GetModelsResponse(BaseModel):
    models: list[ModelConfig]


class GetModelResponse(BaseModel):
    model: ModelConfig


class UpdateModelResponse(BaseModel):
    model: ModelConfig


class DeleteModelResponse(BaseModel):
    id: str = Field(description="The id of the model that was deleted.")


# ----------------------------------------------------------------------------- runs


class Metric(WireResponse):
    name: str
    value: Number
    stage: Literal["training", "evaluation"]
    description: str | None = None
    direction: Direction | None = None


class RunMetrics(WireResponse):
    challenger: Sequence[Metric] = Field(description="This run's model on this run's test set.")
    champion: Sequence[Metric] = Field(description="The champion at run time on the same test set.")


class MetricWithInterval(Metric):
    """`view=extended`: an evaluation metric with its 95 % interval, which resamples the test
    set's independent clusters (patients, or near-duplicate groups where larger)."""

    low: Number | None = Field(None, description="Extension: lower end of the interval.")
    high: Number | None = Field(None, description="Extension: upper end of the interval.")


class RunMetricsExtended(RunMetrics):
    challenger: Sequence[MetricWithInterval] = Field(
        description="This run's model on this run's test set."
    )
    champion: Sequence[MetricWithInterval] = Field(
        description="The champion at run time on the same test set."
    )


class Parameter(WireResponse):
    """A hyperparameter value (values travel as strings)."""

    name: str
    value: str


ApprovalChannel = Literal["api", "ui", "cli", "airflow-required-actions", "system"]
_CHANNEL_DOC = (
    "Extension: the interface the decision came through (absent for decisions recorded before "
    "channels were)."
)


class UserApprovalDecision(WireResponse):
    decision: Literal["approved", "rejected"]
    actor: Literal["user"]
    timestamp: Millis
    description: str | None = None
    user: str
    criteria: dict[str, Any] | None = Field(None, description="Extension: policy evaluation.")
    channel: ApprovalChannel | None = Field(None, description=_CHANNEL_DOC)


class SystemApprovalDecision(WireResponse):
    decision: Literal["approved", "rejected"]
    actor: Literal["system"]
    timestamp: Millis
    description: str | None = None
    criteria: dict[str, Any] | None = Field(
        None, description="Extension: the automatic policy's criteria and whether they passed."
    )
    channel: ApprovalChannel | None = Field(None, description=_CHANNEL_DOC)


ApprovalDecision = Annotated[
    UserApprovalDecision | SystemApprovalDecision, Field(discriminator="actor")
]


class AirflowRunRef(WireResponse):
    """Extension: the Airflow DAG run of a product run (null ids: not linked yet)."""

    dagId: str | None
    runId: str | None


class ModelRun(WireResponse):
    """The reference ModelRun: exactly its fields (the reference SDK forbids others)."""

    model_config = ConfigDict(extra="forbid")

    id: str
    slug: str
    modelId: str
    accountId: str
    modelArtifactUri: str | None = None
    status: Literal["running", "succeeded", "failed"]
    error: str | None = None
    deployStatus: Literal["deploying", "succeeded", "failed"] | None = None
    deployError: str | None = None
    start: Millis
    end: Millis | None = None
    isArchived: bool
    hyperparameters: list[Parameter]
    championId: str | None = None
    metrics: RunMetrics
    approvals: list[ApprovalDecision]
    problemDefinition: MlProblemDefinition
    trainingApproach: StoredTrainingApproach
    deployApproach: StoredDeployApproach


class ModelRunExtended(ModelRun):
    """`view=extended`: the reference ModelRun plus this platform's extensions."""

    model_config = ConfigDict(extra="allow")

    metrics: RunMetricsExtended  # adds each metric's interval
    snapshotId: str | None = Field(None, description="Extension: the curated snapshot used.")
    evaluation: dict[str, Any] | None = Field(
        None,
        description="Extension: the platform's test-split evaluation summary: testExamples "
        "(images scored), testClusters (independent clusters among them), testExamplesLeftOut "
        "(test images left out because a copy is in train), resampling (how the intervals were "
        "made), deltas (challenger - champion per metric, with the paired interval low/high), "
        "confusion matrices, reliability, image digests, operatingPoints (each model's "
        "operating point with its test counts at it), subgroups (per subgroup of the test set "
        "and pair of attributes: images, clusters, small, prevalence, both models' metrics with "
        "intervals and the paired differences) with subgroupSettings, reportUri.",
    )
    operatingPoint: dict[str, Any] | None = Field(
        None,
        description="Extension (imgClf): the operating point chosen on the validation split "
        "(rule, positiveLabel, threshold, chosenOn: what it gave on validation, note), stored "
        "with the run and used by its endpoint; before evaluation, the config's rule.",
    )
    approvalStatus: Literal["approved", "rejected", "pending", "timedOut", "notRequested"] = Field(
        description="Extension: where the run stands in approval (pending also while fewer "
        "people than approvalPolicy.minApprovers have approved)."
    )
    approvalDeadline: Millis | None = Field(
        None, description="Extension: no decision by then and the run ends unapproved."
    )
    airflow: AirflowRunRef
    triggeredBy: str = Field(description="Extension: who or what started the run.")
    gate: dict[str, Any] | None = Field(
        None,
        description="Extension (one run only): the change-control gate: each non-inferiority "
        "rule per stratum (passed, difference, low, high, detail), the objective (worse?), "
        "overrideRequired with overrideReasons, duplicateOfRejected (runs with the same "
        "snapshot, hyperparameters and training image that were rejected), approvals "
        "(required, approvedBy, remaining).",
    )
    provenance: RunProvenance | None = Field(
        None,
        description="Extension (one run only): what exactly trained and served the run: the "
        "training image as the backend resolved it (Docker image id and repository digests, the "
        "local trainer folder's sha256, SageMaker's resolved image), the inference image that "
        "served it at evaluation, the trainer's Python and key libraries, this package's "
        "version and source commit, the Optuna sampler and its seed, the kept trial; tagMoved "
        "lists images whose reference named another digest in an earlier run of the model.",
    )


class CreateRunResponse(BaseModel):
    runId: str = Field(description="The id of the new run.")


class GetRunsResponse(BaseModel):
    """`view=reference` (default)."""

    runs: list[ModelRun]


class GetRunsExtendedResponse(BaseModel):
    """`view=extended`."""

    runs: list[ModelRunExtended]
    totalEntries: int | None = Field(
        None, description="How many runs match (for paging with offset)."
    )


class GetRunResponse(BaseModel):
    """`view=reference` (default)."""

    run: ModelRun


class GetRunExtendedResponse(BaseModel):
    """`view=extended`."""

    run: ModelRunExtended


class GetModelArtifactResponse(BaseModel):
    url: str = Field(description="Downloads model.tar.gz with the same credentials as the API.")


class CreateApprovalDecisionResponse(BaseModel):
    approvalDecision: UserApprovalDecision


class DeploymentResult(BaseModel):
    """Extension: what a deployment did (as `patient-ml runs deploy` prints it)."""

    model_config = ConfigDict(extra="allow")

    runId: str
    deployType: str = Field(description="`edge` or `cloud`.")
    action: Literal["promote", "rollback"] | None = Field(
        None, description="How the champion changed; absent when it already was the champion."
    )
    previousChampionId: str | None = None
    endpoint: str | None = Field(None, description="The new endpoint's URL (cloud).")
    deploymentId: int | None = None
    alreadyDeployed: bool | None = Field(
        None, description="The run already was the deployed champion: nothing was done."
    )
    stoppedEndpoints: list[int] | None = Field(None, description="Older endpoints stopped.")


class CreateDeploymentResponse(BaseModel):
    deployment: DeploymentResult


class CreateRollbackResponse(BaseModel):
    approvalDecision: UserApprovalDecision
    deployment: DeploymentResult


# ----------------------------------------------------------------------------- predictions


class ImageClassificationPrediction(WireResponse):
    """The reference prediction of one label (exactly its fields)."""

    model_config = ConfigDict(extra="forbid")

    index: int = Field(description="The label's index.")
    value: bool = Field(description="Whether this is the label the model predicted.")
    confidence: float


class ImageClassificationPredictionResponse(WireResponse):
    """The reference answer (`view=reference`, the default): exactly its fields."""

    model_config = ConfigDict(extra="forbid")

    predictionType: Literal["imgClf"]
    predictions: list[ImageClassificationPrediction] = Field(
        description="One per label the model answered, highest confidence first."
    )


class ImageClassificationPredictionExtended(WireResponse):
    index: int = Field(description="The label's index.")
    value: bool = Field(description="Whether this is the label the model predicted.")
    confidence: float
    name: str | None = Field(None, description="Extension: the label's name.")


class ImageClassificationPredictionExtendedResponse(WireResponse):
    """`view=extended`: the reference answer plus the model, run and example it came from."""

    predictionType: Literal["imgClf"]
    modelId: str = Field(description="Extension.")
    runId: str = Field(description="Extension: the deployed champion run.")
    problemType: Literal["imgClf"] = Field(description="Extension: same as predictionType.")
    exampleId: str | None = Field(None, description="Extension.")
    predictions: list[ImageClassificationPredictionExtended] = Field(
        description="One per label the model answered, highest confidence first."
    )
    operatingPoint: dict[str, Any] | None = Field(
        None,
        description="Extension: what decided the predicted label (`value`): the champion's "
        "stored operating point (rule, positiveLabel, threshold) and the label at it.",
    )


class ImageSegmentationPredictionResponse(WireResponse):
    """Extension: the reference API answers imgClf predictions only."""

    predictionType: Literal["imgSeg"]
    modelId: str
    runId: str
    problemType: Literal["imgSeg"]
    exampleId: str | None = None
    mask: str = Field(description="Base64 PNG; each pixel is a label index.")
    width: int | None
    height: int | None


PredictionResponse = (
    ImageClassificationPredictionResponse
    | ImageClassificationPredictionExtendedResponse
    | ImageSegmentationPredictionResponse
)


# ----------------------------------------------------------------------------- logs


class LogEvent(WireResponse):
    """An event logged by a component of a model run."""

    type: Literal["logEntry"]
    timestamp: Number = Field(description="Milliseconds since the UTC epoch.")
    payload: str
    stage: str = Field(description="The run's stage or component that logged it.")


class GetModelLogsResponse(BaseModel):
    events: list[LogEvent]
    marker: str | None = Field(None, description="Pass back to get the next page; absent: done.")


# ----------------------------------------------------------------------------- examples, labels


class Image(WireResponse):
    fileId: str


class Mask(WireResponse):
    """The file of an image with per-pixel labels."""

    fileId: str


class Tag(WireResponse):
    name: str
    value: str


class ImageClassificationLabel(WireResponse):
    labelType: Literal["imgClf"]
    classes: list[Number] = Field(description="The label indices (classes) of the image.")
    isConfirmed: bool | None = None
    lastConfirmedBy: str | None = None
    updatedAt: Number | None = Field(None, description="Milliseconds since the UTC epoch.")
    tags: list[Tag] | None = None


class ImageSegmentationLabel(WireResponse):
    labelType: Literal["imgSeg"]
    mask: Mask
    isConfirmed: bool | None = None
    lastConfirmedBy: str | None = None
    updatedAt: Number | None = Field(None, description="Milliseconds since the UTC epoch.")
    tags: list[Tag] | None = None


Label = Annotated[
    ImageClassificationLabel | ImageSegmentationLabel, Field(discriminator="labelType")
]


class LabelInput(RootModel[Label]):
    """The body of PUT .../label: a reference Label (the service checks it field by field)."""


class ImageClassificationExample(WireResponse):
    id: str
    updatedAt: Number = Field(description="Milliseconds since the UTC epoch.")
    exampleType: Literal["imgClf"]
    image: Image
    label: ImageClassificationLabel | None = None


class ImageSegmentationExample(WireResponse):
    id: str
    updatedAt: Number = Field(description="Milliseconds since the UTC epoch.")
    exampleType: Literal["imgSeg"]
    image: Image
    label: ImageSegmentationLabel | None = None


Example = Annotated[
    ImageClassificationExample | ImageSegmentationExample, Field(discriminator="exampleType")
]


class ExampleCounts(BaseModel):
    total: int
    unlabeled: int
    draft: int
    confirmed: int


class GetDatasetExamplesResponse(BaseModel):
    examples: list[Example]
    marker: str | None = Field(None, description="Pass back to get the next page; absent: done.")
    counts: ExampleCounts | None = Field(
        None,
        description="Extension (view=extended): examples the filters select per status, the "
        "status filter left out.",
    )


class GetDatasetExampleResponse(BaseModel):
    example: Example | None = None


class ImageSegmentationArea(WireResponse):
    """The run-length encoded mask of one label."""

    id: str = Field(description="The id of the label this mask is for.")
    rle: list[Annotated[int, Field(ge=0, le=255)]] = Field(description="8-bit unsigned values.")


class ImageSegmentationLabelData(WireResponse):
    """A raw image segmentation, in the format LabelStudio provides."""

    labelType: Literal["imgSeg"]
    projectId: str
    height: int
    width: int
    areas: list[ImageSegmentationArea]


class GetDatasetLabelFileResponse(BaseModel):
    labelData: ImageSegmentationLabelData | None = None


class PutDatasetLabelFileResponse(BaseModel):
    fileId: str = Field(description="The file the label file was saved to.")
