"""The `patient-ml` CLI on SQLite and PostgreSQL: commands, output, exit codes."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from patient_ml.cli.main import main
from patient_ml.db.version import HEAD_REVISION
from tests.conftest import EXAMPLE_CONFIGS


def cli(capsys, *args: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def _register_examples(capsys, db_url: str) -> None:
    for kind, name in [
        ("datasets", "brain_mri_dataset"),
        ("datasets", "nuclei_dataset"),
        ("models", "brain_mri_model"),
        ("models", "nuclei_model"),
    ]:
        code, _, err = cli(capsys, "--db-url", db_url, kind, "create", "-f",
                           str(EXAMPLE_CONFIGS / f"{name}.yaml"))  # fmt: skip
        assert code == 0, err
        assert "Created" in err


def test_create_list_show(capsys, db_url: str) -> None:
    _register_examples(capsys, db_url)
    code, out, _ = cli(capsys, "--db-url", db_url, "models", "list")
    assert code == 0
    assert "brain-mri-tumour-classifier" in out and "nuclei-segmenter" in out
    assert "Not Deployed" in out and "patient_ml__nuclei_segmenter" in out

    code, out, _ = cli(capsys, "--db-url", db_url, "--json", "models", "show", "nuclei-segmenter")
    assert code == 0
    shown = json.loads(out)
    assert shown["deployApproach"]["type"] == "edge"
    assert shown["trainingApproach"]["schedule"] == "0 2 * * 0"

    code, out, _ = cli(capsys, "--db-url", db_url, "datasets", "show", "brain-mri-tumour")
    doc = yaml.safe_load(out)
    assert doc["problemDefinition"]["labelDefinition"]["maxLabelIndex"] == 1

    code, out, _ = cli(capsys, "--db-url", db_url, "--json", "datasets", "list")
    assert len(json.loads(out)["datasets"]) == 2
    code, out, err = cli(capsys, "--db-url", db_url, "runs", "list")
    assert code == 0 and "No runs yet." in err


def test_show_output_can_be_edited_and_sent_back(capsys, db_url: str, tmp_path: Path) -> None:
    _register_examples(capsys, db_url)
    _, out, _ = cli(capsys, "--db-url", db_url, "models", "show", "brain-mri-tumour-classifier")
    doc = yaml.safe_load(out)
    doc["description"] = "Second opinion for radiologists."
    edited = tmp_path / "model.yaml"
    edited.write_text(yaml.safe_dump(doc))
    code, _, err = cli(capsys, "--db-url", db_url, "models", "update",
                       "brain-mri-tumour-classifier", "-f", str(edited))  # fmt: skip
    assert code == 0, err
    assert "revision 2" in err
    _, out, _ = cli(capsys, "--db-url", db_url, "--json", "models", "show", doc["id"])
    assert json.loads(out)["description"] == "Second opinion for radiologists."


@pytest.mark.parametrize(
    ("args", "exit_code", "fragment"),
    [
        (["models", "create", "-f", "/nonexistent.yaml"], 3, "does not exist"),
        (["models", "show", "ghost"], 4, "No model has the id or name 'ghost'"),
        (["runs", "show", "ghost"], 4, "No run has the id"),
        (["datasets", "create", "-f", str(EXAMPLE_CONFIGS / "brain_mri_dataset.yaml")], 5,
         "already exists"),
        (["datasets", "delete", "brain-mri-tumour"], 5, "used by 1 model"),
    ],
)  # fmt: skip
def test_exit_codes(capsys, db_url: str, args, exit_code: int, fragment: str) -> None:
    _register_examples(capsys, db_url)
    code, _, err = cli(capsys, "--db-url", db_url, *args)
    assert code == exit_code
    assert err.startswith("error: ") and fragment in err


def test_bad_yaml_and_non_mapping_files(capsys, db_url: str, tmp_path: Path) -> None:
    broken = tmp_path / "broken.yaml"
    broken.write_text("name: [unclosed\n")
    code, _, err = cli(capsys, "--db-url", db_url, "datasets", "create", "-f", str(broken))
    assert code == 3 and "is not valid YAML" in err
    listing = tmp_path / "list.json"
    listing.write_text("[1, 2]")
    code, _, err = cli(capsys, "--db-url", db_url, "datasets", "create", "-f", str(listing))
    assert code == 3 and "holds a list, not a mapping" in err


def test_usage_errors_exit_2(capsys) -> None:
    with pytest.raises(SystemExit) as info:
        main(["models", "frobnicate"])
    assert info.value.code == 2


def test_schema_missing_exit_6_then_upgrade(capsys, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'fresh.db'}"
    code, _, err = cli(capsys, "--db-url", url, "models", "list")
    assert code == 6 and "patient-ml db upgrade" in err
    code, _, err = cli(capsys, "--db-url", url, "db", "upgrade")
    assert code == 0 and f"upgraded from empty to {HEAD_REVISION}" in err
    code, _, err = cli(capsys, "--db-url", url, "db", "upgrade")
    assert code == 0 and f"already at revision {HEAD_REVISION}" in err
    code, out, _ = cli(capsys, "--db-url", url, "db", "current")
    assert code == 0 and f"current:  {HEAD_REVISION}" in out


def test_postgres_schema_upgrade_via_cli(capsys, postgres_server_url: str) -> None:
    """`db upgrade` on an empty PostgreSQL database, then the example configs."""
    from sqlalchemy import create_engine, text

    admin = create_engine(postgres_server_url, isolation_level="AUTOCOMMIT")
    url = postgres_server_url.rsplit("/", 1)[0] + "/pml_cli_upgrade"
    with admin.connect() as conn:
        conn.execute(text('DROP DATABASE IF EXISTS "pml_cli_upgrade" WITH (FORCE)'))
        conn.execute(text('CREATE DATABASE "pml_cli_upgrade"'))
    try:
        code, _, err = cli(capsys, "--db-url", url, "db", "upgrade")
        assert code == 0, err
        _register_examples(capsys, url)
        code, out, _ = cli(capsys, "--db-url", url, "models", "list")
        assert code == 0 and "nuclei-segmenter" in out
    finally:
        from patient_ml.db.engine import dispose_engines

        dispose_engines()
        with admin.connect() as conn:
            conn.execute(text('DROP DATABASE IF EXISTS "pml_cli_upgrade" WITH (FORCE)'))
        admin.dispose()


def test_console_script_end_to_end(tmp_path: Path) -> None:
    """The installed `patient-ml` executable, as a shell user runs it."""
    exe = shutil.which("patient-ml", path=str(Path(sys.executable).parent))
    assert exe, "patient-ml console script is not installed"
    env = {"PATIENT_ML_HOME": str(tmp_path / "home"), "PATH": str(Path(sys.executable).parent)}

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([exe, *args], env=env, text=True, capture_output=True, timeout=60)

    assert run("db", "upgrade").returncode == 0
    assert (tmp_path / "home" / "patient_ml.db").is_file()
    done = run("datasets", "create", "-f", str(EXAMPLE_CONFIGS / "nuclei_dataset.yaml"))
    assert done.returncode == 0, done.stderr
    done = run("--json", "datasets", "show", "nuclei-segmentation")
    assert json.loads(done.stdout)["problemDefinition"]["problemType"] == "imgSeg"
    assert run("--version").stdout.startswith("patient-ml ")


def test_decisions_record_the_cli_channel_and_the_os_account(
    capsys, db_url: str, engine: Any
) -> None:
    """The CLI is the operators' channel (direct product-DB access): the approvers list holds,
    and the decision records channel `cli`, the named decider and the OS account."""
    import getpass

    from patient_ml.db.engine import session_scope
    from patient_ml.services import runs
    from patient_ml.services.audit import events_for
    from patient_ml.services.models import get_model

    _register_examples(capsys, db_url)
    with session_scope(engine) as session:
        model = get_model(session, "brain-mri-tumour-classifier")
        model.approval_policy = {**(model.approval_policy or {}), "approvers": ["dr-a"]}
        run = runs.create_run(session, model.id, actor="t")
        runs.finish_run(session, run.id, status="succeeded", actor="t")
        run_id = run.id
    base = ("--db-url", db_url, "--json", "runs", "approve", "--run", run_id, "--reason", "ok")
    code, _, err = cli(capsys, *base[:2], "--actor", "mallory", *base[2:])
    assert code == 7 and "approvers are dr-a" in err
    code, out, err = cli(capsys, *base[:2], "--actor", "dr-a", *base[2:])
    assert code == 0, err
    assert json.loads(out)["channel"] == "cli" and json.loads(out)["user"] == "dr-a"
    with session_scope(engine) as session:
        audited = [e for e in events_for(session, "run", run_id) if e.action == "run.approved"]
    assert audited[0].actor == "dr-a"
    assert audited[0].after["channel"] == "cli"
    assert audited[0].after["detail"] == {"osUser": getpass.getuser()}


def test_approval_times_print_as_iso_times(
    capsys, db_url: str, tmp_path: Path, monkeypatch
) -> None:
    """A decision's `timestamp` shows as an ISO 8601 UTC time; `--json` keeps the wire value
    (milliseconds since the epoch)."""
    from datetime import datetime

    from patient_ml.db.engine import get_engine, session_scope
    from patient_ml.db.models import utcnow
    from patient_ml.services import runs

    monkeypatch.setenv("PATIENT_ML_ARTIFACT_URI", str(tmp_path / "artifacts"))
    _register_examples(capsys, db_url)
    engine = get_engine(db_url)
    with session_scope(engine) as s:
        made = [runs.create_run(s, "brain-mri-tumour-classifier", actor="t") for _ in range(2)]
        for run in made:
            runs.finish_run(s, run.id, status="succeeded", actor="t")
            run.approval_requested_at = utcnow()
        ids = [run.id for run in made]
    engine.dispose()
    monkeypatch.setenv("PATIENT_ML_USER", "dr-approver")
    code, out, err = cli(capsys, "--db-url", db_url, "runs", "reject", "--run", ids[0],
                         "--reason", "worse recall")  # fmt: skip
    assert code == 0, err
    shown = yaml.safe_load(out)["timestamp"]
    assert isinstance(shown, str) and shown.endswith("Z"), out
    assert abs(datetime.fromisoformat(shown).timestamp() - datetime.now().timestamp()) < 120
    code, out, err = cli(capsys, "--db-url", db_url, "--json", "runs", "reject", "--run", ids[1],
                         "--reason", "worse recall")  # fmt: skip
    assert code == 0, err
    assert isinstance(json.loads(out)["timestamp"], int | float)


def test_a_predict_attribute_must_be_name_equals_value(capsys, db_url: str, tmp_path: Path) -> None:
    image = tmp_path / "x.png"
    image.write_bytes(b"\x89PNG")
    code, _, err = cli(capsys, "--db-url", db_url, "models", "predict", "m", "--image",
                       str(image), "--attribute", "North")  # fmt: skip
    assert code != 0 and "--attribute 'North' is not NAME=VALUE" in err
    assert "--attribute site=North" in err  # the fix


def _curated_snapshot(capsys, root: Path, sample: Path, salt: str | None) -> str:
    """A fresh product DB and artifact store under `root`: the Br35H dataset config with a
    fixed id created (with `--split-salt salt` when given) and curated from `sample`."""
    db_url = f"sqlite:///{root / 'product.db'}"
    assert cli(capsys, "--db-url", db_url, "db", "upgrade")[0] == 0
    doc = yaml.safe_load((EXAMPLE_CONFIGS / "brain_mri_dataset.yaml").read_text())
    doc["id"] = "5d0c6f0e-0000-4000-8000-000000000035"
    config = root / "dataset.yaml"
    config.write_text(yaml.safe_dump(doc))
    salted = ["--split-salt", salt] if salt else []
    code, _, err = cli(capsys, "--db-url", db_url, "datasets", "create", "-f", str(config),
                       *salted)  # fmt: skip
    assert code == 0, err
    assert ("for public or synthetic data only" in err) == bool(salt)
    code, out, err = cli(capsys, "--db-url", db_url, "--json", "datasets", "show", doc["id"])
    assert code == 0, err
    assert not salt or salt not in out  # the salt is a secret: never shown
    code, out, err = cli(capsys, "--db-url", db_url, "--json", "datasets", "curate", doc["id"],
                         "--ndjson", str(sample), "--allow-root", str(sample),
                         "--artifact-uri", (root / "artifacts").as_uri(),
                         "--workers", "2")  # fmt: skip
    assert code == 0, err
    return str(json.loads(out)["snapshotId"])


def test_a_given_split_salt_curates_the_same_records_to_the_same_snapshot(
    capsys, tmp_path: Path
) -> None:
    """`datasets create --split-salt` (the demo's samples): the same records give the same
    snapshot (ids, patient keys, splits) in two fresh products; without it, each dataset gets
    its own random secret and so its own snapshot."""
    sample = tmp_path / "sample"
    subprocess.run(
        [sys.executable, str(Path(__file__).resolve().parents[2] / "include" / "sample_data"),
         "build", "br35h", "--out", str(sample), "--limit", "40"],
        check=True, stdout=subprocess.DEVNULL,
    )  # fmt: skip
    salt = "patient-ml-test:brain-mri-tumour"
    first, second = (_curated_snapshot(capsys, tmp_path / n, sample, salt) for n in ("a", "b"))
    assert first == second
    unsalted = _curated_snapshot(capsys, tmp_path / "c", sample, None)
    assert unsalted != first


@pytest.mark.parametrize("salt", ["short", "x" * 65, "has a space in it here"])
def test_a_split_salt_must_be_16_to_64_printable_characters(capsys, salt: str) -> None:
    with pytest.raises(SystemExit) as stopped:
        main(["datasets", "create", "-f", "x.yaml", "--split-salt", salt])
    assert stopped.value.code == 2
    assert "a split salt is 16-64 printable ASCII characters" in capsys.readouterr().err


def test_airflow_output_goes_to_stderr_so_json_stays_parseable() -> None:
    """A logging handler bound to the stdout it found (as Airflow configures its logging) writes
    to stderr inside `airflow_output_to_stderr`; the command's own result still reaches stdout."""
    script = (
        "import logging, sys\n"
        "from patient_ml.cli.context import airflow_output_to_stderr\n"
        "log = logging.getLogger('airflow-like')\n"
        "log.addHandler(logging.StreamHandler(sys.stdout))\n"
        "log.setLevel(logging.INFO)\n"
        "print('before', flush=False)\n"
        "with airflow_output_to_stderr():\n"
        "    log.info('a log line')\n"
        "    print('also redirected')\n"
        "print('{\"result\": 1}')\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          check=True)  # fmt: skip
    assert done.stdout.splitlines() == ["before", '{"result": 1}']
    assert done.stderr.splitlines() == ["a log line", "also redirected"]
