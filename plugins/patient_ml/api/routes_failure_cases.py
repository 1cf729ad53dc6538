"""Extension: a run's failure cases (its most confident test errors with saliency maps, see
`patient_ml.evaluation.failure_cases`) and their pictures.

The pictures are patient images: they are served only here, to a user who may read the model
(as the labeling pages serve example images), addressed by case number and picture name, never
by a storage path, and marked private for the browser's cache."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any, Literal

from fastapi import APIRouter, Depends, Path
from fastapi.responses import Response

from patient_ml.api.auth import CurrentUser, authorized_model
from patient_ml.api.deps import Session
from patient_ml.api.guards import refuse_nul_characters
from patient_ml.api.routes_runs import _run_of
from patient_ml.api.schemas import error_responses
from patient_ml.exceptions import NotFoundError

if TYPE_CHECKING:
    from patient_ml.db.models import Run

router = APIRouter(dependencies=[Depends(refuse_nul_characters)])
BASE = "/models/{model_id}/runs/{run_id}/failure-cases"
Picture = Literal["image", "occlusion", "grad-cam"]


def _section(
    session: Session, model_id: str, run_id: str, user: CurrentUser
) -> tuple[Run, dict[str, Any]]:
    run = _run_of(session, authorized_model(session, model_id, user), run_id)
    section = (run.evaluation or {}).get("failureCases")
    if section is None:
        raise NotFoundError(
            f"Run {run.id} has no failure cases (status {run.status!r}).",
            fix="wait for its evaluation; imgSeg runs, runs evaluated before failure cases "
            "existed and PATIENT_ML_FAILURE_CASES=0 have none",
        )
    return run, section


@router.get(
    BASE,
    summary="Extension: the run's most confident test errors with saliency maps and their "
    "faithfulness (as in the run's evaluation.failureCases)",
    responses=error_responses(404, 422),
)
def get_failure_cases(
    model_id: str, run_id: str, session: Session, user: CurrentUser
) -> dict[str, Any]:
    _, section = _section(session, model_id, run_id, user)
    return {"failureCases": section}


@router.get(
    BASE + "/{case}/{picture}.png",
    summary="Extension: a failure case's thumbnail (image) or a saliency map over it",
    response_class=Response,
    responses={200: {"content": {"image/png": {}}}, **error_responses(404, 422)},
)
def get_failure_case_picture(
    model_id: str,
    run_id: str,
    case: Annotated[int, Path(ge=0, le=10_000)],
    picture: Picture,
    session: Session,
    user: CurrentUser,
) -> Response:
    from patient_ml.evaluation.failure_cases import picture_key
    from patient_ml.storage import default_artifact_store

    run, section = _section(session, model_id, run_id, user)
    found = next((c for c in section.get("cases") or [] if c.get("case") == case), None)
    if found is None or picture not in (found.get("pictures") or []):
        raise NotFoundError(
            f"Run {run.id} has no picture {picture!r} for failure case {case}.",
            fix=f"list the cases with GET /v1/patient-ml{BASE}",
        )
    data = default_artifact_store().read_bytes(picture_key(run.id, case, picture))
    # private: only this user's browser may keep it (the image is the patient's)
    return Response(data, media_type="image/png", headers={"Cache-Control": "private, max-age=60"})
