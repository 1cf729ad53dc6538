"""The FHIR R4 data contract of patient_ml, in one place (documented in docs/fhir-mapping.md).

Images
    A `DocumentReference` whose `type.coding` matches one of the dataset's
    `trainingDataFilter.codes`. `subject` must reference the `Patient`. The image is
    `content[0].attachment` (`url` or inline `data`, `contentType` image/png, image/jpeg or
    application/dicom). `status` `current` is used; `superseded` and `entered-in-error` are
    excluded.

Labels
    An `Observation` with `code.coding` = (`LABEL_CODE_SYSTEM`, `LABEL_CODE`) whose `focus`
    references the image's DocumentReference. Its `status` says whether the label is a draft
    (`preliminary`), confirmed (`final`, `amended`, `corrected`) or excluded
    (`entered-in-error`, `cancelled`; any other status is ignored too).
    - imgClf: `valueCodeableConcept.coding` with `system` = the dataset's label system and
      `code` = the label's index as a decimal string (`display` = the label's name).
    - imgSeg: the mask image is the `valueAttachment` of the extension `MASK_EXTENSION_URL`
      (PNG, pixel value = label index, 0 = background; same URL rules as images).
    `performer[0]` (display or reference) is who confirmed it.

Predictions
    Batch scoring writes a model's prediction for an image back as an `Observation` with
    `code.coding` = (`LABEL_CODE_SYSTEM`, `PREDICTION_CODE`), `status` `preliminary` (never
    final: a prediction is no finding), `derivedFrom` the image's DocumentReference (never
    `focus`, so nothing takes it for a label), `identifier` (`PREDICTION_IDENTIFIER_SYSTEM`,
    `<model id>|<example id>`: one resource per model and image, updated by a later batch),
    `device` naming the model run, and the extension `SCORING_BATCH_EXTENSION_URL` naming the
    batch. imgClf: `valueCodeableConcept` = the decided label, one `component` per label with
    its probability; imgSeg: the mask is a `Binary` referenced by `MASK_EXTENSION_URL`
    (`patient_ml.scoring.observations`).
"""

from __future__ import annotations

LABEL_CODE_SYSTEM = "http://patient-ml.org/fhir/CodeSystem/patient-ml"
LABEL_CODE = "image-label"
MASK_EXTENSION_URL = "http://patient-ml.org/fhir/StructureDefinition/segmentation-mask"
PREDICTION_CODE = "image-prediction"
PREDICTION_IDENTIFIER_SYSTEM = "urn:patient-ml:prediction"
SCORING_BATCH_EXTENSION_URL = "http://patient-ml.org/fhir/StructureDefinition/scoring-batch"

IMAGE_CONTENT_TYPES = {
    "image/png": "png",
    "image/jpeg": "jpeg",
    "image/jpg": "jpeg",
    "application/dicom": "dicom",
}

DOCUMENT_STATUS_USED = {"current"}
DOCUMENT_STATUS_EXCLUDED = {"superseded", "entered-in-error"}

LABEL_STATUS_DRAFT = {"preliminary"}
LABEL_STATUS_CONFIRMED = {"final", "amended", "corrected"}
LABEL_STATUS_EXCLUDED = {"entered-in-error", "cancelled"}


def default_label_system(dataset_name: str) -> str:
    """The label code system of a dataset unless its config names one (fixed at creation)."""
    return f"urn:patient-ml:labels:{dataset_name}"
