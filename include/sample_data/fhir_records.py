"""FHIR R4 resources of the sample data, as plain dicts in the shape of the data contract.

See `patient_ml.fhir.mapping` for the contract. Every resource gets a STABLE id: a hash of what
it stands for (the source file name or tile coordinates; for a synthetic patient, the keys of
its images), so building again gives identical resources and loading again (PUT `Type/id`)
updates them instead of creating duplicates.

Every resource and every transaction Bundle is validated with its fhir.resources model
(`patient_ml.fhir.validation`) as it is built: an invalid one stops the build naming the field.

Every resource carries the tag `TAG_SYSTEM|<source>` (e.g. `...|br35h`), so the sample data of
one source can be found (`_tag=`) or removed on a shared server.
"""

from __future__ import annotations

import base64
import hashlib
import random
from collections.abc import Callable, Hashable, Iterable, Sequence
from typing import Any, TypeVar

from patient_ml.fhir import mapping
from patient_ml.fhir.validation import validated

TAG_SYSTEM = "urn:patient-ml:sample-data"
IDENTIFIER_SYSTEM = "urn:patient-ml:sample-data"
PERFORMER = "Sample Labeller"
MAX_BUNDLE_ENTRIES = 500
# Transaction order: the referenced resources first.
RESOURCE_ORDER = ("Patient", "DocumentReference", "Observation")

T = TypeVar("T")


def stable_id(kind: str, *parts: str) -> str:
    """`<kind>-<20 hex digits of sha256(parts)>`: a valid FHIR id (<= 64 of A-Za-z0-9-.)."""
    digest = hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:20]
    return f"{kind}-{digest}"


def sha1_base64(data: bytes) -> str:
    """`Attachment.hash`: the base64 of the SHA-1 of the bytes (as FHIR R4 defines it)."""
    return base64.b64encode(hashlib.sha1(data).digest()).decode("ascii")


def _meta(source: str) -> dict[str, Any]:
    return {"tag": [{"system": TAG_SYSTEM, "code": source, "display": f"{source} sample data"}]}


def attachment(url: str, data: bytes, *, content_type: str, title: str) -> dict[str, Any]:
    """An Attachment pointing at a file by URL, with its size and SHA-1 (no inline data)."""
    return {
        "contentType": content_type,
        "url": url,
        "size": len(data),
        "hash": sha1_base64(data),
        "title": title,
    }


# SYNTHETIC sites (no real organisation): patient n is at SITES[n % 3]. They are logical
# references (an identifier and a display, no Organization resource to load).
SITES = (
    ("site-c", "Hillcrest Imaging"),  # its images are degraded: see output.site_effect
    ("site-a", "Northfield General"),
    ("site-b", "Riverside Clinic"),
)
DEGRADED_SITE = "site-c"


def site_of(number: int) -> tuple[str, str]:
    """The synthetic site (code, name) of patient `number` (1-based)."""
    return SITES[number % len(SITES)]


def site_reference(number: int) -> dict[str, Any]:
    code, name = site_of(number)
    return {
        "identifier": {"system": f"{IDENTIFIER_SYSTEM}:site", "value": code},
        "display": name,
    }


def demographics(number: int, *, seed: int) -> dict[str, Any]:
    """SYNTHETIC sex, birth date and site of patient `number` (1-based): the image sources have
    none; drawn from a RNG seeded with the build seed and the number, so a build is repeatable.
    They exist to demonstrate subgroup evaluation, not to describe anyone."""
    rng = random.Random(f"{seed}:demographics:{number}")
    gender = rng.choice(("female", "male"))
    year = rng.randint(1940, 2004)
    birth = f"{year:04d}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}"
    return {"gender": gender, "birthDate": birth, "managingOrganization": site_reference(number)}


def imaging_date(key: str, *, seed: int) -> str:
    """A SYNTHETIC imaging instant in 2022-2024 for an image (seeded by its key)."""
    rng = random.Random(f"{seed}:date:{key}")
    year, month, day = rng.randint(2022, 2024), rng.randint(1, 12), rng.randint(1, 28)
    return f"{year:04d}-{month:02d}-{day:02d}T09:00:00Z"


def patient(
    patient_id: str, *, source: str, number: int, demographics: dict[str, Any] | None = None
) -> dict[str, Any]:
    """A synthetic Patient: an identifier, and the synthetic `demographics` when given (sex,
    birth date, managing organisation; the sources have none)."""
    return validated(
        {
            "resourceType": "Patient",
            "id": patient_id,
            "meta": _meta(source),
            "identifier": [
                {
                    "system": f"{IDENTIFIER_SYSTEM}:{source}:patient",
                    "value": f"{source.upper()}-P{number:04d}",
                }
            ],
            "active": True,
            **(demographics or {}),
        }
    )


