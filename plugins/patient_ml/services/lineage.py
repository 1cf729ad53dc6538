"""What each stage of a run read and wrote, as OpenLineage datasets and facets (docs/lineage.md).

Pure data from the product DB: the operators turn a `StageLineage` into the OpenLineage
provider's `OperatorLineage` (patient_ml.operators.lineage), so nothing here imports Airflow.

Datasets follow OpenLineage's naming (https://openlineage.io/docs/spec/naming): a file is
namespace `file`, name its absolute path; an S3 object is namespace `s3://bucket`, name its key;
a FHIR server is namespace `fhir://host[:port]`, name its base path; an HTTP endpoint is
namespace `http(s)://host[:port]`, name its path. So the same artifact has the same identity in
every event, and a consumer follows endpoint → model artifact → snapshot → FHIR source:

- curate: the FHIR source (`patientMl_fhirSource`) in, the snapshot (version: its content
  hash) out;
- tune: the snapshot in;
- evaluate: the snapshot and the champion's artifact in, the challenger's artifact (version:
  its sha256) out, run facet `patientMl_metrics`;
- await_approval: the challenger's artifact in, run facet `patientMl_approval`;
- deploy: the run's artifact in, the endpoint (`patientMl_endpoint`) out.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar
from urllib.parse import urlsplit

from sqlalchemy import select
from sqlalchemy.orm import Session

from patient_ml.config.wire import WireModel
from patient_ml.db.models import Approval, Dataset, Endpoint, Metric, Model, Run, Snapshot
from patient_ml.services.lineage_facets import (
    ApprovalRunFacet,
    EndpointFacet,
    FhirSourceFacet,
    MetricFacetEntry,
    MetricsRunFacet,
    ModelArtifactFacet,
    SnapshotFacet,
)


@dataclass(frozen=True)
class LineageDataset:
    namespace: str
    name: str
    version: str | None = None
    facets: dict[str, WireModel] = field(default_factory=dict)


@dataclass(frozen=True)
class StageLineage:
    inputs: list[LineageDataset] = field(default_factory=list)
    outputs: list[LineageDataset] = field(default_factory=list)
    run_facets: dict[str, WireModel] = field(default_factory=dict)


def location(uri: str) -> tuple[str, str]:
    """(namespace, name) of a file, S3 object or HTTP(S)/FHIR URL, by OpenLineage's naming."""
    parts = urlsplit(uri)
    if parts.scheme in ("", "file"):
        return "file", str(Path(parts.path or uri).expanduser().resolve())
    if parts.scheme == "s3":
        return f"s3://{parts.netloc}", parts.path.lstrip("/") or "/"
    return f"{parts.scheme}://{parts.netloc}", parts.path or "/"


def fhir_source(dataset: Dataset, base_url_of: Callable[[str], str | None]) -> LineageDataset:
    """The dataset's FHIR source: its server (base URL of its Airflow connection, which
    `base_url_of` reads) or its NDJSON folder."""
    source = dataset.source or {}
    kind = source.get("type", "fhirServer")
    if kind == "ndjson":
        namespace, name = location(str(source.get("uri") or ""))
    else:
        parts = urlsplit(base_url_of(str(source.get("connId", "fhir_default"))) or "")
        namespace = f"fhir://{parts.netloc or source.get('connId', 'fhir_default')}"
        name = parts.path.rstrip("/") or "/"
    problem = dataset.problem_definition or {}
    data_filter = problem.get("trainingDataFilter") or {}
    facet = FhirSourceFacet(
        source_type=kind,
        conn_id=source.get("connId") if kind != "ndjson" else None,
        filter_type=str(data_filter.get("filterType", "")),
        codes=[str(c) for c in data_filter.get("codes") or []],
        label_system=str(problem.get("labelSystem", "")),
        dataset_id=dataset.id,
        dataset_name=dataset.name,
        dataset_revision=dataset.revision,
    )
    return LineageDataset(namespace, name, facets={"patientMl_fhirSource": facet})


def snapshot_dataset(snapshot: Snapshot) -> LineageDataset:
    namespace, name = location(snapshot.manifest_uri)
    by_split = (snapshot.counts or {}).get("bySplit") or {}
    facet = SnapshotFacet(
        snapshot_id=snapshot.id,
        dataset_id=snapshot.dataset_id,
        example_count=snapshot.example_count,
        by_split={str(k): int(v) for k, v in by_split.items()},
    )
    return LineageDataset(namespace, name, snapshot.id, {"patientMl_snapshot": facet})


def artifact_dataset(session: Session, run: Run) -> LineageDataset | None:
    if not run.model_artifact_uri:
        return None
    model = session.get(Model, run.model_id)
    namespace, name = location(run.model_artifact_uri)
    config = run.config or {}
    recorded = run.provenance or {}
    facet = ModelArtifactFacet(
        model_id=run.model_id,
        model_name=model.name if model else run.model_id,
        run_id=run.id,
        sha256=run.model_artifact_sha256 or "",
        training_image=(config.get("trainingApproach") or {}).get("trainingImage"),
        inference_image=(config.get("deployApproach") or {}).get("inferenceImage"),
        training_image_digest=(recorded.get("training") or {}).get("digest"),
        inference_image_digest=(recorded.get("inference") or {}).get("digest"),
        package_version=(recorded.get("package") or {}).get("version"),
        source_commit=(recorded.get("package") or {}).get("commit"),
        sampler_seed=(recorded.get("sampler") or {}).get("seed"),
    )
    return LineageDataset(
        namespace, name, run.model_artifact_sha256, {"patientMl_modelArtifact": facet}
    )


