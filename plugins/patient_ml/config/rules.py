"""Rules that span several fields of one config; each failure is a FieldError with the exact
wire path (`trainingApproach.searchSpace[1].min`), the value and a message that says the fix.

Rules that need stored state (label index reuse, dataset existence, name clashes) live in the
service layer, which reports them the same way.
"""

from __future__ import annotations

import math
import re

from patient_ml.config.metric_regex import MetricRegexError, compile_metric_regex
from patient_ml.config.models import (
    CategoricalParameter,
    ContinuousParameter,
    DatasetConfig,
    IntegerParameter,
    ModelConfig,
)
from patient_ml.config.platform_metrics import PER_LABEL_PROBLEM, PLATFORM_METRICS, problem_type_of
from patient_ml.exceptions import FieldError

DAY_MS = 86_400_000
MAX_RETRAIN_EVERY_MS = 366 * DAY_MS

# Docker/OCI image reference grammar (distribution/reference): [host[:port]/]path[:tag][@digest]
_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN = rf"(?:{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*(?::[0-9]+)?)"
_PATH_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|[-]+)[a-z0-9]+)*"
_NAME = rf"(?:{_DOMAIN}/)?{_PATH_COMPONENT}(?:/{_PATH_COMPONENT})*"
_TAG = r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}"  # ASCII: `\w` would take any Unicode digit
_DIGEST = r"[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}"
IMAGE_REFERENCE = re.compile(
    rf"^(?P<name>{_NAME})(?::(?P<tag>{_TAG}))?(?:@(?P<digest>{_DIGEST}))?$"
)

HYPERPARAMETER_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.\-]*$")
# A FHIR token: 'system|code', '|code' or 'code'; neither part may hold whitespace or '|'.
FHIR_TOKEN = re.compile(r"^(?:(?P<system>[^\s|]*)\|)?(?P<code>[^\s|]+)$")
SCHEDULE_PRESETS = {"@hourly", "@daily", "@weekly", "@monthly", "@quarterly", "@yearly"}


def check_image_reference(field: str, value: str) -> list[FieldError]:
    if len(value) > 255 or not IMAGE_REFERENCE.fullmatch(value):
        return [
            FieldError(
                field,
                "is not a valid container image reference; use [registry[:port]/]name[:tag]"
                "[@sha256:digest] with a lowercase name, e.g. "
                "'123456789012.dkr.ecr.us-east-1.amazonaws.com/brain-mri:1.0' or "
                "'patient-ml/img-clf-trainer:latest'",
                value,
            )
        ]
    return []


def check_dataset_config(cfg: DatasetConfig) -> list[FieldError]:
    errors: list[FieldError] = []
    problem = cfg.problem_definition
    labels = problem.label_definition.labels
    base = "problemDefinition.labelDefinition.labels"

    seen_names: dict[str, int] = {}
    seen_ids: dict[str, int] = {}
    seen_indices: dict[int, int] = {}
    for i, label in enumerate(labels):
        key = label.name.casefold()
        if key in seen_names:
            errors.append(
                FieldError(
                    f"{base}[{i}].name",
                    f"duplicates the name of labels[{seen_names[key]}]; label names must be "
                    "unique (case-insensitive), rename one",
                    label.name,
                )
            )
        seen_names.setdefault(key, i)
        if label.id is not None:
            if label.id in seen_ids:
                errors.append(
                    FieldError(
                        f"{base}[{i}].id",
                        f"duplicates the id of labels[{seen_ids[label.id]}]; give each label its "
                        "own id or leave it out to have one assigned",
                        label.id,
                    )
                )
            seen_ids.setdefault(label.id, i)
        if label.index is not None:
            if label.index in seen_indices:
                errors.append(
                    FieldError(
                        f"{base}[{i}].index",
                        f"is already used by labels[{seen_indices[label.index]}]; label indices "
                        "must be unique, pick another or leave it out to have one assigned",
                        label.index,
                    )
                )
            seen_indices.setdefault(label.index, i)
            if problem.problem_type == "imgSeg" and label.index == 0:
                errors.append(
                    FieldError(
                        f"{base}[{i}].index",
                        "is 0, which segmentation masks reserve for background; use 1..255",
                        label.index,
                    )
                )

    if problem.problem_type == "imgClf" and len(labels) < 2:
        errors.append(
            FieldError(
                base,
                "an image-classification dataset needs at least 2 labels (e.g. 'no tumour' "
                "and 'tumour'); add the missing class",
                [label.name for label in labels],
            )
        )

    max_index = problem.label_definition.max_label_index
    used = [label.index for label in labels if label.index is not None]
    if max_index is not None and used and max(used) > max_index:
        errors.append(
            FieldError(
                "problemDefinition.labelDefinition.maxLabelIndex",
                f"is below the highest label index in use ({max(used)}); leave maxLabelIndex "
                "out, the service maintains it",
                max_index,
            )
        )

    codes_field = "problemDefinition.trainingDataFilter.codes"
    seen_codes: set[str] = set()
    for i, code in enumerate(problem.training_data_filter.codes):
        if not FHIR_TOKEN.match(code):
            errors.append(
                FieldError(
                    f"{codes_field}[{i}]",
                    "is not a FHIR token; write 'system|code' (e.g. "
                    "'http://loinc.org|18748-4'), '|code' or 'code', without spaces",
                    code,
                )
            )
        elif code in seen_codes:
            errors.append(
                FieldError(f"{codes_field}[{i}]", "is listed twice; remove the duplicate", code)
            )
        seen_codes.add(code)
    errors += _check_curation(cfg)
    return errors