def document_reference(
    doc_id: str,
    *,
    source: str,
    source_key: str,
    patient_id: str,
    type_coding: dict[str, str],
    image: dict[str, Any],
    description: str,
    date: str | None = None,
    custodian: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """An image DocumentReference (status current) of the patient; `image` is its Attachment;
    `date` (when it was taken) and `custodian` (the site that holds it) when given."""
    resource: dict[str, Any] = {
        "resourceType": "DocumentReference",
        "id": doc_id,
        "meta": _meta(source),
        "identifier": [{"system": f"{IDENTIFIER_SYSTEM}:{source}:image", "value": source_key}],
        "status": "current",
        "type": {"coding": [dict(type_coding)]},
        "subject": {"reference": f"Patient/{patient_id}"},
    }
    if date is not None:
        resource["date"] = date
    if custodian is not None:
        resource["custodian"] = custodian
    resource.update({"description": description, "content": [{"attachment": image}]})
    return validated(resource)


def label_observation(
    obs_id: str,
    *,
    source: str,
    doc_id: str,
    patient_id: str,
    status: str,
    class_coding: dict[str, str] | None = None,
    mask: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A label Observation of an image: `class_coding` (imgClf) or a `mask` Attachment (imgSeg).

    `status` is `final` (confirmed) or `preliminary` (draft)."""
    if (class_coding is None) == (mask is None):
        raise ValueError("a label has either a class coding (imgClf) or a mask (imgSeg)")
    resource: dict[str, Any] = {
        "resourceType": "Observation",
        "id": obs_id,
        "meta": _meta(source),
    }
    if mask is not None:
        resource["extension"] = [{"url": mapping.MASK_EXTENSION_URL, "valueAttachment": mask}]
    resource.update(
        {
            "status": status,
            "code": {
                "coding": [
                    {
                        "system": mapping.LABEL_CODE_SYSTEM,
                        "code": mapping.LABEL_CODE,
                        "display": "Image label",
                    }
                ]
            },
            "subject": {"reference": f"Patient/{patient_id}"},
            "focus": [{"reference": f"DocumentReference/{doc_id}"}],
            "performer": [{"display": PERFORMER}],
        }
    )
    if class_coding is not None:
        resource["valueCodeableConcept"] = {"coding": [dict(class_coding)]}
    return validated(resource)


def transaction_bundles(
    resources: Iterable[dict[str, Any]], *, max_entries: int = MAX_BUNDLE_ENTRIES
) -> list[dict[str, Any]]:
    """Transaction Bundles of `PUT Type/id` entries (idempotent), at most `max_entries` each,
    Patients before DocumentReferences before Observations."""
    rank = {name: i for i, name in enumerate(RESOURCE_ORDER)}
    ordered = sorted(resources, key=lambda r: rank.get(r["resourceType"], len(rank)))
    entries = [
        {"resource": r, "request": {"method": "PUT", "url": f"{r['resourceType']}/{r['id']}"}}
        for r in ordered
    ]
    return [
        validated(
            {"resourceType": "Bundle", "type": "transaction", "entry": entries[i : i + max_entries]}
        )
        for i in range(0, len(entries), max_entries)
    ]


def group_consecutive(
    items: Sequence[T],
    *,
    group_of: Callable[[T], Hashable],
    sizes: tuple[int, int],
    rng: random.Random,
) -> list[list[T]]:
    """Cut `items` into runs of `sizes[0]..sizes[1]` consecutive items (sizes drawn from `rng`);
    a run never spans two values of `group_of(item)` (e.g. two classes)."""
    low, high = sizes
    if not 1 <= low <= high:
        raise ValueError(f"images per patient {low}-{high}: need 1 <= min <= max")
    runs: list[list[T]] = []
    current: list[T] = []
    target = rng.randint(low, high)
    for item in items:
        if current and (len(current) >= target or group_of(item) != group_of(current[-1])):
            runs.append(current)
            current, target = [], rng.randint(low, high)
        current.append(item)
    if current:
        runs.append(current)
    return runs


def label_states(
    keys: Sequence[str], *, draft_share: float, unlabeled_share: float, seed: int
) -> dict[str, str]:
    """`final`, `preliminary` or `unlabeled` for each key: round(n * share) drafts and unlabeled
    images, chosen by a seeded shuffle of the sorted keys (so independent of the input order)."""
    for name, share in (("draft share", draft_share), ("unlabeled share", unlabeled_share)):
        if not 0.0 <= share <= 1.0:
            raise ValueError(f"{name} {share} is not between 0 and 1")
    if draft_share + unlabeled_share > 1.0:
        raise ValueError("draft share + unlabeled share is more than 1")
    n = len(keys)
    n_unlabeled = int(n * unlabeled_share + 0.5)
    n_draft = min(int(n * draft_share + 0.5), n - n_unlabeled)
    order = sorted(keys)
    random.Random(f"{seed}:labels").shuffle(order)
    states = dict.fromkeys(order, "final")
    for key in order[:n_unlabeled]:
        states[key] = "unlabeled"
    for key in order[n_unlabeled : n_unlabeled + n_draft]:
        states[key] = "preliminary"
    return states
