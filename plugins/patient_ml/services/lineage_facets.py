"""The custom OpenLineage facets Patient ML emits, one pydantic model each (docs/lineage.md).

Each facet's JSON schema is generated from its model and shipped in `lineage_schemas/`
(`python -m patient_ml.services.lineage_facets` rewrites them; a test fails when they are
stale). An emitted facet names its schema in `_schemaURL`: `PATIENT_ML_LINEAGE_SCHEMA_URL` +
`<Facet>.json` (default: the shipped folder as a file:// URL; set it to where you publish the
docs site, whose `lineage/facets/` holds the same files).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal, cast

from pydantic import Field

from patient_ml.config.wire import WireModel
from patient_ml.settings import setting

SCHEMA_DIR = Path(__file__).with_name("lineage_schemas")
FACET_VERSION = "1-0-0"


class FhirSourceFacet(WireModel):
    """Dataset facet of a FHIR source: what curation selected from it."""

    source_type: Literal["fhirServer", "ndjson"]
    conn_id: str | None = Field(None, description="Airflow connection of a FHIR server.")
    filter_type: str = Field(description="The dataset's training data filter.")
    codes: list[str] = Field(description="system|code of the image DocumentReferences selected.")
    label_system: str = Field(description="The coding system of the label Observations.")
    dataset_id: str
    dataset_name: str
    dataset_revision: int


class SnapshotFacet(WireModel):
    """Dataset facet of a curated snapshot (its version is its content hash)."""

    snapshot_id: str = Field(description="sha256 of the snapshot's content.")
    dataset_id: str
    example_count: int
    by_split: dict[str, int] = Field(description="Examples per split.")


class ModelArtifactFacet(WireModel):
    """Dataset facet of a trained model artifact (its version is its sha256)."""

    model_id: str
    model_name: str
    run_id: str
    sha256: str
    training_image: str | None = None
    inference_image: str | None = None
    training_image_digest: str | None = Field(
        None, description="The training image as the backend resolved it (docs/training.md)."
    )
    inference_image_digest: str | None = Field(
        None, description="The image that served the model at evaluation."
    )
    package_version: str | None = Field(None, description="patient-ml-airflow's version.")
    source_commit: str | None = Field(None, description="Its source commit, or `unknown`.")
    sampler_seed: int | None = Field(None, description="The Optuna sampler's seed.")


class EndpointFacet(WireModel):
    """Dataset facet of where a deployed model answers."""

    model_id: str
    run_id: str
    deploy_type: str = Field(description="`cloud` (an endpoint) or `edge` (the download).")
    status: str


class MetricFacetEntry(WireModel):
    subject: str = Field(description="`challenger` or `champion`.")
    name: str
    value: float
    low: float | None = Field(None, description="Lower end of the 95 % interval.")
    high: float | None = Field(None, description="Upper end of the 95 % interval.")
    direction: str | None = None


class MetricsRunFacet(WireModel):
    """Run facet of an evaluation: each figure with its interval over independent units."""

    run_id: str
    metrics: list[MetricFacetEntry]


class ApprovalRunFacet(WireModel):
    """Run facet of an approval decision."""

    run_id: str
    decision: str
    actor: str = Field(description="`user` or `auto`.")
    user: str | None = None
    channel: str | None = None
    decided_at: str
    justification: str | None = None


FACETS: dict[str, type[WireModel]] = {
    "patientMl_fhirSource": FhirSourceFacet,
    "patientMl_snapshot": SnapshotFacet,
    "patientMl_modelArtifact": ModelArtifactFacet,
    "patientMl_endpoint": EndpointFacet,
    "patientMl_metrics": MetricsRunFacet,
    "patientMl_approval": ApprovalRunFacet,
}


def schema_of(model: type[WireModel]) -> dict[str, object]:
    """The facet's JSON schema as shipped (OpenLineage's `_producer`/`_schemaURL` included)."""
    schema = model.model_json_schema(by_alias=True, mode="serialization")
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["$id"] = f"{model.__name__}.json"
    props = cast(dict[str, object], schema.setdefault("properties", {}))
    props["_producer"] = {"type": "string", "format": "uri"}
    props["_schemaURL"] = {"type": "string", "format": "uri"}
    schema["additionalProperties"] = False
    return schema


def schema_url(model: type[WireModel]) -> str:
    base = setting("PATIENT_ML_LINEAGE_SCHEMA_URL") or SCHEMA_DIR.resolve().as_uri()
    return f"{base.rstrip('/')}/{model.__name__}.json"


def write_schemas(folder: Path = SCHEMA_DIR) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for model in FACETS.values():
        path = folder / f"{model.__name__}.json"
        path.write_text(json.dumps(schema_of(model), indent=2, sort_keys=True) + "\n")
        written.append(path)
    return written


if __name__ == "__main__":
    for path in write_schemas():
        print(path)
