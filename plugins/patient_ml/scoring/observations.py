"""The FHIR resources of one batch-scoring prediction (the contract: `patient_ml.fhir.mapping`,
"Predictions"; docs/fhir-mapping.md, "Predictions written back").

One `Observation` per model and image (`prediction_id`): a rerun or a later batch updates it,
and the source's version history keeps the earlier predictions. It is `preliminary` (never
final), coded (`LABEL_CODE_SYSTEM`, `PREDICTION_CODE`) and linked to the image by `derivedFrom`,
never by `focus`: curation and the labelling index read only Observations coded `image-label`
with a `focus`, so a prediction can never pass for a label. The model run is the `device` (a
logical reference by run id), the batch is an extension.

imgClf: `valueCodeableConcept` = the label decided at the model's operating point, one
`component` per label with its probability, a `note` naming the operating point. imgSeg: the
mask PNG is a separate `Binary` referenced by the segmentation-mask extension, and one
`component` per label gives its area fraction of the mask.

An output outside the serving contract (`patient_ml.services.predictions`) is refused with a
`PredictionOutputError` naming the field; every resource is validated (fhir.resources R4B).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from patient_ml.exceptions import PatientMLError
from patient_ml.fhir import mapping, validation
from patient_ml.labels.masks import read_png

UCUM = "http://unitsofmeasure.org"
RUN_IDENTIFIER_SYSTEM = "urn:patient-ml:run"
PROBLEM_TYPES = ("imgClf", "imgSeg")


class PredictionOutputError(PatientMLError):
    """A model's output is outside the serving contract: nothing of it is written."""

    http_status = 502


@dataclass(frozen=True)
class ScoringModel:
    """The deployed model a batch scores with (`labels`: index -> name)."""

    model_id: str
    model_name: str
    run_id: str
    problem_type: str
    label_system: str
    labels: dict[int, str] = field(hash=False)
    batch_id: str


@dataclass(frozen=True)
class ScoredExample:
    """One image of the batch and the model's output for it (as `services.predictions`
    answers it: imgClf `predictions` + `operatingPoint`, imgSeg `mask` + `width`/`height`)."""

    example_id: str
    image_version: str | None
    patient_ref: str | None
    output: dict[str, Any] = field(hash=False)


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:40]


def prediction_id(model_id: str, example_id: str) -> str:
    """The Observation id of a model's prediction for an image (the same in every batch)."""
    return f"pml-pred-{_digest(f'{model_id}|{example_id}')}"


def mask_id(model_id: str, example_id: str) -> str:
    """The Binary id of a segmentation model's mask for an image."""
    return f"pml-pred-mask-{_digest(f'{model_id}|{example_id}')}"


def identifier_value(model_id: str, example_id: str) -> str:
    return f"{model_id}|{example_id}"


def prediction_resources(
    model: ScoringModel, example: ScoredExample, issued: str
) -> list[dict[str, Any]]:
    """The validated resources of one prediction: [Observation] (imgClf) or [Binary,
    Observation] (imgSeg: the mask first, so a transaction writes it before its reference).

    `issued`: when it was scored (FHIR instant, with a time zone)."""
    if model.problem_type not in PROBLEM_TYPES:
        raise PredictionOutputError(
            f"Model {model.model_id} has the problem type {model.problem_type!r}; batch "
            "scoring writes imgClf and imgSeg predictions only.",
            fix="score with an imgClf or imgSeg model",
        )
    if not isinstance(example.output, Mapping):
        raise _bad(example, "output", "is not a JSON object", _FIX[model.problem_type])
    observation = _observation(model, example, issued)
    if model.problem_type == "imgClf":
        decided = _classification(model, example)
        notes = [*observation.pop("note", []), *decided.pop("note")]
        observation.update(decided, note=notes)
        return [validation.validated(observation)]
    binary, extension, components = _segmentation(model, example)
    observation["extension"].append(extension)
    observation["component"] = components
    return [validation.validated(binary), validation.validated(observation)]


def _observation(model: ScoringModel, example: ScoredExample, issued: str) -> dict[str, Any]:
    resource: dict[str, Any] = {
        "resourceType": "Observation",
        "id": prediction_id(model.model_id, example.example_id),
        "extension": [
            {"url": mapping.SCORING_BATCH_EXTENSION_URL, "valueString": model.batch_id},
        ],
        "identifier": [
            {
                "system": mapping.PREDICTION_IDENTIFIER_SYSTEM,
                "value": identifier_value(model.model_id, example.example_id),
            }
        ],
        "status": "preliminary",  # never final: a prediction is no finding
        "code": {
            "coding": [
                {
                    "system": mapping.LABEL_CODE_SYSTEM,
                    "code": mapping.PREDICTION_CODE,
                    "display": "Image prediction",
                }
            ],
            "text": "Image prediction",
        },
    }
    if example.patient_ref:
        resource["subject"] = {"reference": example.patient_ref}
    resource.update(
        {
            "issued": issued,
            "method": {
                "text": f"Patient ML model {model.model_name} ({model.model_id}), "
                f"run {model.run_id}, {model.problem_type}"
            },
            "device": {
                "identifier": {"system": RUN_IDENTIFIER_SYSTEM, "value": model.run_id},
                "display": f"Patient ML model {model.model_name}, run {model.run_id}",
            },
            # derivedFrom, never focus: nothing may take a prediction for a label
            "derivedFrom": [{"reference": f"DocumentReference/{example.example_id}"}],
        }
    )
    if example.image_version:
        resource["note"] = [
            {
                "text": f"Scored on version {example.image_version} of "
                f"DocumentReference/{example.example_id}."
            }
        ]
    return resource


