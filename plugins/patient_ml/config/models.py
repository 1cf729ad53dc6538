"""Pydantic v2 models of DatasetConfig and ModelConfig, wire-compatible with the reference API.

Field names on the wire are the reference API's camelCase names (`problemDefinition`,
`trainingApproach.maxTrials`, ...); Python code uses snake_case attributes. Structural rules
(types, required fields, enumerations, simple ranges) live here so the OpenAPI document shows
them; rules that span several fields live in `patient_ml.config.rules`, and rules that need
stored state (label index reuse, dataset existence) live in the service layer.

Fields we add beyond the reference API are marked "extension" below; no reference field is
renamed.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from annotated_types import GroupedMetadata
from pydantic import (
    AfterValidator,
    Field,
    StringConstraints,
    WithJsonSchema,
    field_validator,
    model_validator,
)

from patient_ml.config.identifiers import (
    ID_PATTERN,
    MAX_ID_LENGTH,
    id_problem,
    normalized_name,
    text_problem,
)
from patient_ml.config.limits import (
    MAX_CODE_LENGTH,
    MAX_DESCRIPTION_LENGTH,
    MAX_LABEL_DESCRIPTION_LENGTH,
    MAX_LIST_ITEMS,
    MAX_NAME_LENGTH,
    MAX_PARALLEL_TRIALS,
    MAX_SEARCH_PARAMETERS,
    MAX_TRIALS_LIMIT,
    MAX_URI_LENGTH,
)
from patient_ml.config.monitoring import MonitoringSettings
from patient_ml.config.wire import WireModel

ProblemType = Literal["imgClf", "imgSeg"]
Scale = Literal["auto", "linear", "log", "reverseLog"]
Direction = Literal["minimize", "maximize"]

MAX_FILTER_CODES = 50


def _check_id(value: str) -> str:
    problem = id_problem(value)
    if problem:
        raise ValueError(problem)
    return value


def _check_name(value: str) -> str:
    problem = text_problem(value)
    if problem:
        raise ValueError(problem)
    return normalized_name(value)  # NFC: two spellings of one name are one name


def _check_text(value: str) -> str:
    problem = text_problem(value, multiline=True)
    if problem:
        raise ValueError(problem)
    return value


@dataclass(frozen=True)
class Name(GroupedMetadata):
    """Single-line text: bounded, no control characters (NUL included), no bidi controls.

    Metadata for `Annotated[str, Name(255)]` (pydantic expands it into its rules)."""

    max_length: int = MAX_NAME_LENGTH
    min_length: int = 1

    def __iter__(self) -> Iterator[Any]:
        yield StringConstraints(min_length=self.min_length, max_length=self.max_length)
        yield AfterValidator(_check_name)


@dataclass(frozen=True)
class Text(GroupedMetadata):
    """Free text (descriptions): bounded, newlines and tabs allowed, no other controls.

    Metadata for `Annotated[str, Text()]`."""

    max_length: int = MAX_DESCRIPTION_LENGTH

    def __iter__(self) -> Iterator[Any]:
        yield StringConstraints(max_length=self.max_length)
        yield AfterValidator(_check_text)


# An id that names folders, storage keys and files: see patient_ml.config.identifiers.
Identifier = Annotated[
    str,
    AfterValidator(_check_id),
    WithJsonSchema({"type": "string", "pattern": ID_PATTERN, "maxLength": MAX_ID_LENGTH}),
]


# ----------------------------------------------------------------------------- datasets


class LabelConfig(WireModel):
    id: Identifier | None = Field(None, description="UUID of the label; assigned when omitted.")
    name: Annotated[str, Name()] = Field(description="Unique name of the label.")
    description: Annotated[str, Text(MAX_LABEL_DESCRIPTION_LENGTH)] = ""
    index: int | None = Field(
        None,
        ge=0,
        le=255,
        description="Integer stored in training data for this label (0..255). Never changes; "
        "assigned above maxLabelIndex when omitted.",
    )


class LabelDefinition(WireModel):
    labels: list[LabelConfig] = Field(min_length=1, max_length=256)
    max_label_index: int | None = Field(
        None,
        ge=-1,
        le=255,
        description="Highest index ever used by a label of this dataset; maintained by the "
        "service and only ever grows.",
    )


class FhirCodesFilter(WireModel):
    filter_type: Literal["FhirCodesFilter"] = "FhirCodesFilter"
    codes: list[Annotated[str, Name(MAX_CODE_LENGTH)]] = Field(
        min_length=1,
        max_length=MAX_FILTER_CODES,
        description="FHIR tokens matched against DocumentReference.type codings: "
        "'system|code', '|code' (no system) or 'code' (any system).",
    )


class ProblemDefinition(WireModel):
    problem_type: ProblemType
    label_definition: LabelDefinition
    training_data_filter: FhirCodesFilter
    label_system: Annotated[str, Name(255)] | None = Field(
        None,
        description="Extension: code system of this dataset's label Observations "
        "(valueCodeableConcept.coding.system); default urn:patient-ml:labels:<name at creation>. "
        "Fixed once the dataset exists.",
    )


class SplitRatios(WireModel):
    train: float = Field(0.7, ge=0, le=1)
    validation: float = Field(0.15, ge=0, le=1)
    test: float = Field(0.15, ge=0, le=1)


NearDuplicateTransform = Literal["mirror", "orientation", "intensity", "inversion"]
NEAR_DUPLICATE_TRANSFORMS = ("mirror", "orientation", "intensity", "inversion")
# Safe for medical images: a copy under any of these stays in its original's split. Inversion
# (a negative) is left to modalities that produce it (radiographs: MONOCHROME1 against 2).
DEFAULT_NEAR_DUPLICATE_TRANSFORMS: tuple[NearDuplicateTransform, ...] = (
    "mirror",
    "orientation",
    "intensity",
)


class NearDuplicateSettings(WireModel):
    """Extension: link near-duplicate images (edited copies of one image) so they never
    straddle splits."""

    enabled: bool = Field(True, description="Link verified near-duplicate images like one patient.")
    min_correlation: float = Field(
        0.94,
        ge=0.8,
        le=1.0,
        description="Two images are copies when their intensity-normalised 32x32 thumbnails "
        "(whole image or content box, in the best relative orientation and alignment that "
        "`transforms` allows) correlate at least this much.",
    )
    transforms: list[NearDuplicateTransform] = Field(
        default_factory=lambda: list[NearDuplicateTransform](DEFAULT_NEAR_DUPLICATE_TRANSFORMS),
        max_length=len(NEAR_DUPLICATE_TRANSFORMS),
        description="Edits of a slice that make a copy of it: mirror (left-right flip), "
        "orientation (all 8 flips and quarter turns), intensity (any increasing change: gamma, "
        "windowing, equalisation), inversion (a negative image). Re-encoding, resampling, "
        "brightness, contrast, sharpening, blur and a margin padded or cut are always linked.",
    )
    # Settings of the v1 hash grouping: accepted so that existing dataset configs keep
    # validating, and ignored (curation logs a warning naming them).
    fingerprint: Literal["ahash16", "dhash16"] | None = Field(
        None, description="Deprecated (v1) and ignored: near-duplicates are verified copies now."
    )
    max_distance: int | None = Field(
        None,
        ge=0,
        le=32,
        description="Deprecated (v1) and ignored: use minCorrelation.",
    )

    @field_validator("transforms")
    @classmethod
    def _distinct_transforms(cls, value: list[str]) -> list[str]:
        repeated = sorted({name for name in value if value.count(name) > 1})
        if repeated:
            raise ValueError(f"lists {', '.join(repeated)} more than once; name each once")
        return value

    def deprecated_settings(self) -> list[str]:
        old = {"fingerprint": self.fingerprint, "maxDistance": self.max_distance}
        return [f"curation.nearDuplicates.{k}" for k, v in old.items() if v is not None]


SUBGROUP_ATTRIBUTE = r"^[a-z][A-Za-z0-9]{0,39}$"
SUBGROUP_PATH = r"^(Patient|DocumentReference)(\.[a-z][A-Za-z0-9]{0,63}(\[[0-9]{1,2}\])?){1,6}$"
BUILT_IN_ATTRIBUTES = ("sex", "ageBand", "site", "manufacturer")


class SubgroupAttribute(WireModel):
    """An attribute of your own to stratify by: a simple path into the image's Patient or
    DocumentReference, e.g. `Patient.address[0].state` or `DocumentReference.context.
    facilityType.coding[0].code`. The value found (text, number or the `reference`, `code` or
    `display` of an object) is the subgroup; an example without it is in no subgroup."""

    name: Annotated[str, StringConstraints(pattern=SUBGROUP_ATTRIBUTE)] = Field(
        description="The attribute's name in reports (camelCase, e.g. `state`)."
    )
    path: Annotated[str, StringConstraints(pattern=SUBGROUP_PATH)] = Field(
        description="`Patient.<field>[.<field>...]` or `DocumentReference.<field>...`; a field "
        "may take a list index `[0]`."
    )


class SubgroupSettings(WireModel):
    """Extension: the attributes each example of a snapshot keeps for subgroup evaluation
    (read from FHIR at curation), and how evaluation reports subgroups. Built in: `sex`
    (`Patient.gender`), `ageBand` (years from `Patient.birthDate` to the image's date,
    `DocumentReference.date`, banded by `ageBands`), `site` (`DocumentReference.custodian`,
    else `Patient.managingOrganization`: the organisation's reference, or its display) and
    `manufacturer` (`DocumentReference.context.related` display or the DICOM Manufacturer tag
    (0008,0070) of a DICOM image)."""

    attributes: list[Annotated[str, StringConstraints(pattern=SUBGROUP_ATTRIBUTE)]] = Field(
        default_factory=lambda: list(BUILT_IN_ATTRIBUTES),
        max_length=12,
        description="Attributes to stratify by: built in (sex, ageBand, site, manufacturer) or "
        "a name from `custom`. Empty: no subgroups.",
    )
    age_bands: list[Annotated[int, Field(ge=1, le=130)]] = Field(
        default_factory=lambda: [18, 40, 65],
        max_length=12,
        description="Ages (years) where a new band starts: [18, 40, 65] gives 0-17, 18-39, "
        "40-64, 65+.",
    )
    custom: list[SubgroupAttribute] = Field(
        default_factory=list, max_length=8, description="Attributes of your own (FHIR paths)."
    )
    min_clusters: int = Field(
        30,
        ge=2,
        le=10_000,
        description="A subgroup with fewer independent clusters is flagged too small to "
        "conclude (its interval is rough).",
    )
    pairs: bool = Field(True, description="Also report each pair of attributes (sex x site).")

    @field_validator("age_bands")
    @classmethod
    def _increasing(cls, value: list[int]) -> list[int]:
        if any(b <= a for a, b in itertools.pairwise(value)):
            raise ValueError(f"{value} is not increasing; list each band's first age in order")
        return value

    @model_validator(mode="after")
    def _known(self) -> SubgroupSettings:
        custom = [c.name for c in self.custom]
        clash = sorted(set(custom) & set(BUILT_IN_ATTRIBUTES))
        if clash:
            raise ValueError(
                f"custom attribute {clash[0]!r} has a built-in name; pick another name"
            )
        unknown = [a for a in self.attributes if a not in BUILT_IN_ATTRIBUTES + tuple(custom)]
        if unknown:
            raise ValueError(
                f"attributes lists {unknown[0]!r}, which is neither built in "
                f"({', '.join(BUILT_IN_ATTRIBUTES)}) nor in custom; add it to custom with a path"
            )
        if len(set(self.attributes)) != len(self.attributes):
            raise ValueError("attributes lists a name twice; name each once")
        return self


class CurationSettings(WireModel):
    """Extension: how curation turns FHIR records into a snapshot."""

    split_ratios: SplitRatios = Field(
        default_factory=SplitRatios,
        description="Share of new patients per split; patients already assigned keep theirs.",
    )
    max_image_bytes: int = Field(
        50_000_000, ge=1_000, le=2_000_000_000, description="Larger image files are quarantined."
    )
    max_image_pixels: int = Field(
        50_000_000,
        ge=64,
        le=1_000_000_000,
        description="Larger images (width x height) are quarantined.",
    )
    min_image_side: int = Field(
        8, ge=1, le=4096, description="Images with a smaller width or height are quarantined."
    )
    near_duplicates: NearDuplicateSettings = Field(
        default_factory=NearDuplicateSettings,
        description="Perceptual near-duplicate grouping for leakage-free splits.",
    )
    subgroups: SubgroupSettings = Field(
        default_factory=SubgroupSettings,
        description="Attributes kept per example (sex, age band, site, device) for subgroup "
        "evaluation; see docs/subgroups.md.",
    )


class UpstreamModel(WireModel):
    """Extension: a chained dataset takes its examples from another model's predictions (its
    batch scoring writes them back to the source as `preliminary` Observations): an image is
    an example when the newest prediction of that model for it names one of `labels`."""

    model: Annotated[str, Name()] = Field(
        description="Id or name of the model whose predictions select the examples (stored "
        "as its id); its scoring DAG writes them to this dataset's source."
    )
    labels: list[Annotated[str, Name()]] = Field(
        min_length=1,
        max_length=256,
        description="Labels of that model's dataset. imgClf: an image is selected when the "
        "label decided at the model's operating point is one of them; imgSeg: when its mask "
        "covers at least minAreaFraction of the image with one of them.",
    )
    min_probability: float | None = Field(
        None,
        ge=0,
        le=1,
        description="imgClf: also require the model's probability of the decided label to be "
        "at least this much.",
    )
    min_area_fraction: float = Field(
        0.001,
        gt=0,
        le=1,
        description="imgSeg: the share of the mask one of the labels must cover.",
    )


class DatasetSource(WireModel):
    """Extension: where curation reads the dataset's FHIR records."""

    type: Literal["fhirServer", "ndjson"] = "fhirServer"
    conn_id: Annotated[str, Name(250)] = Field(
        "fhir_default", description="Airflow connection (fhir)."
    )
    uri: Annotated[str, Name(MAX_URI_LENGTH)] | None = Field(
        None, description="ndjson: file:///dir, /dir or s3://bucket/prefix holding *.ndjson files."
    )
    bulk_export: bool = Field(
        False, description="fhirServer: use $export (when offered) instead of paged search."
    )
    from_model: UpstreamModel | None = Field(
        None,
        description="Chained models: take the examples from another model's predictions in "
        "this source (see docs/batch-scoring.md); the training DAG of a model on this dataset "
        "also runs when that model's scoring DAG publishes new predictions.",
    )


