"""A run's provenance (`pml_runs.provenance`, see `patient_ml.training.provenance`): recorded
when tuning ends (the best trial's training image and trainer environment, the package and
the sampler) and when the run is evaluated (the inference image that served the challenger),
read with `tagMoved`: the images whose reference named another digest in the newest earlier
run of the same model that used it."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError
from sqlalchemy import select
from sqlalchemy.orm import Session

from patient_ml.db.models import Run
from patient_ml.training.provenance import (
    ImageRecord,
    RunProvenance,
    SamplerRecord,
    TrainerEnvironment,
    pinned_digest,
    tag_moves,
)

if TYPE_CHECKING:
    from patient_ml.training.provenance import PackageRecord

log = logging.getLogger("patient_ml.provenance")

#: how many earlier runs of the model are searched for the same image reference
EARLIER_RUNS_SEARCHED = 500


def stored_provenance(run: Run) -> RunProvenance | None:
    """The run's stored provenance; None when it has none (or a record this version cannot
    read, which is logged and never breaks a page)."""
    if not run.provenance:
        return None
    try:
        return RunProvenance.model_validate(run.provenance)
    except ValidationError as exc:
        log.warning("run %s: its provenance record is not readable: %s", run.id, exc)
        return None


def _store(run: Run, provenance: RunProvenance) -> None:
    wire = provenance.to_wire()
    wire.pop("tagMoved", None)  # derived on read
    run.provenance = wire


def record_training(
    run: Run,
    *,
    trial: dict[str, Any] | None,
    best_trial: int,
    seed: int,
    package: PackageRecord,
) -> RunProvenance:
    """What trained the run's kept model: `trial` is the best trial's record (its `image` and
    `environment` wire shapes, None when its worker recorded none), `package` a
    `PackageRecord`. Keeps an inference image already recorded."""
    trial = trial or {}
    current = stored_provenance(run) or RunProvenance()
    image = ImageRecord.model_validate(trial["image"]) if trial.get("image") else None
    environment = (
        TrainerEnvironment.model_validate(trial["environment"])
        if trial.get("environment")
        else None
    )
    if image is None:  # a trial recorded before provenance was, or a backend that gave none
        reference = run.config["trainingApproach"]["trainingImage"]
        image = ImageRecord(role="training", reference=reference, backend="unknown")
    updated = current.model_copy(
        update={
            "training": image,
            "trainer": environment,
            "package": package,
            "sampler": SamplerRecord(seed=seed),
            "best_trial": best_trial,
        }
    )
    _store(run, updated)
    return updated


def inference_record(served: dict[str, Any]) -> ImageRecord:
    """The record of the image that served the challenger at evaluation, from the evaluation
    report's `image`, `serverKind` and `imageDigest` (Docker: the repository digest, else the
    image id; local: the trainer folder's sha256; SageMaker: the reference itself)."""
    reference = str(served["image"])
    kind = str(served.get("serverKind") or "unknown")
    digest = str(served.get("imageDigest") or "") or None
    if kind == "sagemaker":
        return ImageRecord(
            role="inference",
            reference=reference,
            backend=kind,
            digest=pinned_digest(digest or reference),
            resolved_image=digest,
        )
    record = ImageRecord(role="inference", reference=reference, backend=kind, digest=digest)
    if kind == "docker" and digest:
        if digest.startswith("sha256:"):
            record = record.model_copy(update={"image_id": digest})
        else:
            record = record.model_copy(update={"repo_digests": [digest]})
    return record


def record_inference(run: Run, served: dict[str, Any]) -> RunProvenance:
    current = stored_provenance(run) or RunProvenance()
    updated = current.model_copy(update={"inference": inference_record(served)})
    _store(run, updated)
    return updated


def provenance_of(session: Session, run: Run) -> RunProvenance | None:
    """The run's provenance with `tagMoved` (one query over the model's earlier runs)."""
    current = stored_provenance(run)
    if current is None:
        return None
    rows = session.execute(
        select(Run.id, Run.slug, Run.provenance)
        .where(
            Run.model_id == run.model_id,
            Run.id != run.id,
            Run.started_at <= run.started_at,
            Run.provenance.is_not(None),
        )
        .order_by(Run.started_at.desc(), Run.id.desc())
        .limit(EARLIER_RUNS_SEARCHED)
    ).all()
    earlier = [(r.id, r.slug, r.provenance) for r in rows if isinstance(r.provenance, dict)]
    return current.model_copy(update={"tag_moved": tag_moves(current, earlier)})


def provenance_wire(session: Session, run: Run, *, public: bool = False) -> dict[str, Any] | None:
    """The wire shape; `public` (the model card, shared outside the server) leaves out the
    host interpreter's path."""
    found = provenance_of(session, run)
    if found is None:
        return None
    if public and found.trainer is not None:
        found = found.model_copy(
            update={"trainer": found.trainer.model_copy(update={"interpreter": None})}
        )
    return found.to_wire()
