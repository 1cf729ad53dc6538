"""Chained datasets: which images another model's predictions select (`source.fromModel`).

The upstream model's batch scoring writes one `preliminary` prediction Observation per image
into the source (`patient_ml.scoring.observations`: identifier `<model id>|<image id>`, coded
`image-prediction`, `derivedFrom` the DocumentReference). Curation reads them beside the
labels; the newest one per image (version, then lastUpdated) decides whether the image is an
example of the chained dataset:

- imgClf: the label decided at the model's operating point (`valueCodeableConcept`, in the
  upstream dataset's label system) is one of the chosen labels, and with `minProbability`, its
  probability (the matching `component`) is at least that;
- imgSeg: one of the chosen labels covers at least `minAreaFraction` of the mask (the
  `component` per label).

A DocumentReference without a prediction of that model, or whose prediction does not select it,
is counted (`upstream` in the report), never quarantined: it is simply not part of this
dataset. Predictions of other models are ignored.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from patient_ml.curation.quarantine import QuarantineError
from patient_ml.exceptions import PatientMLError
from patient_ml.fhir import mapping

if TYPE_CHECKING:
    from patient_ml.curation.staging import Staging

SCORING_BATCH_EXTENSION_URL = mapping.SCORING_BATCH_EXTENSION_URL


@dataclass(frozen=True)
class UpstreamPlan:
    """The resolved `source.fromModel` of a dataset: what selects an image."""

    model_id: str
    model_name: str
    problem_type: str  # the upstream model's
    label_system: str  # the upstream dataset's
    indices: frozenset[int]  # the chosen labels' indices in the upstream dataset
    label_names: tuple[str, ...]
    min_probability: float | None = None
    min_area_fraction: float = 0.001

    def describe(self) -> str:
        rule = f"decided label in {list(self.label_names)}"
        if self.problem_type == "imgSeg":
            rule = f"mask covers >= {self.min_area_fraction:g} with one of {list(self.label_names)}"
        elif self.min_probability is not None:
            rule += f" with probability >= {self.min_probability:g}"
        return f"predictions of model {self.model_name} ({self.model_id}): {rule}"


class NoUpstreamPredictionsError(PatientMLError):
    """A chained dataset's source holds no prediction of its upstream model: nothing to select
    (an empty snapshot would hide it)."""

    exit_code = 4
    http_status = 409


@dataclass(frozen=True)
class UpstreamPrediction:
    """One prediction Observation of the upstream model, as curation stages it."""

    obs_id: str
    version: str | None
    updated: str | None
    doc_id: str
    selected: bool
    batch_id: str | None
    run_id: str | None


def upstream_prediction(
    resource: Mapping[str, Any], plan: UpstreamPlan
) -> UpstreamPrediction | None:
    """The prediction if it is the upstream model's (None for another model's); raises
    QuarantineError when it is the upstream model's but cannot be read."""
    doc_id = _image_of(resource, plan.model_id)
    if doc_id is None:
        return None
    rid = resource.get("id")
    if not isinstance(rid, str) or not rid:
        raise QuarantineError("prediction_malformed", "a prediction Observation without an id")
    derived = _derived_documents(resource)
    if derived and doc_id not in derived:
        raise QuarantineError(
            "prediction_malformed",
            f"identifier names DocumentReference/{doc_id} but derivedFrom names "
            f"{', '.join(sorted(derived))}",
        )
    meta = resource.get("meta") if isinstance(resource.get("meta"), Mapping) else {}
    version = meta.get("versionId") if isinstance(meta, Mapping) else None
    updated = meta.get("lastUpdated") if isinstance(meta, Mapping) else None
    return UpstreamPrediction(
        obs_id=rid,
        version=str(version) if version is not None else None,
        updated=str(updated) if updated is not None else None,
        doc_id=doc_id,
        selected=_selects(resource, plan),
        batch_id=_batch(resource),
        run_id=_run(resource),
    )


