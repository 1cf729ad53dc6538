"""Why a record was quarantined: stable reason codes (used in reports and tests) with the text
a data steward reads. A quarantined record never stops curation; it is listed in the curation
report with its reason, and everything else goes on."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from patient_ml.exceptions import PatientMLError
from patient_ml.fhir import validation

log = logging.getLogger("patient_ml.curation")

REASONS: dict[str, str] = {
    # record level
    "malformed_json": "the line is not valid JSON",
    "not_a_resource": "the JSON is not a FHIR resource object (no resourceType)",
    "wrong_resource_type": "a resource of another type than the file or search promised",
    "record_too_large": "the NDJSON line is longer than the record limit (the base64 text of "
    "an image of curation.maxImageBytes with line breaks, plus 1 MiB); it was read past in "
    "pieces, never held in memory",
    "duplicate_key": "a key appears twice in one JSON object of the record: a parser keeps one "
    "of the values silently, so what the record says is ambiguous",
    "missing_id": "the resource has no id",
    "invalid_id": "the resource id is not a FHIR id (1-64 ASCII letters, digits, '-' or '.'); "
    "an id in another Unicode spelling would name another resource, so it is refused, "
    "never normalised",
    "invalid_reference": "a reference (DocumentReference.subject, Observation.focus) is not "
    "[http(s)://base/]Type/id[/_history/version] with FHIR ids: its patient or image cannot "
    "be named safely (two Unicode spellings of one patient id would be two patients)",
    "missing_subject": "the DocumentReference has no subject, so its patient is unknown",
    "subject_not_patient": "the subject does not reference a Patient",
    "missing_attachment": "the DocumentReference has no content[0].attachment with url or data",
    "unsupported_content_type": "the attachment is not PNG, JPEG or DICOM",
    # fetching
    "url_not_allowed": "the URL's scheme or host is not on the allowed list",
    "url_malformed": "the URL is ambiguous or malformed (user information, backslash, control "
    "character, bad port, bad IPv6 literal, bad S3 bucket or key)",
    "path_outside_allowed_roots": "a file:// URL points outside the allowed roots",
    "image_not_found": "nothing exists at the image URL",
    "image_unreachable": "the image URL could not be fetched (network error or server error)",
    "image_too_large": "the image file is larger than curation.maxImageBytes",
    "invalid_inline_data": "attachment.data is not valid base64 (whitespace between the "
    "characters, as in MIME line breaks, is allowed)",
    "image_fetch_timeout": "the image was not fetched within PATIENT_ML_FETCH_DEADLINE_SECONDS",
    "image_fetch_error": "fetching the image failed unexpectedly (the detail names the error)",
    # decoding
    "image_decode_failed": "the bytes are not a readable PNG, JPEG or DICOM image",
    "image_truncated": "the image file is truncated",
    "image_format_mismatch": "the bytes are a different format than attachment.contentType says",
    "image_too_many_pixels": "width x height is above curation.maxImagePixels",
    "image_too_small": "width or height is below curation.minImageSide",
    "dicom_unsupported": "the DICOM pixel data cannot be decoded (compressed transfer syntax?)",
    "image_over_memory_budget": "decoding the image would need more memory than "
    "PATIENT_ML_DECODE_MEMORY_BYTES allows",
    "image_decode_error": "decoding the image failed unexpectedly (the detail names the error)",
    # labels
    "label_malformed": "the label Observation lacks focus, status or a value for this dataset, "
    "or its code is not a canonical label index (ASCII digits, no sign or leading zero)",
    "label_unknown_class": "the label code is not an index of this dataset's labels",
    "label_ambiguous": "the label Observation gives this dataset more than one value (two "
    "codes of its label system, two segmentation masks) or names several DocumentReferences "
    "in focus",
    "label_orphan": "the label's DocumentReference is not among the records read (deleted, "
    "or outside the source)",
    "prediction_malformed": "a prediction Observation of the dataset's upstream model "
    "(source.fromModel) cannot be read: no id, or its identifier and derivedFrom name different "
    "images",
    "conflicting_labels": "confirmed labels of this image disagree",
    "invalid_mask": "the mask is not a PNG of the image's size with only label indices as values",
    # duplicates and splits
    "duplicate_image": "the same image (sha256) is already in the snapshot under another record",
    "duplicate_image_conflict": "an identical image belongs to a patient already in another split",
    "split_conflict": "the example was in another split in an earlier snapshot (e.g. re-filed "
    "under a patient of another split); examples never change split",
    "near_duplicate_conflict": "a near-duplicate (edited copy) links examples already in "
    "different splits; nothing was moved",
}


class QuarantineError(PatientMLError):
    """One record cannot be used; `reason` is a key of REASONS, `detail` adds specifics
    (never patient data)."""

    def __init__(self, reason: str, detail: str = "") -> None:
        if reason not in REASONS:
            raise ValueError(f"unknown quarantine reason {reason!r}")
        self.reason = reason
        self.detail = detail
        self.resource: Any = None  # the parsed record, when the parser got that far
        super().__init__(f"{REASONS[reason]}" + (f": {detail}" if detail else ""))


# Reasons of the fast parser (curation/records.py) about the resource itself: a record quarantined
# for one of them also gets what fhir.resources' models say is wrong with it (if anything).
RECORD_REASONS = frozenset(
    {
        "missing_id",
        "missing_subject",
        "subject_not_patient",
        "missing_attachment",
        "unsupported_content_type",
        "label_malformed",
        "invalid_id",
        "invalid_reference",
    }
)


def with_validation_detail(error: QuarantineError, resource: object) -> QuarantineError:
    """`error` with the precise reason of fhir.resources' validation of `resource` added to
    its detail (field paths and rules, never values), when the fast parser rejected the
    resource itself. Runs only on this rejection path, so reading stays fast."""
    if error.reason not in RECORD_REASONS or not isinstance(resource, dict):
        return error
    found = validation.problems(resource)
    if not found:
        return error
    shown = "; ".join(found[: validation.MAX_PROBLEMS])
    if len(found) > validation.MAX_PROBLEMS:
        shown += f" (+{len(found) - validation.MAX_PROBLEMS} more)"
    prefix = f"{error.detail}; " if error.detail else ""
    return QuarantineError(error.reason, f"{prefix}FHIR {validation.FHIR_RELEASE}: {shown}")


@contextmanager
def unexpected_errors_quarantined(reason: str) -> Iterator[None]:
    """Within one record's fetch or decode, any error other than a QuarantineError becomes a
    QuarantineError(`reason`) whose detail is the error's class only (its message may quote
    the record). Errors of the infrastructure must be raised outside this block."""
    try:
        yield
    except QuarantineError:
        raise
    except Exception as exc:
        log.warning("%s: unexpected %s (record quarantined)", reason, type(exc).__name__)
        raise QuarantineError(reason, type(exc).__name__) from None