_FIX = {
    "imgClf": 'answer {"predictions": [{"index", "name", "confidence", "value"}], '
    '"operatingPoint": {"rule", "threshold", "label", "name"}} as services.predictions does',
    "imgSeg": 'answer {"mask": <base64 PNG, pixel = label index>, "width", "height"} as '
    "services.predictions does",
}


def _bad(example: ScoredExample, where: str, problem: str, fix: str) -> PredictionOutputError:
    return PredictionOutputError(
        f"The prediction for example {example.example_id} is outside the serving contract: "
        f"{where} {problem}.",
        fix=fix,
    )


def _concept(model: ScoringModel, index: int) -> dict[str, Any]:
    return {
        "coding": [
            {"system": model.label_system, "code": str(index), "display": model.labels[index]}
        ]
    }


def _probability(value: float) -> dict[str, Any]:
    return {"value": value, "unit": "probability", "system": UCUM, "code": "1"}


def _fraction(value: float) -> dict[str, Any]:
    return {"value": value, "unit": "fraction of the mask", "system": UCUM, "code": "1"}


def _label_index(model: ScoringModel, example: ScoredExample, value: object, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise _bad(example, where, "is not a label index (an integer)", _FIX["imgClf"])
    if value not in model.labels:
        known = ", ".join(str(i) for i in sorted(model.labels)) or "none"
        raise _bad(
            example,
            where,
            f"is the label index {value}, which the model does not have (it has {known})",
            "score with the model the labels belong to (its run's labelDefinition)",
        )
    return value


def _classification(model: ScoringModel, example: ScoredExample) -> dict[str, Any]:
    output, fix = example.output, _FIX["imgClf"]
    items = output.get("predictions")
    if not isinstance(items, list) or not items:
        raise _bad(example, "predictions", "is missing or not a non-empty list", fix)
    confidence: dict[int, float] = {}
    for i, item in enumerate(items):
        if not isinstance(item, Mapping):
            raise _bad(example, f"predictions[{i}]", "is not an object", fix)
        index = _label_index(model, example, item.get("index"), f"predictions[{i}].index")
        value = item.get("confidence")
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not math.isfinite(value)
            or not 0.0 <= value <= 1.0
        ):
            raise _bad(
                example, f"predictions[{i}].confidence", "is not a probability (0 to 1)", fix
            )
        if index in confidence:
            raise _bad(example, f"predictions[{i}].index", f"repeats label {index}", fix)
        confidence[index] = float(value)
    point = output.get("operatingPoint")
    if not isinstance(point, Mapping):
        raise _bad(example, "operatingPoint", "is missing or not an object", fix)
    decided = _label_index(model, example, point.get("label"), "operatingPoint.label")
    rule = str(point.get("rule") or "argmax")
    threshold = point.get("threshold")
    said = f"Decided at the operating point {rule!r}"
    if threshold is not None:
        positive = point.get("positiveLabel")
        said += f" (threshold {threshold}" + (
            f" on the probability of label {positive})" if positive is not None else ")"
        )
    said += f" of model {model.model_name}, run {model.run_id}."
    return {
        "valueCodeableConcept": _concept(model, decided),
        "note": [{"text": said}],
        "component": [
            {"code": _concept(model, index), "valueQuantity": _probability(confidence[index])}
            for index in sorted(confidence)
        ],
    }


def _segmentation(
    model: ScoringModel, example: ScoredExample
) -> tuple[dict[str, Any], dict[str, Any], list[dict[str, Any]]]:
    output, fix = example.output, _FIX["imgSeg"]
    encoded = output.get("mask")
    if not isinstance(encoded, str) or not encoded:
        raise _bad(example, "mask", "is missing or not a base64 string", fix)
    try:
        raw = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        raise _bad(example, "mask", "is not valid base64", fix) from None
    if not raw.startswith(b"\x89PNG\r\n\x1a\n"):
        raise _bad(example, "mask", "is not a PNG image", fix)
    try:
        pixels = read_png(raw)
    except Exception:  # PIL raises many kinds on a broken file
        raise _bad(example, "mask", "is not a readable PNG image", fix) from None
    if pixels.ndim != 2:
        raise _bad(example, "mask", "is not a one-channel PNG (pixel = label index)", fix)
    height, width = pixels.shape
    for name, size in (("width", width), ("height", height)):
        given = output.get(name)
        if given is not None and given != size:
            raise _bad(example, name, f"is {given!r} but the mask has {size} pixels", fix)
    values, counts = np.unique(pixels, return_counts=True)
    area = {int(v): int(c) for v, c in zip(values, counts, strict=True)}
    unknown = sorted(v for v in area if v and v not in model.labels)
    if unknown:
        raise _bad(
            example,
            "mask",
            f"has pixels of label index {unknown[0]}, which the model does not have",
            "score with the model the labels belong to (its run's labelDefinition)",
        )
    binary_id = mask_id(model.model_id, example.example_id)
    binary = {
        "resourceType": "Binary",
        "id": binary_id,
        "contentType": "image/png",
        "data": base64.b64encode(raw).decode("ascii"),
    }
    extension = {
        "url": mapping.MASK_EXTENSION_URL,
        "valueAttachment": {
            "contentType": "image/png",
            "url": f"Binary/{binary_id}",
            "size": len(raw),
        },
    }
    total = float(height * width)
    components = [
        {
            "code": _concept(model, index),
            "valueQuantity": _fraction(round(area.get(index, 0) / total, 6)),
        }
        for index in sorted(model.labels)
    ]
    return binary, extension, components
