"""Parse FHIR DocumentReference and label Observation JSON into the few fields curation needs.

This is deliberately not a full FHIR validation (fhir.resources is ~10x slower): it checks the
fields the data contract relies on (see `patient_ml.fhir.mapping`) and quarantines a record with
a precise reason when one is missing or malformed.

Identifiers follow FHIR's grammar (issue 33): resource ids and the ids in references are FHIR
ids (ASCII), so an id or patient spelled in two Unicode forms is refused (`invalid_id`,
`invalid_reference`) instead of becoming two examples or two patients. A record in which one
key appears twice in an object is quarantined (`duplicate_key`): a parser keeps one value
silently. A label that says two things at once is `label_ambiguous`.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from patient_ml.config.duplicates import has_duplicate_keys, json_duplicate_keys, loads_json
from patient_ml.config.identifiers import FHIR_ID_RULE, fhir_id_problem, shorten
from patient_ml.curation.quarantine import QuarantineError
from patient_ml.exceptions import FieldError
from patient_ml.fhir import mapping
from patient_ml.fhir.ndjson import LineTooLong
from patient_ml.fhir.search import DuplicateKeyResource


@dataclass(slots=True)
class ImageRecord:
    id: str
    version: str | None
    patient_ref: str
    attachment: dict[str, Any]
    content_type: str | None


@dataclass(slots=True)
class LabelRecord:
    id: str
    version: str | None
    image_id: str
    status: str  # "draft" | "confirmed" | "excluded" (a tombstone: see label_record)
    class_code: str | None  # imgClf: the label index as text
    mask: dict[str, Any] | None  # imgSeg: the mask attachment
    performer: str | None
    updated: str | None


class TokenFilter:
    """FHIR token matching of `DocumentReference.type` codings: `system|code`, `|code`, `code`.
    Codes and systems are compared in Unicode NFC (configs store names in NFC), so an NFD
    spelling of a code selects the same images."""

    def __init__(self, tokens: Sequence[str]) -> None:
        self.exact: set[tuple[str | None, str]] = set()
        self.any_system: set[str] = set()
        for token in tokens:
            if "|" in token:
                system, code = token.split("|", 1)
                self.exact.add((nfc(system) or None, nfc(code)))
            else:
                self.any_system.add(nfc(token))

    def matches(self, codings: object) -> bool:
        if not isinstance(codings, list):
            return False
        for coding in codings:
            if not isinstance(coding, dict):
                continue
            code = coding.get("code")
            if not isinstance(code, str):
                continue
            code, system = nfc(code), coding.get("system")
            system = nfc(system) if isinstance(system, str) else None
            if code in self.any_system or (system or None, code) in self.exact:
                return True
        return False


def nfc(text: str) -> str:
    return text if text.isascii() else unicodedata.normalize("NFC", text)


def parse_resource(raw: bytes | str | dict[str, Any] | LineTooLong) -> dict[str, Any]:
    """A resource dict from an NDJSON line (or an already parsed dict)."""
    if isinstance(raw, LineTooLong):
        raise QuarantineError(
            "record_too_large",
            f"the line is longer than {raw.limit} bytes ({raw.size} at least), the limit for a "
            "record whose inline image takes curation.maxImageBytes; it was read past, unparsed",
        )
    if isinstance(raw, DuplicateKeyResource):  # a search page's entry, checked when read
        duplicate_keys(raw.duplicates, raw)
    if isinstance(raw, dict):
        resource = raw
    else:
        try:
            resource = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise QuarantineError("malformed_json", str(exc).split(":")[0]) from None
        _refuse_duplicate_keys(raw, resource)
    if not isinstance(resource, dict) or not isinstance(resource.get("resourceType"), str):
        raise QuarantineError("not_a_resource")
    return resource


def _refuse_duplicate_keys(raw: bytes | str, parsed: object) -> None:
    """QuarantineError('duplicate_key') when an object of the line holds a key twice (checked
    on every line, see `has_duplicate_keys`; only a line that has one is parsed again to name
    the keys)."""
    text = raw.encode() if isinstance(raw, str) else raw
    if not has_duplicate_keys(text, parsed):
        return
    duplicate_keys(json_duplicate_keys(loads_json(text)), parsed)


def duplicate_keys(found: list[FieldError], parsed: object) -> None:
    """Raise QuarantineError('duplicate_key') naming (at most 3 of) the duplicated keys."""
    shown = ", ".join(_where_duplicate(error.field) for error in found[:3])
    more = f" (+{len(found) - 3} more)" if len(found) > 3 else ""
    error = QuarantineError(
        "duplicate_key", f"{shown}{more} twice in one object; a parser would keep one silently"
    )
    error.resource = parsed  # the last values: enough to list the record by its id
    raise error


def _where_duplicate(field: str) -> str:
    parent, _, key = field.rpartition(".")
    if "[" in key and not parent:  # a key holding '[': show it whole
        parent, key = "", field
    return f"key {shorten(key, 40)!r} in {shorten(parent, 60) or '(resource)'}"


_HTTP_BASE = re.compile(r"https?://[^\s/]+(?:/[^\s/]+)*", re.ASCII)
_RELATIVE = re.compile(r"([A-Za-z]+)/([A-Za-z0-9.-]{1,64})(?:/_history/[A-Za-z0-9.-]{1,64})?")


def reference_id(reference: object, resource_type: str, field: str = "reference") -> str | None:
    """The id in `Type/id`, `http(s)://server/fhir/Type/id` or `Type/id/_history/2`; None when
    the reference names another type (or none). QuarantineError('invalid_reference') when it
    names `resource_type` outside that grammar or with an id that is not a FHIR id."""
    if not isinstance(reference, str):
        return None
    simple = _RELATIVE.fullmatch(reference)
    if simple and simple.group(1) == resource_type:  # the usual case, in the grammar
        return simple.group(2)
    parts = reference.split("/")
    version = None
    if len(parts) >= 4 and parts[-2] == "_history":
        parts, version = parts[:-2], parts[-1]
    if len(parts) < 2 or parts[-2] != resource_type:
        if resource_type in parts:
            raise _invalid_reference(field, f"is not [base/]{resource_type}/id[/_history/v]")
        return None
    base = "/".join(parts[:-2])
    if base and not _HTTP_BASE.fullmatch(base):
        raise _invalid_reference(field, "has a base that is not an http(s) URL")
    for what, value in (("id", parts[-1]), ("version", version)):
        problem = fhir_id_problem(value) if value is not None else None
        if problem:
            raise _invalid_reference(field, f"{what} {problem} ({FHIR_ID_RULE})")
    return parts[-1]


def _invalid_reference(field: str, problem: str) -> QuarantineError:
    return QuarantineError("invalid_reference", f"{field}: the {problem}")


def resource_version(resource: dict[str, Any]) -> str | None:
    meta = resource.get("meta")
    if isinstance(meta, dict) and isinstance(meta.get("versionId"), str):
        return str(meta["versionId"])
    return None


def _resource_id(resource: dict[str, Any]) -> str:
    rid = resource.get("id")
    if not isinstance(rid, str) or not rid:
        raise QuarantineError("missing_id")
    problem = fhir_id_problem(rid)
    if problem:
        raise QuarantineError("invalid_id", f"the id {problem} ({FHIR_ID_RULE})")
    return rid


NOT_SELECTED = "not_selected"  # type coding matches none of the dataset's filter codes
EXCLUDED = "excluded"  # status superseded or entered-in-error


def image_record(resource: dict[str, Any], type_filter: TokenFilter) -> ImageRecord | str:
    """The image of a DocumentReference in the dataset, or NOT_SELECTED / EXCLUDED; raises
    QuarantineError when a selected record is malformed."""
    if resource.get("resourceType") != "DocumentReference":
        raise QuarantineError("wrong_resource_type", str(resource.get("resourceType")))
    doc_type = resource.get("type")
    if not isinstance(doc_type, dict) or not type_filter.matches(doc_type.get("coding")):
        return NOT_SELECTED
    rid = _resource_id(resource)
    if resource.get("status") in mapping.DOCUMENT_STATUS_EXCLUDED:
        return EXCLUDED
    subject = resource.get("subject")
    if not isinstance(subject, dict) or not subject.get("reference"):
        raise QuarantineError("missing_subject")
    patient_id = reference_id(subject["reference"], "Patient", "subject.reference")
    if patient_id is None:
        raise QuarantineError("subject_not_patient", str(subject["reference"]).split("/")[0])
    content = resource.get("content")
    attachment = None
    if isinstance(content, list) and content and isinstance(content[0], dict):
        attachment = content[0].get("attachment")
    if not isinstance(attachment, dict) or not (attachment.get("url") or attachment.get("data")):
        raise QuarantineError("missing_attachment")
    content_type = attachment.get("contentType")
    if content_type is not None:
        base_type = str(content_type).split(";")[0].strip().lower()
        if base_type not in mapping.IMAGE_CONTENT_TYPES:
            raise QuarantineError("unsupported_content_type", base_type)
        content_type = base_type
    return ImageRecord(
        id=rid,
        version=resource_version(resource),
        patient_ref=f"Patient/{patient_id}",
        attachment=attachment,
        content_type=content_type,
    )


def has_patient_ml_code(resource: Mapping[str, Any], code: str) -> bool:
    """Whether the resource's `code.coding` holds (`LABEL_CODE_SYSTEM`, `code`): a label is
    coded `mapping.LABEL_CODE`, an upstream model's prediction `mapping.PREDICTION_CODE`."""
    concept = resource.get("code")
    codings = concept.get("coding") if isinstance(concept, Mapping) else None
    if not isinstance(codings, list):
        return False
    return any(
        isinstance(c, Mapping)
        and c.get("system") == mapping.LABEL_CODE_SYSTEM
        and c.get("code") == code
        for c in codings
    )


