"""Record parsing against the data contract: selection, statuses, quarantine reasons."""

from __future__ import annotations

import orjson
import pytest

from patient_ml.curation import records as rec
from patient_ml.curation.quarantine import QuarantineError
from patient_ml.fhir import mapping

FILTER = rec.TokenFilter(["http://loinc.org|24590-2", "|local-code", "anysys"])
SYSTEM = "urn:patient-ml:labels:brain"


def doc(**overrides) -> dict:
    resource = {
        "resourceType": "DocumentReference",
        "id": "d1",
        "meta": {"versionId": "3"},
        "status": "current",
        "type": {"coding": [{"system": "http://loinc.org", "code": "24590-2"}]},
        "subject": {"reference": "Patient/p1"},
        "content": [{"attachment": {"contentType": "image/jpeg", "url": "file:///x.jpg"}}],
    }
    resource.update(overrides)
    return resource


def obs(**overrides) -> dict:
    resource = {
        "resourceType": "Observation",
        "id": "o1",
        "status": "final",
        "code": {"coding": [{"system": mapping.LABEL_CODE_SYSTEM, "code": mapping.LABEL_CODE}]},
        "focus": [{"reference": "DocumentReference/d1"}],
        "valueCodeableConcept": {"coding": [{"system": SYSTEM, "code": "1"}]},
        "performer": [{"display": "Dr. A"}],
    }
    resource.update(overrides)
    return resource


def test_selected_document() -> None:
    image = rec.image_record(doc(), FILTER)
    assert isinstance(image, rec.ImageRecord)
    assert (image.id, image.version, image.patient_ref) == ("d1", "3", "Patient/p1")
    assert image.content_type == "image/jpeg"


@pytest.mark.parametrize(
    ("coding", "selected"),
    [
        ({"system": "http://loinc.org", "code": "24590-2"}, True),
        ({"system": "http://other", "code": "24590-2"}, False),
        ({"code": "local-code"}, True),
        ({"system": "x", "code": "local-code"}, False),
        ({"system": "whatever", "code": "anysys"}, True),
    ],
)
def test_token_matching(coding, selected) -> None:
    result = rec.image_record(doc(type={"coding": [coding]}), FILTER)
    assert (result != rec.NOT_SELECTED) is selected


@pytest.mark.parametrize("status", ["superseded", "entered-in-error"])
def test_excluded_statuses(status) -> None:
    assert rec.image_record(doc(status=status), FILTER) == rec.EXCLUDED


@pytest.mark.parametrize(
    ("resource", "reason"),
    [
        (doc(subject=None), "missing_subject"),
        (doc(subject={"reference": "Group/g1"}), "subject_not_patient"),
        (doc(content=[]), "missing_attachment"),
        (doc(content=[{"attachment": {"contentType": "image/png"}}]), "missing_attachment"),
        (doc(content=[{"attachment": {"contentType": "text/plain", "url": "x"}}]),
         "unsupported_content_type"),
        (doc(id=None), "missing_id"),
        ({"resourceType": "Patient", "id": "p"}, "wrong_resource_type"),
    ],
)  # fmt: skip
def test_quarantine_reasons(resource, reason) -> None:
    with pytest.raises(QuarantineError) as info:
        rec.image_record(resource, FILTER)
    assert info.value.reason == reason


@pytest.mark.parametrize(
    ("raw", "reason"),
    [(b'{"resourceType": "DocumentRef', "malformed_json"), (b"[1,2]", "not_a_resource"),
     (b'{"id": "x"}', "not_a_resource")],
)  # fmt: skip
def test_parse_resource(raw, reason) -> None:
    with pytest.raises(QuarantineError) as info:
        rec.parse_resource(raw)
    assert info.value.reason == reason
    assert rec.parse_resource(orjson.dumps(doc()))["id"] == "d1"


def test_absolute_and_versioned_references() -> None:
    assert rec.reference_id("http://h/fhir/Patient/p9/_history/2", "Patient") == "p9"
    assert rec.reference_id("DocumentReference/d1", "Patient") is None


@pytest.mark.parametrize(
    ("status", "state"),
    [("final", "confirmed"), ("amended", "confirmed"), ("corrected", "confirmed"),
     ("preliminary", "draft"), ("entered-in-error", "excluded"), ("cancelled", "excluded"),
     ("registered", None)],
)  # fmt: skip
def test_label_statuses(status, state) -> None:
    label = rec.label_record(obs(status=status), label_system=SYSTEM, problem_type="imgClf")
    assert (label.status if label else None) == state


def test_label_fields_and_other_datasets() -> None:
    label = rec.label_record(obs(), label_system=SYSTEM, problem_type="imgClf")
    assert (label.image_id, label.class_code, label.performer) == ("d1", "1", "Dr. A")
    other = obs(valueCodeableConcept={"coding": [{"system": "urn:other", "code": "1"}]})
    assert rec.label_record(other, label_system=SYSTEM, problem_type="imgClf") is None
    not_a_label = obs(code={"coding": [{"system": "http://loinc.org", "code": "1234-5"}]})
    assert rec.label_record(not_a_label, label_system=SYSTEM, problem_type="imgClf") is None


@pytest.mark.parametrize(
    "resource",
    [obs(focus=None), obs(valueCodeableConcept=None)],
)
def test_malformed_labels(resource) -> None:
    with pytest.raises(QuarantineError) as info:
        rec.label_record(resource, label_system=SYSTEM, problem_type="imgClf")
    assert info.value.reason == "label_malformed"


def test_segmentation_mask_label() -> None:
    mask = {"contentType": "image/png", "url": "file:///m.png"}
    resource = obs(
        valueCodeableConcept=None,
        extension=[{"url": mapping.MASK_EXTENSION_URL, "valueAttachment": mask}],
    )
    label = rec.label_record(resource, label_system=SYSTEM, problem_type="imgSeg")
    assert label.mask == mask and label.class_code is None
    with pytest.raises(QuarantineError):
        rec.label_record(obs(valueCodeableConcept=None), label_system=SYSTEM, problem_type="imgSeg")
