"""Curation under hostile records, third pass (issue 33): ids outside FHIR's id grammar, one id
or patient spelled in two Unicode normal forms, duplicated JSON keys, label Observations that
say two things at once, and base64Binary with the whitespace the standard allows."""

from __future__ import annotations

import base64
import hashlib
import unicodedata
from pathlib import Path
from typing import Any

import orjson
import pytest
from sqlalchemy import Engine

from patient_ml.curation import records as rec
from patient_ml.curation.quarantine import REASONS, QuarantineError
from tests.curation.cohort import Cohort, png
from tests.curation.test_hostile_records import manifest, new_setup, reasons, run, write


def items(result: Any) -> dict[str, dict[str, Any]]:
    return {i["resourceId"]: i for i in result.report["quarantined"]["items"]}


def write_lines(cohort: Cohort, folder: Path, extra: list[bytes]) -> Path:
    write(cohort, folder)
    with open(folder / "DocumentReference.ndjson", "ab") as out:
        out.write(b"\n".join(extra) + b"\n")
    return folder


# ----------------------------------------------------------------------------- identifiers

NOT_FHIR_IDS = ["../../etc/passwd", "a/b", "x" * 200, "a b", "a_b", "d\u00e9", "", "a\u200bb"]


@pytest.mark.parametrize("bad", NOT_FHIR_IDS)
def test_a_document_id_outside_the_fhir_id_grammar_is_quarantined(bad: str) -> None:
    cohort = Cohort(Path("/unused"), "c", "urn:x")
    doc = cohort.doc("ok", "p1", url="file:///unused/x.png") | {"id": bad}
    with pytest.raises(QuarantineError) as caught:
        rec.image_record(doc, rec.TokenFilter(["http://loinc.org|c"]))
    assert caught.value.reason == ("missing_id" if bad == "" else "invalid_id")
    assert bad not in caught.value.detail or bad == ""  # never echoes the value


@pytest.mark.parametrize(
    "reference",
    ["Patient/../x", "Patient/a b", "Patient/" + "p" * 65, "Patient/p\u00e9", "Patient/",
     "Patient/p1/extra", "http://h/fhir/Patient/a%2Fb", "Patient/p1/_history/x y"],
)  # fmt: skip
def test_a_patient_reference_outside_the_grammar_is_quarantined(reference: str) -> None:
    cohort = Cohort(Path("/unused"), "c", "urn:x")
    doc = cohort.doc("ok", "p1", url="file:///unused/x.png")
    doc["subject"] = {"reference": reference}
    with pytest.raises(QuarantineError) as caught:
        rec.image_record(doc, rec.TokenFilter(["http://loinc.org|c"]))
    assert caught.value.reason == "invalid_reference"
    assert "p\u00e9" not in caught.value.detail and ".." not in caught.value.detail


@pytest.mark.parametrize(
    ("reference", "patient"),
    [("Patient/p1", "Patient/p1"), ("Patient/p1/_history/3", "Patient/p1"),
     ("https://fhir.example.org/r4/Patient/p-1.2", "Patient/p-1.2")],
)  # fmt: skip
def test_grammatical_patient_references_name_one_patient(reference: str, patient: str) -> None:
    cohort = Cohort(Path("/unused"), "c", "urn:x")
    doc = cohort.doc("ok", "p1", url="file:///unused/x.png")
    doc["subject"] = {"reference": reference}
    image = rec.image_record(doc, rec.TokenFilter(["http://loinc.org|c"]))
    assert isinstance(image, rec.ImageRecord) and image.patient_ref == patient


def test_hostile_ids_are_quarantined_and_nothing_is_fetched(engine: Engine, tmp_path: Path) -> None:
    setup = new_setup(engine, tmp_path)
    cohort: Cohort = setup["cohort"]
    cohort.add_patients(0, 3)
    hostile = ["../../etc/passwd", "a/b", "y" * 200, "a b"]
    for n, bad in enumerate(hostile):
        cohort.doc(f"h{n}", f"ph{n}", data=png(7000 + n))["id"] = bad

    result = run(engine, setup, write(cohort, tmp_path / "batch"))

    assert reasons(result) == {"invalid_id": len(hostile)}
    assert set(manifest(setup, result)) == cohort.good_ids
    quarantined = [i for i in result.report["quarantined"]["items"] if i["reason"] == "invalid_id"]
    assert all(len(str(i["resourceId"])) <= 80 for i in quarantined)
    stored = list((tmp_path / "artifacts").rglob("*.png"))
    assert len(stored) == len(cohort.good_ids)  # no image of a refused record was fetched


