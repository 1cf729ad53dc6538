"""Chained models (`source.fromModel`): a dataset whose examples are the images another model's
predictions select. Checked when the dataset is saved (the model exists, the labels are its
dataset's, the source is where its predictions are written, no model feeds itself), resolved
for curation (`UpstreamPlan`) and for the DAG factory (the upstream model's slug, whose
predictions Asset schedules the chained model's training)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from patient_ml.config.models import DatasetConfig, DatasetSource, UpstreamModel
from patient_ml.curation.upstream import UpstreamPlan
from patient_ml.db.models import Dataset, Model
from patient_ml.exceptions import ConflictError, FieldError
from patient_ml.fhir.mapping import default_label_system
from patient_ml.services.common import find_by_id_or_name

FIELD = "source.fromModel"
MAX_CHAIN = 16  # models upstream of one dataset, at most


def resolved_source(
    session: Session, cfg: DatasetConfig, stored: Dataset | None, errors: list[FieldError]
) -> dict[str, Any] | None:
    """The `source` column to store (`fromModel.model` as the model's id), or None when the
    dataset is not chained; problems are added to `errors`."""
    upstream = cfg.source.from_model
    if upstream is None:
        return None
    model = find_by_id_or_name(session, Model, upstream.model)
    if model is None:
        errors.append(
            FieldError(
                f"{FIELD}.model",
                "names no model (by id or name); create the upstream model first, or fix the name",
                upstream.model,
            )
        )
        return None
    upstream_dataset = session.get(Dataset, model.dataset_id)
    if upstream_dataset is None:  # pragma: no cover - a foreign key keeps it
        return None
    _check_labels(upstream, model, upstream_dataset, errors)
    _check_rule(upstream, upstream_dataset, errors)
    _check_same_source(cfg.source, model, upstream_dataset, errors)
    if stored is not None:
        _check_no_cycle(session, stored, model, errors)
    source = cfg.source.to_wire()
    source["fromModel"]["model"] = model.id
    return source


def _check_labels(
    upstream: UpstreamModel, model: Model, dataset: Dataset, errors: list[FieldError]
) -> None:
    known = [label["name"] for label in dataset.problem_definition["labelDefinition"]["labels"]]
    folded = {name.casefold() for name in known}
    for i, name in enumerate(upstream.labels):
        if name.casefold() not in folded:
            errors.append(
                FieldError(
                    f"{FIELD}.labels[{i}]",
                    f"is not a label of dataset {dataset.name!r} of model {model.name!r}; use "
                    f"one of {', '.join(repr(k) for k in known)}",
                    name,
                )
            )


def _check_rule(upstream: UpstreamModel, dataset: Dataset, errors: list[FieldError]) -> None:
    if upstream.min_probability is not None and dataset.problem_type != "imgClf":
        errors.append(
            FieldError(
                f"{FIELD}.minProbability",
                f"applies to classifiers; the upstream model is {dataset.problem_type}, so use "
                "minAreaFraction or leave minProbability out",
                upstream.min_probability,
            )
        )


def _check_same_source(
    source: DatasetSource, model: Model, upstream_dataset: Dataset, errors: list[FieldError]
) -> None:
    """The upstream model's scoring writes to its dataset's source: this dataset must read the
    same one, or it would never see a prediction."""
    theirs = DatasetSource.model_validate(upstream_dataset.source or {})
    mine = (source.type, source.conn_id if source.type == "fhirServer" else source.uri)
    other = (theirs.type, theirs.conn_id if theirs.type == "fhirServer" else theirs.uri)
    if mine != other:
        where = "connId" if theirs.type == "fhirServer" else "uri"
        errors.append(
            FieldError(
                "source",
                f"is not where model {model.name!r} writes its predictions (the source of "
                f"dataset {upstream_dataset.name!r}: type {theirs.type}, {where} {other[1]!r}); "
                "use that source",
                {"type": source.type, where: mine[1]},
            )
        )


def _check_no_cycle(
    session: Session, stored: Dataset, model: Model, errors: list[FieldError]
) -> None:
    """No model may be upstream of its own dataset, directly or through a chain."""
    seen: list[str] = []
    current: Model | None = model
    while current is not None and len(seen) <= MAX_CHAIN:
        seen.append(current.name)
        if current.dataset_id == stored.id:
            errors.append(
                FieldError(
                    f"{FIELD}.model",
                    "would make a cycle (" + " <- ".join([stored.name, *seen]) + "): a model "
                    "cannot take its examples from its own predictions; choose a model upstream",
                    model.name,
                )
            )
            return
        current = _upstream_model(session, session.get(Dataset, current.dataset_id))
    if current is not None:
        errors.append(
            FieldError(
                f"{FIELD}.model",
                f"starts a chain of more than {MAX_CHAIN} models; shorten it",
                model.name,
            )
        )


def _upstream_model(session: Session, dataset: Dataset | None) -> Model | None:
    upstream = (dataset.source or {}).get("fromModel") if dataset is not None else None
    return session.get(Model, upstream["model"]) if isinstance(upstream, dict) else None


def upstream_plan(session: Session, dataset: Dataset) -> UpstreamPlan | None:
    """What selects a chained dataset's images, from the stored config (None: not chained)."""
    source = DatasetSource.model_validate(dataset.source or {})
    upstream = source.from_model
    if upstream is None:
        return None
    model = session.get(Model, upstream.model)
    if model is None:
        raise ConflictError(
            f"Dataset {dataset.name!r} takes its examples from model {upstream.model!r} "
            "(source.fromModel), which no longer exists.",
            fix="point source.fromModel at an existing model, or remove it",
        )
    theirs = session.get_one(Dataset, model.dataset_id)  # a foreign key keeps it
    labels = theirs.problem_definition["labelDefinition"]["labels"]
    wanted = {name.casefold() for name in upstream.labels}
    chosen = [label for label in labels if label["name"].casefold() in wanted]
    return UpstreamPlan(
        model_id=model.id,
        model_name=model.name,
        problem_type=theirs.problem_type,
        label_system=theirs.problem_definition.get("labelSystem")
        or default_label_system(theirs.name),
        indices=frozenset(int(label["index"]) for label in chosen),
        label_names=tuple(label["name"] for label in chosen),
        min_probability=upstream.min_probability,
        min_area_fraction=upstream.min_area_fraction,
    )


def datasets_fed_by(session: Session, model_id: str) -> list[str]:
    """Names of the datasets that take their examples from `model_id`'s predictions."""
    rows = session.execute(select(Dataset.name, Dataset.source)).all()
    return sorted(
        name
        for name, source in rows
        if isinstance(source, dict)
        and isinstance(source.get("fromModel"), dict)
        and source["fromModel"].get("model") == model_id
    )