def _check_curation(cfg: DatasetConfig) -> list[FieldError]:
    errors: list[FieldError] = []
    ratios = cfg.curation.split_ratios
    total = ratios.train + ratios.validation + ratios.test
    if abs(total - 1.0) > 1e-6:
        errors.append(
            FieldError(
                "curation.splitRatios",
                f"add up to {total:g}, not 1; e.g. train 0.7, validation 0.15, test 0.15",
                ratios.to_wire(),
            )
        )
    for split in ("train", "test"):
        if getattr(ratios, split) == 0:
            errors.append(
                FieldError(
                    f"curation.splitRatios.{split}",
                    f"is 0, so no patient would ever be in {split}; give it a share above 0",
                    0,
                )
            )
    source = cfg.source
    if source.type == "ndjson":
        if not source.uri:
            errors.append(
                FieldError(
                    "source.uri",
                    "is required for an ndjson source; give the folder of *.ndjson files as "
                    "file:///path, /path or s3://bucket/prefix",
                )
            )
        elif not re.match(r"^(file://|s3://|/)", source.uri):
            errors.append(
                FieldError(
                    "source.uri",
                    "must be file:///absolute/path, /absolute/path or s3://bucket/prefix",
                    source.uri,
                )
            )
    elif source.uri:
        errors.append(
            FieldError(
                "source.uri",
                "is only for type 'ndjson'; a fhirServer source reads the Airflow connection "
                "named by connId, remove uri",
                source.uri,
            )
        )
    return errors


def check_model_config(cfg: ModelConfig) -> list[FieldError]:
    ta = cfg.training_approach
    errors: list[FieldError] = []
    errors += check_image_reference("trainingApproach.trainingImage", ta.training_image)
    errors += check_image_reference(
        "deployApproach.inferenceImage", cfg.deploy_approach.inference_image
    )
    errors += _check_metric_definitions(cfg)
    errors += _check_objective(cfg)
    errors += _check_search_space(cfg)
    errors += _check_schedule(cfg)
    errors += _check_approval_policy(cfg)
    errors += _check_non_inferiority(cfg)
    errors += _check_operating_point(cfg)
    errors += check_monitoring(cfg)
    if ta.parallel_trials > ta.max_trials:
        errors.append(
            FieldError(
                "trainingApproach.parallelTrials",
                f"is above maxTrials ({ta.max_trials}); extra workers would have nothing to do, "
                f"set parallelTrials to at most {ta.max_trials}",
                ta.parallel_trials,
            )
        )
    return errors


