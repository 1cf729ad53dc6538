"""Batch scoring (issue 37): `services.scoring` on a real deployed model against a bare loop over
the same endpoint; the cost of resuming; memory at N images.

    .venv/bin/python benchmarks/batch.py [--batch-images 2000] [--chunk-size 200] [--rounds 3]
        [--sink both] [--images 100000] [--score-images N] [--profile]

In a fresh temporary home (product DB: SQLite): a synthetic cohort (24x24 PNGs,
`tests/curation/cohort.py`) curated, a real img_clf sweep (one small trial), evaluated,
approved and deployed to a real local `serve` endpoint (`tests/operators/lifecycle.Project`).
Then, on datasets of the same shape whose records and images are made here:

1. Throughput: `--batch-images` images scored by `plan_batch` + `score_chunk` over every chunk
   (the product path: each image read as curation reads it, 64 per request, the prediction
   Observations built and written to the dataset's source, the hints recorded, the chunk
   marked done) against a bare loop over the same endpoint and the same image bytes
   (`serving.client.invoke_batch`, 64 per request, nothing else). Median of `--rounds` rounds,
   for the NDJSON-folder sink and/or a real FHIR server (sekmet, `tests/fhir_server.py`).
   The example index is built by `plan` only (its cold build is shown apart): each chunk keeps
   what scoring needs of its images, so a score task (a process of its own in Airflow) reads
   its own images and never the index.
2. Resuming: a rerun of the whole batch when every chunk is done (plan finds the batch, each
   `score_chunk` returns `resumed`), and one chunk that "died" (set pending) scored again.
3. Memory: each measurement in a fresh subprocess, its RSS once the imports are done and the
   kernel's peak RSS of the step (VmHWM, reset through /proc/self/clear_refs after the imports;
   not getrusage's ru_maxrss, which on Linux keeps the parent's RSS at the fork): of planning a
   batch of `--images` examples (index + chunks), and of scoring the first `--score-images` of
   them (default all) as the score tasks do: the plan is found again (no index is read) and
   every chunk is scored from its planned images and written to the NDJSON sink.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import os
import pstats
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "plugins"))

from benchmarks import smoke  # noqa: E402


def load() -> str:
    """The machine's load averages now (1, 5, 15 minutes), printed beside each stage's figures."""
    return "load average " + ", ".join(f"{x:.2f}" for x in os.getloadavg())


def status_mb(field: str) -> float:
    """A size of /proc/self/status in MB: VmRSS (resident now), VmHWM (the peak of it)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    raise SystemExit(f"no {field} in /proc/self/status: this measurement needs Linux")


def reset_peak() -> None:
    """Start VmHWM afresh at the RSS of now (Linux 4.0+: `5` to /proc/self/clear_refs), so the
    peak of a step leaves out the imports' transient one."""
    Path("/proc/self/clear_refs").write_text("5")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--batch-images", type=int, default=2000, help="images of the throughput batch"
    )
    parser.add_argument("--chunk-size", type=int, default=200, help="the batch's chunkSize")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--sink", choices=("ndjson", "fhir", "both"), default="both")
    parser.add_argument(
        "--images", type=int, default=100_000, help="examples of the batch planned for memory"
    )
    parser.add_argument(
        "--score-images",
        type=int,
        help="of those, the examples scored for memory (whole chunks; default: all of them)",
    )
    parser.add_argument(
        "--profile", action="store_true", help="cProfile one more product round per sink"
    )
    parser.add_argument(
        "--pin",
        action="store_true",
        help="the endpoint's processes on the last CPU, this process (the client: the bare loop "
        "and the product path) on the others, as when the endpoint runs on its own machine",
    )
    parser.add_argument("--child", help=argparse.SUPPRESS)  # plan|score, in a fresh process
    parser.add_argument("--dataset", help=argparse.SUPPRESS)
    args = smoke.parse(
        parser, batch_images=120, chunk_size=50, rounds=1, images=1000, score_images=200
    )
    if args.score_images is None:
        args.score_images = args.images
    if args.child:
        return child(args)
    home = Path(tempfile.mkdtemp(prefix="pml-batch-bench-"))
    os.environ.update(
        PATIENT_ML_HOME=str(home),
        PATIENT_ML_DATABASE_URL=f"sqlite:///{home / 'product.db'}",
        PATIENT_ML_ARTIFACT_URI=(home / "artifacts").as_uri(),
        PATIENT_ML_ALLOWED_FILE_ROOTS=str(home),
        # the index is built once per process (then served from the cache): see the docstring
        PATIENT_ML_EXAMPLES_CACHE_SECONDS="86400",
    )
    try:
        return run(args, home)
    finally:
        shutil.rmtree(home, ignore_errors=True)


