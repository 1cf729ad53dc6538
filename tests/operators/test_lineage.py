"""OpenLineage objects of a stage (the provider's `OperatorLineage`, serialised by the
OpenLineage client as the listener sends it): every Patient ML facet names its shipped JSON
schema and validates against it, versions become `version` facets, and the shipped schemas are
the ones the facet models generate. Also: a stage whose lineage cannot be read gives None
(logged), never an error for the task."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from patient_ml.operators.lineage import lineage_or_none, operator_lineage
from patient_ml.services.lineage import LineageDataset, StageLineage
from patient_ml.services.lineage_facets import (
    FACETS,
    SCHEMA_DIR,
    ApprovalRunFacet,
    MetricFacetEntry,
    MetricsRunFacet,
    SnapshotFacet,
    schema_of,
)

pytest.importorskip("airflow.providers.openlineage", reason="the OpenLineage provider")


def _serialised(value: Any) -> dict[str, Any]:
    from openlineage.client.serde import Serde

    return json.loads(Serde.to_json(value))


def test_shipped_schemas_are_the_generated_ones() -> None:
    shipped = {p.stem for p in SCHEMA_DIR.glob("*.json")}
    assert shipped == {m.__name__ for m in FACETS.values()}
    for model in FACETS.values():
        on_disk = json.loads((SCHEMA_DIR / f"{model.__name__}.json").read_text())
        assert on_disk == schema_of(model), (
            f"{model.__name__}.json is stale: python -m patient_ml.services.lineage_facets"
        )


def test_facets_name_and_match_their_schemas(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATIENT_ML_LINEAGE_SCHEMA_URL", "https://docs.example.org/lineage/facets/")
    snapshot = SnapshotFacet(snapshot_id="e" * 64, dataset_id="ds", example_count=10,
                             by_split={"train": 7, "test": 3})  # fmt: skip
    stage = StageLineage(
        inputs=[LineageDataset("file", "/srv/m.jsonl", "e" * 64, {"patientMl_snapshot": snapshot})],
        outputs=[LineageDataset("s3://b", "runs/r/model.tar.gz", "f" * 64)],
        run_facets={
            "patientMl_metrics": MetricsRunFacet(run_id="r", metrics=[
                MetricFacetEntry(subject="challenger", name="auc", value=0.9, low=0.85, high=0.94),
            ]),
            "patientMl_approval": ApprovalRunFacet(run_id="r", decision="approved", actor="user",
                                                   user="dr-a", decided_at="2026-12-06T10:00:00"),
        },
    )  # fmt: skip
    lineage = operator_lineage(stage)

    (source,) = [_serialised(d) for d in lineage.inputs]
    assert (source["namespace"], source["name"]) == ("file", "/srv/m.jsonl")
    assert source["facets"]["version"]["datasetVersion"] == "e" * 64
    (output,) = [_serialised(d) for d in lineage.outputs]
    assert output["facets"]["version"]["datasetVersion"] == "f" * 64
    facets = {"patientMl_snapshot": source["facets"]["patientMl_snapshot"]}
    facets.update({k: _serialised(v) for k, v in lineage.run_facets.items()})
    for name, facet in facets.items():
        model = FACETS[name]
        assert (
            facet["_schemaURL"] == f"https://docs.example.org/lineage/facets/{model.__name__}.json"
        )
        assert facet["_producer"]
        jsonschema.validate(facet, json.loads((SCHEMA_DIR / f"{model.__name__}.json").read_text()))
    assert facets["patientMl_metrics"]["metrics"][0] == {
        "subject": "challenger", "name": "auc", "value": 0.9, "low": 0.85, "high": 0.94,
    }  # fmt: skip
    # a facet with a field its schema does not know is refused by the schema
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({**facets["patientMl_approval"], "extra": 1},
                            schema_of(ApprovalRunFacet))  # fmt: skip


def test_default_schema_url_is_the_shipped_folder(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PATIENT_ML_LINEAGE_SCHEMA_URL", raising=False)
    facet = _serialised(operator_lineage(StageLineage(run_facets={
        "patientMl_approval": ApprovalRunFacet(run_id="r", decision="rejected", actor="user",
                                               decided_at="2026-12-06T10:00:00"),
    })).run_facets["patientMl_approval"])  # fmt: skip
    assert Path(facet["_schemaURL"].removeprefix("file://")).is_file()


def test_unreadable_lineage_is_logged_not_raised(caplog: pytest.LogCaptureFixture) -> None:
    class Operator:
        task_id = "evaluate"

        def engine(self) -> Any:
            raise RuntimeError("product DB unreachable")

    with caplog.at_level(logging.WARNING, logger="patient_ml.lineage"):
        assert lineage_or_none(Operator(), lambda session: StageLineage()) is None
    assert "no Patient ML lineage" in caplog.text and "unreachable" in caplog.text
