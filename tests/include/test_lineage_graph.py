"""include/lineage_graph.py: a Mermaid flowchart of what read and wrote what, from
OpenLineage events built by the product's own lineage code (tests/operators/test_lineage.py
covers those objects; here they are serialised as the file transport writes them)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from include.lineage_graph import main, mermaid
from patient_ml.services.lineage import LineageDataset, StageLineage
from patient_ml.services.lineage_facets import EndpointFacet, ModelArtifactFacet, SnapshotFacet

pytest.importorskip("airflow.providers.openlineage", reason="the OpenLineage provider")


def _event(job: str, stage: StageLineage, kind: str = "COMPLETE") -> dict[str, object]:
    from openlineage.client.serde import Serde

    from patient_ml.operators.lineage import operator_lineage

    lineage = operator_lineage(stage)
    return {
        "eventType": kind,
        "job": {"namespace": "e2e", "name": job},
        "run": {"runId": "x", "facets": {}},
        "inputs": [json.loads(Serde.to_json(d)) for d in lineage.inputs],
        "outputs": [json.loads(Serde.to_json(d)) for d in lineage.outputs],
    }


def test_a_chain_of_stages_becomes_one_graph(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    snapshot = SnapshotFacet(snapshot_id="a" * 64, dataset_id="d", example_count=90, by_split={})
    artifact = ModelArtifactFacet(model_id="m", model_name="m", run_id="run12345", sha256="b" * 64)
    endpoint = EndpointFacet(model_id="m", run_id="run12345", deploy_type="cloud", status="ok")
    snap = LineageDataset("file", "/s/m.jsonl", "a" * 64, {"patientMl_snapshot": snapshot})
    art = LineageDataset("file", "/r/model.tar.gz", "b" * 64, {"patientMl_modelArtifact": artifact})
    end = LineageDataset("http://127.0.0.1:9", "/", None, {"patientMl_endpoint": endpoint})
    events = [
        _event("dag.evaluate", StageLineage([snap], [art])),
        _event("dag.deploy", StageLineage([art], [end])),
        _event("dag.deploy", StageLineage([art], [end]), kind="START"),  # START: left out
        _event("other.deploy", StageLineage([art], [end])),  # another DAG: left out with --dag
    ]
    text = mermaid(events, "dag")
    assert text.startswith("flowchart LR\n")
    assert text.count("model artifact") == 1 and "snapshot aaaaaaaaaaaa" in text
    assert "endpoint (cloud)<br/>run run12345" in text
    # snapshot -> evaluate -> artifact -> deploy -> endpoint
    assert len([line for line in text.splitlines() if "-->" in line]) == 4
    path = tmp_path / "events.jsonl"
    path.write_text("\n".join(json.dumps(e) for e in events) + "\n")
    assert main([str(path), "--dag", "dag"]) == 0
    assert capsys.readouterr().out == f"```mermaid\n{text}```\n"
