"""Model configs: create, update, read, delete. The champion pointer is changed only by
`patient_ml.services.champion`."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from patient_ml import settings
from patient_ml.config import reference
from patient_ml.config.loading import parse_model_config
from patient_ml.config.models import ModelConfig
from patient_ml.config.platform_metrics import PLATFORM_METRICS
from patient_ml.db.models import Dataset, Model, Run, utcnow
from patient_ml.db.require import present
from patient_ml.exceptions import ConfigValidationError, ConflictError, FieldError
from patient_ml.naming import dag_id_of, model_slug
from patient_ml.services import audit
from patient_ml.services.common import find_by_id_or_name, get_by_id_or_name, to_millis


def create_model(session: Session, data: dict[str, Any], *, actor: str) -> Model:
    cfg = parse_model_config(data)
    _check_reference_strict(cfg)
    errors: list[FieldError] = []
    if cfg.champion_id is not None:
        errors.append(
            FieldError(
                "championId",
                "is set by approving a run, not by the config; remove it",
                cfg.champion_id,
            )
        )
    dataset = _resolve_dataset(session, cfg, errors)
    slug = _slug_or_error(cfg, errors)
    if errors:
        raise ConfigValidationError("model config", errors)
    dataset = present(dataset, "dataset of the model config")
    if cfg.id is not None and session.get(Model, cfg.id) is not None:
        raise ConflictError(
            f"A model with id {cfg.id!r} already exists.",
            fix="leave 'id' out to get a new one, or update that model",
        )
    _refuse_taken_name(session, cfg.name, slug, None)
    model = Model(
        id=cfg.id or str(uuid.uuid4()),
        name=cfg.name,
        slug=slug,
        description=cfg.description,
        dataset_id=dataset.id,
        training_approach=cfg.training_approach.to_wire(),
        deploy_approach=cfg.deploy_approach.to_wire(),
        approval_policy=cfg.approval_policy.to_wire(),
        monitoring=cfg.monitoring.to_wire(),
        created_by=actor,
    )
    session.add(model)
    session.flush()
    audit.record(
        session,
        actor=actor,
        action="model.create",
        entity_type="model",
        entity_id=model.id,
        after=model_to_wire(model),
    )
    return model


def update_model(session: Session, ref: str, data: dict[str, Any], *, actor: str) -> Model:
    """Replace a model config (PUT semantics); the champion is kept."""
    model = get_by_id_or_name(session, Model, ref)
    cfg = parse_model_config(data)
    _check_reference_strict(cfg)
    errors: list[FieldError] = []
    if cfg.id is not None and cfg.id != model.id:
        errors.append(
            FieldError("id", f"does not match the model being updated ({model.id})", cfg.id)
        )
    if cfg.champion_id is not None and cfg.champion_id != model.champion_id:
        errors.append(
            FieldError(
                "championId",
                f"cannot be changed by an update (it is {model.champion_id!r}); approve a run to "
                "change the champion, or leave championId out",
                cfg.champion_id,
            )
        )
    dataset = _resolve_dataset(session, cfg, errors)
    slug = _slug_or_error(cfg, errors)
    if dataset is not None and dataset.id != model.dataset_id:
        runs = session.scalar(select(func.count()).where(Run.model_id == model.id))
        if runs:
            errors.append(
                FieldError(
                    "datasetId",
                    f"cannot change: the model has {runs} run(s) on dataset {model.dataset_id}, "
                    "so champion and challenger would be compared on different data; create a "
                    "new model instead",
                    cfg.dataset_id,
                )
            )
    if errors:
        raise ConfigValidationError("model config", errors)
    dataset = present(dataset, "dataset of the model config")
    _refuse_taken_name(session, cfg.name, slug, model.id)
    before = model_to_wire(model)
    model.name = cfg.name
    model.slug = slug
    model.description = cfg.description
    model.dataset_id = dataset.id
    model.training_approach = cfg.training_approach.to_wire()
    model.deploy_approach = cfg.deploy_approach.to_wire()
    model.approval_policy = cfg.approval_policy.to_wire()
    model.monitoring = cfg.monitoring.to_wire()
    model.revision += 1
    model.updated_at = utcnow()
    session.flush()
    audit.record(
        session,
        actor=actor,
        action="model.update",
        entity_type="model",
        entity_id=model.id,
        before=before,
        after=model_to_wire(model),
    )
    return model


def get_model(session: Session, ref: str) -> Model:
    return get_by_id_or_name(session, Model, ref)


def list_models(session: Session) -> list[Model]:
    return list(session.scalars(select(Model).order_by(Model.created_at, Model.name)))


def delete_model(session: Session, ref: str, *, actor: str) -> str:
    model = get_by_id_or_name(session, Model, ref)
    runs = session.scalar(select(func.count()).where(Run.model_id == model.id))
    if runs:
        raise ConflictError(
            f"Model {model.name!r} has {runs} run(s); its history is kept for audit.",
            fix="keep the model (it only runs when triggered or scheduled) or remove its schedule",
        )
    before = model_to_wire(model)
    session.delete(model)
    session.flush()
    audit.record(
        session,
        actor=actor,
        action="model.delete",
        entity_type="model",
        entity_id=model.id,
        before=before,
    )
    return model.id


def _check_reference_strict(cfg: ModelConfig) -> None:
    """PATIENT_ML_REFERENCE_STRICT=1: refuse a model the reference SDK could not read."""
    wire = {
        "name": cfg.name,
        "description": cfg.description,
        "datasetId": cfg.dataset_id,
        "trainingApproach": cfg.training_approach.to_wire(),
        "deployApproach": cfg.deploy_approach.to_wire(),
    }
    reference.check_strict("ModelConfigInput", wire, "model config")


def model_to_wire(model: Model) -> dict[str, Any]:
    return {
        "id": model.id,
        "accountId": settings.account_id(),
        "name": model.name,
        "description": model.description,
        "datasetId": model.dataset_id,
        "championId": model.champion_id,
        "trainingApproach": model.training_approach,
        "deployApproach": model.deploy_approach,
        "approvalPolicy": model.approval_policy,
        "monitoring": model.monitoring or {},
        "slug": model.slug,
        "dagId": dag_id_of(model.slug),
        "revision": model.revision,
        "createdAt": to_millis(model.created_at),
        "updatedAt": to_millis(model.updated_at),
    }


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
    named = [("trainingApproach.objective.metric", cfg.training_approach.objective.metric)]
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
    return dataset


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


def _refuse_taken_name(session: Session, name: str, slug: str, own_id: str | None) -> None:
    other = session.scalars(
        select(Model).where((Model.name == name) | (Model.slug == slug))
    ).first()
    if other is not None and other.id != own_id:
        same = "name" if other.name == name else f"DAG id {dag_id_of(slug)}"
        raise ConflictError(
            f"Model {other.name!r} (id {other.id}) already has the {same}.",
            fix="choose a distinct name, or update that model with `patient-ml models update`",
        )
