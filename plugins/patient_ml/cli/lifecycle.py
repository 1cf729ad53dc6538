"""CLI of a run's back half: evaluate, approve/reject, deploy, model card, endpoints,
deployment history and predictions. Each command calls the same service as the operators and
the REST API."""

from __future__ import annotations

import argparse
import base64
import json
import logging
import shutil
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from patient_ml.cli import context
from patient_ml.cli.output import print_document
from patient_ml.exceptions import PatientMLError

if TYPE_CHECKING:
    from sqlalchemy import Engine

    from patient_ml.storage.base import ArtifactStore

BACKENDS = ("auto", "local", "docker", "sagemaker")


def add_run_commands(runs: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    create = runs.add_parser(
        "create",
        help="start a run of a model: the product run and its Airflow DAG run (needs Airflow's "
        "configuration, as `airflow dags trigger` does)",
    )
    create.add_argument("model", help="model id or name")
    create.add_argument(
        "--max-trials", type=int, help="trials of this run's sweep (default: the config's)"
    )
    create.set_defaults(handler=cmd_create_run)
    evaluate = runs.add_parser(
        "evaluate", help="score the run's model and its champion on the test split"
    )
    evaluate.add_argument("--run", required=True, dest="run_id", help="run id")
    evaluate.add_argument("--backend", choices=BACKENDS, default="auto", help="where serve runs")
    evaluate.set_defaults(handler=cmd_evaluate)
    for verb, decision in (("approve", "approved"), ("reject", "rejected")):
        sub = runs.add_parser(
            verb,
            help=f"{verb} an evaluated run as --actor/$PATIENT_ML_USER (one of the model's "
            "approvers); recorded and audited with channel 'cli' and the OS account. The CLI "
            "works with direct product-DB access, so it is for operators: Airflow's decision "
            "right is not asked (the REST API and Required Actions check it)",
        )
        sub.add_argument("--run", required=True, dest="run_id", help="run id")
        sub.add_argument("--reason", required=True, help="written justification (required)")
        sub.set_defaults(handler=cmd_decide, decision=decision, deploy=False)
        if verb == "approve":
            sub.add_argument(
                "--override",
                metavar="JUSTIFICATION",
                help="confirm an override, with its own justification: required when the run "
                "fails a change-control rule or is worse on the objective (see `runs gate`), "
                "refused otherwise; audited as an override",
            )
            sub.add_argument(
                "--deploy",
                action="store_true",
                help="deploy right away, for runs whose pipeline no longer waits (e.g. a "
                "rollback to an earlier champion)",
            )
            sub.add_argument("--backend", choices=BACKENDS, default="auto", help="with --deploy")
    deploy = runs.add_parser("deploy", help="deploy an approved run (edge or cloud)")
    deploy.add_argument("--run", required=True, dest="run_id", help="run id")
    deploy.add_argument("--backend", choices=BACKENDS, default="auto", help="where serve runs")
    deploy.set_defaults(handler=cmd_deploy)
    gate = runs.add_parser(
        "gate",
        help="the run's change-control gate: non-inferiority rules, the objective, whether "
        "approving needs --override, a repeat of a rejected run, approvals so far",
    )
    gate.add_argument("--run", required=True, dest="run_id", help="run id")
    gate.set_defaults(handler=cmd_gate)
    card = runs.add_parser("card", help="write and print the run's model card")
    card.add_argument("--run", required=True, dest="run_id", help="run id")
    card.add_argument(
        "--format",
        choices=("markdown", "document", "json"),
        default=None,
        help="markdown (default): the readable card; document: the card as JSON (ISO dates, "
        "no paths, no nulls); json: the flat machine-readable card (also what --json prints)",
    )
    card.set_defaults(handler=cmd_card)


def add_model_commands(models: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    eps = models.add_parser("endpoints", help="serving endpoints of a model")
    eps.add_argument("model", help="model id or name")
    eps.add_argument("--all", action="store_true", help="also stopped and failed ones")
    eps.set_defaults(handler=cmd_endpoints)
    hist = models.add_parser("deployments", help="champion history of a model (append-only)")
    hist.add_argument("model", help="model id or name")
    hist.set_defaults(handler=cmd_deployments)
    predict = models.add_parser("predict", help="ask the deployed champion for a prediction")
    predict.add_argument("model", help="model id or name")
    source = predict.add_mutually_exclusive_group(required=True)
    source.add_argument("--example", help="example id (from the dataset's latest snapshot)")
    source.add_argument("--image", type=Path, help="image file (PNG or JPEG)")
    predict.add_argument("--mask-out", type=Path, help="imgSeg: write the mask PNG here")
    predict.add_argument(
        "--attribute",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a subgroup attribute the image comes with, for the model's monitoring per "
        "subgroup (e.g. site=North, manufacturer=GE; repeatable; only those the model's "
        "monitoring.subgroups names are logged)",
    )
    predict.set_defaults(handler=cmd_predict)


def _store() -> ArtifactStore:
    from patient_ml.storage import default_artifact_store

    return default_artifact_store()


def _print(args: argparse.Namespace, doc: object) -> None:
    print_document(doc, as_json=args.json)


def _progress() -> None:
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)


def cmd_create_run(args: argparse.Namespace) -> int:
    from patient_ml.db.engine import session_scope
    from patient_ml.hooks.airflow_dag_runs import AirflowDagRunHook
    from patient_ml.services.runs import get_run, run_to_wire, start_run

    engine = context.engine(args)
    with context.airflow_output_to_stderr():  # Airflow logs to stdout; keep it for the result
        run, triggered = start_run(
            engine,
            args.model,
            actor=context.actor(args),
            trigger=AirflowDagRunHook("cli").trigger,
            max_trials=args.max_trials,
        )
    with session_scope(engine) as session:
        doc = run_to_wire(session, get_run(session, run.id))
    doc["airflow"]["state"] = triggered.state
    _print(args, doc)
    if triggered.paused:
        print(
            f"warning: DAG {triggered.dag_id} is paused, so the run waits; unpause it in the "
            f"Airflow UI or with `airflow dags unpause {triggered.dag_id}`",
            file=sys.stderr,
        )
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from patient_ml.services.evaluation_run import evaluate_run
    from patient_ml.services.model_cards import write_model_card
    from patient_ml.serving.servers import make_server

    _progress()
    engine, store = context.engine(args), _store()
    workdir = Path(tempfile.mkdtemp(prefix="patient-ml-evaluate-"))
    try:
        summary = evaluate_run(
            engine,
            store,
            make_server(args.backend),
            args.run_id,
            workdir,
            actor=context.actor(args),
        )
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    summary["modelCard"] = write_model_card(engine, store, args.run_id)
    _print(args, summary)
    return 0


def cmd_decide(args: argparse.Namespace) -> int:
    from patient_ml.db.engine import session_scope
    from patient_ml.services.approvals import decide
    from patient_ml.services.model_cards import write_model_card
    from patient_ml.services.runs import approval_to_wire, get_run
    from patient_ml.triggers.required_action import answer_settled

    engine = context.engine(args)
    user = context.actor(args)
    with session_scope(engine) as session:
        approval = decide(
            session,
            args.run_id,
            args.decision,
            user=user,
            reason=args.reason,
            channel="cli",
            detail={"osUser": _os_user()},
            override=getattr(args, "override", None),
        )
        doc = approval_to_wire(approval)
    # the decision is committed: close Airflow's record
    with context.airflow_output_to_stderr(), session_scope(engine) as session:
        answered = answer_settled(session, get_run(session, args.run_id), user, user)
    if answered is not None:
        doc["requiredAction"] = answered
    write_model_card(engine, _store(), args.run_id)
    if getattr(args, "deploy", False):
        doc["deployment"] = _deploy(args, engine)
    _print(args, doc)
    return 0


def cmd_gate(args: argparse.Namespace) -> int:
    from patient_ml.db.engine import session_scope
    from patient_ml.services.gate import gate_for
    from patient_ml.services.runs import get_run

    with session_scope(context.engine(args)) as session:
        doc = gate_for(session, get_run(session, args.run_id)).wire()
    _print(args, doc)
    if doc["overrideRequired"] and not args.json:
        print(
            "Approving needs an override: patient-ml runs approve --run "
            f"{args.run_id} --reason '...' --override '<why approve anyway>'",
            file=sys.stderr,
        )
    return 0


def _os_user() -> str:
    """The OS account that ran the CLI (recorded next to the named decider)."""
    import getpass

    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


def _deploy(args: argparse.Namespace, engine: Engine) -> dict[str, Any]:
    from patient_ml.deploy import deploy_run
    from patient_ml.services.model_cards import write_model_card
    from patient_ml.serving.servers import make_server

    _progress()
    store = _store()
    try:
        return deploy_run(
            engine, store, args.run_id, actor=context.actor(args), server=make_server(args.backend)
        )
    finally:
        write_model_card(engine, store, args.run_id)


def cmd_deploy(args: argparse.Namespace) -> int:
    _print(args, _deploy(args, context.engine(args)))
    return 0


def cmd_card(args: argparse.Namespace) -> int:
    from patient_ml.services.model_cards import write_model_card

    store = _store()
    engine = context.engine(args)
    uris = write_model_card(engine, store, args.run_id)
    shown = args.format or ("json" if args.json else "markdown")
    if shown == "document":
        from patient_ml.db.engine import session_scope
        from patient_ml.services.model_card_document import build_model_card_document

        with session_scope(engine) as session:
            document = build_model_card_document(session, args.run_id)
        print(json.dumps(document.wire(), indent=2, ensure_ascii=False))
    else:
        print(store.read_bytes(store.key_of(uris[shown])).decode())
    return 0


def cmd_endpoints(args: argparse.Namespace) -> int:
    from sqlalchemy import select

    from patient_ml.db.engine import session_scope
    from patient_ml.db.models import Endpoint, Model
    from patient_ml.services.common import get_by_id_or_name
    from patient_ml.services.endpoints import endpoint_to_wire

    with session_scope(context.engine(args)) as session:
        model = get_by_id_or_name(session, Model, args.model)
        query = select(Endpoint).where(Endpoint.model_id == model.id).order_by(Endpoint.id)
        if not args.all:
            query = query.where(Endpoint.status == "healthy")
        docs = [endpoint_to_wire(e) for e in session.scalars(query)]
    _print(args, {"endpoints": docs})
    return 0


def cmd_deployments(args: argparse.Namespace) -> int:
    from patient_ml.db.engine import session_scope
    from patient_ml.services.champion import deployment_history
    from patient_ml.services.common import to_millis

    with session_scope(context.engine(args)) as session:
        docs = [
            {
                "id": d.id,
                "runId": d.run_id,
                "previousChampionId": d.previous_champion_id,
                "action": d.action,
                "deployType": d.deploy_type,
                "endpoint": d.endpoint,
                "actor": d.actor,
                "reason": d.reason,
                "createdAt": to_millis(d.created_at),
            }
            for d in deployment_history(session, args.model)
        ]
    _print(args, {"deployments": docs})
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from patient_ml.services.predictions import predict

    image = args.image.read_bytes() if args.image else None
    attributes: dict[str, str] = {}
    for pair in args.attribute:
        name, sep, value = pair.partition("=")
        if not sep or not name.strip() or not value.strip():
            raise PatientMLError(
                f"--attribute {pair!r} is not NAME=VALUE.", fix="e.g. --attribute site=North"
            )
        attributes[name.strip()] = value.strip()
    result = predict(
        context.engine(args), _store(), args.model, example_id=args.example, image=image,
        attributes=attributes or None,
    )  # fmt: skip
    if "mask" in result and args.mask_out:
        args.mask_out.write_bytes(base64.b64decode(result["mask"]))
        result["mask"] = str(args.mask_out)
    elif "mask" in result:
        result["mask"] = f"<{len(result['mask'])} base64 characters; use --mask-out FILE>"
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        _print(args, result)
    return 0