def make_dataset(engine: Any, home: Path, name: str, images: int, source: dict[str, Any]) -> Any:
    """A dataset (the test cohort's shape) with `images` examples (2 per patient); its cohort."""
    from patient_ml.db.engine import session_scope
    from patient_ml.services.datasets import create_dataset
    from tests.curation.cohort import Cohort, dataset_config

    code = uuid.uuid4().hex[:8]
    cohort = Cohort(home / name, code, f"urn:test:{name}")
    cohort.add_patients(0, (images + 1) // 2)
    config = dataset_config(name, code)
    if source.get("type") == "ndjson":
        source = {**source, "uri": str(cohort.write_ndjson(home / name / "records"))}
    config["source"] = source
    with session_scope(engine) as session:
        dataset_id = create_dataset(session, config, actor="bench").id
    return dataset_id, cohort


def run(args: argparse.Namespace, home: Path) -> int:
    from patient_ml.db import schema
    from patient_ml.db.engine import get_engine
    from patient_ml.deploy import stop_old_endpoints
    from tests.operators.lifecycle import Project

    schema.upgrade(get_engine(check_schema=False))
    engine = get_engine()
    started = time.perf_counter()
    project = Project(engine, home / "p")
    run_id = project.deployed_run(reason="batch benchmark", actor="bench", approver="dr.bench")
    if args.pin:
        pin(engine, run_id)
    print(
        "model: the test cohort's img_clf (120 images, 1 trial) curated, trained, evaluated and "
        f"deployed to a local `serve` endpoint in {time.perf_counter() - started:.0f} s; "
        f"chunkSize {args.chunk_size}, {args.rounds} round(s), median shown",
        flush=True,
    )
    try:
        sinks = ["ndjson", "fhir"] if args.sink == "both" else [args.sink]
        rows = []
        for sink in sinks:
            rows.append(throughput(args, engine, home, project.model_id, sink))
        print_throughput(args, rows)
        print_resume(rows)
        memory(args, engine, home)
    finally:
        stop_old_endpoints(engine, project.model_id, keep=None, actor="bench")
    return 0


def pin(engine: Any, run_id: str) -> None:
    """The endpoint's process group (every thread of it) on the last CPU, this process on the
    others: the client's work no longer takes CPU from the endpoint, in either loop."""
    from sqlalchemy import select

    from patient_ml.db.engine import read_scope
    from patient_ml.db.models import Endpoint

    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        raise SystemExit("--pin needs at least 2 CPUs")
    with read_scope(engine) as session:
        handle = session.scalar(
            select(Endpoint.handle).where(Endpoint.run_id == run_id, Endpoint.status == "healthy")
        )
    group = int(handle or 0)
    pinned = 0
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if os.getpgid(int(proc.name)) != group:
                continue
            for task in (proc / "task").iterdir():
                os.sched_setaffinity(int(task.name), {cpus[-1]})
                pinned += 1
        except (ProcessLookupError, FileNotFoundError, PermissionError):
            continue
    if not pinned:
        raise SystemExit(f"--pin: no process of the endpoint's group {group} found")
    os.sched_setaffinity(0, set(cpus[:-1]))
    print(f"pinned: the endpoint's {pinned} thread(s) on CPU {cpus[-1]}, this process on "
          f"CPU {', '.join(map(str, cpus[:-1]))}", flush=True)  # fmt: skip


def throughput(
    args: argparse.Namespace, engine: Any, home: Path, model_id: str, sink: str
) -> dict[str, Any]:
    """Rounds of the bare loop and the product path on one dataset, then resuming."""
    if sink == "fhir":
        from tests.fhir_server import running_fhir_server

        with running_fhir_server(home / "sekmet") as server:
            from patient_ml.fhir.client import FhirClient

            client = FhirClient(server.base_url)
            return _throughput(args, engine, home, model_id, sink, client)
    return _throughput(args, engine, home, model_id, sink, None)


def _throughput(
    args: argparse.Namespace, engine: Any, home: Path, model_id: str, sink: str, client: Any
) -> dict[str, Any]:
    from sqlalchemy import select

    from patient_ml.db.engine import read_scope, session_scope
    from patient_ml.db.models import ScoringChunk
    from patient_ml.services import scoring
    from patient_ml.services.endpoints import live_endpoints
    from patient_ml.services.labels import dataset_context
    from patient_ml.serving.client import MAX_BATCH, invoke_batch

    source: dict[str, Any] = (
        {"type": "ndjson", "uri": ""}
        if sink == "ndjson"
        else {"type": "fhirServer", "connId": "fhir_default"}
    )
    made = time.perf_counter()
    dataset_id, cohort = make_dataset(engine, home, f"tp-{sink}", args.batch_images, source)
    if client is not None:  # the records on the server, in transactions of 500 entries
        entries = cohort.transaction()["entry"]
        for start in range(0, len(entries), 500):
            client.transaction(
                {"resourceType": "Bundle", "type": "transaction",
                 "entry": entries[start : start + 500]}
            )  # fmt: skip
    made_s = time.perf_counter() - made
    load_before = load()
    ctx = dataset_context(engine, dataset_id, fhir_client_factory=lambda _conn: client)
    t = time.perf_counter()
    index = ctx.index()
    index_s = time.perf_counter() - t
    ids = sorted(index.ids)
    assert len(ids) == args.batch_images + args.batch_images % 2, (len(ids), args.batch_images)
    images = [bytes(ctx.fetcher.fetch(index.get(i).image.attachment)) for i in ids]
    with read_scope(engine) as session:
        url = str(live_endpoints(session, model_id)[-1].url)
    selection = scoring.selection_of("all", None, True)
    quiet: Callable[[str], None] = lambda _line: None  # noqa: E731

    def bare() -> float:
        t = time.perf_counter()
        for start in range(0, len(images), MAX_BATCH):
            answers = invoke_batch(url, images[start : start + MAX_BATCH])
            assert len(answers) == len(images[start : start + MAX_BATCH])
        return time.perf_counter() - t

    def product(dag_run_id: str) -> tuple[float, float, Any]:
        t = time.perf_counter()
        batch = scoring.plan_batch(engine, ctx, model_id, dag_run_id=dag_run_id,
                                   selection=selection, chunk_size=args.chunk_size,
                                   actor="bench")  # fmt: skip
        planned = time.perf_counter()
        for position in range(batch.chunks):
            chunk = scoring.score_chunk(engine, ctx, batch.id, position, say=quiet)
            assert chunk.status == "done" and not chunk.resumed, chunk
            assert chunk.scored == chunk.examples == chunk.written, chunk
        return planned - t, time.perf_counter() - planned, batch

    bare_s, product_s, plan_s = [], [], []
    batch = None
    for r in range(args.rounds):
        bare_s.append(bare())
        planned, scored, batch = product(f"{sink}-round-{r}")
        plan_s.append(planned)
        product_s.append(scored)
    assert batch is not None
    done = scoring.finish_batch(engine, batch.id, actor="bench")
    assert done.status == "succeeded" and done.scored == len(ids) == done.written, done

    # resuming: a rerun of the last round's DAG run (every chunk done) ...
    resume_s = []
    for _ in range(max(3, args.rounds)):
        t = time.perf_counter()
        again = scoring.plan_batch(engine, ctx, model_id, dag_run_id=batch.dag_run_id,
                                   selection=selection, chunk_size=args.chunk_size,
                                   actor="bench")  # fmt: skip
        assert again.id == batch.id
        for position in range(again.chunks):
            assert scoring.score_chunk(engine, ctx, batch.id, position, say=quiet).resumed
        resume_s.append(time.perf_counter() - t)
    # ... and one chunk whose task died (still pending) scored again
    redo_s = []
    for _ in range(max(3, args.rounds)):
        with session_scope(engine) as session:
            row = session.scalar(
                select(ScoringChunk).where(ScoringChunk.batch_id == batch.id,
                                           ScoringChunk.position == 0)
            )  # fmt: skip
            assert row is not None
            row.status = "pending"
        t = time.perf_counter()
        redone = scoring.score_chunk(engine, ctx, batch.id, 0, say=quiet)
        redo_s.append(time.perf_counter() - t)
        assert not redone.resumed and redone.scored == redone.examples
    if args.profile:
        profiler = cProfile.Profile()
        profiler.enable()
        product(f"{sink}-profiled")
        profiler.disable()
        out = io.StringIO()
        pstats.Stats(profiler, stream=out).sort_stats("cumulative").print_stats(30)
        print(f"\ncProfile of one product round, {sink} sink (cumulative, top 30):")
        print(out.getvalue())
    return {
        "sink": "NDJSON folder" if sink == "ndjson" else "FHIR server (sekmet)",
        "images": len(ids),
        "chunks": batch.chunks,
        "chunk_examples": redone.examples,
        "made_s": made_s,
        "load_before": load_before,
        "load_after": load(),
        "index_s": index_s,
        "bare_s": statistics.median(bare_s),
        "product_s": statistics.median(product_s),
        "plan_s": statistics.median(plan_s),
        "resume_s": statistics.median(resume_s),
        "redo_s": statistics.median(redo_s),
    }


def print_throughput(args: argparse.Namespace, rows: list[dict[str, Any]]) -> None:
    print(f"\n1. throughput, images per second (median of {args.rounds} round(s); bare loop: "
          "invoke_batch, 64 per request, same endpoint and image bytes; product: score_chunk "
          "over every chunk, reading only its own images)")  # fmt: skip
    for row in rows:
        print(f"   {row['sink']}: measured from {row['load_before']} to {row['load_after']}")
    print(
        f"{'sink':22s} {'images':>7s} {'chunks':>6s} {'bare/s':>8s} {'product/s':>9s} "
        f"{'ratio':>6s} {'plan s':>7s} {'index s':>8s}"
    )
    for row in rows:
        n = row["images"]
        bare, product = n / row["bare_s"], n / row["product_s"]
        print(f"{row['sink']:22s} {n:7d} {row['chunks']:6d} {bare:8.0f} {product:9.0f} "
              f"{product / bare:5.2f}x {row['plan_s']:7.2f} {row['index_s']:8.2f}")  # fmt: skip
    print("   (index s: the cold build of the example index, which only plan pays: the score "
          "tasks read their chunk's planned images)")  # fmt: skip


def print_resume(rows: list[dict[str, Any]]) -> None:
    print("\n2. resuming (median of 3)")
    print(f"{'sink':22s} {'rerun, every chunk done':>24s} {'per chunk':>10s} "
          f"{'one died chunk scored again':>28s} {'its first pass':>15s}")  # fmt: skip
    for row in rows:
        first = row["product_s"] / row["chunks"]
        per_chunk_ms = row["resume_s"] / row["chunks"] * 1000
        print(
            f"{row['sink']:22s} {row['resume_s']:22.3f} s {per_chunk_ms:7.1f} ms "
            f"{row['redo_s']:23.2f} s ({row['chunk_examples']}) {first:13.2f} s"
        )


def memory(args: argparse.Namespace, engine: Any, home: Path) -> None:
    """Peak RSS of plan and of scoring, each in a fresh process, on a dataset of `--images`."""
    t = time.perf_counter()
    dataset_id, _cohort = make_dataset(engine, home, "mem", args.images, {"type": "ndjson"})
    del _cohort
    made_s = time.perf_counter() - t
    found = {}
    load_before = load()
    for what in ("plan", "score"):
        done = subprocess.run(
            [sys.executable, __file__, "--child", what, "--dataset", dataset_id,
             "--chunk-size", str(args.chunk_size), "--score-images", str(args.score_images)],
            capture_output=True, text=True, check=False, cwd=ROOT,
        )  # fmt: skip
        if done.returncode != 0:
            raise SystemExit(f"the {what} subprocess failed:\n{done.stdout}\n{done.stderr}")
        found[what] = json.loads(done.stdout.strip().splitlines()[-1])
    plan, score = found["plan"], found["score"]
    load_after = load()
    print(f"\n3. memory on a dataset of {plan['total']:,} examples (its records and images made "
          f"in {made_s:.0f} s), a fresh process per step: before = RSS after the imports and the "
          "DB engine; peak = the kernel's peak RSS (VmHWM) of the step, reset at 'before'; "
          "measured from "
          f"{load_before} to {load_after})")  # fmt: skip
    print(f"{'step':52s} {'before':>9s} {'peak':>9s} {'growth':>9s} {'seconds':>8s}")
    steps = {
        f"plan (index + {plan['chunks']} chunks of {plan['chunk_size']})": plan,
        f"score {score['scored']:,} of them ({score['chunks']} chunks, no index)": score,
    }
    for step, m in steps.items():
        print(
            f"{step:52s} {m['before']:6.0f} MB {m['peak']:6.0f} MB "
            f"{m['peak'] - m['before']:6.0f} MB {m['seconds']:8.1f}"
        )
    if score["scored"] < plan["total"]:
        print(f"   scored: the first {score['scored']:,} examples of the {plan['total']:,}-example "
              "batch (--score-images), not all of them")  # fmt: skip


def child(args: argparse.Namespace) -> int:
    """One memory measurement in this fresh process; prints one JSON line."""
    from sqlalchemy import select

    from patient_ml.db.engine import get_engine, read_scope
    from patient_ml.db.models import ScoringBatch
    from patient_ml.services import scoring
    from patient_ml.services.labels import dataset_context

    engine = get_engine()
    with read_scope(engine) as session:  # the engine connected, the models loaded
        session.scalar(select(ScoringBatch.id).limit(1))
    reset_peak()
    before = status_mb("VmRSS")
    t = time.perf_counter()
    result: dict[str, Any] = {}
    ctx = dataset_context(engine, args.dataset, fhir_client_factory=lambda _conn: None)
    with read_scope(engine) as session:
        model_id = _models_with_champion(session)[0]
    batch = scoring.plan_batch(engine, ctx, model_id, dag_run_id="memory",
                               selection=scoring.selection_of(), chunk_size=args.chunk_size,
                               actor="bench")  # fmt: skip
    result.update(total=batch.total, chunks=batch.chunks, chunk_size=batch.chunk_size)
    if args.child == "score":
        scored = chunks = 0
        for position in range(batch.chunks):
            if scored >= args.score_images:
                break
            chunk = scoring.score_chunk(engine, ctx, batch.id, position, say=lambda _l: None)
            assert chunk.scored == chunk.examples == chunk.written, chunk
            scored += chunk.scored
            chunks += 1
        result.update(scored=scored, chunks=chunks)
    result.update(before=before, peak=status_mb("VmHWM"), seconds=time.perf_counter() - t)
    print(json.dumps(result))
    return 0


def _models_with_champion(session: Any) -> list[str]:
    from sqlalchemy import select

    from patient_ml.db.models import Model

    return list(session.scalars(select(Model.id).where(Model.champion_id.is_not(None))))


if __name__ == "__main__":
    sys.exit(main())
