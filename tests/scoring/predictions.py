"""Models and outputs of batch-scoring tests, shaped as `services.predictions` answers them."""

from __future__ import annotations

import base64
from typing import Any

import numpy as np

from patient_ml.labels.masks import png_of
from patient_ml.scoring.observations import ScoredExample, ScoringModel

ISSUED = "2026-12-07T12:00:00.000+00:00"
LABEL_SYSTEM = "urn:patient-ml:labels:brain"


def classifier(model_id: str = "mdl-clf", batch_id: str = "batch-1") -> ScoringModel:
    return ScoringModel(
        model_id=model_id,
        model_name="tumour-classifier",
        run_id="run-7",
        problem_type="imgClf",
        label_system=LABEL_SYSTEM,
        labels={0: "no tumour", 1: "tumour"},
        batch_id=batch_id,
    )


def segmenter(model_id: str = "mdl-seg") -> ScoringModel:
    return ScoringModel(
        model_id=model_id,
        model_name="tumour-segmenter",
        run_id="run-9",
        problem_type="imgSeg",
        label_system=LABEL_SYSTEM,
        labels={1: "tumour", 2: "oedema"},
        batch_id="batch-1",
    )


def clf_output(positive: float = 0.8, threshold: float | None = 0.5) -> dict[str, Any]:
    decided = 1 if positive >= (threshold if threshold is not None else 0.5) else 0
    names = {0: "no tumour", 1: "tumour"}
    return {
        "predictions": [
            {"index": 1, "name": "tumour", "confidence": positive, "value": decided == 1},
            {"index": 0, "name": "no tumour", "confidence": 1 - positive, "value": decided == 0},
        ],
        "operatingPoint": {
            "rule": "youden" if threshold is not None else "argmax",
            "positiveLabel": 1 if threshold is not None else None,
            "threshold": threshold,
            "label": decided,
            "name": names[decided],
        },
    }


def mask_pixels() -> np.ndarray:
    """4x5: 10 pixels background, 6 tumour (1), 4 oedema (2)."""
    mask = np.zeros((4, 5), dtype=np.uint8)
    mask[0, :5] = 1
    mask[1, :1] = 1
    mask[3, :4] = 2
    return mask


def seg_output(mask: np.ndarray | None = None) -> dict[str, Any]:
    pixels = mask_pixels() if mask is None else mask
    encoded = base64.b64encode(png_of(pixels)).decode()
    return {"mask": encoded, "width": int(pixels.shape[1]), "height": int(pixels.shape[0])}


def scored(
    example_id: str, output: dict[str, Any], patient: str | None = "Patient/p1"
) -> ScoredExample:
    return ScoredExample(
        example_id=example_id, image_version="2", patient_ref=patient, output=output
    )