class DatasetConfig(WireModel):
    id: Identifier | None = None
    name: Annotated[str, Name()]
    description: Annotated[str, Text()] = ""
    problem_definition: ProblemDefinition
    curation: CurationSettings = Field(default_factory=CurationSettings)
    source: DatasetSource = Field(default_factory=DatasetSource)


# ----------------------------------------------------------------------------- models


class MetricDefinition(WireModel):
    name: Annotated[str, Name(255)]
    regex: Annotated[str, Name(500)]


class Objective(WireModel):
    metric: Annotated[str, Name(255)]
    direction: Direction


class _ParameterBase(WireModel):
    name: Annotated[str, Name(256)]


def _as_string(value: object) -> object:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    return value


class CategoricalParameter(_ParameterBase):
    type: Literal["categorical"]
    values: list[Annotated[str, Name(MAX_NAME_LENGTH, min_length=0)]] = Field(
        max_length=MAX_LIST_ITEMS
    )

    @field_validator("values", mode="before")
    @classmethod
    def _scalars_to_strings(cls, value: object) -> object:
        # Hyperparameters travel as strings; YAML `[32, 64]` means `["32", "64"]`.
        if isinstance(value, list):
            return [_as_string(v) for v in value]
        return value


class ContinuousParameter(_ParameterBase):
    type: Literal["continuous"]
    min: float
    max: float
    scale: Scale = "auto"


