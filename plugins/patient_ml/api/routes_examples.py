"""Examples of a dataset, their labels and segmentation label files (reference shapes).

Examples are read from the dataset's FHIR source as it is now; a saved label is written back to
that source as an Observation (see `patient_ml.services.labels`). Reading needs read access to
Airflow DAGs; saving labels and label files needs edit access.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any, Literal

from fastapi import APIRouter, Body, Depends, Header, Query
from fastapi.responses import Response

from patient_ml.api.auth import CurrentUser, Method, require_dag, user_name
from patient_ml.api.deps import Engine
from patient_ml.api.guards import refuse_nul_characters
from patient_ml.api.schemas import (
    Example,
    GetDatasetExampleResponse,
    GetDatasetExamplesResponse,
    GetDatasetLabelFileResponse,
    ImageSegmentationLabelData,
    LabelInput,
    PutDatasetLabelFileResponse,
    error_responses,
)
from patient_ml.api.views import View, extended
from patient_ml.exceptions import FieldError, InvalidInputError
from patient_ml.services.wire import DocumentedAs

if TYPE_CHECKING:
    from patient_ml.services.labels import DatasetContext

router = APIRouter(dependencies=[Depends(refuse_nul_characters)])
EXCLUDE_UNSET: dict[str, Any] = {"response_model_exclude_unset": True}
TrueFalse = Literal["true", "false"]
BASE = "/datasets/{dataset_id}/examples"


def _context(
    engine: Engine, dataset_id: str, user: CurrentUser, method: Method = "GET"
) -> DatasetContext:
    from patient_ml.hooks.fhir import fhir_client
    from patient_ml.services.labels import dataset_context

    require_dag(user, method, None)
    return dataset_context(engine, dataset_id, fhir_client_factory=fhir_client)


def _flag(value: TrueFalse | None) -> bool | None:
    return None if value is None else value == "true"


@router.get(
    BASE,
    summary="Examples of the dataset, filtered by label state, paged by marker",
    response_model=GetDatasetExamplesResponse,
    responses=error_responses(404, 409, 422, 502),
    **EXCLUDE_UNSET,
)
def list_examples(
    dataset_id: str,
    engine: Engine,
    user: CurrentUser,
    projectId: Annotated[str | None, Query(description="Accepted for compatibility.")] = None,
    hasLabel: Annotated[TrueFalse | None, Query()] = None,
    hasUnconfirmedLabel: Annotated[TrueFalse | None, Query()] = None,
    marker: Annotated[str | None, Query(description="From the previous page.")] = None,
    patientId: Annotated[str | None, Query(description="Only this Patient's images.")] = None,
    cohortId: Annotated[str | None, Query(description="Not supported: leave it out.")] = None,
    limit: Annotated[int, Query(ge=1, le=1000, description="Extension: page size.")] = 100,
    status: Annotated[
        str | None,
        Query(
            description="Extension: `unlabeled`, `draft` (also disagreeing confirmed "
            "labels) or `confirmed`."
        ),
    ] = None,
    labelIndex: Annotated[
        int | None, Query(ge=0, le=255, description="Extension (imgClf): examples of this label.")
    ] = None,
    split: Annotated[
        str | None,
        Query(
            description="Extension: the patient's split (`train`, `validation`, `test`) or "
            "`unassigned` (the patient is in no snapshot yet)."
        ),
    ] = None,
    patientKey: Annotated[
        str | None,
        Query(
            max_length=64,
            description="Extension: the pseudonymous patient key curation "
            "gives the patient (shown in the extended view).",
        ),
    ] = None,
    hasPrediction: Annotated[
        TrueFalse | None,
        Query(
            description="Extension: only examples the current champion of `modelId` has "
            "predicted (`true`: a labelling hint was answered for the example's current image) "
            "or has not (`false`)."
        ),
    ] = None,
    modelId: Annotated[
        str | None,
        Query(
            max_length=200,
            description="Extension: a model of this dataset, whose champion's predictions "
            "`hasPrediction` means; the extended view then shows each example's `prediction`.",
        ),
    ] = None,
    view: View = "reference",
) -> dict[str, Any]:
    from patient_ml.services.examples import Filters
    from patient_ml.services.labels import champion_predictions, list_examples

    _refuse_cohort(cohortId)
    if hasPrediction is not None and not modelId:
        raise InvalidInputError(
            "hasPrediction needs the model whose champion's predictions count.",
            [FieldError("modelId", "is required with hasPrediction", modelId)],
            fix="add modelId=<a model of this dataset>",
        )
    ctx = _context(engine, dataset_id, user)
    filters = Filters(
        has_label=_flag(hasLabel),
        has_unconfirmed_label=_flag(hasUnconfirmedLabel),
        patient_id=patientId,
        status=status,
        label_index=labelIndex,
        split=split,
        patient_key=patientKey or None,
        has_prediction=_flag(hasPrediction),
        predicted=champion_predictions(engine, ctx, modelId) if modelId else None,
    )
    return list_examples(
        ctx,
        marker=marker,
        limit=limit,
        filters=filters,
        extended=extended(view),
        engine=engine,
    )


@router.get(
    BASE + "/{example_id}",
    summary="One example with its label",
    response_model=GetDatasetExampleResponse,
    responses=error_responses(404, 409, 422, 502),
    **EXCLUDE_UNSET,
)
def get_example(
    dataset_id: str,
    example_id: str,
    engine: Engine,
    user: CurrentUser,
    projectId: Annotated[str | None, Query(description="Accepted for compatibility.")] = None,
    cohortId: Annotated[str | None, Query(description="Not supported: leave it out.")] = None,
    view: View = "reference",
) -> dict[str, Any]:
    from patient_ml.services.labels import get_example

    _refuse_cohort(cohortId)
    ctx = _context(engine, dataset_id, user)
    return {"example": get_example(ctx, example_id, extended=extended(view))}


@router.get(
    BASE + "/{example_id}/image",
    summary="Extension: the example's image file",
    response_class=Response,
    responses={200: {"content": {"image/*": {}}}, **error_responses(404, 409, 502)},
)
def get_example_image(
    dataset_id: str, example_id: str, engine: Engine, user: CurrentUser
) -> Response:
    from patient_ml.services.labels import example_image

    data, content_type = example_image(_context(engine, dataset_id, user), example_id)
    return Response(data, media_type=content_type, headers={"Cache-Control": "private"})


@router.get(
    BASE + "/{example_id}/preview.png",
    summary="Extension: the example's image as PNG for a browser (DICOM converted), optionally "
    "scaled down to a thumbnail",
    response_class=Response,
    responses={200: {"content": {"image/png": {}}}, **error_responses(404, 409, 422, 502)},
)
def get_example_preview(
    dataset_id: str,
    example_id: str,
    engine: Engine,
    user: CurrentUser,
    size: Annotated[
        int | None,
        Query(description="Longest side in pixels: 64, 128, 256 or 512; left out: full size."),
    ] = None,
) -> Response:
    from patient_ml.services.labels import PREVIEW_SIZES, example_preview

    if size is not None and size not in PREVIEW_SIZES:
        raise InvalidInputError(
            f"A preview of {size} pixels is not offered.",
            [FieldError("size", f"must be one of {', '.join(map(str, PREVIEW_SIZES))}", size)],
            fix="leave size out for the full image",
        )
    data = example_preview(_context(engine, dataset_id, user), example_id, size)
    # private: only this user's browser may keep it (the image is the patient's)
    return Response(data, media_type="image/png", headers={"Cache-Control": "private, max-age=60"})


@router.get(
    BASE + "/{example_id}/hint",
    summary="Extension: the deployed champion's prediction for the example, as a labelling "
    "hint (never saved as a label, not in the prediction log; its summary is kept for the "
    "examples list's hasPrediction filter)",
    responses=error_responses(404, 409, 422, 502),
)
def get_label_hint(
    dataset_id: str,
    example_id: str,
    engine: Engine,
    user: CurrentUser,
    modelId: Annotated[str, Query(description="A model of this dataset with a champion.")],
) -> dict[str, Any]:
    from patient_ml.services.labels import label_hint

    ctx = _context(engine, dataset_id, user)
    return {"hint": label_hint(engine, ctx, example_id, modelId)}


@router.put(
    BASE + "/{example_id}/label",
    summary="Save the example's label (draft or confirmed); answers the example",
    response_model=Example,
    responses=error_responses(404, 409, 422, 502),
    **EXCLUDE_UNSET,
)
def put_label(
    dataset_id: str,
    example_id: str,
    body: Annotated[
        dict[str, Any],
        Body(description="The reference Label (imgClf or imgSeg)."),
        DocumentedAs(LabelInput),
    ],
    engine: Engine,
    user: CurrentUser,
    if_match: Annotated[
        str | None,
        Header(
            alias="If-Match",
            description="Extension: the example's `labelVersion` (extended view) the label was "
            "made from (`none`: it had no label); a save after someone else's is refused (409).",
        ),
    ] = None,
) -> dict[str, Any]:
    from patient_ml.services.labels import put_label

    ctx = _context(engine, dataset_id, user, "PUT")
    return put_label(engine, ctx, example_id, body, actor=user_name(user), if_match=if_match)


@router.get(
    BASE + "/{example_id}/label-file",
    summary="The example's segmentation mask as RLE (labelData null: no mask)",
    response_model=GetDatasetLabelFileResponse,
    responses=error_responses(404, 409, 422, 502),
)
def get_label_file(
    dataset_id: str, example_id: str, engine: Engine, user: CurrentUser
) -> dict[str, Any]:
    from patient_ml.services.labels import get_label_file

    return {"labelData": get_label_file(_context(engine, dataset_id, user), example_id)}


@router.put(
    BASE + "/{example_id}/label-file",
    summary="Store a segmentation mask given as RLE; answers its fileId for PUT label",
    response_model=PutDatasetLabelFileResponse,
    responses=error_responses(404, 409, 422, 502),
)
def put_label_file(
    dataset_id: str,
    example_id: str,
    body: Annotated[
        dict[str, Any],
        Body(description="ImageSegmentationLabelData (RLE areas)."),
        DocumentedAs(ImageSegmentationLabelData),
    ],
    engine: Engine,
    user: CurrentUser,
) -> dict[str, Any]:
    from patient_ml.services.labels import put_label_file

    ctx = _context(engine, dataset_id, user, "PUT")
    return {"fileId": put_label_file(ctx, example_id, body)}


def _refuse_cohort(cohort_id: str | None) -> None:
    if cohort_id:
        raise InvalidInputError(
            "Cohort filters are not supported.",
            [FieldError("cohortId", "is not supported by this API", cohort_id)],
            fix="leave cohortId out; filter by patientId instead",
        )
