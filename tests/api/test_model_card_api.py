"""The model card over the REST API: the document (JSON without nulls or paths) and the Markdown
download, authorized like the rest; a model config's `modelCard` is stored, returned and
checked field by field."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import Engine

from tests.helpers import example
from tests.services.evaluated import evaluated_run, model_with_policy

CARD = {
    "intendedUse": "Triage aid for positive synthetic images.",
    "intendedUsers": ["radiologists"],
    "outOfScope": ["Diagnosis."],
    "limitations": ["One synthetic site only."],
}


def test_the_markdown_download_and_the_document(api: Any, engine: Engine, tmp_path: Path) -> None:
    model_id = model_with_policy(engine, {}, modelCard=CARD)
    run_id = evaluated_run(engine, tmp_path, model_id, miss=0.1)
    admin = api("admin")
    base = f"/models/{model_id}/runs/{run_id}/model-card"

    model = admin.get(f"/models/{model_id}").json()["model"]
    assert model["modelCard"] == CARD

    download = admin.get(f"{base}/markdown")
    assert download.status_code == 200, download.text
    assert download.headers["content-type"].startswith("text/markdown")
    disposition = download.headers["content-disposition"]
    assert disposition.startswith('attachment; filename="model-card-') and disposition.endswith(
        '.md"'
    )
    text = download.text
    assert text.startswith("# Model card: ") and "## Intended use" in text
    assert CARD["intendedUse"] in text and "- One synthetic site only." in text
    assert "file://" not in text and "null" not in text

    document = admin.get(f"{base}/document")
    assert document.status_code == 200, document.text
    card = document.json()["modelCard"]
    assert card["format"] == "patient-ml-model-card-document/1"
    assert card["run"]["id"] == run_id and card["intendedUse"]["declared"] is True
    assert "null" not in document.text and "file://" not in document.text
    assert card["performance"]["evaluated"] is True

    assert admin.get(base).json()["modelCard"]["format"] == "patient-ml-model-card/1"  # kept
    missing = admin.get(f"/models/{model_id}/runs/no-such-run/model-card/markdown")
    assert missing.status_code == 404
    assert api(None).get(f"{base}/markdown").status_code == 401


def test_a_model_card_field_error_names_the_field(api: Any) -> None:
    admin = api("admin")
    assert admin.post("/datasets", json=example("brain_mri_dataset")).status_code == 200
    body = {**example("brain_mri_model"), "modelCard": {"intendedUsers": "radiologists"}}
    refused = admin.post("/models", json=body)
    assert refused.status_code == 422, refused.text
    fields = [e["field"] for e in refused.json()["error"]["errors"]]
    assert fields == ["modelCard.intendedUsers"], refused.text
    accepted = admin.post("/models", json=example("brain_mri_model"))
    assert accepted.status_code == 200, accepted.text
    card = accepted.json()["model"]["modelCard"]
    assert card["intendedUse"].startswith("Triage aid") and len(card["outOfScope"]) == 3


def test_the_runs_provenance_over_the_api(api: Any, engine: Engine, tmp_path: Path) -> None:
    """`provenance` in the extended run (typed in the OpenAPI document), never in the
    reference view; the card's lineage carries it."""
    from patient_ml.db.engine import session_scope
    from patient_ml.services import provenance
    from patient_ml.services.runs import get_run
    from patient_ml.training.provenance import PackageRecord

    model_id = model_with_policy(engine, {})
    run_id = evaluated_run(engine, tmp_path, model_id, miss=0.1)  # records the served image
    digest = "sha256:" + "5" * 64
    with session_scope(engine) as session:
        run = get_run(session, run_id)
        image = run.config["trainingApproach"]["trainingImage"]
        provenance.record_training(
            run,
            trial={
                "image": {"role": "training", "reference": image, "backend": "docker",
                          "digest": digest, "imageId": digest},
                "environment": {"python": "3.11.2", "libraries": {"torch": "1.13.1"},
                                "reportedBy": "trainer"},
            },
            best_trial=2,
            seed=5,
            package=PackageRecord(version="0.1.0", commit="abc1234", commit_source="env"),
        )  # fmt: skip
    admin = api("admin")
    base = f"/models/{model_id}/runs/{run_id}"
    extended = admin.get(f"{base}?view=extended")
    assert extended.status_code == 200, extended.text
    found = extended.json()["run"]["provenance"]
    assert found["training"]["digest"] == digest and found["bestTrial"] == 2
    assert found["inference"]["digest"] == "local-sha256:" + "0" * 64
    assert found["package"] == {"name": "patient-ml-airflow", "version": "0.1.0",
                                "commit": "abc1234", "commitSource": "env"}  # fmt: skip
    assert found["sampler"]["seed"] == 5 and found["tagMoved"] == []
    assert "provenance" not in admin.get(base).json()["run"]
    lineage = admin.get(f"{base}/model-card/document").json()["modelCard"]["lineage"]
    assert lineage["trainingImageDigest"] == digest and lineage["sourceCommit"] == "abc1234"
    assert lineage["trainerLibraries"] == ["torch 1.13.1"]
    schema = admin.get("/openapi.json").json()["components"]["schemas"]
    assert "provenance" in schema["ModelRunExtended"]["properties"]