class IntegerParameter(_ParameterBase):
    type: Literal["integer"]
    min: int | float  # floats are accepted so the rules can say "must be a whole number"
    max: int | float
    scale: Scale = "auto"


SearchParameter = Annotated[
    CategoricalParameter | ContinuousParameter | IntegerParameter,
    Field(discriminator="type"),
]


class TrainingApproach(WireModel):
    type: Literal["tuningJob"] = "tuningJob"
    training_image: Annotated[str, Name(512)]
    metric_definitions: list[MetricDefinition] = Field(default_factory=list, max_length=50)
    objective: Objective
    search_space: list[SearchParameter] = Field(
        default_factory=list, max_length=MAX_SEARCH_PARAMETERS
    )
    max_trials: int = Field(10, ge=1, le=MAX_TRIALS_LIMIT)
    retrain_every: float | None = Field(
        None,
        description="Retrain when this many milliseconds have passed since the last run "
        "(at least one day).",
    )
    # --- extensions
    parallel_trials: int = Field(
        1,
        ge=1,
        le=MAX_PARALLEL_TRIALS,
        description="Extension: trial workers that run at the same time (Airflow mapped tasks).",
    )
    seed: int = Field(
        0, ge=0, le=2**32 - 1, description="Extension: seed of the hyperparameter sampler."
    )
    schedule: Annotated[str, Name(MAX_NAME_LENGTH)] | None = Field(
        None,
        description="Extension: cron expression or preset (@daily, @weekly, ...); "
        "an alternative to retrainEvery.",
    )


