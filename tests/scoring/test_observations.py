"""Prediction resources: valid FHIR R4B, preliminary, linked to the image by derivedFrom (never
focus: no curation reads one as a label), and refused when the output breaks the contract."""

from __future__ import annotations

import base64
import hashlib
from typing import Any

import numpy as np
import pytest

from patient_ml.curation import records as rec
from patient_ml.curation.pipeline import DatasetView
from patient_ml.fhir import mapping, validation
from patient_ml.labels.masks import read_png
from patient_ml.scoring.observations import (
    PredictionOutputError,
    ScoringModel,
    mask_id,
    prediction_id,
    prediction_resources,
)
from patient_ml.services import examples as ex
from tests.scoring.predictions import (
    ISSUED,
    LABEL_SYSTEM,
    classifier,
    clf_output,
    scored,
    seg_output,
    segmenter,
)


def _view(problem_type: str) -> DatasetView:
    labels = ((0, "no tumour"), (1, "tumour")) if problem_type == "imgClf" else ((1, "tumour"),)
    return DatasetView(
        id="ds", name="brain", problem_type=problem_type, labels=labels,
        label_system=LABEL_SYSTEM, filter_codes=("http://loinc.org|18748-4",),
        split_ratios={"train": 0.6, "validation": 0.2, "test": 0.2}, max_image_bytes=10**7,
        max_image_pixels=10**7, min_image_side=1, salt="salt",
    )  # fmt: skip


def _document(example_id: str) -> dict[str, Any]:
    return {
        "resourceType": "DocumentReference",
        "id": example_id,
        "status": "current",
        "type": {"coding": [{"system": "http://loinc.org", "code": "18748-4"}]},
        "subject": {"reference": "Patient/p1"},
        "content": [{"attachment": {"contentType": "image/png", "url": "Binary/img"}}],
    }


def test_prediction_id_is_deterministic_per_model_and_image() -> None:
    digest = hashlib.sha256(b"mdl-clf|ex-1").hexdigest()[:40]
    assert prediction_id("mdl-clf", "ex-1") == f"pml-pred-{digest}"
    assert prediction_id("mdl-clf", "ex-1") != prediction_id("mdl-other", "ex-1")
    assert prediction_id("mdl-clf", "ex-1") != prediction_id("mdl-clf", "ex-2")
    assert len(mask_id("m" * 30, "e" * 64)) <= 64  # a FHIR id


def test_classification_observation() -> None:
    [obs] = prediction_resources(classifier(), scored("ex-1", clf_output(0.8)), ISSUED)

    assert validation.problems(obs) == []
    assert obs["id"] == prediction_id("mdl-clf", "ex-1")
    assert obs["status"] == "preliminary"
    assert obs["identifier"] == [
        {"system": mapping.PREDICTION_IDENTIFIER_SYSTEM, "value": "mdl-clf|ex-1"}
    ]
    assert obs["code"]["coding"][0] == {
        "system": mapping.LABEL_CODE_SYSTEM,
        "code": mapping.PREDICTION_CODE,
        "display": "Image prediction",
    }
    assert obs["subject"] == {"reference": "Patient/p1"}
    assert obs["derivedFrom"] == [{"reference": "DocumentReference/ex-1"}]
    assert "focus" not in obs
    assert obs["device"]["identifier"] == {"system": "urn:patient-ml:run", "value": "run-7"}
    assert obs["device"]["display"] == "Patient ML model tumour-classifier, run run-7"
    assert "tumour-classifier" in obs["method"]["text"]
    assert obs["issued"] == ISSUED
    assert {"url": mapping.SCORING_BATCH_EXTENSION_URL, "valueString": "batch-1"} in obs[
        "extension"
    ]
    assert obs["valueCodeableConcept"]["coding"] == [
        {"system": LABEL_SYSTEM, "code": "1", "display": "tumour"}
    ]
    probabilities = {c["code"]["coding"][0]["code"]: c["valueQuantity"] for c in obs["component"]}
    assert probabilities["1"] == {
        "value": 0.8,
        "unit": "probability",
        "system": "http://unitsofmeasure.org",
        "code": "1",
    }
    assert probabilities["0"]["value"] == pytest.approx(0.2)
    notes = " ".join(n["text"] for n in obs["note"])
    assert "youden" in notes and "threshold 0.5" in notes
    assert "version 2 of DocumentReference/ex-1" in notes


def test_the_decided_label_is_the_operating_points_not_the_most_confident() -> None:
    output = clf_output(0.3, threshold=0.25)  # 0.3 >= 0.25: tumour, though 0.7 is higher
    [obs] = prediction_resources(classifier(), scored("ex-2", output, patient=None), ISSUED)
    assert obs["valueCodeableConcept"]["coding"][0]["code"] == "1"
    assert "subject" not in obs  # the patient is not known
    assert validation.problems(obs) == []