def _check_approval_policy(cfg: ModelConfig) -> list[FieldError]:
    errors: list[FieldError] = []
    seen: set[str] = set()
    for i, user in enumerate(cfg.approval_policy.approvers):
        field = f"approvalPolicy.approvers[{i}]"
        if not user.strip():
            errors.append(FieldError(field, "is empty; give a user name or remove it", user))
        elif user == "system":
            errors.append(
                FieldError(
                    field,
                    "'system' is the automatic policy's actor, not a user; configure "
                    "approvalPolicy.autoApproval instead",
                    user,
                )
            )
        elif user in seen:
            errors.append(FieldError(field, "is listed twice; remove the duplicate", user))
        seen.add(user)
    auto = cfg.approval_policy.auto_approval
    metrics = [("approvalPolicy.autoApproval.metric", auto.metric)] + [
        (f"approvalPolicy.autoApproval.guardrails[{i}].metric", g.metric)
        for i, g in enumerate(auto.guardrails)
    ]
    for field, metric in metrics:
        if metric is not None and metric not in PLATFORM_METRICS:
            names = ", ".join(sorted(PLATFORM_METRICS))
            errors.append(
                FieldError(
                    field,
                    f"is not a metric the platform computes on the test set; use one of {names}",
                    metric,
                )
            )
    return errors


def _check_non_inferiority(cfg: ModelConfig) -> list[FieldError]:
    policy = cfg.approval_policy
    errors: list[FieldError] = []
    seen: dict[tuple[str, str], int] = {}
    for i, rule in enumerate(policy.non_inferiority):
        field = f"approvalPolicy.nonInferiority[{i}]"
        if problem_type_of(rule.metric) is None:
            headline = ", ".join(sorted(PLATFORM_METRICS))
            families = ", ".join(sorted(PER_LABEL_PROBLEM))
            errors.append(
                FieldError(
                    f"{field}.metric",
                    f"is not a metric the platform computes on the test set; use one of "
                    f"{headline}, or <family>:<label name> with family one of {families} "
                    "(e.g. sensitivity:tumor)",
                    rule.metric,
                )
            )
        key = (rule.metric, rule.scope)
        if key in seen:
            errors.append(
                FieldError(
                    f"{field}.metric",
                    f"repeats nonInferiority[{seen[key]}] (same metric and scope); keep one "
                    "rule with the margin you mean",
                    rule.metric,
                )
            )
        seen.setdefault(key, i)
    wanted = policy.min_approvers
    if wanted > 1 and policy.auto_approval.enabled:
        errors.append(
            FieldError(
                "approvalPolicy.minApprovers",
                f"is {wanted} while autoApproval is enabled, but the automatic policy approves "
                "alone (as 'system'); turn autoApproval off for a two-person rule, or set "
                "minApprovers to 1",
                wanted,
            )
        )
    if policy.approvers and len(policy.approvers) < wanted:
        errors.append(
            FieldError(
                "approvalPolicy.minApprovers",
                f"is {wanted} but approvers names only {len(policy.approvers)}, so no run "
                f"could ever be approved; add approvers or lower minApprovers",
                wanted,
            )
        )
    return errors


def _check_operating_point(cfg: ModelConfig) -> list[FieldError]:
    point = cfg.operating_point
    if point is None:
        return []
    errors: list[FieldError] = []
    targeted = point.rule in ("targetSensitivity", "targetSpecificity")
    if targeted and point.target is None:
        errors.append(
            FieldError(
                "operatingPoint.target",
                f"is required by rule {point.rule!r}: the share to reach on the validation "
                "split, e.g. 0.95",
            )
        )
    if not targeted and point.target is not None:
        errors.append(
            FieldError(
                "operatingPoint.target",
                f"is only for rules targetSensitivity and targetSpecificity, not {point.rule!r}; "
                "remove it",
                point.target,
            )
        )
    if point.rule == "argmax" and point.positive_label is not None:
        errors.append(
            FieldError(
                "operatingPoint.positiveLabel",
                "is not used by rule 'argmax' (the most confident label wins, no threshold); "
                "remove it, or choose a threshold rule such as 'youden'",
                point.positive_label,
            )
        )
    return errors