class DeployApproach(WireModel):
    type: Literal["cloud", "edge"]
    inference_image: Annotated[str, Name(512)]


class Guardrail(WireModel):
    metric: Annotated[str, Name(255)] = Field(description="A platform test metric.")
    max_regression: float = Field(
        0.0,
        ge=0,
        le=1,
        description="Largest worsening against the champion that still passes, in the "
        "metric's own units (e.g. 0.01 = one point of balanced accuracy).",
    )


class AutoApproval(WireModel):
    """Extension: a predetermined change-control plan. The run is approved as actor `system`
    only when every criterion holds; otherwise a human decides."""

    enabled: bool = Field(False, description="Off by default: every run waits for a human.")
    metric: Annotated[str, Name(255)] | None = Field(
        None,
        description="Platform test metric that must improve; default: the objective when it is "
        "a platform metric, else balancedAccuracy (imgClf) or meanDice (imgSeg).",
    )
    min_improvement: float = Field(
        0.0, ge=0, le=1, description="The challenger must beat the champion by at least this."
    )
    min_value: float | None = Field(
        None,
        description="Optional floor the challenger's metric must reach (in the metric's units).",
    )
    guardrails: list[Guardrail] = Field(
        default_factory=list,
        max_length=20,
        description="Metrics that must not regress by more than their maxRegression.",
    )
    require_same_labels: bool = Field(True, description="The label set must equal the champion's.")
    allow_without_champion: bool = Field(
        False,
        description="Approve a first run (no champion) when minValue and the guardrails' "
        "own floors hold; off: a first run always waits for a human.",
    )


