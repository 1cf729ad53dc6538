"""Dataset configs: create, update (label indices never reused), read, delete."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from patient_ml.config.loading import parse_dataset_config
from patient_ml.config.models import DatasetConfig, LabelConfig
from patient_ml.db.models import Dataset, Model
from patient_ml.exceptions import ConfigValidationError, ConflictError, FieldError
from patient_ml.fhir.mapping import default_label_system
from patient_ml.services import wire
from patient_ml.services.configs import ConfigRepository
from patient_ml.services.upstream import resolved_source

LABELS = "problemDefinition.labelDefinition.labels"
MAX_INDEX = "problemDefinition.labelDefinition.maxLabelIndex"


class DatasetRepository(ConfigRepository[Dataset, DatasetConfig]):
    """Datasets: label ids and indices never change, the label system and problem type are
    fixed at creation, a dataset a model uses is kept."""

    def check(
        self,
        session: Session,
        cfg: DatasetConfig,
        stored: Dataset | None,
        errors: list[FieldError],
    ) -> dict[str, Any]:
        source = resolved_source(session, cfg, stored, errors)
        resolved = {} if source is None else {"source": source}
        if stored is None:
            return resolved
        stored_system = stored.problem_definition.get("labelSystem")
        new_system = cfg.problem_definition.label_system
        if new_system is not None and new_system != stored_system:
            errors.append(
                FieldError(
                    "problemDefinition.labelSystem",
                    f"cannot change from {stored_system!r}: the label records in FHIR use it; "
                    "leave it out or repeat the stored value",
                    new_system,
                )
            )
        new_type = cfg.problem_definition.problem_type
        if new_type != stored.problem_type:
            errors.append(
                FieldError(
                    "problemDefinition.problemType",
                    f"cannot change from {stored.problem_type!r}: stored labels and trained "
                    "models depend on it; create a new dataset instead",
                    new_type,
                )
            )
        return resolved

    def columns(self, cfg: DatasetConfig, stored: Dataset | None) -> dict[str, Any]:
        previous = None if stored is None else stored.problem_definition
        return {
            "problem_definition": _with_assigned_labels(cfg, previous=previous),
            "name": cfg.name,
            "description": cfg.description,
            "problem_type": cfg.problem_definition.problem_type,
            "curation": cfg.curation.to_wire(),
            "source": cfg.source.to_wire(),
        }

    def refuse_taken_name(self, session: Session, cfg: DatasetConfig, own_id: str | None) -> None:
        other = session.scalars(select(Dataset).where(Dataset.name == cfg.name)).one_or_none()
        if other is not None and other.id != own_id:
            raise ConflictError(
                f"A dataset named {cfg.name!r} already exists (id {other.id}).",
                fix="choose another name, or update that dataset with `patient-ml datasets update`",
            )

    def refuse_delete(self, session: Session, stored: Dataset) -> None:
        used_by = session.scalar(select(func.count()).where(Model.dataset_id == stored.id))
        if used_by:
            raise ConflictError(
                f"Dataset {stored.name!r} is used by {used_by} model config(s).",
                fix="delete those models or point them at another dataset first",
            )


def dataset_to_wire(dataset: Dataset) -> dict[str, Any]:
    return wire.DatasetConfig.of(dataset)


DATASETS = DatasetRepository(
    row=Dataset,
    kind="dataset",
    parse=parse_dataset_config,
    to_wire=dataset_to_wire,
    reference_input="DatasetConfigInput",
    reference_fields=("name", "description", "problemDefinition"),
)
create_dataset = DATASETS.create
update_dataset = DATASETS.update
get_dataset = DATASETS.get
list_datasets = DATASETS.list
delete_dataset = DATASETS.delete


def _with_assigned_labels(cfg: DatasetConfig, previous: dict[str, Any] | None) -> dict[str, Any]:
    """The problem definition to store: every label has an id and an index, indices of
    existing labels are unchanged, no retired index is reused and maxLabelIndex only grows."""
    problem = cfg.problem_definition
    labels = problem.label_definition.labels
    old_labels = (previous or {}).get("labelDefinition", {}).get("labels", [])
    old_max = (previous or {}).get("labelDefinition", {}).get("maxLabelIndex", -1)
    by_id = {label["id"]: label for label in old_labels}
    by_name = {label["name"].casefold(): label for label in old_labels}
    errors: list[FieldError] = []

    given_max = problem.label_definition.max_label_index
    if previous is not None and given_max is not None and given_max < old_max:
        errors.append(
            FieldError(
                MAX_INDEX,
                f"only grows; it is {old_max} for this dataset, leave it out or set {old_max}",
                given_max,
            )
        )

    resolved: list[tuple[LabelConfig, str, int | None]] = []
    claimed: set[str] = set()
    for i, label in enumerate(labels):
        old = by_id.get(label.id) if label.id else by_name.get(label.name.casefold())
        if old is not None and old["id"] in claimed:
            errors.append(
                FieldError(
                    f"{LABELS}[{i}]",
                    f"refers to stored label {old['name']!r} a second time (by id or name); "
                    "give each label once",
                    label.name,
                )
            )
            continue
        if old is not None:
            claimed.add(old["id"])
            if label.index is not None and label.index != old["index"]:
                errors.append(
                    FieldError(
                        f"{LABELS}[{i}].index",
                        f"cannot change: label {old['name']!r} has had index {old['index']} "
                        f"since it was created; set {old['index']} or leave index out",
                        label.index,
                    )
                )
            resolved.append((label, old["id"], old["index"]))
            continue
        if label.index is not None and previous is not None and label.index <= old_max:
            errors.append(
                FieldError(
                    f"{LABELS}[{i}].index",
                    f"was already used by a label of this dataset (maxLabelIndex is {old_max}); "
                    f"indices are never reused, use {old_max + 1} or above or leave index out",
                    label.index,
                )
            )
        resolved.append((label, label.id or str(uuid.uuid4()), label.index))

    floor = 0 if problem.problem_type == "imgSeg" else -1
    used = [index for _, _, index in resolved if index is not None]
    next_index = max([old_max, floor, given_max or -1, *used]) + 1
    stored = []
    for i, (label, label_id, index) in enumerate(resolved):
        if index is None:
            index = next_index
            next_index += 1
            if index > 255:
                errors.append(
                    FieldError(
                        f"{LABELS}[{i}]",
                        "cannot get an index: all indices up to 255 have been used by this "
                        "dataset; create a new dataset",
                        label.name,
                    )
                )
        stored.append(
            {"id": label_id, "name": label.name, "description": label.description, "index": index}
        )
    if errors:
        raise ConfigValidationError("dataset config", errors)
    max_label_index = max([old_max, given_max or -1, *(s["index"] for s in stored)])
    result = problem.to_wire()
    result["labelDefinition"] = {"labels": stored, "maxLabelIndex": max_label_index}
    result["labelSystem"] = (previous or {}).get("labelSystem") or (
        problem.label_system or default_label_system(cfg.name)
    )
    return result