def _image_of(resource: Mapping[str, Any], model_id: str) -> str | None:
    """The image id of the identifier `<model id>|<image id>` when `model_id` made it."""
    identifiers = resource.get("identifier")
    if not isinstance(identifiers, list):
        return None
    prefix = f"{model_id}|"
    for identifier in identifiers:
        if (
            isinstance(identifier, Mapping)
            and identifier.get("system") == mapping.PREDICTION_IDENTIFIER_SYSTEM
            and isinstance(identifier.get("value"), str)
            and identifier["value"].startswith(prefix)
        ):
            image = identifier["value"][len(prefix) :]
            return image or None
    return None


def _derived_documents(resource: Mapping[str, Any]) -> set[str]:
    found = set()
    for item in resource.get("derivedFrom") or []:
        reference = item.get("reference") if isinstance(item, Mapping) else None
        if isinstance(reference, str) and reference.startswith("DocumentReference/"):
            found.add(reference.split("/", 1)[1].split("/_history", 1)[0])
    return found


def _indices(concept: object, system: str) -> set[int]:
    codings = concept.get("coding") if isinstance(concept, Mapping) else None
    out = set()
    for coding in codings if isinstance(codings, list) else []:
        if isinstance(coding, Mapping) and coding.get("system") == system:
            code = coding.get("code")
            if isinstance(code, str) and code.isdigit():
                out.add(int(code))
    return out


def _component_values(resource: Mapping[str, Any], system: str) -> dict[int, float]:
    values: dict[int, float] = {}
    for component in resource.get("component") or []:
        if not isinstance(component, Mapping):
            continue
        quantity = component.get("valueQuantity")
        value = quantity.get("value") if isinstance(quantity, Mapping) else None
        if isinstance(value, bool) or not isinstance(value, int | float):
            continue
        for index in _indices(component.get("code"), system):
            values[index] = float(value)
    return values


def _selects(resource: Mapping[str, Any], plan: UpstreamPlan) -> bool:
    values = _component_values(resource, plan.label_system)
    if plan.problem_type == "imgSeg":
        return any(values.get(i, 0.0) >= plan.min_area_fraction for i in plan.indices)
    decided = _indices(resource.get("valueCodeableConcept"), plan.label_system) & plan.indices
    if not decided:
        return False
    if plan.min_probability is None:
        return True
    return any(values.get(i, 0.0) >= plan.min_probability for i in decided)


def _batch(resource: Mapping[str, Any]) -> str | None:
    for extension in resource.get("extension") or []:
        if isinstance(extension, Mapping) and extension.get("url") == SCORING_BATCH_EXTENSION_URL:
            value = extension.get("valueString")
            return value if isinstance(value, str) else None
    return None


def _run(resource: Mapping[str, Any]) -> str | None:
    device = resource.get("device")
    identifier = device.get("identifier") if isinstance(device, Mapping) else None
    value = identifier.get("value") if isinstance(identifier, Mapping) else None
    return value if isinstance(value, str) else None


class UpstreamCounts(Protocol):
    """What the report reads of curation's counts (`pipeline.CurationStats`)."""

    upstream_predictions: int
    upstream_unscored: int
    upstream_not_selected: int


def upstream_report(staging: Staging, plan: UpstreamPlan, stats: UpstreamCounts) -> dict[str, Any]:
    """The report's `upstream` section: the rule, the counts, and the scoring batches and runs
    whose predictions made the selection (lineage follows them)."""
    batches = [
        {"batchId": batch, "runId": run, "predictions": count, "selected": chosen}
        for batch, run, count, chosen in staging.query(
            "SELECT batch_id, run_id, count(*), sum(selected) FROM predictions "
            "GROUP BY batch_id, run_id ORDER BY batch_id, run_id"
        )
    ]
    return {
        "modelId": plan.model_id,
        "modelName": plan.model_name,
        "rule": plan.describe(),
        "predictionsRead": stats.upstream_predictions,
        "imagesWithPrediction": sum(b["predictions"] for b in batches),
        "imagesSelected": sum(int(b["selected"] or 0) for b in batches),
        "leftOutNotSelected": stats.upstream_not_selected,
        "leftOutWithoutPrediction": stats.upstream_unscored,
        "batches": batches,
    }
