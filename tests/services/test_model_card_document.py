"""The model card as a document, on SQLite and PostgreSQL: built by the services from what is
stored (a model config declaring its use, a registered snapshot with its curation report,
evaluations recorded by the product's own evaluation code, decisions with an override), every
section present, dates as ISO times in UTC, no server paths, nothing null; limitations declared
first and derived from the run after; the subgroup table and the failure gallery rendered when
the evaluation records them and said to be absent when it does not."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import orjson
from sqlalchemy import Engine

from patient_ml.db.engine import session_scope
from patient_ml.evaluation.model_card import public_text, render_markdown
from patient_ml.services import approvals
from patient_ml.services.model_card_document import build_model_card_document
from patient_ml.services.model_cards import write_model_card
from patient_ml.services.runs import create_run, get_run
from patient_ml.services.snapshots import register_snapshot
from patient_ml.storage import LocalArtifactStore
from tests.curation.cohort import CODE_SYSTEM
from tests.services.evaluated import evaluated_run, make_champion, model_with_policy

CARD = {
    "intendedUse": "Triage aid: flags positive synthetic images for a first read.",
    "intendedUsers": ["radiologists prioritising a worklist"],
    "outOfScope": ["Diagnosis without a radiologist's read."],
    "limitations": ["Trained on one synthetic site only."],
}
SNAPSHOT = "c" * 64
ISO = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$")
SECTIONS = {
    "title", "generatedAt", "model", "run", "problem", "intendedUse", "provenance", "population",
    "performance", "failureGallery", "calibration", "limitations", "lineage", "approval",
    "deployment",
}  # fmt: skip
REPORT = {
    "records": {"read": 1234},
    "examples": {
        "bySplit": {"train": 700, "validation": 150, "test": 240},
        "byLabel": {
            "train": {"negative": 500, "positive": 200},
            "validation": {"negative": 100, "positive": 50},
            "test": {"negative": 120, "positive": 120},
        },
    },
    "patients": {"train": 350, "validation": 75, "test": 120},
    "clusters": {"train": 340, "validation": 75, "test": 118},
    "quarantined": {"total": 7},
    "nearDuplicates": {"groups": 4, "crossSplit": {"testWithCopyInTrain": 0}},
}


def _register_snapshot(engine: Engine, model_id: str) -> None:
    from patient_ml.db.models import Model

    with session_scope(engine) as session:
        model = session.get(Model, model_id)
        assert model is not None
        register_snapshot(
            session, snapshot_id=SNAPSHOT, dataset_id=model.dataset_id,
            manifest_uri=f"file:///srv/pml/snapshots/{SNAPSHOT}/manifest.jsonl",
            example_count=1090, counts={"bySplit": REPORT["examples"]["bySplit"], "total": 1090},
            report=REPORT, actor="t",
        )  # fmt: skip


def _compared_runs(engine: Engine, root: Path, **model_extra: Any) -> tuple[str, str]:
    """A champion (approved, promoted) and a worse challenger approved with an override."""
    model_id = model_with_policy(engine, {}, **model_extra)
    _register_snapshot(engine, model_id)
    first = evaluated_run(engine, root, model_id, miss=0.1, snapshot_id=SNAPSHOT)
    with session_scope(engine) as session:
        approvals.decide(session, first, "approved", user="dr-a", reason="first", channel="api")
    make_champion(engine, first)
    worse = evaluated_run(engine, root, model_id, miss=0.35, seed=4, snapshot_id=SNAPSHOT)
    with session_scope(engine) as session:
        approvals.decide(
            session, worse, "approved", user="dr-b", reason="site B needs a model",
            channel="ui", override="a second read covers the lower sensitivity",
        )  # fmt: skip
    return first, worse


def _nulls(value: Any, where: str = "") -> list[str]:
    if value is None:
        return [where]
    if isinstance(value, dict):
        return [n for k, v in value.items() for n in _nulls(v, f"{where}.{k}")]
    if isinstance(value, list):
        return [n for i, v in enumerate(value) for n in _nulls(v, f"{where}[{i}]")]
    return []


def _no_paths(text: str) -> None:
    assert "file://" not in text and "/srv/pml" not in text and "/report.json" not in text
    assert "/runs/" not in text and "model.tar.gz" not in text


def test_the_card_of_a_compared_run_is_a_document(engine: Engine, tmp_path: Path) -> None:
    first, worse = _compared_runs(engine, tmp_path, modelCard=CARD)
    with session_scope(engine) as session:
        document = build_model_card_document(session, worse)
    wire = document.wire()
    assert set(wire) >= SECTIONS
    assert _nulls(wire) == []
    text = orjson.dumps(wire).decode()
    _no_paths(text)
    for moment in (wire["generatedAt"], wire["run"]["started"], wire["run"]["ended"],
                   wire["provenance"]["snapshotCreated"],
                   *(d["at"] for d in wire["approval"]["decisions"])):  # fmt: skip
        assert ISO.match(moment), moment
    assert "start" not in wire["run"] and not re.search(r'"\w+":1\d{12}', text)  # no millis

    use = wire["intendedUse"]
    assert use["declared"] and use["summary"] == CARD["intendedUse"]
    assert use["intendedUsers"] == CARD["intendedUsers"]
    assert use["outOfScope"] == CARD["outOfScope"]

    prov = wire["provenance"]
    assert prov["fhirSource"] == {"kind": "ndjson", "name": "FHIR NDJSON files (folder 'unused')"}
    assert prov["inclusionCodes"] == [f"{CODE_SYSTEM}|g1"]
    assert prov["snapshotId"] == SNAPSHOT and prov["recordsRead"] == 1234
    assert prov["splits"][2] == {"split": "test", "images": 240, "patients": 120, "clusters": 118}

    population = wire["population"]
    assert {"split": "train", "label": "positive", "images": 200, "share": 200 / 700} in (
        population["prevalence"]
    )
    assert population["subgroupsRecorded"] is False and population["subgroups"] == []
    assert "No subgroup attributes recorded" in population["note"]

    perf = wire["performance"]
    assert perf["evaluated"] and perf["championRun"].endswith(f" ({first})")
    assert perf["testImages"] == 240 and perf["testClusters"] == 120
    assert (
        "cluster bootstrap" in perf["intervals"]
        and "120 independent clusters" in (perf["intervals"])
    )
    rows = {r["name"]: r for r in perf["metrics"]}
    assert perf["metrics"][0]["name"] == "accuracy"  # headline metrics first, in their order
    balanced = rows["balancedAccuracy"]
    assert balanced["title"] == "Balanced accuracy"
    assert balanced["challenger"]["low"] <= balanced["challenger"]["value"]
    assert balanced["challenger"]["value"] <= balanced["challenger"]["high"]
    assert balanced["verdict"] in ("worse", "shownWorse")
    assert balanced["difference"]["value"] < 0
    assert rows["sensitivity:positive"]["title"] == "Sensitivity of positive"
    assert perf["operatingPoint"]["rule"] == "youden"
    assert perf["operatingPoint"]["description"].startswith("positive at confidence >= ")

    assert wire["calibration"]["recorded"] and wire["calibration"]["bins"]
    assert "challengerError" in wire["calibration"] and "championError" in wire["calibration"]
    gallery = wire["failureGallery"]
    assert gallery["recorded"] is False and "No failure cases recorded" in gallery["note"]

    limitations = wire["limitations"]
    assert limitations[0] == {"text": "Trained on one synthetic site only.", "source": "declared"}
    derived = [x["text"] for x in limitations if x["source"] == "derived"]
    assert any(t.startswith("Worse than the champion on Balanced accuracy: -") for t in derived)
    assert any("No subgroup attributes recorded" in t for t in derived)
    assert not any("declares no intended use" in t for t in derived)

    lineage = wire["lineage"]
    assert lineage["snapshotId"] == SNAPSHOT and lineage["packageVersion"]
    assert lineage["trainingImageDigest"] == "local-sha256:" + "0" * 64
    assert lineage["hyperparameters"] == [
        {"name": "epochs", "value": "3"}, {"name": "image_size", "value": "16"}
    ]  # fmt: skip
    assert lineage["testSetSha256"]

    [decision] = wire["approval"]["decisions"]
    assert decision["by"] == "dr-b" and decision["justification"] == "site B needs a model"
    assert decision["override"] == "a second read covers the lower sensitivity"
    assert any("worse on the objective" in r for r in decision["overrideReasons"])
    assert wire["approval"]["status"] == "approved"
    assert wire["deployment"] == {"type": "cloud", "status": "not deployed", "isChampion": False}

    markdown = render_markdown(document)
    _no_paths(markdown)
    assert "None" not in markdown and "null" not in markdown
    for heading in ("Intended use", "Data provenance", "Population", "Performance on the "
                    "held-out test set", "Failure gallery", "Calibration", "Limitations and "
                    "known failure modes", "Lineage", "Decisions", "Deployment"):  # fmt: skip
        assert f"## {heading}" in markdown, heading
    assert "| Balanced accuracy | " in markdown and "120 independent clusters" in markdown
    assert "| test | 240 | 120 | 118 |" in markdown
    assert "approved by dr-b: site B needs a model" in markdown
    assert "**Override**: a second read covers the lower sensitivity" in markdown
    assert re.search(r"Card generated \d{4}-\d{2}-\d{2} \d{2}:\d{2} UTC", markdown)


def test_subgroups_and_failure_cases_are_rendered_when_recorded(
    engine: Engine, tmp_path: Path
) -> None:
    _, worse = _compared_runs(engine, tmp_path)
    with session_scope(engine) as session:
        run = get_run(session, worse)
        model_id = run.model_id
        run.evaluation = {
            **(run.evaluation or {}),
            "subgroups": [
                {"name": "site=B", "images": 18, "clusters": 9, "small": True,
                 "challenger": {"balancedAccuracy": 0.71, "logLoss": 0.6},
                 "champion": {"balancedAccuracy": 0.8, "logLoss": 0.5},
                 "intervals": {"challenger": {"balancedAccuracy": {"value": 0.71, "low": 0.55,
                                                                   "high": 0.86}},
                               "champion": {"balancedAccuracy": {"value": 0.8, "low": 0.66,
                                                                 "high": 0.93}}},
                 "differences": {"balancedAccuracy": {"value": -0.09, "low": -0.2, "high": 0.02}},
                 "prevalence": {"negative": 0.5, "positive": 0.5}},
                {"name": "site=A", "images": 222, "clusters": 111, "small": False,
                 "challenger": {"balancedAccuracy": 0.85}, "champion": {"balancedAccuracy": 0.84},
                 "differences": {"balancedAccuracy": {"value": 0.01, "low": 0.002, "high": 0.03}}},
            ],
            "failureCases": {
                "decidedBy": "positive at confidence >= 0.545",
                "classes": [
                    {"trueLabel": {"index": 0, "name": "negative"}, "errors": 3, "images": 120,
                     "shown": 0},
                    {"trueLabel": {"index": 1, "name": "positive"}, "errors": 38, "images": 120,
                     "shown": 2},
                ],
                "cases": [
                    {"case": 0, "exampleId": "ex-0007", "kind": "falseNegative",
                     "trueLabel": {"index": 1, "name": "positive"},
                     "predictedLabel": {"index": 0, "name": "negative"}, "confidence": 0.91,
                     "pictures": ["image", "occlusion"],
                     "maps": {"occlusion": {"method": "occlusion", "faithfulness": {}},
                              "external": {"uri": "https://maps.example.org/ex-0007.png"},
                              "stored": {"uri": "file:///srv/pml/maps/ex-0007.png"}}},
                    {"case": 1, "exampleId": "ex-0009", "kind": "falseNegative",
                     "trueLabel": {"index": 1, "name": "positive"},
                     "predictedLabel": {"index": 0, "name": "negative"}, "confidence": 0.8,
                     "maps": {}, "mapsError": "cannot read /srv/pml/images/9.png"},
                ],
            },
        }  # fmt: skip
    with session_scope(engine) as session:
        document = build_model_card_document(session, worse)
    wire = document.wire()
    assert _nulls(wire) == [] and "file://" not in orjson.dumps(wire).decode()
    population = wire["population"]
    assert population["subgroupsRecorded"] is True
    small, large = population["subgroups"]
    assert small["name"] == "site=B" and small["small"] is True and small["images"] == 18
    [row] = small["metrics"]  # the headline metrics shown; log loss is not
    assert row["challenger"] == {"value": 0.71, "low": 0.55, "high": 0.86}
    assert row["champion"] == {"value": 0.8, "low": 0.66, "high": 0.93}
    assert row["difference"] == {"value": -0.09, "low": -0.2, "high": 0.02}
    assert small["prevalence"] == [
        {"label": "negative", "share": 0.5}, {"label": "positive", "share": 0.5}
    ]  # fmt: skip
    assert row["verdict"] == "worse" and large["metrics"][0]["verdict"] == "shownBetter"
    derived = [x["text"] for x in wire["limitations"] if x["source"] == "derived"]
    assert "Subgroup site=B is small (18 images, 9 clusters): its figures are uncertain." in derived
    assert not any("No subgroup attributes" in t for t in derived)
    assert any("declares no intended use" in t for t in derived)  # no modelCard this time
    assert wire["intendedUse"] == {
        "summary": "Test classifier: flags positive synthetic images.",
        "declared": False,
        "intendedUsers": [],
        "outOfScope": [],
    }
    gallery = wire["failureGallery"]
    assert gallery["recorded"] is True and "positive at confidence >= 0.545" in gallery["note"]
    negative, positive = gallery["classes"]
    assert negative == {"label": "negative", "errors": 3, "images": 120, "cases": []}
    assert positive["errors"] == 38 and positive["images"] == 120
    seen, failed = positive["cases"]
    pictures = f"/models/{model_id}/runs/{worse}/failure-cases/0"
    assert seen == {
        "exampleId": "ex-0007", "trueLabel": "positive", "predictedLabel": "negative",
        "confidence": 0.91,
        "maps": [{"name": "image", "url": f"{pictures}/image.png"},
                 {"name": "occlusion", "url": f"{pictures}/occlusion.png"},
                 {"name": "external", "url": "https://maps.example.org/ex-0007.png"}],
    }  # fmt: skip
    assert failed["maps"] == [] and failed["mapsError"] == "cannot read [path removed]"
    markdown = render_markdown(document)
    assert "### Subgroup site=B (18 images, 9 clusters, small: read with care)" in markdown
    assert "Prevalence: negative 50.0%, positive 50.0%." in markdown
    assert "| Balanced accuracy | 0.710 [0.550, 0.860] | 0.800 [0.660, 0.930] | " in markdown
    assert "### True label positive (38 of 120 test images answered wrongly)" in markdown
    assert "| `ex-0007` | positive | negative | 0.910 | image, occlusion, " in markdown
    assert "[external](https://maps.example.org/ex-0007.png)" in markdown
    assert "| `ex-0009` | positive | negative | 0.800 | none (cannot read [path removed]) |" in (
        markdown
    )
    assert "### True label negative (3 of 120 test images answered wrongly)" in markdown
    assert "file://" not in markdown


def test_a_run_not_evaluated_yet_says_so_and_is_written_to_the_store(
    engine: Engine, tmp_path: Path
) -> None:
    model_id = model_with_policy(engine, {}, modelCard=CARD)
    with session_scope(engine) as session:
        run_id = create_run(session, model_id, actor="t").id
    with session_scope(engine) as session:
        document = build_model_card_document(session, run_id)
    wire = document.wire()
    assert _nulls(wire) == [] and "ended" not in wire["run"]
    assert wire["performance"] == {"evaluated": False, "testImagesLeftOut": 0, "labelsChanged":
                                   False, "metrics": []}  # fmt: skip
    assert wire["provenance"]["splits"] == [] and "snapshotId" not in wire["provenance"]
    assert wire["calibration"]["recorded"] is False
    derived = [x["text"] for x in wire["limitations"] if x["source"] == "derived"]
    assert derived == ["Not evaluated on the held-out test set yet: no performance is known."]
    store = LocalArtifactStore(tmp_path / "artifacts")
    uris = write_model_card(engine, store, run_id)
    markdown = store.read_bytes(store.key_of(uris["markdown"])).decode()
    assert "Not evaluated yet." in markdown and "Snapshot: `not recorded`" in markdown
    assert "No decision yet." in markdown and "Cloud deployment: not deployed." in markdown


def test_public_text_removes_file_uris_and_local_paths() -> None:
    assert public_text("failed at /opt/ml/model/x.bin: see file:///tmp/a b") == (
        "failed at [path removed]: see [path removed] b"
    )
    kept = "challenger - champion and/or 1/2 at https://example.org/a/b"
    assert public_text(kept) == kept