def test_argmax_point_has_no_threshold_in_its_note() -> None:
    [obs] = prediction_resources(classifier(), scored("ex-3", clf_output(0.9, None)), ISSUED)
    assert "argmax" in obs["note"][-1]["text"] and "threshold" not in obs["note"][-1]["text"]


def test_segmentation_mask_is_a_binary_and_components_are_area_fractions() -> None:
    output = seg_output()
    binary, obs = prediction_resources(segmenter(), scored("ex-4", output), ISSUED)

    assert validation.problems(binary) == [] and validation.problems(obs) == []
    assert binary["resourceType"] == "Binary"
    assert binary["id"] == mask_id("mdl-seg", "ex-4") and binary["id"].startswith("pml-pred-mask-")
    assert binary["contentType"] == "image/png"
    raw = base64.b64decode(binary["data"])
    assert (read_png(raw) == read_png(base64.b64decode(output["mask"]))).all()
    [mask] = [e for e in obs["extension"] if e["url"] == mapping.MASK_EXTENSION_URL]
    assert mask["valueAttachment"] == {
        "contentType": "image/png",
        "url": f"Binary/{binary['id']}",
        "size": len(raw),
    }
    fractions = {c["code"]["coding"][0]["display"]: c["valueQuantity"] for c in obs["component"]}
    assert fractions["tumour"]["value"] == pytest.approx(6 / 20)
    assert fractions["oedema"]["value"] == pytest.approx(4 / 20)
    assert obs["status"] == "preliminary" and "focus" not in obs
    assert "valueCodeableConcept" not in obs


def _clf_bad(mutate: Any) -> dict[str, Any]:
    output = clf_output()
    mutate(output)
    return output


@pytest.mark.parametrize(
    ("model", "output", "field"),
    [
        (classifier(), {}, "predictions"),
        (classifier(), _clf_bad(lambda o: o["predictions"][0].update(index=7)), "index"),
        (classifier(), _clf_bad(lambda o: o["predictions"][0].update(index="1")), "index"),
        (classifier(), _clf_bad(lambda o: o["predictions"][0].update(confidence=1.5)), "conf"),
        (classifier(), _clf_bad(lambda o: o["predictions"][0].update(confidence=True)), "conf"),
        (classifier(), _clf_bad(lambda o: o["predictions"].append(o["predictions"][0])), "repe"),
        (classifier(), _clf_bad(lambda o: o.pop("operatingPoint")), "operatingPoint"),
        (classifier(), _clf_bad(lambda o: o["operatingPoint"].update(label=None)), "label"),
        (segmenter(), {}, "mask"),
        (segmenter(), {"mask": "not base64!"}, "mask"),
        (segmenter(), {"mask": base64.b64encode(b"GIF89a...").decode()}, "mask"),
        (segmenter(), {**seg_output(), "width": 99}, "width"),
        (segmenter(), seg_output(np.full((2, 2), 5, dtype=np.uint8)), "mask"),
    ],
)
def test_outputs_outside_the_serving_contract_are_refused(
    model: ScoringModel, output: dict[str, Any], field: str
) -> None:
    with pytest.raises(PredictionOutputError) as caught:
        prediction_resources(model, scored("ex-5", output), ISSUED)
    message = str(caught.value)
    assert "ex-5" in message and field in message and "Fix:" in message


def test_an_unknown_problem_type_is_refused() -> None:
    model = ScoringModel("m", "n", "r", "objDet", LABEL_SYSTEM, {0: "a"}, "b")
    with pytest.raises(PredictionOutputError, match="imgClf and imgSeg"):
        prediction_resources(model, scored("ex-6", clf_output()), ISSUED)


def test_a_bad_issued_time_is_refused_by_validation() -> None:
    with pytest.raises(validation.InvalidFhirResourceError, match="issued"):
        prediction_resources(classifier(), scored("ex-7", clf_output()), "yesterday")


@pytest.mark.parametrize("problem_type", ["imgClf", "imgSeg"])
def test_curation_never_takes_a_prediction_for_a_label(problem_type: str) -> None:
    view = _view(problem_type)
    if problem_type == "imgClf":
        resources = prediction_resources(classifier(), scored("ex-8", clf_output()), ISSUED)
    else:
        resources = prediction_resources(segmenter(), scored("ex-8", seg_output()), ISSUED)
    obs = resources[-1]
    assert not rec.has_patient_ml_code(obs, mapping.LABEL_CODE)
    assert rec.label_record(obs, label_system=LABEL_SYSTEM, problem_type=problem_type) is None
    assert ex.label_of(obs, view) is None
    # the examples index over the image and its prediction: one unlabelled example
    records = [
        ("1", None, _document("ex-8")),
        *[(str(i), None, r) for i, r in enumerate(resources)],
    ]
    index = ex.build_index(view, records)
    assert list(index.examples) == ["ex-8"]
    assert index.examples["ex-8"].label is None
    assert index.examples["ex-8"].observations == ()
    assert index.history == {} or all(not v for v in index.history.values())