class NonInferiorityRule(WireModel):
    """Extension: the challenger may be worse than the champion on `metric` by less than
    `margin`, with 95 % confidence: the lower end of the paired interval of challenger -
    champion (oriented so that higher is better: for a metric where lower is better, champion -
    challenger) must be above -margin."""

    metric: Annotated[str, Name(255)] = Field(
        description="A platform test metric: a headline one (e.g. balancedAccuracy, auroc) or a "
        "per-label one `<family>:<label name>` with family precision, recall, sensitivity, "
        "specificity, ppv, npv (imgClf) or dice, iou (imgSeg), e.g. `sensitivity:tumor`."
    )
    margin: float = Field(
        ge=0,
        le=1,
        description="Largest worsening that is still acceptable, in the metric's own units "
        "(0.02 = two points of sensitivity). 0: the challenger must be shown better.",
    )
    scope: Literal["overall", "overallAndSubgroups", "overallAndLargeSubgroups"] = Field(
        "overall",
        description="`overall`: the whole test set. `overallAndSubgroups`: also each subgroup "
        "of the test set the evaluation reports (each with its own paired interval). "
        "`overallAndLargeSubgroups`: also each subgroup not flagged too small to conclude "
        "(`curation.subgroups.minClusters`); small ones are shown, not checked.",
    )


class ApprovalPolicy(WireModel):
    """Extension: who may approve a run of this model, how long a run waits, the
    non-inferiority rules a challenger must pass, how many people approve, and the optional
    automatic policy."""

    approvers: list[Annotated[str, Name(256)]] = Field(
        default_factory=list,
        max_length=200,
        description="User names allowed to approve or reject runs; empty: any signed-in user.",
    )
    timeout_hours: float = Field(
        72.0,
        gt=0,
        le=24 * 90,
        description="A run without a decision after this long ends unapproved (deploy skipped).",
    )
    auto_approval: AutoApproval = Field(default_factory=AutoApproval)
    non_inferiority: list[NonInferiorityRule] = Field(
        default_factory=list,
        max_length=50,
        description="Rules every challenger must pass against the champion. The automatic "
        "policy approves only when all hold; a person approving past a failed rule must "
        "confirm an explicit override with its own justification (audited as an override).",
    )
    min_approvers: int = Field(
        1,
        ge=1,
        le=5,
        description="Distinct people who must approve a run before it deploys (2: the "
        "two-person rule); one rejection ends the run unapproved.",
    )