def label_record(
    resource: dict[str, Any], *, label_system: str, problem_type: str
) -> LabelRecord | None:
    """A label of this dataset, None when the Observation is not a label of this dataset (or has
    a status that is neither used nor excluded); raises QuarantineError when it is malformed.

    An excluded status (`entered-in-error`, `cancelled`) gives a record with status "excluded"
    and no value: it never trains, and it hides the earlier versions of the same Observation
    (a source can hold several versions of one Observation, e.g. NDJSON with appended labels)."""
    if resource.get("resourceType") != "Observation":
        raise QuarantineError("wrong_resource_type", str(resource.get("resourceType")))
    if not has_patient_ml_code(resource, mapping.LABEL_CODE):
        return None
    rid = _resource_id(resource)
    status = resource.get("status")
    if status in mapping.LABEL_STATUS_CONFIRMED:
        state = "confirmed"
    elif status in mapping.LABEL_STATUS_DRAFT:
        state = "draft"
    elif status in mapping.LABEL_STATUS_EXCLUDED:
        try:  # a tombstone hides the earlier versions of its id, whatever its focus says
            withdrawn = _focus_image_id(resource) or ""
        except QuarantineError:
            withdrawn = ""
        return LabelRecord(
            id=rid,
            version=resource_version(resource),
            image_id=withdrawn,
            status="excluded",
            class_code=None,
            mask=None,
            performer=None,
            updated=resource_updated(resource),
        )
    else:
        return None  # registered, unknown: never used
    class_code = None
    mask = None
    if problem_type == "imgClf":
        value = resource.get("valueCodeableConcept")
        codings = value.get("coding") if isinstance(value, dict) else None
        class_code = _class_code(codings, label_system)
        if class_code is None:
            if isinstance(codings, list) and codings:
                return None  # a label of another dataset (another label system)
            raise QuarantineError("label_malformed", "no valueCodeableConcept coding")
    else:
        if _codes_other_system_only(resource, label_system):
            return None  # a mask labelled for another dataset
        mask = _mask(resource)
        if not isinstance(mask, dict) or not (mask.get("url") or mask.get("data")):
            raise QuarantineError("label_malformed", "no segmentation-mask extension")
    image_id = _focus_image_id(resource)  # once the label is known to be of this dataset
    if image_id is None:
        raise QuarantineError("label_malformed", "no focus reference to a DocumentReference")
    return LabelRecord(
        id=rid,
        version=resource_version(resource),
        image_id=image_id,
        status=state,
        class_code=class_code,
        mask=mask,
        performer=_performer(resource),
        updated=resource_updated(resource),
    )


