"""The gate through the CLI: `runs gate` prints it (and how to override), `runs approve`
refuses a challenger that fails a rule without `--override` (exit 3, naming the field) and
records the override with it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from patient_ml.cli.main import main
from tests.services.evaluated import evaluated_run, model_with_champion


def cli(capsys: Any, *args: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_gate_and_override_from_the_cli(
    capsys: Any, db_url: str, engine: Any, tmp_path: Path
) -> None:
    policy = {"nonInferiority": [{"metric": "sensitivity:positive", "margin": 0.02}]}
    model_id = model_with_champion(engine, tmp_path, policy)
    run_id = evaluated_run(engine, tmp_path, model_id, miss=0.5, seed=12)
    code, out, err = cli(capsys, "--db-url", db_url, "runs", "gate", "--run", run_id)
    assert code == 0, err
    assert "overrideRequired: true" in out and "--override" in err
    code, out, _ = cli(capsys, "--db-url", db_url, "--json", "runs", "gate", "--run", run_id)
    assert code == 0 and json.loads(out)["rules"][0]["passed"] is False

    base = ("--db-url", db_url, "--actor", "dr-a", "--json", "runs", "approve", "--run", run_id,
            "--reason", "needed at site B")  # fmt: skip
    code, _, err = cli(capsys, *base)
    assert code == 3 and "override" in err and "Sensitivity of positive" in err
    code, out, err = cli(capsys, *base, "--override", "a second reader covers it")
    assert code == 0, err
    decided = json.loads(out)
    assert decided["channel"] == "cli"
    assert decided["criteria"]["override"]["justification"] == "a second reader covers it"