def test_nfc_and_nfd_spellings_never_split_a_patient(engine: Engine, tmp_path: Path) -> None:
    """20 patients whose id holds a letter with a diacritic, each with one image filed under the
    NFC spelling and one under the NFD spelling (and the same for document ids): none may
    become two patients in two splits. FHIR ids are ASCII, so both spellings are refused, each
    with its reason; ASCII patients are untouched."""
    setup = new_setup(engine, tmp_path)
    cohort: Cohort = setup["cohort"]
    cohort.add_patients(0, 10)
    for n in range(20):
        name = f"zo\u00eb-{n}"
        for form in ("NFC", "NFD"):
            doc_id = f"nf-{n}-{form}"
            cohort.doc(
                doc_id, unicodedata.normalize(form, name), data=png(8000 + 2 * n + len(form))
            )
            cohort.label(f"o-{doc_id}", doc_id, n % 2)
        for form in ("NFC", "NFD"):
            cohort.doc(unicodedata.normalize(form, f"r\u00e9-{n}"), f"pr{n}", data=png(8100 + n))

    result = run(engine, setup, write(cohort, tmp_path / "batch"))

    examples = manifest(setup, result)
    assert set(examples) == cohort.good_ids
    for n in range(20):
        splits = {examples[d]["split"] for d in (f"nf-{n}-NFC", f"nf-{n}-NFD") if d in examples}
        assert len(splits) <= 1
    found = reasons(result)
    assert found["invalid_reference"] == 40 and found["invalid_id"] == 40
    by_id = items(result)
    assert "non-ASCII" in by_id["nf-0-NFD"]["detail"]
    assert "zo" not in by_id["nf-0-NFD"]["detail"]  # the patient id is never shown


def test_label_focus_outside_the_grammar_is_quarantined(engine: Engine, tmp_path: Path) -> None:
    setup = new_setup(engine, tmp_path)
    cohort: Cohort = setup["cohort"]
    cohort.doc("target", "p1", data=png(9001))
    cohort.label("o-bad", "target", 1)["focus"] = [{"reference": "DocumentReference/t\u00e4rget"}]
    cohort.label("o-ok", "target", 1)
    result = run(engine, setup, write(cohort, tmp_path / "batch"))
    assert items(result)["o-bad"]["reason"] == "invalid_reference"
    assert manifest(setup, result)["target"]["label"]["classes"] == [1]


# ----------------------------------------------------------------------------- duplicate keys


def test_records_with_duplicated_keys_are_quarantined(engine: Engine, tmp_path: Path) -> None:
    setup = new_setup(engine, tmp_path)
    cohort: Cohort = setup["cohort"]
    cohort.add_patients(0, 2)
    first = cohort.doc("dk-subject", "pa", data=png(9100))
    cohort.docs.remove(first)
    line = orjson.dumps(first)
    patient_twice = line.replace(b'"subject":', b'"subject":{"reference":"Patient/pb"},"subject":')
    id_twice = orjson.dumps(first | {"id": "dk-id"}).replace(b'"id":', b'"id":"dk-other","id":', 1)
    url = first["content"][0]["attachment"]["url"].encode()
    nested = orjson.dumps(first | {"id": "dk-url"}).replace(
        b'"url":"' + url + b'"', b'"url":"' + url + b'","url":"file:///etc/passwd"'
    )
    escaped = orjson.dumps(first | {"id": "dk-escaped"}).replace(
        b'"status":', b'"st\\u0061tus":"x","status":'
    )
    label = cohort.label("dk-obs", cohort.good_ids.copy().pop(), 1)
    cohort.observations.remove(label)
    label_twice = orjson.dumps(label).replace(
        b'"valueCodeableConcept":', b'"valueCodeableConcept":{"coding":[]},"valueCodeableConcept":'
    )
    folder = write_lines(cohort, tmp_path / "batch", [patient_twice, id_twice, nested, escaped])
    with open(folder / "Observation.ndjson", "ab") as out:
        out.write(label_twice + b"\n")

    result = run(engine, setup, folder)

    assert reasons(result) == {"duplicate_key": 5}
    details = {i["resourceId"]: i["detail"] for i in result.report["quarantined"]["items"]}
    assert "'subject'" in details["dk-subject"]
    assert "'url'" in details["dk-url"] and "content[0].attachment" in details["dk-url"]
    assert "'status'" in details["dk-escaped"]
    assert "'valueCodeableConcept'" in details["dk-obs"]
    assert set(manifest(setup, result)) == cohort.good_ids


def test_duplicate_keys_inside_strings_are_not_duplicates() -> None:
    line = b'{"resourceType":"DocumentReference","id":"a","note":"\\"id\\": \\"b\\", x:y"}'
    assert rec.parse_resource(line)["id"] == "a"


# ----------------------------------------------------------------------------- labels


