"""Build what one curation needs (record source, artifact store, image fetcher) from the
dataset config and the operator's or CLI's settings: one place, shared by both (and by the
labelling service's image previews)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy import Engine

from patient_ml import settings
from patient_ml.config.models import CurationSettings, DatasetSource
from patient_ml.curation.attributes import AttributePlan
from patient_ml.curation.fetch import FetchPolicy, ImageFetcher, ImageFetching, policy_with
from patient_ml.curation.sources import (
    FhirBulkExportSource,
    FhirSearchSource,
    NdjsonSource,
    RecordSource,
    S3NdjsonSource,
)
from patient_ml.db.engine import session_scope
from patient_ml.services.datasets import get_dataset
from patient_ml.storage import artifact_store_from_uri

if TYPE_CHECKING:
    from patient_ml.fhir.client import FhirClient


@dataclass(frozen=True)
class CurationInputs:
    source: RecordSource
    store: Any
    fetcher: ImageFetching


def build_curation_inputs(
    engine: Engine,
    dataset_ref: str,
    *,
    fhir_client_factory: Callable[[str], FhirClient],
    artifact_uri: str | None = None,
    aws_conn_id: str = "aws_default",
    allowed_file_roots: Sequence[str] | None = None,
    allowed_http_hosts: Sequence[str] | None = None,
    source_override: RecordSource | None = None,
    force_fhir_server: bool = False,
) -> CurationInputs:
    with session_scope(engine) as session:
        dataset = get_dataset(session, dataset_ref)
        source_cfg = DatasetSource.model_validate(dataset.source or {})
        codes = list(dataset.problem_definition["trainingDataFilter"]["codes"])
        max_bytes = int((dataset.curation or {}).get("maxImageBytes", 50_000_000))
        subgroups = CurationSettings.model_validate(dataset.curation or {}).subgroups
        patients = AttributePlan.of(subgroups).needs_patients
    fhir_client = None
    source = source_override
    if source is None:
        if source_cfg.type == "ndjson" and not force_fhir_server:
            source = _ndjson_source(source_cfg.uri or "", aws_conn_id)
        else:
            fhir_client = fhir_client_factory(source_cfg.conn_id)
            if source_cfg.bulk_export and fhir_client.supports_bulk_export():
                source = FhirBulkExportSource(fhir_client, patients=patients)
            else:
                source = FhirSearchSource(
                    fhir_client,
                    codes,
                    patients=patients,
                    predictions=source_cfg.from_model is not None,
                )
    policy = policy_with(
        FetchPolicy.from_env(),
        allowed_file_roots=allowed_file_roots,
        allowed_http_hosts=allowed_http_hosts,
        max_bytes=max_bytes,
        aws_conn_id=aws_conn_id,
    )
    store = artifact_store_from_uri(
        artifact_uri or settings.artifact_uri(), aws_conn_id=aws_conn_id
    )
    return CurationInputs(source, store, ImageFetcher(policy, fhir_client=fhir_client))


def _ndjson_source(uri: str, aws_conn_id: str) -> RecordSource:
    if uri.startswith("s3://"):
        return S3NdjsonSource(uri, aws_conn_id=aws_conn_id)
    return NdjsonSource(uri)
