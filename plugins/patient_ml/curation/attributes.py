"""Subgroup attributes of each example, read from FHIR at curation (`curation.subgroups`).

Built in (see `config.models.SubgroupSettings`):
- `sex`: `Patient.gender` (male, female, other, unknown);
- `ageBand`: whole years from `Patient.birthDate` to the image's date (`DocumentReference.date`,
  else `context.period.start`), banded by `ageBands` (`[18, 40, 65]` → `0-17`, `18-39`,
  `40-64`, `65+`); the birth date itself never leaves curation;
- `site`: the organisation of the image, `DocumentReference.custodian` (its display, else its
  reference), else `Patient.managingOrganization`;
- `manufacturer`: the DICOM Manufacturer tag (0008,0070) of a DICOM image, else the display of
  the first `DocumentReference.context.related` whose reference is a `Device`.

Custom attributes are simple paths (`Patient.address[0].state`): each step a field name, with
an optional list index; a list without an index takes its first element; an object found at the
end gives its `reference`, `code`, `display` or `value`, in that order.

What the manifest keeps is the attribute values only (`attributes: {name: value}`), never the
record. A value is text of at most `MAX_VALUE` characters; an example without a value for an
attribute is in no subgroup of that attribute (and counted as `missing` in the report).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any

from patient_ml.config.models import SubgroupSettings

MAX_VALUE = 64
_STEP = re.compile(r"^([A-Za-z][A-Za-z0-9]*)(?:\[([0-9]{1,2})\])?$")
_SAFE = re.compile(r"[^\w .,:/()+-]", re.UNICODE)
_DATE = re.compile(r"^(\d{4})(?:-(\d{2})(?:-(\d{2}))?)?")


@dataclass(frozen=True)
class AttributePlan:
    """Which attributes to keep, read once from the dataset's settings."""

    attributes: tuple[str, ...] = ()
    age_bands: tuple[int, ...] = (18, 40, 65)
    custom: tuple[tuple[str, str], ...] = ()  # (name, path)

    @classmethod
    def of(cls, settings: SubgroupSettings) -> AttributePlan:
        return cls(
            tuple(settings.attributes),
            tuple(settings.age_bands),
            tuple((c.name, c.path) for c in settings.custom if c.name in settings.attributes),
        )

    @property
    def needs_patients(self) -> bool:
        return bool({"sex", "ageBand", "site"} & set(self.attributes)) or any(
            path.startswith("Patient.") for _, path in self.custom
        )


def resolve_path(resource: Mapping[str, Any], steps: Sequence[str]) -> str | None:
    """The value at `steps` (after the resource type) as text, or None."""
    node: Any = resource
    for step in steps:
        match = _STEP.match(step)
        if match is None or not isinstance(node, Mapping):
            return None
        node = node.get(match.group(1))
        if isinstance(node, list):
            at = int(match.group(2) or 0)
            node = node[at] if at < len(node) else None
        if node is None:
            return None
    if isinstance(node, Mapping):
        for key in ("reference", "code", "display", "value"):
            if isinstance(node.get(key), str | int | float | bool):
                node = node[key]
                break
        else:
            return None
    return clean(node)


def clean(value: object) -> str | None:
    """A value as bounded, printable text (None when there is none)."""
    if value is None or isinstance(value, Mapping | list):
        return None
    text = _SAFE.sub("_", str(value)).strip()[:MAX_VALUE]
    return text or None


def patient_attributes(patient: Mapping[str, Any], plan: AttributePlan) -> dict[str, str]:
    """What the plan keeps of a Patient (the birth date only for the age band, later)."""
    found: dict[str, str | None] = {}
    if "sex" in plan.attributes:
        found["sex"] = clean(patient.get("gender"))
    if "ageBand" in plan.attributes:
        found["_birthDate"] = clean(patient.get("birthDate"))
    if "site" in plan.attributes:
        found["_site"] = _organisation(patient.get("managingOrganization"))
    found.update(_custom(patient, "Patient", plan))
    return {k: v for k, v in found.items() if v is not None}


def document_attributes(document: Mapping[str, Any], plan: AttributePlan) -> dict[str, str]:
    """What the plan keeps of a DocumentReference (its date only for the age band, later)."""
    found: dict[str, str | None] = {}
    if "ageBand" in plan.attributes:
        context = document.get("context")
        period = context.get("period") if isinstance(context, Mapping) else None
        start = period.get("start") if isinstance(period, Mapping) else None
        found["_date"] = clean(document.get("date") or start)
    if "site" in plan.attributes:
        found["site"] = _organisation(document.get("custodian"))
    if "manufacturer" in plan.attributes:
        found["manufacturer"] = _device(document.get("context"))
    found.update(_custom(document, "DocumentReference", plan))
    return {k: v for k, v in found.items() if v is not None}


def _custom(resource: Mapping[str, Any], kind: str, plan: AttributePlan) -> dict[str, str | None]:
    """The plan's custom attributes whose path starts at this resource type."""
    found: dict[str, str | None] = {}
    for name, path in plan.custom:
        first, *steps = path.split(".")
        if first == kind:
            found[name] = resolve_path(resource, steps)
    return found


def _organisation(reference: object) -> str | None:
    if not isinstance(reference, Mapping):
        return None
    return clean(reference.get("display")) or clean(reference.get("reference"))


def _device(context: object) -> str | None:
    related = context.get("related") if isinstance(context, Mapping) else None
    for item in related if isinstance(related, list) else ():
        if isinstance(item, Mapping) and str(item.get("reference", "")).startswith("Device/"):
            return clean(item.get("display")) or clean(item["reference"])
    return None


def age_band(birth: str | None, on: str | None, bands: Sequence[int]) -> str | None:
    """The band of the whole years between two FHIR dates (None: either unreadable, or the
    image dated before the birth)."""
    born, seen = _date(birth), _date(on)
    if born is None or seen is None or seen < born:
        return None
    years = seen.year - born.year - ((seen.month, seen.day) < (born.month, born.day))
    starts = [0, *bands]
    for start, end in zip(starts, [*bands, None], strict=True):
        if end is None:
            return f"{start}+"
        if years < end:
            return f"{start}-{end - 1}"
    return None  # not reached


def _date(text: str | None) -> date | None:
    match = _DATE.match(text or "")
    if match is None:
        return None
    try:
        return date(int(match.group(1)), int(match.group(2) or 7), int(match.group(3) or 1))
    except ValueError:
        return None


def example_attributes(
    plan: AttributePlan,
    document: Mapping[str, str],
    patient: Mapping[str, str],
    device: str | None = None,
) -> dict[str, str]:
    """The example's attributes from what was kept of its DocumentReference, its Patient and
    (DICOM) its Manufacturer tag; only those the plan lists and that have a value."""
    values: dict[str, str | None] = {}
    for name in plan.attributes:
        if name == "ageBand":
            values[name] = age_band(patient.get("_birthDate"), document.get("_date"),
                                    plan.age_bands)  # fmt: skip
        elif name == "site":
            values[name] = document.get("site") or patient.get("_site")
        elif name == "manufacturer":
            values[name] = clean(device) or document.get("manufacturer")
        else:
            values[name] = document.get(name) or patient.get(name)
    return {k: v for k, v in values.items() if v}