def _class_code(codings: object, label_system: str) -> str | None:
    """The one code of `label_system` among the codings; None when there is none."""
    if not isinstance(codings, list):
        return None
    codes = [c.get("code") for c in codings if _in_system(c, label_system)]
    if not codes:
        return None
    texts = [code for code in codes if isinstance(code, str)]
    if len(texts) < len(codes):
        raise QuarantineError("label_malformed", "the label code is not a string")
    distinct = sorted(set(texts))
    if len(distinct) > 1:
        shown = ", ".join(repr(shorten(code, 20)) for code in distinct[:4])
        raise QuarantineError(
            "label_ambiguous", f"{len(distinct)} codes of the label system: {shown}"
        )
    return distinct[0]


def _in_system(coding: object, system: str) -> bool:
    """A coding of `system` (compared in NFC, as configs store it)."""
    if not isinstance(coding, dict) or not isinstance(coding.get("system"), str):
        return False
    return coding["system"] == system or nfc(coding["system"]) == nfc(system)


def _mask(resource: dict[str, Any]) -> Any:
    masks: list[Any] = []
    for ext in resource.get("extension") or []:
        is_mask = isinstance(ext, dict) and ext.get("url") == mapping.MASK_EXTENSION_URL
        if is_mask and ext.get("valueAttachment") not in masks:
            masks.append(ext.get("valueAttachment"))
    if len(masks) > 1:
        raise QuarantineError("label_ambiguous", f"{len(masks)} different segmentation masks")
    return masks[0] if masks else None


