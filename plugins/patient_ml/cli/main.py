"""`patient-ml`: manage the product database, dataset and model configs, and runs.

Exit codes: 0 success, 1 failure (e.g. database unreachable), 2 usage error, 3 invalid config
or config file, 4 not found, 5 conflict with stored state, 6 database schema out of date.
Invalid input writes nothing: every command runs in one transaction.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from patient_ml import __version__
from patient_ml.cli.context import actor
from patient_ml.cli.lifecycle import add_model_commands, add_run_commands
from patient_ml.config.identifiers import escape_controls
from patient_ml.exceptions import ConfigValidationError, PatientMLError
from patient_ml.settings import setting

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from patient_ml.fhir.client import FhirClient
    from patient_ml.services.configs import ConfigRepository

INTERNAL_ERROR_EXIT = 70

T = TypeVar("T")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="patient-ml",
        description="Patient ML for Airflow: dataset and model configs, runs, product database.",
        epilog="The product database is PATIENT_ML_DATABASE_URL, else the Airflow connection "
        "named by PATIENT_ML_CONN_ID, else SQLite under PATIENT_ML_HOME.",
    )
    parser.add_argument("--version", action="version", version=f"patient-ml {__version__}")
    parser.add_argument("--db-url", help="product database SQLAlchemy URL (overrides the env)")
    parser.add_argument(
        "--actor",
        default=None,
        help="who is acting, for the audit trail (default: $PATIENT_ML_USER or the OS user)",
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of text")
    groups = parser.add_subparsers(dest="group", required=True, metavar="COMMAND")

    db = groups.add_parser("db", help="product database schema").add_subparsers(
        dest="command", required=True, metavar="SUBCOMMAND"
    )
    upgrade = db.add_parser("upgrade", help="create or migrate the schema (idempotent)")
    upgrade.add_argument("--revision", default="head", help="target revision (default: head)")
    upgrade.set_defaults(handler=cmd_db_upgrade)
    db.add_parser("current", help="show the schema revision").set_defaults(handler=cmd_db_current)

    for noun in ("dataset", "model"):
        sub = groups.add_parser(f"{noun}s", help=f"{noun} configs").add_subparsers(
            dest="command", required=True, metavar="SUBCOMMAND"
        )
        create = sub.add_parser("create", help=f"create a {noun} config from a YAML/JSON file")
        create.add_argument("-f", "--file", required=True, help="YAML or JSON config file")
        if noun == "dataset":
            create.add_argument(
                "--split-salt",
                type=_split_salt,
                metavar="TEXT",
                help="the dataset's secret salt (patient keys, clusters, split drawing) instead "
                "of a random 256-bit one, so that the same records curate to the same splits "
                "and snapshot ids anywhere (with an `id` in the config). Only for public or "
                "synthetic data (the demo's samples): whoever knows the salt can recompute "
                "patient keys from patient ids and tell which split a new patient will join. "
                f"{SALT_MIN}-{SALT_MAX} printable ASCII characters",
            )
        create.set_defaults(handler=cmd_create, noun=noun)
        update = sub.add_parser("update", help=f"replace a {noun} config from a YAML/JSON file")
        update.add_argument("ref", help=f"{noun} id or name")
        update.add_argument("-f", "--file", required=True, help="YAML or JSON config file")
        update.set_defaults(handler=cmd_update, noun=noun)
        sub.add_parser("list", help=f"list {noun} configs").set_defaults(
            handler=cmd_list, noun=noun
        )
        show = sub.add_parser("show", help=f"show one {noun} config")
        show.add_argument("ref", help=f"{noun} id or name")
        show.set_defaults(handler=cmd_show, noun=noun)
        delete = sub.add_parser("delete", help=f"delete a {noun} config that nothing uses")
        delete.add_argument("ref", help=f"{noun} id or name")
        delete.set_defaults(handler=cmd_delete, noun=noun)

    ds_sub = next(
        a for a in groups.choices["datasets"]._actions if isinstance(a, argparse._SubParsersAction)
    )
    curate = ds_sub.add_parser(
        "curate", help="curate a dataset now: FHIR records -> snapshot (same as the DAG's task)"
    )
    curate.add_argument("ref", help="dataset id or name")
    where = curate.add_mutually_exclusive_group()
    where.add_argument("--ndjson", metavar="DIR", help="read FHIR NDJSON files from DIR")
    where.add_argument("--fhir-url", help="read from this FHIR server (no auth)")
    curate.add_argument(
        "--fhir-conn-id", help="read from the FHIR server of this Airflow connection"
    )
    curate.add_argument("--artifact-uri", help="file:///dir or s3://bucket/prefix")
    curate.add_argument("--aws-conn-id", default="aws_default")
    curate.add_argument(
        "--allow-root",
        action="append",
        metavar="DIR",
        help="folder file:// URLs may use (repeatable; default PATIENT_ML_ALLOWED_FILE_ROOTS)",
    )
    curate.add_argument(
        "--allow-host",
        action="append",
        metavar="HOST",
        help="host http(s):// URLs may use (repeatable; default PATIENT_ML_ALLOWED_HTTP_HOSTS)",
    )
    curate.add_argument("--workers", type=int, default=8, help="images fetched at once")
    curate.set_defaults(handler=cmd_curate)

    snaps = groups.add_parser("snapshots", help="dataset snapshots").add_subparsers(
        dest="command", required=True, metavar="SUBCOMMAND"
    )
    snaps_list = snaps.add_parser("list", help="snapshots of a dataset, oldest first")
    snaps_list.add_argument("dataset", help="dataset id or name")
    snaps_list.set_defaults(handler=cmd_snapshots_list)
    snaps_show = snaps.add_parser("show", help="one snapshot with its curation report")
    snaps_show.add_argument("snapshot_id")
    snaps_show.set_defaults(handler=cmd_snapshots_show)

    runs = groups.add_parser("runs", help="model runs").add_subparsers(
        dest="command", required=True, metavar="SUBCOMMAND"
    )
    runs_list = runs.add_parser("list", help="list runs, newest first")
    runs_list.add_argument("--model", help="only runs of this model (id or name)")
    runs_list.add_argument("--limit", type=int, default=50, help="at most this many (default 50)")
    runs_list.set_defaults(handler=cmd_runs_list)
    runs_show = runs.add_parser("show", help="show one run (reference ModelRun shape)")
    runs_show.add_argument("run_id")
    runs_show.set_defaults(handler=cmd_runs_show)
    add_run_commands(runs)
    add_model_commands(
        next(
            a
            for a in groups.choices["models"]._actions
            if isinstance(a, argparse._SubParsersAction)
        )
    )
    return parser


# ----------------------------------------------------------------------------- handlers


def cmd_db_upgrade(args: argparse.Namespace) -> int:
    from patient_ml.db import schema
    from patient_ml.db.engine import get_engine, redact

    engine = get_engine(args.db_url, check_schema=False)
    before, after = schema.upgrade(engine, args.revision)
    where = redact(str(engine.url))
    if before == after:
        _info(f"Product database {where} is already at revision {after}.")
    else:
        _info(f"Product database {where} upgraded from {before or 'empty'} to {after}.")
    if args.json:
        print(json.dumps({"database": where, "before": before, "after": after}))
    return 0


def cmd_db_current(args: argparse.Namespace) -> int:
    from patient_ml.db import schema
    from patient_ml.db.engine import get_engine, redact

    engine = get_engine(args.db_url, check_schema=False)
    current, head = schema.current_revision(engine), schema.head_revision()
    doc = {"database": redact(str(engine.url)), "current": current, "head": head}
    if args.json:
        print(json.dumps(doc))
    else:
        print(f"database: {doc['database']}\ncurrent:  {current or '(empty)'}\nhead:     {head}")
    schema.check_schema_version(engine)
    return 0


def cmd_create(args: argparse.Namespace) -> int:
    from patient_ml.config.loading import load_config_file

    data = load_config_file(args.file)
    configs = _repository(args.noun)

    salt = getattr(args, "split_salt", None)

    def run(session: Session) -> dict[str, Any]:
        row = configs.create(session, data, actor=actor(args))
        if salt is not None:  # never shown: to_wire leaves the salt out
            row.split_salt = salt
        return configs.to_wire(row)

    doc = _in_session(args, run)
    _info(f"Created {args.noun} {doc['name']!r} with id {doc['id']}.")
    if salt is not None:
        _info("Its split salt is the one given (--split-salt): for public or synthetic data only.")
    _print_saved(args, doc)
    return 0


def cmd_update(args: argparse.Namespace) -> int:
    from patient_ml.config.loading import load_config_file

    data = load_config_file(args.file)
    configs = _repository(args.noun)

    def run(session: Session) -> dict[str, Any]:
        return configs.to_wire(configs.update(session, args.ref, data, actor=actor(args)))

    doc = _in_session(args, run)
    _info(f"Updated {args.noun} {doc['name']!r} (revision {doc['revision']}).")
    _print_saved(args, doc)
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    configs = _repository(args.noun)

    def run(session: Session) -> list[dict[str, Any]]:
        return [configs.to_wire(stored) for stored in configs.list(session)]

    docs = _in_session(args, run)
    rows: list[tuple[Any, ...]]
    headers: tuple[str, ...]
    if args.noun == "dataset":
        rows = [
            (
                d["id"],
                d["name"],
                d["problemDefinition"]["problemType"],
                len(d["problemDefinition"]["labelDefinition"]["labels"]),
                d["description"][:50],
            )
            for d in docs
        ]
        headers = ("id", "name", "problem", "labels", "description")
    else:
        rows = [
            (
                m["id"],
                m["name"],
                m["deployApproach"]["type"],
                "Deployed" if m["championId"] else "Not Deployed",
                m["championId"],
                m["dagId"],
            )
            for m in docs
        ]
        headers = ("id", "name", "deploy", "status", "champion", "dag id")
    if args.json:
        print(json.dumps({f"{args.noun}s": docs}, indent=2))
    else:
        print_table_(headers, rows, empty=f"No {args.noun}s yet.")
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    configs = _repository(args.noun)

    def run(session: Session) -> dict[str, Any]:
        return configs.to_wire(configs.get(session, args.ref))

    _print_doc(args, _in_session(args, run))
    return 0


def cmd_delete(args: argparse.Namespace) -> int:
    configs = _repository(args.noun)

    def run(session: Session) -> str:
        return configs.delete(session, args.ref, actor=actor(args))

    deleted = _in_session(args, run)
    _info(f"Deleted {args.noun} {deleted}.")
    if args.json:
        print(json.dumps({"id": deleted}))
    return 0


def cmd_runs_list(args: argparse.Namespace) -> int:
    from patient_ml.services import runs

    def run(session: Session) -> list[dict[str, Any]]:
        return runs.runs_to_wire(session, runs.list_runs(session, args.model, args.limit))

    docs = _in_session(args, run)
    if args.json:
        print(json.dumps({"runs": docs}, indent=2))
        return 0
    rows = [
        (
            r["id"],
            r["slug"],
            r["modelId"],
            r["status"],
            _iso(r["start"]),
            _iso(r.get("end")),
            r.get("deployStatus"),
        )
        for r in docs
    ]
    print_table_(
        ("id", "slug", "model", "status", "start", "end", "deploy"), rows, empty="No runs yet."
    )
    return 0


def cmd_runs_show(args: argparse.Namespace) -> int:
    from patient_ml.services import runs

    def run(session: Session) -> dict[str, Any]:
        return runs.run_to_wire(session, runs.get_run(session, args.run_id))

    _print_doc(args, _in_session(args, run))
    return 0


def cmd_curate(args: argparse.Namespace) -> int:
    import logging

    from patient_ml.curation.sources import NdjsonSource
    from patient_ml.db.engine import get_engine
    from patient_ml.services.curation import curate
    from patient_ml.services.curation_inputs import build_curation_inputs

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)
    engine = get_engine(args.db_url)

    def fhir_client(conn_id: str) -> FhirClient:
        if args.fhir_url:
            from patient_ml.fhir.client import FhirClient

            return FhirClient(args.fhir_url)
        from patient_ml.hooks.fhir import FhirHook

        return FhirHook(args.fhir_conn_id or conn_id).get_client()

    override = None
    if args.ndjson:
        override = NdjsonSource(args.ndjson)
    inputs = build_curation_inputs(
        engine,
        args.ref,
        fhir_client_factory=fhir_client,
        artifact_uri=args.artifact_uri,
        aws_conn_id=args.aws_conn_id,
        allowed_file_roots=args.allow_root,
        allowed_http_hosts=args.allow_host,
        source_override=override,
        force_fhir_server=bool(args.fhir_url or args.fhir_conn_id),
    )
    result = curate(
        engine=engine,
        dataset_ref=args.ref,
        source=inputs.source,
        store=inputs.store,
        fetcher=inputs.fetcher,
        actor=actor(args),
        workers=args.workers,
    )
    doc = {
        "snapshotId": result.snapshot_id,
        "created": result.created,
        "exampleCount": result.example_count,
        "manifestUri": result.manifest_uri,
        "examples": result.report["examples"],
        "patients": result.report["patients"],
        "quarantined": {k: v for k, v in result.report["quarantined"].items() if k != "items"},
    }
    _print_doc(args, doc)
    return 0


def cmd_snapshots_list(args: argparse.Namespace) -> int:
    from patient_ml.services import datasets, snapshots

    def run(session: Session) -> list[dict[str, Any]]:
        dataset = datasets.get_dataset(session, args.dataset)
        return [
            snapshots.snapshot_to_wire(s) for s in snapshots.list_snapshots(session, dataset.id)
        ]

    docs = _in_session(args, run)
    if args.json:
        print(json.dumps({"snapshots": docs}, indent=2))
        return 0
    rows = [
        (d["id"][:16], d["exampleCount"], d["counts"].get("bySplit"), _iso(d["createdAt"]))
        for d in docs
    ]
    print_table_(("snapshot", "examples", "by split", "created"), rows, empty="No snapshots yet.")
    return 0


def cmd_snapshots_show(args: argparse.Namespace) -> int:
    from patient_ml.services import snapshots

    def run(session: Session) -> dict[str, Any]:
        snapshot = snapshots.get_snapshot(session, args.snapshot_id)
        return {**snapshots.snapshot_to_wire(snapshot), "report": snapshot.report}

    _print_doc(args, _in_session(args, run))
    return 0


# ----------------------------------------------------------------------------- plumbing


SALT_MIN, SALT_MAX = 16, 64  # pml_datasets.split_salt holds 64 characters


def _split_salt(text: str) -> str:
    """argparse type of `datasets create --split-salt`."""
    if not SALT_MIN <= len(text) <= SALT_MAX or not all(" " < c <= "~" for c in text):
        raise argparse.ArgumentTypeError(
            f"{len(text)} characters given; a split salt is {SALT_MIN}-{SALT_MAX} printable ASCII "
            "characters without spaces (or leave the option out for a random secret one)"
        )
    return text


def _repository(noun: str) -> ConfigRepository[Any, Any]:
    """The service that stores configs of kind `noun` ("dataset" or "model")."""
    from patient_ml.services.datasets import DATASETS
    from patient_ml.services.models import MODELS

    return DATASETS if noun == "dataset" else MODELS


def _in_session(args: argparse.Namespace, work: Callable[[Session], T]) -> T:
    from patient_ml.cli.context import engine
    from patient_ml.db.engine import session_scope

    with session_scope(engine(args)) as session:
        return work(session)


def _print_saved(args: argparse.Namespace, doc: dict[str, Any]) -> None:
    if args.json:
        print(json.dumps(doc, indent=2))


def _print_doc(args: argparse.Namespace, doc: dict[str, Any]) -> None:
    from patient_ml.cli.output import print_document

    print_document(doc, as_json=args.json)


def print_table_(headers: Sequence[str], rows: Sequence[Sequence[Any]], *, empty: str) -> None:
    from patient_ml.cli.output import print_table

    print_table(headers, rows, empty=empty)


def _iso(millis: float | None) -> str | None:
    if millis is None:
        return None
    from datetime import UTC, datetime

    return datetime.fromtimestamp(millis / 1000, UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def _info(message: str) -> None:
    print(escape_controls(message, keep="\n"), file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.handler(args))
    except ConfigValidationError as exc:
        print(f"error: {escape_controls(str(exc), keep=chr(10))}", file=sys.stderr)
        if args.json:
            print(json.dumps({"errors": [e.as_dict() for e in exc.errors]}, default=str))
        return exc.exit_code
    except PatientMLError as exc:
        print(f"error: {escape_controls(str(exc), keep=chr(10))}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("interrupted; nothing was saved", file=sys.stderr)
        return 130
    except Exception as exc:  # a bug: say so plainly, keep the traceback behind a switch
        if setting("PATIENT_ML_DEBUG"):
            raise
        print(
            f"internal error: {type(exc).__name__}: {exc}\n"
            "This is a bug in patient-ml; rerun with PATIENT_ML_DEBUG=1 for the traceback and "
            "report it.",
            file=sys.stderr,
        )
        return INTERNAL_ERROR_EXIT


if __name__ == "__main__":
    sys.exit(main())
