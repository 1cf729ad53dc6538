"""Model configs: create, update, read, delete. The champion pointer is changed only by
`patient_ml.services.champion`."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from patient_ml.config.loading import parse_model_config
from patient_ml.config.models import ModelConfig
from patient_ml.config.platform_metrics import PLATFORM_METRICS, per_label, problem_type_of
from patient_ml.db.models import Dataset, Model, Run
from patient_ml.exceptions import ConflictError, FieldError
from patient_ml.naming import dag_id_of, model_slug
from patient_ml.services import wire
from patient_ml.services.common import find_by_id_or_name
from patient_ml.services.configs import ConfigRepository
from patient_ml.services.upstream import datasets_fed_by


class ModelRepository(ConfigRepository[Model, ModelConfig]):
    """Models: the dataset is named by id or name and fits the metrics, the name gives the DAG
    id, the champion is kept (set only by approving a run), a model with runs is kept."""

    def check(
        self, session: Session, cfg: ModelConfig, stored: Model | None, errors: list[FieldError]
    ) -> dict[str, Any]:
        if cfg.champion_id is not None and stored is None:
            errors.append(
                FieldError(
                    "championId",
                    "is set by approving a run, not by the config; remove it",
                    cfg.champion_id,
                )
            )
        elif stored is not None and cfg.champion_id not in (None, stored.champion_id):
            errors.append(
                FieldError(
                    "championId",
                    f"cannot be changed by an update (it is {stored.champion_id!r}); approve a "
                    "run to change the champion, or leave championId out",
                    cfg.champion_id,
                )
            )
        dataset = _resolve_dataset(session, cfg, errors)
        _slug_or_error(cfg, errors)
        if stored is not None and dataset is not None and dataset.id != stored.dataset_id:
            runs = session.scalar(select(func.count()).where(Run.model_id == stored.id))
            if runs:
                errors.append(
                    FieldError(
                        "datasetId",
                        f"cannot change: the model has {runs} run(s) on dataset "
                        f"{stored.dataset_id}, so champion and challenger would be compared on "
                        "different data; create a new model instead",
                        cfg.dataset_id,
                    )
                )
        return {} if dataset is None else {"dataset_id": dataset.id}

    def columns(self, cfg: ModelConfig, stored: Model | None) -> dict[str, Any]:
        return {
            "name": cfg.name,
            "slug": model_slug(cfg.name),
            "description": cfg.description,
            "training_approach": cfg.training_approach.to_wire(),
            "deploy_approach": cfg.deploy_approach.to_wire(),
            "approval_policy": cfg.approval_policy.to_wire(),
            "monitoring": cfg.monitoring.to_wire(),
            "operating_point": cfg.operating_point.to_wire() if cfg.operating_point else None,
            "model_card": cfg.model_card.to_wire() if cfg.model_card else None,
        }

    def refuse_taken_name(self, session: Session, cfg: ModelConfig, own_id: str | None) -> None:
        slug = model_slug(cfg.name)
        other = session.scalars(
            select(Model).where((Model.name == cfg.name) | (Model.slug == slug))
        ).first()
        if other is not None and other.id != own_id:
            same = "name" if other.name == cfg.name else f"DAG id {dag_id_of(slug)}"
            raise ConflictError(
                f"Model {other.name!r} (id {other.id}) already has the {same}.",
                fix="choose a distinct name, or update that model with `patient-ml models update`",
            )

    def refuse_delete(self, session: Session, stored: Model) -> None:
        fed = datasets_fed_by(session, stored.id)
        if fed:
            raise ConflictError(
                f"Model {stored.name!r} selects the examples of dataset(s) "
                f"{', '.join(repr(n) for n in fed)} (their source.fromModel).",
                fix="remove source.fromModel from those datasets, or delete them first",
            )
        runs = session.scalar(select(func.count()).where(Run.model_id == stored.id))
        if runs:
            raise ConflictError(
                f"Model {stored.name!r} has {runs} run(s); its history is kept for audit.",
                fix="keep the model (it only runs when triggered or scheduled) or remove its "
                "schedule",
            )


def model_to_wire(model: Model) -> dict[str, Any]:
    return wire.ModelConfig.of(model)


MODELS = ModelRepository(
    row=Model,
    kind="model",
    parse=parse_model_config,
    to_wire=model_to_wire,
    reference_input="ModelConfigInput",
    reference_fields=("name", "description", "datasetId", "trainingApproach", "deployApproach"),
)
create_model = MODELS.create
update_model = MODELS.update
get_model = MODELS.get
list_models = MODELS.list
delete_model = MODELS.delete


def _resolve_dataset(
    session: Session, cfg: ModelConfig, errors: list[FieldError]
) -> Dataset | None:
    dataset = find_by_id_or_name(session, Dataset, cfg.dataset_id)
    if dataset is None:
        errors.append(
            FieldError(
                "datasetId",
                "names no dataset (by id or name); create it first with "
                "`patient-ml datasets create -f ...` or fix the id",
                cfg.dataset_id,
            )
        )
        return None
    auto = cfg.approval_policy.auto_approval
    named: list[tuple[str, str | None]] = [
        ("trainingApproach.objective.metric", cfg.training_approach.objective.metric)
    ]
    named.append(("approvalPolicy.autoApproval.metric", auto.metric))
    named += [
        (f"approvalPolicy.autoApproval.guardrails[{i}].metric", g.metric)
        for i, g in enumerate(auto.guardrails)
    ]
    fitting = [m.name for m in PLATFORM_METRICS.values() if m.problem_type == dataset.problem_type]
    for field, name in named:
        metric = PLATFORM_METRICS.get(name or "")
        if metric is not None and metric.problem_type != dataset.problem_type:
            alternative = " or a metricDefinition" if field.startswith("training") else ""
            errors.append(
                FieldError(
                    field,
                    f"is a {metric.problem_type} metric but dataset {dataset.name!r} is "
                    f"{dataset.problem_type}; use one of {', '.join(fitting)}{alternative}",
                    metric.name,
                )
            )
    errors += _check_against_labels(cfg, dataset)
    return dataset


def _check_against_labels(cfg: ModelConfig, dataset: Dataset) -> list[FieldError]:
    """The operating point and the non-inferiority rules against the dataset's problem type
    and label names."""
    errors: list[FieldError] = []
    labels = [x["name"] for x in dataset.problem_definition["labelDefinition"]["labels"]]
    shown = ", ".join(repr(n) for n in labels)
    for i, rule in enumerate(cfg.approval_policy.non_inferiority):
        field = f"approvalPolicy.nonInferiority[{i}].metric"
        kind = problem_type_of(rule.metric)
        found = per_label(rule.metric)
        if kind is not None and kind != dataset.problem_type:
            errors.append(
                FieldError(
                    field,
                    f"is a {kind} metric but dataset {dataset.name!r} is {dataset.problem_type}; "
                    "use one of its metrics",
                    rule.metric,
                )
            )
        elif found is not None and found[1] not in labels:
            errors.append(
                FieldError(
                    field,
                    f"names label {found[1]!r}, which dataset {dataset.name!r} does not have; "
                    f"use one of {shown}",
                    rule.metric,
                )
            )
    point = cfg.operating_point
    if point is None:
        return errors
    if dataset.problem_type != "imgClf":
        errors.append(
            FieldError(
                "operatingPoint",
                f"is for classification models, but dataset {dataset.name!r} is "
                f"{dataset.problem_type} (no decision threshold); remove operatingPoint",
                point.to_wire(),
            )
        )
    elif point.positive_label is not None and point.positive_label not in labels:
        errors.append(
            FieldError(
                "operatingPoint.positiveLabel",
                f"is not a label of dataset {dataset.name!r}; use one of {shown}",
                point.positive_label,
            )
        )
    elif point.rule != "argmax" and point.positive_label is None and len(labels) > 2:
        errors.append(
            FieldError(
                "operatingPoint.positiveLabel",
                f"is required by rule {point.rule!r} with {len(labels)} labels: name the label "
                f"the threshold is for (one of {shown}), or use rule 'argmax'",
            )
        )
    return errors


def _slug_or_error(cfg: ModelConfig, errors: list[FieldError]) -> str:
    slug = model_slug(cfg.name)
    if not slug:
        errors.append(
            FieldError(
                "name",
                "needs at least one letter or digit (it names the model's Airflow DAG)",
                cfg.name,
            )
        )
    return slug