_CANONICAL_INDEX = re.compile(r"0|[1-9][0-9]{0,2}")


def label_index(code: str | None) -> int | None:
    """The label index a code names, only in its canonical form: ASCII digits, no sign, space
    or leading zero (`int()` also reads '+1', ' 1', '1_0' or Arabic-Indic digits as 1)."""
    if not isinstance(code, str) or not _CANONICAL_INDEX.fullmatch(code):
        return None
    return int(code)


def _focus_image_id(resource: dict[str, Any]) -> str | None:
    """The one DocumentReference in `focus`; label_ambiguous when it names several."""
    focus = resource.get("focus")
    found: list[str] = []
    if isinstance(focus, list):
        for i, ref in enumerate(focus):
            if isinstance(ref, dict):
                where = f"focus[{i}].reference"
                image_id = reference_id(ref.get("reference"), "DocumentReference", where)
                if image_id and image_id not in found:
                    found.append(image_id)
    if len(found) > 1:
        raise QuarantineError("label_ambiguous", f"focus names {len(found)} DocumentReferences")
    return found[0] if found else None


def _codes_other_system_only(resource: dict[str, Any], label_system: str) -> bool:
    value = resource.get("valueCodeableConcept")
    codings = value.get("coding") if isinstance(value, dict) else None
    if not isinstance(codings, list) or not codings:
        return False
    return not any(_in_system(c, label_system) for c in codings)


def _performer(resource: dict[str, Any]) -> str | None:
    performers = resource.get("performer")
    if isinstance(performers, list) and performers and isinstance(performers[0], dict):
        return performers[0].get("display") or performers[0].get("reference")
    return None


def resource_updated(resource: dict[str, Any]) -> str | None:
    meta = resource.get("meta")
    if isinstance(meta, dict) and isinstance(meta.get("lastUpdated"), str):
        return str(meta["lastUpdated"])
    issued = resource.get("issued")
    return issued if isinstance(issued, str) else None
