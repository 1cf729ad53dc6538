"""The two views of the API's answers: `reference` (the default) and `extended` (`?view=extended`).

The reference view is what a client built for the reference API reads: where the reference SDK
forbids unknown fields (a ModelRun, a prediction), exactly the reference fields; lists leave out
the items the reference SDK cannot read (e.g. a model whose training image is not an AWS ECR
name, or with more than 30 `maxTrials`) and name them in the `Patient-ML-Omitted` response
header, so one such item never makes a reference client's whole list fail; when it can read none
of them, they are answered as they are rather than as an empty list. The extended view
adds this platform's extension fields and lists everything; reference clients never ask for it.
"""

from __future__ import annotations

import logging
from typing import Annotated, Any, Literal

from fastapi import Query, Response
from pydantic import BaseModel

from patient_ml.config import reference

log = logging.getLogger(__name__)

OMITTED_HEADER = "Patient-ML-Omitted"
ViewName = Literal["reference", "extended"]
View = Annotated[
    ViewName,
    Query(
        description="`reference` (default): the reference API's shapes, as the reference SDK "
        "reads them (lists leave out what it cannot read and name it in the "
        f"`{OMITTED_HEADER}` header; never all of it: a list it can read none of is answered "
        "as it is). `extended`: plus this platform's extension fields "
        "(e.g. a run's snapshotId, evaluation, approvalStatus, airflow), every item listed."
    ),
]
OMITTED_DOC = {
    OMITTED_HEADER: {
        "description": "View `reference` only, when items were left out: how many, why "
        "and their ids (read them with `view=extended`).",
        "schema": {"type": "string"},
    }
}


def extended(view: ViewName) -> bool:
    return view == "extended"


def readable(
    kind: str, items: list[dict[str, Any]], response: Response, what: str
) -> list[dict[str, Any]]:
    """The reference view of a list: the items the reference SDK reads as `kind`; the others
    are named in the `Patient-ML-Omitted` header (and the server log, without values).

    Never an empty list that hides items, though: when the SDK can read none of them (e.g. every
    run of a model whose training image is not an AWS ECR name), they are all answered as they
    are, as a single read answers them, so that the SDK fails naming the field it refuses
    instead of showing `[]` (the SDK drops response headers); the header says so too."""
    kept, omitted = [], []
    for item in items:
        found = reference.problems(kind, item)
        if found:
            omitted.append((str(item.get("id")), ", ".join(p.field for p in found)))
        else:
            kept.append(item)
    if not omitted:
        return kept
    ids = "; ".join(f"{item_id} ({fields})" for item_id, fields in omitted)
    if kept:
        note = (
            f"{len(omitted)} {what}(s) left out that {reference.sdk_release()} cannot read: "
            f"{ids}; list them with view=extended"
        )
    else:
        note = (
            f"none of the {len(omitted)} {what}(s) can be read by {reference.sdk_release()}: "
            f"{ids}; answered as they are rather than as an empty list (a reference client "
            "fails naming the field); list them with view=extended"
        )
    response.headers[OMITTED_HEADER] = note.encode("ascii", "replace").decode("ascii")
    log.warning("Reference view: %s", note)
    return kept or items


def in_view(
    view: ViewName,
    shapes: tuple[type[BaseModel], type[BaseModel]],
    content: dict[str, Any],
    response: Response,
) -> Response:
    """The answer of a route whose `response_model` is the union of its two views' shapes
    (`reference`, `extended`), validated as the view's own shape and written as JSON here, in
    the handler's worker thread, with the headers set on `response`.

    FastAPI would do the same after the handler returned, but through the union: it tries each
    member, and writes the JSON in the event loop, where every other request of the server
    waits meanwhile (a page of 100 runs is 150 KB; `benchmarks/api_load.py`). The declared
    union still documents the route."""
    shape = shapes[1] if extended(view) else shapes[0]
    body = shape.model_validate(content).model_dump_json(by_alias=True, exclude_unset=True)
    answer = Response(body, media_type="application/json")
    answer.headers.raw.extend(response.headers.raw)  # as FastAPI does with its own answer
    return answer


def reference_prediction(answer: dict[str, Any]) -> dict[str, Any]:
    """The reference PredictionResponse of an imgClf answer (imgSeg answers, an extension, are
    returned whole: the reference API has no imgSeg prediction)."""
    if answer.get("predictionType") != "imgClf":
        return answer
    shape = reference.project("ImageClassificationPredictionResponse", answer)
    shape["predictions"] = [
        reference.project("ImageClassificationPrediction", p) for p in answer["predictions"]
    ]
    return shape