def _check_metric_definitions(cfg: ModelConfig) -> list[FieldError]:
    errors: list[FieldError] = []
    seen: dict[str, int] = {}
    for i, md in enumerate(cfg.training_approach.metric_definitions):
        base = f"trainingApproach.metricDefinitions[{i}]"
        if md.name in seen:
            errors.append(
                FieldError(
                    f"{base}.name",
                    f"duplicates metricDefinitions[{seen[md.name]}]; metric names must be unique",
                    md.name,
                )
            )
        seen.setdefault(md.name, i)
        if md.name in PLATFORM_METRICS:
            errors.append(
                FieldError(
                    f"{base}.name",
                    "is the name of a metric the platform computes on the test set; give the "
                    f"training-log metric another name, e.g. 'validation:{md.name}'",
                    md.name,
                )
            )
        try:
            groups = compile_metric_regex(md.regex).groups
        except MetricRegexError as exc:
            errors.append(FieldError(f"{base}.regex", str(exc), md.regex))
            continue
        if groups != 1:
            errors.append(
                FieldError(
                    f"{base}.regex",
                    f"has {groups} capture groups but needs exactly 1 around the number; use "
                    "(?:...) for other groups, e.g. 'val_loss=([0-9.eE+-]+)'",
                    md.regex,
                )
            )
    return errors


def _check_objective(cfg: ModelConfig) -> list[FieldError]:
    objective = cfg.training_approach.objective
    defined = [md.name for md in cfg.training_approach.metric_definitions]
    platform = PLATFORM_METRICS.get(objective.metric)
    if platform is None and objective.metric not in defined:
        names = ", ".join(repr(n) for n in [*defined, *PLATFORM_METRICS]) or "none"
        return [
            FieldError(
                "trainingApproach.objective.metric",
                "names no metric; use the name of one of metricDefinitions or a "
                f"platform metric (one of {names})",
                objective.metric,
            )
        ]
    if platform is not None and platform.direction != objective.direction:
        better = "higher" if platform.direction == "maximize" else "lower"
        return [
            FieldError(
                "trainingApproach.objective.direction",
                f"is the wrong way for {platform.name} ({better} is better); set direction to "
                f"'{platform.direction}'",
                objective.direction,
            )
        ]
    return []


def _check_search_space(cfg: ModelConfig) -> list[FieldError]:
    ta = cfg.training_approach
    errors: list[FieldError] = []
    seen: dict[str, int] = {}
    for i, param in enumerate(ta.search_space):
        base = f"trainingApproach.searchSpace[{i}]"
        if param.name in seen:
            errors.append(
                FieldError(
                    f"{base}.name",
                    f"duplicates searchSpace[{seen[param.name]}]; hyperparameter names must be "
                    "unique",
                    param.name,
                )
            )
        seen.setdefault(param.name, i)
        if not HYPERPARAMETER_NAME.match(param.name):
            errors.append(
                FieldError(
                    f"{base}.name",
                    "must start with a letter or '_' and hold only letters, digits, '_', '.' "
                    "and '-'",
                    param.name,
                )
            )
        if isinstance(param, CategoricalParameter):
            errors += _check_categorical(base, param)
        else:
            errors += _check_numeric(base, param)
    if not ta.search_space and ta.max_trials > 1:
        errors.append(
            FieldError(
                "trainingApproach.searchSpace",
                f"is empty, so all {ta.max_trials} trials would train the same model; add a "
                "hyperparameter to search or set maxTrials to 1",
                [],
            )
        )
    return errors


def _check_categorical(base: str, param: CategoricalParameter) -> list[FieldError]:
    if not param.values:
        return [
            FieldError(f"{base}.values", "is empty; list at least one value to try", param.values)
        ]
    errors = []
    if any(not v for v in param.values):
        errors.append(
            FieldError(f"{base}.values", "holds an empty string; remove it", param.values)
        )
    if len(set(param.values)) != len(param.values):
        errors.append(
            FieldError(f"{base}.values", "lists a value twice; remove duplicates", param.values)
        )
    return errors