def curate_lineage(
    session: Session,
    dataset_id: str,
    snapshot_id: str,
    base_url_of: Callable[[str], str | None],
) -> StageLineage:
    dataset = session.get(Dataset, dataset_id)
    snapshot = session.get(Snapshot, snapshot_id)
    inputs = [fhir_source(dataset, base_url_of)] if dataset else []
    if snapshot is not None:
        inputs += upstream_artifacts(session, snapshot)
    outputs = [snapshot_dataset(snapshot)] if snapshot else []
    return StageLineage(inputs, outputs)


def upstream_artifacts(session: Session, snapshot: Snapshot) -> list[LineageDataset]:
    """A chained dataset's snapshot (`source.fromModel`): the model artifacts whose predictions
    selected its images (the report's `upstream.batches`), so the lineage graph goes on from
    the second model to the first one's run."""
    upstream = (snapshot.report or {}).get("upstream") or {}
    run_ids = sorted(
        {b["runId"] for b in upstream.get("batches") or [] if isinstance(b.get("runId"), str)}
    )
    found = []
    for run_id in run_ids:
        run = session.get(Run, run_id)
        artifact = artifact_dataset(session, run) if run is not None else None
        if artifact is not None:
            found.append(artifact)
    return found


def _snapshot_of(session: Session, run: Run) -> list[LineageDataset]:
    snapshot = session.get(Snapshot, run.snapshot_id) if run.snapshot_id else None
    return [snapshot_dataset(snapshot)] if snapshot else []


def tune_lineage(session: Session, run_id: str) -> StageLineage:
    run = session.get(Run, run_id)
    return StageLineage(_snapshot_of(session, run)) if run else StageLineage()


def evaluate_lineage(session: Session, run_id: str) -> StageLineage:
    run = session.get(Run, run_id)
    if run is None:
        return StageLineage()
    inputs = _snapshot_of(session, run)
    champion = session.get(Run, run.champion_id) if run.champion_id else None
    if champion is not None and (artifact := artifact_dataset(session, champion)):
        inputs.append(artifact)
    own = artifact_dataset(session, run)
    rows = session.scalars(
        select(Metric)
        .where(Metric.run_id == run.id, Metric.stage == "evaluation")
        .order_by(Metric.id)
    )
    metrics = MetricsRunFacet(
        run_id=run.id,
        metrics=[
            MetricFacetEntry(
                subject=m.subject,
                name=m.name,
                value=m.value,
                low=m.low,
                high=m.high,
                direction=m.direction,
            )
            for m in rows
        ],
    )
    return StageLineage(inputs, [own] if own else [], {"patientMl_metrics": metrics})


_Row = TypeVar("_Row", Approval, Endpoint)


def _latest(session: Session, table: type[_Row], run_id: str) -> _Row | None:
    """The run's newest row of an append-only table (decisions, endpoints)."""
    return session.scalars(
        select(table).where(table.run_id == run_id).order_by(table.id.desc()).limit(1)
    ).first()


def approval_lineage(session: Session, run_id: str) -> StageLineage:
    run = session.get(Run, run_id)
    if run is None:
        return StageLineage()
    own = artifact_dataset(session, run)
    decision = _latest(session, Approval, run.id)
    facets: dict[str, WireModel] = {}
    if decision is not None:
        facets["patientMl_approval"] = ApprovalRunFacet(
            run_id=run.id,
            decision=decision.decision,
            actor=decision.actor,
            user=decision.user,
            channel=decision.channel,
            decided_at=decision.decided_at.isoformat(),
            justification=decision.description,
        )
    return StageLineage([own] if own else [], [], facets)


def deploy_lineage(session: Session, run_id: str) -> StageLineage:
    run = session.get(Run, run_id)
    if run is None:
        return StageLineage()
    own = artifact_dataset(session, run)
    endpoint = _latest(session, Endpoint, run.id)
    outputs: list[LineageDataset] = []
    if endpoint is not None and endpoint.url:
        namespace, name = location(endpoint.url)
        facet = EndpointFacet(
            model_id=run.model_id, run_id=run.id, deploy_type="cloud", status=endpoint.status
        )
        outputs.append(LineageDataset(namespace, name, facets={"patientMl_endpoint": facet}))
    elif own is not None:  # edge: the artifact itself is what is deployed (the download)
        facet = EndpointFacet(
            model_id=run.model_id, run_id=run.id, deploy_type="edge",
            status=run.deploy_status or "",
        )  # fmt: skip
        outputs.append(
            LineageDataset(own.namespace, own.name, own.version, {"patientMl_endpoint": facet})
        )
    return StageLineage([own] if own else [], outputs)
