"""Wire shapes of the stored configs (datasets, models), defined once: the API declares them
as its response models (`patient_ml.api.schemas`, which documents the rules they follow) and
the services write their rows with them (`DatasetConfig.of(row)`), so what the API sends, the
CLI prints and the audit trail keeps are the same dict.

Parts of stored configs (trainingApproach, curation, ...) are what the config models wrote
(`to_wire()`): documented with those models' schemas, passed through unchanged (`Stored*`).
"""

from __future__ import annotations

import functools
import operator
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, WithJsonSchema
from pydantic.alias_generators import to_snake
from pydantic.json_schema import GenerateJsonSchema

from patient_ml import settings
from patient_ml.config import models as config
from patient_ml.naming import dag_id_of
from patient_ml.services.common import to_millis

if TYPE_CHECKING:
    from pydantic import GetJsonSchemaHandler
    from pydantic.json_schema import JsonSchemaValue
    from pydantic_core import CoreSchema

Number = Annotated[int | float, WithJsonSchema({"type": "number"})]
"""A JSON number kept as the service made it: `int | float` (pydantic's `float` would turn 5
into 5.0 and change the bytes on the wire)."""

Millis = Annotated[int, Field(description="Milliseconds since the UTC epoch.")]
ProblemType = Literal["imgClf", "imgSeg"]


@dataclass(frozen=True)
class DocumentedAs:
    """Annotated metadata: document a JSON object with `model`'s JSON schema while validating
    it only as an object (the value passes through unchanged)."""

    model: type[BaseModel]

    def __get_pydantic_json_schema__(
        self, core_schema: CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        # As pydantic does for `PlainValidator(json_schema_input_type=...)`: generate through
        # the document's generator, so the model becomes a component referenced by $ref (the
        # handler itself would inline the model's top level). Inline when that is not offered.
        generator = getattr(handler, "generate_json_schema", None)
        if not isinstance(generator, GenerateJsonSchema):  # None when not offered
            return handler(self.model.__pydantic_core_schema__)
        return generator.generate_inner(self.model.__pydantic_core_schema__)


# Stored config parts, each written by the config model it names (`to_wire()`): documented
# with that model's schema, passed through as the object it is.
StoredTrainingApproach = Annotated[dict[str, Any], DocumentedAs(config.TrainingApproach)]
StoredDeployApproach = Annotated[dict[str, Any], DocumentedAs(config.DeployApproach)]
StoredApprovalPolicy = Annotated[
    dict[str, Any],
    DocumentedAs(config.ApprovalPolicy),
    Field(description="Extension: approvers, approval timeout and automatic approval."),
]
StoredMonitoring = Annotated[
    dict[str, Any],
    DocumentedAs(config.MonitoringSettings),
    Field(description="Extension: drift and live-performance monitoring."),
]
StoredOperatingPoint = Annotated[
    dict[str, Any],
    DocumentedAs(config.OperatingPointConfig),
    Field(description="Extension (imgClf): how the decision threshold is chosen."),
]
StoredModelCard = Annotated[
    dict[str, Any],
    DocumentedAs(config.ModelCardSettings),
    Field(description="Extension: intended use, users, out-of-scope uses and limitations."),
]
StoredCuration = Annotated[
    dict[str, Any],
    DocumentedAs(config.CurationSettings),
    Field(description="Extension: how curation builds snapshots."),
]
StoredSource = Annotated[
    dict[str, Any],
    DocumentedAs(config.DatasetSource),
    Field(description="Extension: where curation reads FHIR records."),
]
StoredFhirCodesFilter = Annotated[dict[str, Any], DocumentedAs(config.FhirCodesFilter)]


class WireResponse(BaseModel):
    """Base of every response model: unknown fields are kept (never dropped from the wire)."""

    model_config = ConfigDict(extra="allow")


class RowWire(WireResponse):
    """A wire shape that is also how the services write a stored row: each declared field, in
    declaration order, is the row's attribute of the same name in snake_case
    (`problemDefinition` is `problem_definition`) unless `DERIVED` computes it from the row."""

    DERIVED: ClassVar[dict[str, Callable[[Any], Any]]] = {}

    @classmethod
    def of(cls, row: object) -> dict[str, Any]:
        """The wire dict of `row`: what the API sends, the CLI prints and the audit keeps. Not
        validated here, so a row stored before a rule changed can still be shown, listed and
        deleted; the API validates what it sends against this model."""
        return {name: read(row) for name, read in _readers(cls)}


@functools.cache
def _readers(cls: type[RowWire]) -> tuple[tuple[str, Callable[[Any], Any]], ...]:
    """Each field of `cls` with how to read it from a row."""
    return tuple(
        (name, cls.DERIVED.get(name) or operator.attrgetter(to_snake(name)))
        for name in cls.model_fields
    )


_ANY_CONFIG: dict[str, Callable[[Any], Any]] = {
    "accountId": lambda _row: settings.account_id(),
    "createdAt": lambda row: to_millis(row.created_at),
    "updatedAt": lambda row: to_millis(row.updated_at),
}


class DatasetLabel(WireResponse):
    """A label of a dataset (the reference's LabelDefinition): id and index never change."""

    id: str
    name: str
    description: str
    index: int = Field(ge=0, le=255)


class LabelsDefinition(WireResponse):
    labels: list[DatasetLabel]
    maxLabelIndex: int = Field(
        ge=-1, le=255, description="Highest index any label of this dataset ever had."
    )


class MlProblemDefinition(WireResponse):
    problemType: ProblemType
    labelDefinition: LabelsDefinition
    trainingDataFilter: StoredFhirCodesFilter
    labelSystem: str | None = Field(
        None, description="Extension: code system of the dataset's label Observations."
    )


class DatasetConfig(RowWire):
    id: str
    accountId: str
    name: str
    description: str
    problemDefinition: MlProblemDefinition
    curation: StoredCuration
    source: StoredSource
    revision: int = Field(description="Extension: 1, then +1 per update.")
    createdAt: Millis
    updatedAt: Millis

    DERIVED: ClassVar[dict[str, Callable[[Any], Any]]] = _ANY_CONFIG


class ModelConfig(RowWire):
    id: str
    accountId: str
    name: str
    description: str
    datasetId: str
    championId: str | None = Field(description="The run deployed now; null before approval.")
    trainingApproach: StoredTrainingApproach
    deployApproach: StoredDeployApproach
    approvalPolicy: StoredApprovalPolicy
    monitoring: StoredMonitoring | None = None
    operatingPoint: StoredOperatingPoint | None = Field(
        None,
        description="Extension (imgClf): how the decision threshold is chosen on validation; "
        "null: the default (youden on the higher-index label for two labels, argmax for more).",
    )
    modelCard: StoredModelCard | None = Field(
        None, description="Extension: what each run's model card says about intended use."
    )
    slug: str = Field(description="Extension: the name as used in the DAG id.")
    dagId: str = Field(description="Extension: the model's Airflow DAG.")
    revision: int = Field(description="Extension: 1, then +1 per update.")
    createdAt: Millis
    updatedAt: Millis

    DERIVED: ClassVar[dict[str, Callable[[Any], Any]]] = {
        **_ANY_CONFIG,
        "monitoring": lambda model: model.monitoring or {},
        "dagId": lambda model: dag_id_of(model.slug),
    }
