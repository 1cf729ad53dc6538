"""The CLI under hostile input (issue 16): unsafe ids, alias bombs and huge files are refused
with exit 3, and stored text never reaches the terminal with raw control characters."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import yaml

from patient_ml.cli.main import main
from patient_ml.db.engine import get_engine, session_scope
from patient_ml.db.models import Dataset
from tests.config.test_input_limits import ALIAS_BOMB
from tests.helpers import example


def cli(capsys, *args: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("bad", ["../../x", "a/b", "/abs", ".", "a\x00b"])
def test_create_refuses_unsafe_ids(capsys, db_url: str, tmp_path: Path, bad: str) -> None:
    config = tmp_path / "dataset.yaml"
    config.write_text(yaml.safe_dump(example("brain_mri_dataset") | {"id": bad}))
    code, _, err = cli(capsys, "--db-url", db_url, "datasets", "create", "-f", str(config))
    assert code == 3 and "id: must be 1-36 characters" in err
    assert "\x00" not in err
    code, out, _ = cli(capsys, "--db-url", db_url, "--json", "datasets", "list")
    assert code == 0 and '"datasets": []' in out


def test_create_refuses_an_alias_bomb_at_once(capsys, db_url: str, tmp_path: Path) -> None:
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text(ALIAS_BOMB)
    started = time.monotonic()
    code, _, err = cli(capsys, "--db-url", db_url, "datasets", "create", "-f", str(bomb))
    assert code == 3 and time.monotonic() - started < 5
    assert "lol" not in err and len(err) < 500


def test_stored_control_characters_are_escaped_on_the_terminal(capsys, db_url: str) -> None:
    # A row written around the config checks (by hand, or by an older version).
    with session_scope(get_engine(db_url)) as session:
        session.add(
            Dataset(
                id="legacy-1",
                name="evil \x1b[2J\x1b[31mred \u202egnp.exe",
                description="line one\nbell \x07",
                problem_type="imgClf",
                problem_definition=example("brain_mri_dataset")["problemDefinition"],
                curation={},
                source={},
                created_by="t",
            )
        )
    for args in (["datasets", "list"], ["datasets", "show", "legacy-1"]):
        code, out, err = cli(capsys, "--db-url", db_url, *args)
        assert code == 0, err
        assert "\x1b" not in out and "\u202e" not in out and "\x07" not in out
        assert "\\u001b[31mred" in out and "\\u202e" in out
