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
