"""Parse FHIR DocumentReference and label Observation JSON into the few fields curation needs.

This is deliberately not a full FHIR validation (fhir.resources is ~10x slower): it checks the
fields the data contract relies on (see `patient_ml.fhir.mapping`) and quarantines a record with
a precise reason when one is missing or malformed.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from patient_ml.curation.quarantine import QuarantineError
from patient_ml.fhir import mapping


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
    """FHIR token matching of `DocumentReference.type` codings: `system|code`, `|code`, `code`."""

    def __init__(self, tokens: Sequence[str]) -> None:
        self.exact: set[tuple[str | None, str]] = set()
        self.any_system: set[str] = set()
        for token in tokens:
            if "|" in token:
                system, code = token.split("|", 1)
                self.exact.add((system or None, code))
            else:
                self.any_system.add(token)

    def matches(self, codings: Any) -> bool:
        if not isinstance(codings, list):
            return False
        for coding in codings:
            if not isinstance(coding, dict):
                continue
            code = coding.get("code")
            if not isinstance(code, str):
                continue
            if code in self.any_system or (coding.get("system") or None, code) in self.exact:
                return True
        return False


def parse_resource(raw: bytes | str | dict[str, Any]) -> dict[str, Any]:
    """A resource dict from an NDJSON line (or an already parsed dict)."""
    if isinstance(raw, dict):
        resource = raw
    else:
        try:
            resource = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise QuarantineError("malformed_json", str(exc).split(":")[0]) from None
    if not isinstance(resource, dict) or not isinstance(resource.get("resourceType"), str):
        raise QuarantineError("not_a_resource")
    return resource


def reference_id(reference: Any, resource_type: str) -> str | None:
    """The id in `Type/id`, `http://server/fhir/Type/id` or `Type/id/_history/2`; else None."""
    if not isinstance(reference, str):
        return None
    parts = reference.split("/")
    for i in range(len(parts) - 1):
        if parts[i] == resource_type and parts[i + 1]:
            return parts[i + 1]
    return None


def resource_version(resource: dict[str, Any]) -> str | None:
    meta = resource.get("meta")
    if isinstance(meta, dict) and isinstance(meta.get("versionId"), str):
        return meta["versionId"]
    return None


def _resource_id(resource: dict[str, Any]) -> str:
    rid = resource.get("id")
    if not isinstance(rid, str) or not rid:
        raise QuarantineError("missing_id")
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
    patient_id = reference_id(subject["reference"], "Patient")
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


def is_label_observation(resource: dict[str, Any]) -> bool:
    code = resource.get("code")
    codings = code.get("coding") if isinstance(code, dict) else None
    if not isinstance(codings, list):
        return False
    return any(
        isinstance(c, dict)
        and c.get("system") == mapping.LABEL_CODE_SYSTEM
        and c.get("code") == mapping.LABEL_CODE
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
    if not is_label_observation(resource):
        return None
    rid = _resource_id(resource)
    status = resource.get("status")
    if status in mapping.LABEL_STATUS_CONFIRMED:
        state = "confirmed"
    elif status in mapping.LABEL_STATUS_DRAFT:
        state = "draft"
    elif status in mapping.LABEL_STATUS_EXCLUDED:
        return LabelRecord(
            id=rid,
            version=resource_version(resource),
            image_id=_focus_image_id(resource) or "",
            status="excluded",
            class_code=None,
            mask=None,
            performer=None,
            updated=resource_updated(resource),
        )
    else:
        return None  # registered, unknown: never used
    image_id = _focus_image_id(resource)
    class_code = None
    mask = None
    if problem_type == "imgClf":
        value = resource.get("valueCodeableConcept")
        codings = value.get("coding") if isinstance(value, dict) else None
        if isinstance(codings, list):
            for coding in codings:
                if isinstance(coding, dict) and coding.get("system") == label_system:
                    code = coding.get("code")
                    if not isinstance(code, str):
                        raise QuarantineError("label_malformed", "the label code is not a string")
                    class_code = code
                    break
        if class_code is None:
            if isinstance(codings, list) and codings:
                return None  # a label of another dataset (another label system)
            raise QuarantineError("label_malformed", "no valueCodeableConcept coding")
    else:
        if _codes_other_system_only(resource, label_system):
            return None  # a mask labelled for another dataset
        for ext in resource.get("extension") or []:
            if isinstance(ext, dict) and ext.get("url") == mapping.MASK_EXTENSION_URL:
                mask = ext.get("valueAttachment")
        if not isinstance(mask, dict) or not (mask.get("url") or mask.get("data")):
            raise QuarantineError("label_malformed", "no segmentation-mask extension")
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


_CANONICAL_INDEX = re.compile(r"0|[1-9][0-9]{0,2}")


def label_index(code: str | None) -> int | None:
    """The label index a code names, only in its canonical form: ASCII digits, no sign, space
    or leading zero (`int()` also reads '+1', ' 1', '1_0' or Arabic-Indic digits as 1)."""
    if not isinstance(code, str) or not _CANONICAL_INDEX.fullmatch(code):
        return None
    return int(code)


def _focus_image_id(resource: dict[str, Any]) -> str | None:
    focus = resource.get("focus")
    if isinstance(focus, list):
        for ref in focus:
            if isinstance(ref, dict):
                image_id = reference_id(ref.get("reference"), "DocumentReference")
                if image_id:
                    return image_id
    return None


def _codes_other_system_only(resource: dict[str, Any], label_system: str) -> bool:
    value = resource.get("valueCodeableConcept")
    codings = value.get("coding") if isinstance(value, dict) else None
    if not isinstance(codings, list) or not codings:
        return False
    return not any(isinstance(c, dict) and c.get("system") == label_system for c in codings)


def _performer(resource: dict[str, Any]) -> str | None:
    performers = resource.get("performer")
    if isinstance(performers, list) and performers and isinstance(performers[0], dict):
        return performers[0].get("display") or performers[0].get("reference")
    return None


def resource_updated(resource: dict[str, Any]) -> str | None:
    meta = resource.get("meta")
    if isinstance(meta, dict) and isinstance(meta.get("lastUpdated"), str):
        return meta["lastUpdated"]
    issued = resource.get("issued")
    return issued if isinstance(issued, str) else None