def _check_numeric(base: str, param: ContinuousParameter | IntegerParameter) -> list[FieldError]:
    errors: list[FieldError] = []
    for bound in ("min", "max"):
        value = getattr(param, bound)
        if not math.isfinite(value):
            errors.append(FieldError(f"{base}.{bound}", "must be a finite number", value))
        elif isinstance(param, IntegerParameter) and value != int(value):
            errors.append(
                FieldError(
                    f"{base}.{bound}",
                    "must be a whole number for an integer parameter; round it or make the "
                    "parameter 'continuous'",
                    value,
                )
            )
    if errors:
        return errors
    if param.min >= param.max:
        errors.append(
            FieldError(
                f"{base}.max",
                f"must be greater than min ({param.min:g}); swap the bounds or widen the range",
                param.max,
            )
        )
    if param.scale == "log" and param.min <= 0:
        errors.append(
            FieldError(
                f"{base}.min",
                "must be greater than 0 for a log scale; raise min (e.g. 1e-5) or use "
                "scale 'linear'",
                param.min,
            )
        )
    if param.scale == "reverseLog":
        if isinstance(param, IntegerParameter):
            errors.append(
                FieldError(
                    f"{base}.scale",
                    "reverseLog is only for continuous parameters in [0, 1); use 'log' or "
                    "'linear' for integers",
                    param.scale,
                )
            )
        elif param.min < 0 or param.max >= 1:
            errors.append(
                FieldError(
                    f"{base}.max" if param.max >= 1 else f"{base}.min",
                    "reverseLog needs 0 <= min < max < 1 (it samples values close to 1, such "
                    "as momentum); adjust the range or use scale 'linear'",
                    param.max if param.max >= 1 else param.min,
                )
            )
    return errors


def _check_schedule(cfg: ModelConfig) -> list[FieldError]:
    ta = cfg.training_approach
    errors: list[FieldError] = []
    if ta.retrain_every is not None:
        if not math.isfinite(ta.retrain_every) or ta.retrain_every < DAY_MS:
            errors.append(
                FieldError(
                    "trainingApproach.retrainEvery",
                    f"is in milliseconds and must be at least one day ({DAY_MS}); e.g. "
                    f"{7 * DAY_MS} for weekly",
                    ta.retrain_every,
                )
            )
        elif ta.retrain_every > MAX_RETRAIN_EVERY_MS:
            errors.append(
                FieldError(
                    "trainingApproach.retrainEvery",
                    f"is more than 366 days ({MAX_RETRAIN_EVERY_MS} ms); use a shorter interval "
                    "or leave it out and trigger runs by hand",
                    ta.retrain_every,
                )
            )
    if ta.schedule is not None:
        if ta.retrain_every is not None:
            errors.append(
                FieldError(
                    "trainingApproach.schedule",
                    "is set together with retrainEvery; keep only one of the two",
                    ta.schedule,
                )
            )
        elif ta.schedule not in SCHEDULE_PRESETS and not _is_cron(ta.schedule):
            presets = ", ".join(sorted(SCHEDULE_PRESETS))
            errors.append(
                FieldError(
                    "trainingApproach.schedule",
                    f"is not a cron expression or preset; use e.g. '0 3 * * 1' or one of {presets}",
                    ta.schedule,
                )
            )
    return errors


def _is_cron(expression: str) -> bool:
    from croniter import croniter

    return len(expression.split()) == 5 and croniter.is_valid(expression)


def check_monitoring(cfg: ModelConfig) -> list[FieldError]:
    """The `monitoring` section: a valid schedule, a window that can reach its minimum, a
    live-performance metric of the platform."""
    mon = cfg.monitoring
    errors: list[FieldError] = []
    if mon.schedule not in SCHEDULE_PRESETS and not _is_cron(mon.schedule):
        presets = ", ".join(sorted(SCHEDULE_PRESETS))
        errors.append(
            FieldError(
                "monitoring.schedule",
                f"is not a cron expression or preset; use e.g. '0 * * * *' or one of {presets}",
                mon.schedule,
            )
        )
    if mon.min_samples > mon.window_size:
        errors.append(
            FieldError(
                "monitoring.minSamples",
                f"is above windowSize ({mon.window_size}), so no window could ever be checked; "
                f"set minSamples to at most {mon.window_size}",
                mon.min_samples,
            )
        )
    metric = mon.live_performance.metric
    if metric is not None:
        known = PLATFORM_METRICS.get(metric)
        problem = None if known is None else known.problem_type
        if known is None or problem != "imgClf":
            names = ", ".join(sorted(n for n, m in PLATFORM_METRICS.items()
                                     if m.problem_type == "imgClf"))  # fmt: skip
            errors.append(
                FieldError(
                    "monitoring.livePerformance.metric",
                    f"is not a platform imgClf metric; use one of {names}",
                    metric,
                )
            )
    return errors
