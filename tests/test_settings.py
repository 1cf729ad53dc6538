"""The `[patient_ml]` Airflow config section: one list (settings.yaml) that the provider declares
(`airflow config list` shows it), the docs draw their tables from, and every PATIENT_ML_*
variable the package reads is in; values come from PATIENT_ML_*, AIRFLOW__PATIENT_ML__*, then
airflow.cfg, in that order."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest

from patient_ml.provider import get_provider_info
from patient_ml.settings import catalog, env_number, setting
from tests.conftest import REPO_ROOT

PACKAGE = REPO_ROOT / "plugins" / "patient_ml"


def test_every_variable_the_package_reads_is_declared_and_nothing_else() -> None:
    read = set()
    for path in PACKAGE.rglob("*.py"):
        for name in re.findall(r"PATIENT_ML_[A-Z][A-Z0-9_]*[A-Z0-9]\b", path.read_text()):
            read.add(name.removeprefix("PATIENT_ML_").lower())
    declared = set(catalog())
    assert read - declared == set(), "read but not in settings.yaml (nor in the docs)"
    assert declared - read == set(), "in settings.yaml but never read"


def test_the_provider_declares_the_section_airflow_validates() -> None:
    import airflow

    schema_path = Path(airflow.__file__).parent / "provider_info.schema.json"
    info = get_provider_info()
    jsonschema.validate(info, __import__("json").loads(schema_path.read_text()))
    options = info["config"]["patient_ml"]["options"]
    assert set(options) == set(catalog())
    assert all(o["default"] is None for o in options.values())  # the product's own defaults
    assert "PATIENT_ML_DAG_LIMIT" in options["dag_limit"]["description"]


def test_the_first_found_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PATIENT_ML_DAG_LIMIT", raising=False)
    monkeypatch.delenv("AIRFLOW__PATIENT_ML__DAG_LIMIT", raising=False)
    assert setting("PATIENT_ML_DAG_LIMIT") is None
    monkeypatch.setenv("AIRFLOW__PATIENT_ML__DAG_LIMIT", "12")
    assert setting("PATIENT_ML_DAG_LIMIT") == "12"
    assert env_number("PATIENT_ML_DAG_LIMIT", 5000, low=1, high=10**6) == 12
    monkeypatch.setenv("PATIENT_ML_DAG_LIMIT", "7")
    assert setting("PATIENT_ML_DAG_LIMIT") == "7"


def test_airflow_cfg_is_read_in_an_airflow_process(tmp_path: Path) -> None:
    """`airflow config list` shows the section; a value in airflow.cfg reaches the product
    in a process that loaded Airflow's configuration (a fresh interpreter: the tests' own
    process has its Airflow configuration loaded already)."""
    env = {"AIRFLOW_HOME": str(tmp_path), "PATH": "/usr/bin:/bin"}
    airflow = Path(sys.executable).with_name("airflow")
    listed = subprocess.run(
        [str(airflow), "config", "list", "--section", "patient_ml", "--include-descriptions"],
        env=env, capture_output=True, text=True, timeout=120, check=True,
    ).stdout  # fmt: skip
    assert "[patient_ml]" in listed and "# dag_limit = " in listed
    assert "Environment: PATIENT_ML_DAG_LIMIT or AIRFLOW__PATIENT_ML__DAG_LIMIT" in listed
    cfg = tmp_path / "airflow.cfg"  # written by the first run: set one option in it
    cfg.write_text(cfg.read_text().replace("# dag_limit = \n", "dag_limit = 42\n", 1))
    code = (
        "import airflow.configuration\n"
        "from patient_ml.settings import setting\n"
        "print(setting('PATIENT_ML_DAG_LIMIT'))\n"
    )
    read = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120,
        check=True,
    ).stdout.strip()  # fmt: skip
    assert read == "42"


def test_the_docs_tables_come_from_the_list() -> None:
    sys.path.insert(0, str(REPO_ROOT / "docs"))
    try:
        from hooks import on_page_markdown, settings_table
    finally:
        sys.path.pop(0)
    core = settings_table("core")
    assert "| `PATIENT_ML_HOME` | `home` |" in core and "SAGEMAKER" not in core
    assert "`PATIENT_ML_SAGEMAKER_ROLE_ARN`" in settings_table("sagemaker")
    page = (REPO_ROOT / "docs" / "configuration.md").read_text()
    assert "<!-- settings: core -->" in page
    assert "<!--" not in on_page_markdown(page)
    with pytest.raises(ValueError, match="no setting is in group"):
        settings_table("nothing")
