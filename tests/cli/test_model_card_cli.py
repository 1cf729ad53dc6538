"""`patient-ml runs card`: the readable Markdown card by default, the card document as JSON
with `--format document` (no nulls, ISO dates), the flat card with `--json`; each written to
the artifact store too."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from patient_ml.cli.main import main
from tests.services.evaluated import evaluated_run, model_with_policy


def cli(capsys: Any, *args: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_runs_card_formats(
    capsys: Any, db_url: str, engine: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATIENT_ML_ARTIFACT_URI", str(tmp_path / "artifacts"))
    card = {"intendedUse": "Triage aid.", "limitations": ["One site only."]}
    model_id = model_with_policy(engine, {}, modelCard=card)
    run_id = evaluated_run(engine, tmp_path, model_id, miss=0.1)
    base = ("--db-url", db_url, "runs", "card", "--run", run_id)

    code, out, err = cli(capsys, *base)
    assert code == 0, err
    assert out.startswith("# Model card: ") and "Triage aid." in out and "- One site only." in out
    assert (tmp_path / "artifacts" / "runs" / run_id / "model-card.md").read_text() == out[:-1]

    code, out, err = cli(capsys, *base, "--format", "document")
    assert code == 0, err
    document = json.loads(out)
    assert document["format"] == "patient-ml-model-card-document/1"
    assert document["intendedUse"]["summary"] == "Triage aid." and "null" not in out
    assert document["run"]["started"].endswith("Z")

    code, out, err = cli(capsys, "--db-url", db_url, "--json", "runs", "card", "--run", run_id)
    assert code == 0, err
    assert json.loads(out)["format"] == "patient-ml-model-card/1"
