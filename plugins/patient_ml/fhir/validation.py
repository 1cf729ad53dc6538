"""FHIR validity with the fhir.resources models (R4B, pydantic v2), where validity matters:

- every resource the product writes (label Observations, transaction Bundles, sample data) goes
  through `validated()` before it leaves, so an invalid one is refused with the field at fault;
- a record the fast contract-level parser (`patient_ml.curation.records`) rejects gets the
  precise reason from `problems()` in the quarantine report.

Reading stays on the fast parser: the models are imported on first use only, and `problems()`
runs only on the rejection path. Messages name fields and rules, never values (patient data).
"""

from __future__ import annotations

import functools
import importlib
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, TypeVar

from pydantic import ValidationError

if TYPE_CHECKING:
    from fhir_core.fhirabstractmodel import FHIRAbstractModel

from patient_ml.exceptions import PatientMLError

FHIR_RELEASE = "R4B"  # the fhir.resources release closest to R4 (same resources used here)
MAX_PROBLEMS = 3

R = TypeVar("R", bound=Mapping[str, Any])


class InvalidFhirResourceError(PatientMLError):
    """A resource the product was about to write is not valid FHIR (a defect: report it)."""

    http_status = 500

    def __init__(self, resource_type: str, problems: list[str]) -> None:
        self.resource_type = resource_type
        self.problems = problems
        super().__init__(
            f"The {resource_type} to write is not valid FHIR {FHIR_RELEASE}: "
            + "; ".join(problems[:MAX_PROBLEMS])
            + ("" if len(problems) <= MAX_PROBLEMS else f" (+{len(problems) - MAX_PROBLEMS})")
            + ".",
            fix="nothing was written; correct the field named (or report the defect)",
        )


@functools.cache
def model_class(resource_type: str) -> type[FHIRAbstractModel]:
    """The fhir.resources model of a resource type; KeyError when there is none."""
    package = importlib.import_module(f"fhir.resources.{FHIR_RELEASE}")
    try:
        found: type[FHIRAbstractModel] = package.get_fhir_model_class(resource_type)
        return found
    except (KeyError, ValueError, AttributeError, ImportError):
        raise KeyError(resource_type) from None


def _where(loc: tuple[Any, ...]) -> str:
    parts: list[str] = []
    for item in loc:
        if isinstance(item, int):
            parts[-1:] = [f"{parts[-1]}[{item}]" if parts else f"[{item}]"]
        else:
            parts.append(str(item))
    return ".".join(parts) or "(resource)"


def problems(resource: Mapping[str, Any]) -> list[str]:
    """What makes `resource` invalid FHIR (`field: rule` texts, no values); [] when valid."""
    resource_type = resource.get("resourceType")
    if not isinstance(resource_type, str):
        return ["resourceType: missing"]
    try:
        model = model_class(resource_type)
    except KeyError:
        return [f"resourceType: {resource_type[:64]!r} is not a FHIR {FHIR_RELEASE} resource type"]
    try:
        model.model_validate(dict(resource))
    except ValidationError as exc:
        found = []
        for error in exc.errors(include_url=False, include_input=False, include_context=False):
            message = str(error.get("msg") or error.get("type") or "invalid").split("\n")[0]
            found.append(f"{_where(tuple(error.get('loc') or ()))}: {message[:160]}")
        return found or ["invalid"]
    except (TypeError, ValueError) as exc:
        return [f"(resource): {type(exc).__name__}"]
    return []


def validated(resource: R) -> R:
    """`resource` itself once its model validates it; InvalidFhirResourceError naming the
    fields otherwise."""
    found = problems(resource)
    if found:
        raise InvalidFhirResourceError(str(resource.get("resourceType") or "resource"), found)
    return resource


def validated_all(resources: list[R]) -> list[R]:
    return [validated(r) for r in resources]