def _label(codings: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    from patient_ml.fhir import mapping

    return {
        "resourceType": "Observation",
        "id": "o1",
        "status": "final",
        "code": {"coding": [{"system": mapping.LABEL_CODE_SYSTEM, "code": mapping.LABEL_CODE}]},
        "focus": [{"reference": "DocumentReference/d1"}],
        "valueCodeableConcept": {"coding": codings},
        **extra,
    }


def test_two_codings_of_the_label_system_are_ambiguous() -> None:
    resource = _label([{"system": "urn:s", "code": "0"}, {"system": "urn:s", "code": "1"}])
    with pytest.raises(QuarantineError) as caught:
        rec.label_record(resource, label_system="urn:s", problem_type="imgClf")
    assert caught.value.reason == "label_ambiguous"
    assert "'0'" in caught.value.detail and "'1'" in caught.value.detail


def test_the_same_code_twice_and_other_systems_are_not_ambiguous() -> None:
    resource = _label(
        [{"system": "urn:s", "code": "1"}, {"system": "urn:other", "code": "0"},
         {"system": "urn:s", "code": "1", "display": "positive"}]
    )  # fmt: skip
    label = rec.label_record(resource, label_system="urn:s", problem_type="imgClf")
    assert label is not None and label.class_code == "1"


def test_two_focus_documents_or_two_masks_are_ambiguous() -> None:
    two_docs = _label(
        [{"system": "urn:s", "code": "1"}],
        focus=[{"reference": "DocumentReference/d1"}, {"reference": "DocumentReference/d2"}],
    )
    with pytest.raises(QuarantineError) as caught:
        rec.label_record(two_docs, label_system="urn:s", problem_type="imgClf")
    assert caught.value.reason == "label_ambiguous"
    from patient_ml.fhir import mapping

    mask = {"url": mapping.MASK_EXTENSION_URL, "valueAttachment": {"url": "file:///m.png"}}
    two_masks = _label([{"system": "urn:s", "code": "mask"}], extension=[mask, mask | {}])
    two_masks["extension"][1] = {**mask, "valueAttachment": {"url": "file:///other.png"}}
    with pytest.raises(QuarantineError) as caught:
        rec.label_record(two_masks, label_system="urn:s", problem_type="imgSeg")
    assert caught.value.reason == "label_ambiguous"


def test_an_ambiguous_label_is_reported_and_never_trains(engine: Engine, tmp_path: Path) -> None:
    setup = new_setup(engine, tmp_path)
    cohort: Cohort = setup["cohort"]
    cohort.doc("amb", "p1", data=png(9300))
    label = cohort.label("o-amb", "amb", 0)
    label["valueCodeableConcept"]["coding"].append({"system": cohort.label_system, "code": "1"})
    result = run(engine, setup, write(cohort, tmp_path / "batch"))
    assert reasons(result) == {"label_ambiguous": 1}
    assert manifest(setup, result)["amb"]["label"]["status"] == "none"


# ----------------------------------------------------------------------------- base64Binary


def mime_base64(data: bytes, line_end: str = "\r\n") -> str:
    text = base64.b64encode(data).decode()
    return line_end.join(text[i : i + 76] for i in range(0, len(text), 76)) + line_end


def test_base64_with_the_whitespace_fhir_allows_is_decoded(engine: Engine, tmp_path: Path) -> None:
    setup = new_setup(engine, tmp_path)
    cohort: Cohort = setup["cohort"]
    variants = {
        "mime-crlf": mime_base64(png(9400)),
        "mime-lf": mime_base64(png(9401), "\n"),
        "spaced": " ".join(
            base64.b64encode(png(9402)).decode()[i : i + 4] for i in range(0, 2000, 4)
        ),
        "tabbed": "\t" + base64.b64encode(png(9403)).decode() + " \n",
    }
    for doc_id, data in variants.items():
        doc = cohort.doc(doc_id, f"p-{doc_id}", url=None)
        doc["content"][0]["attachment"]["data"] = data
    bad = {
        "bad-chars": "iVBOR%%%w0KGgo=",
        "bad-padding": "iVBO=RAAA",
        "bad-after-padding": base64.b64encode(png(9404)).decode() + "AAAA",
        "bad-unicode": "iVBO\u00a0RAAA",
    }
    for doc_id, data in bad.items():
        cohort.doc(doc_id, f"p-{doc_id}", url=None)["content"][0]["attachment"]["data"] = data

    result = run(engine, setup, write(cohort, tmp_path / "batch"))

    examples = manifest(setup, result)
    assert set(examples) == set(variants)
    assert examples["mime-crlf"]["image"]["sha256"] == hashlib.sha256(png(9400)).hexdigest()
    assert reasons(result) == {"invalid_inline_data": len(bad)}


def test_every_new_reason_has_its_meaning() -> None:
    for reason in ("invalid_id", "invalid_reference", "duplicate_key", "label_ambiguous",
                   "record_too_large"):  # fmt: skip
        assert reason in REASONS and len(REASONS[reason]) > 20


def test_codes_and_label_systems_match_in_either_normal_form() -> None:
    nfd = unicodedata.normalize("NFD", "r\u00f6ntgen")
    tokens = rec.TokenFilter(["urn:codes|r\u00f6ntgen"])  # configs store names in NFC
    assert tokens.matches([{"system": "urn:codes", "code": nfd}])
    system = "urn:labels:tum\u00f6r"
    resource = _label([{"system": unicodedata.normalize("NFD", system), "code": "1"}])
    label = rec.label_record(resource, label_system=system, problem_type="imgClf")
    assert label is not None and label.class_code == "1"