OperatingPointRule = Literal["youden", "targetSensitivity", "targetSpecificity", "argmax"]


class OperatingPointConfig(WireModel):
    """Extension (imgClf): how the decision threshold is chosen, by the platform, on the
    validation split (the served model's confidences, through the serving contract). The
    threshold is stored with the run; the endpoint's answer names the label at it.

    - `youden`: the threshold that maximises sensitivity + specificity - 1 of `positiveLabel`.
    - `targetSensitivity`: the highest threshold whose validation sensitivity of
      `positiveLabel` reaches `target` (fewest false positives at that sensitivity).
    - `targetSpecificity`: the lowest threshold whose validation specificity reaches `target`.
    - `argmax`: no threshold; the most confident label.

    With a threshold, an image is called `positiveLabel` when that label's confidence is at
    least the threshold, else the most confident other label. Left out: `youden` on the
    higher-index label for two labels, `argmax` for more."""

    rule: OperatingPointRule = Field(description="How the threshold is chosen.")
    positive_label: Annotated[str, Name(255)] | None = Field(
        None,
        description="Name of the label the threshold is for (the condition to find); default "
        "with two labels: the one with the higher index. Required with more than two labels.",
    )
    target: float | None = Field(
        None,
        gt=0,
        le=1,
        description="targetSensitivity / targetSpecificity: the share to reach on validation "
        "(e.g. 0.95).",
    )


MAX_CARD_ITEMS = 30


class ModelCardSettings(WireModel):
    """Extension: what the model card says about intended use, users and limitations (what
    the platform cannot measure). The card adds limitations it derives from the run itself
    (a small test set, small subgroups, a metric worse than the champion's, calibration
    error, test images left out); see docs/model-card.md."""

    intended_use: Annotated[str, Text()] = Field(
        "",
        description="What the model is for, in a sentence or two (the clinical question, the "
        "setting, who acts on its answer); empty: the card shows the model's description.",
    )
    intended_users: list[Annotated[str, Name(MAX_NAME_LENGTH)]] = Field(
        default_factory=list,
        max_length=MAX_CARD_ITEMS,
        description="Who uses its answers, e.g. 'radiologists triaging a reading worklist'.",
    )
    out_of_scope: list[Annotated[str, Text(MAX_LABEL_DESCRIPTION_LENGTH)]] = Field(
        default_factory=list,
        max_length=MAX_CARD_ITEMS,
        description="Uses the model is not meant or validated for, one per item.",
    )
    limitations: list[Annotated[str, Text(MAX_LABEL_DESCRIPTION_LENGTH)]] = Field(
        default_factory=list,
        max_length=MAX_CARD_ITEMS,
        description="Known limitations and failure modes, one per item (the card adds those "
        "it derives from the run's evaluation).",
    )


class ModelConfig(WireModel):
    id: Identifier | None = None
    name: Annotated[str, Name()]
    description: Annotated[str, Text()] = ""
    dataset_id: Annotated[str, Name()] = Field(
        description="ID of the dataset config this model trains on (the CLI also accepts the "
        "dataset's name).",
    )
    champion_id: Identifier | None = Field(
        None, description="Read-only: the run that is deployed now; changed by approvals."
    )
    training_approach: TrainingApproach
    deploy_approach: DeployApproach
    approval_policy: ApprovalPolicy = Field(
        default_factory=ApprovalPolicy,
        description="Extension: approvers, approval timeout and automatic approval policy.",
    )
    monitoring: MonitoringSettings = Field(
        default_factory=MonitoringSettings,
        description="Extension: drift and live-performance monitoring of the deployed champion.",
    )
    operating_point: OperatingPointConfig | None = Field(
        None,
        description="Extension (imgClf): how the decision threshold is chosen on the "
        "validation split; left out: youden on the higher-index label for two labels, argmax "
        "for more.",
    )
    model_card: ModelCardSettings | None = Field(
        None,
        description="Extension: intended use, intended users, out-of-scope uses and known "
        "limitations shown in each run's model card; left out: the card shows the description "
        "and says that none were declared.",
    )
