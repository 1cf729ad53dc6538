"""Sweep overhead of the product; prints a table.

    .venv/bin/python benchmarks/sweep.py [--trials 8] [--db-url URL] [--no-docker]
                                         [--prune-seeds 5]

The trainer is tests/training/scripted_trainer (a contract-following script that prints
`epoch=N val_loss=.. val_accuracy=..` lines; its reported score is the hyperparameter `score`),
so the figures measure the product, not a model.

1. Per-trial wall time of the same trainer run
   (a) directly: a subprocess with the SM_* environment, nothing else;
   (b) in a bare Optuna loop: in-memory study, the product's TPE sampler settings, (a) per trial;
   (c) through the product with the local backend: `sweep.run_worker` (study in the database,
       claim under the sweep lock, one seeded TPE sampler per trial, median pruner) and
       `LocalBackend.run` (log pump, metric parsing, pruning callback);
   (d) the same with the Docker backend (an image built from the base image; container
       create/start/log stream/wait/remove per trial).
   Overhead = (c) - (a) and (d) - (a).
2. Speedup of 2 parallel workers (processes sharing the study) over 1, trials of 1 s of work.
3. Pruning: the same sweep with the median pruner acting and with it ignored, for several
   sampler seeds (`--prune-seeds`, default 5: one seed's figure depends on how many poor
   proposals TPE happens to make); per seed the trainer epochs run (the compute: the epoch
   lines the product read before it stopped a pruned trial), the pruned trials and the best
   objective of both sweeps (equal or not), then the mean and range of the saving. The
   scripted trainer reports `score * epoch / epochs`, a noise-free learning curve: the figure
   measures the product's pruning policy (median pruner, 2 startup trials, no pruning at the
   first epoch) and plumbing, not how well a median pruner guesses a noisy curve.

Wall times on a shared machine follow its load; the (c)/(d) rows also print the product
process's own CPU time per trial (the trainer's CPU is in its child process and the same as
in (a)) and its SQL statements per trial (each one a database round trip), which load does
not inflate. Run it a few times and take medians; `uptime`'s load is printed.

The trial bookkeeping of a whole run (trial rows, model upload, log upload) is not in (c)/(d):
it needs a run in the product database; see patient_ml.services.tuning.TuningWorker.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "plugins"))
sys.path.insert(0, str(ROOT))

import optuna  # noqa: E402
from sqlalchemy import create_engine, event  # noqa: E402
from sqlalchemy.engine import Engine  # noqa: E402

from benchmarks import smoke  # noqa: E402
from patient_ml.training import sweep  # noqa: E402
from patient_ml.training.backends.base import TrainingJob  # noqa: E402
from patient_ml.training.backends.local import LocalBackend, process_environment  # noqa: E402
from patient_ml.training.contract import JobLayout, sm_environment  # noqa: E402
from patient_ml.training.metrics import MetricParser  # noqa: E402

SCRIPTED = ROOT / "tests" / "training" / "scripted_trainer"
IMAGE = "patient-ml/scripted-trainer:bench"
METRICS = [
    {"name": "validation:accuracy", "regex": r"val_accuracy=([0-9.]+)"},
    {"name": "validation:loss", "regex": r"val_loss=([0-9.eE+-]+)"},
]
OBJECTIVE = "validation:accuracy"
SPACE = [
    {"type": "continuous", "name": "score", "min": 0.0, "max": 1.0, "scale": "linear"},
    {"type": "continuous", "name": "learning_rate", "min": 1e-4, "max": 0.1, "scale": "log"},
]
PROBLEM = {"problemType": "imgClf", "labels": [{"index": 0, "name": "a"}]}
optuna.logging.set_verbosity(optuna.logging.WARNING)
STATEMENTS = {"count": 0}


@event.listens_for(Engine, "before_cursor_execute")
def _count_statement(*_: Any) -> None:
    STATEMENTS["count"] += 1


def sweep_spec(max_trials: int, fixed: dict[str, Any], seed: int = 1) -> sweep.SweepSpec:
    return sweep.SweepSpec(
        run_id=str(uuid.uuid4()),
        space=sweep.search_space(SPACE),
        max_trials=max_trials,
        seed=seed,
        objective=OBJECTIVE,
        direction="maximize",
        fixed=fixed,
    )


def make_job(root: Path, hps: dict[str, Any], name: str) -> TrainingJob:
    layout = JobLayout(root).create()
    layout.write_config(hps, PROBLEM)
    (layout.channel("train") / "examples.jsonl").write_text("{}\n")
    (layout.channel("validation") / "examples.jsonl").write_text("{}\n")
    return TrainingJob(
        name=name,
        layout=layout,
        image=IMAGE,
        metric_parser=MetricParser.from_config(METRICS),
        timeout_seconds=300,
        cpus=1,
    )


def direct(root: Path, hps: dict[str, Any]) -> float:
    """(a): the trainer as a plain subprocess; returns its final score."""
    job = make_job(root, hps, "direct")
    env = process_environment(1, sm_environment(job.layout, num_cpus=1))
    proc = subprocess.run(
        [sys.executable, str(SCRIPTED / "train")],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        cwd=root,
    )
    lines = [line for line in proc.stdout.splitlines() if "val_accuracy=" in line]
    return float(lines[-1].split("val_accuracy=")[1].split()[0])


def timed(fn: Any, n: int) -> list[float]:
    out = []
    for _ in range(n):
        started = time.perf_counter()
        fn()
        out.append(time.perf_counter() - started)
    return out


def executor(backend: Any, scratch: Path, prune: bool, counter: dict[str, int]) -> Any:
    def execute(number: int, hps: dict[str, Any], on_metric: Any) -> sweep.TrialOutcome:
        root = scratch / f"t{number}-{uuid.uuid4().hex[:6]}"
        job = make_job(root, hps, f"bench-{uuid.uuid4().hex[:10]}")

        def callback(name: str, value: float, step: int) -> bool:
            if name == OBJECTIVE:
                counter["epochs"] = counter.get("epochs", 0) + 1
            stop = on_metric(name, value, step)
            return stop if prune else False

        result = backend.run(job, callback)
        shutil.rmtree(root, ignore_errors=True)
        if result.status == "stopped":
            return sweep.TrialOutcome("pruned", None, None, result.metrics)
        value = result.metrics.get(OBJECTIVE)
        if not result.succeeded or value is None:
            return sweep.TrialOutcome("failed", None, result.failure, result.metrics)
        return sweep.TrialOutcome("complete", value, None, result.metrics)

    return execute


def product_sweep(
    db_url: str,
    backend: Any,
    scratch: Path,
    trials: int,
    fixed: dict,
    prune: bool = True,
    seed: int = 1,
) -> tuple[float, dict[str, int], list[sweep.TrialOutcome], sweep.SweepSpec]:
    engine = create_engine(db_url)
    storage = sweep.optuna_storage(db_url)
    spec = sweep_spec(trials, fixed, seed)
    counter: dict[str, int] = {}
    statements, cpu = STATEMENTS["count"], time.process_time()
    started = time.perf_counter()
    outcomes = sweep.run_worker(
        engine, storage, spec, "0", executor(backend, scratch, prune, counter)
    )
    counter["cpu_ms"] = round((time.process_time() - cpu) * 1000)
    counter["statements"] = STATEMENTS["count"] - statements
    return time.perf_counter() - started, counter, outcomes, spec


def bare_optuna(scratch: Path, trials: int, fixed: dict) -> float:
    """(b): an in-memory study with the product's sampler settings, the trainer run directly."""
    study = optuna.create_study(
        direction="maximize",
        sampler=optuna.samplers.TPESampler(seed=1, n_startup_trials=min(5, trials)),
        pruner=optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=1),
    )
    space = {p.name: p.distribution for p in sweep.search_space(SPACE)}
    started = time.perf_counter()
    for n in range(trials):
        trial = study.ask(space)
        study.tell(trial, direct(scratch / f"bare-{n}", {**fixed, **trial.params}))
    return time.perf_counter() - started


def _worker(db_url: str, spec: sweep.SweepSpec, worker: str, scratch: str, ready, go) -> None:
    engine = create_engine(db_url)
    storage = sweep.optuna_storage(db_url)
    backend = LocalBackend({"patient-ml/scripted-trainer": SCRIPTED})
    ready.release()
    go.wait()  # the workers' start-up (imports) is not timed: Airflow's workers are warm
    sweep.run_worker(engine, storage, spec, worker, executor(backend, Path(scratch), False, {}))


def parallel(db_url: str, scratch: Path, trials: int, workers: int, fixed: dict) -> float:
    """Seconds from the first trial's start to the last trial's end (the study's timestamps),
    `workers` processes sharing one sweep (pruning off, so both runs do the same work). The
    workers' process start-up and exit are not counted: Airflow starts its task processes
    anyway, before the product's code runs."""
    spec = sweep_spec(trials, fixed)
    storage = sweep.optuna_storage(db_url)
    sweep.create_study(storage, spec.run_id, spec.direction)
    ctx = multiprocessing.get_context("spawn")
    ready, go = ctx.Semaphore(0), ctx.Event()
    procs = [
        ctx.Process(target=_worker, args=(db_url, spec, str(w), str(scratch), ready, go))
        for w in range(workers)
    ]
    for p in procs:
        p.start()
    for _ in procs:
        ready.acquire()
    go.set()
    for p in procs:
        p.join()
    study = optuna.load_study(study_name=sweep.study_name(spec.run_id), storage=storage)
    starts = [t.datetime_start for t in study.trials if t.datetime_start]
    ends = [t.datetime_complete for t in study.trials if t.datetime_complete]
    return (max(ends) - min(starts)).total_seconds()


def docker_backend() -> Any:
    """The Docker backend with the scripted trainer's image, or None (with the reason)."""
    try:
        import docker

        client = docker.from_env(timeout=120)
        client.ping()
        base = os.environ.get("PATIENT_ML_BASE_IMAGE", "patient-ml/base:bookworm")
        client.images.get(base)
        client.images.build(path=str(SCRIPTED), tag=IMAGE, buildargs={"BASE_IMAGE": base}, rm=True)
    except Exception as exc:
        print(f"(Docker backend skipped: {type(exc).__name__}: {str(exc)[:120]})")
        return None
    from patient_ml.training.backends.docker import DockerBackend

    return DockerBackend(client=client)


def pruning(
    db_url: str, backend: Any, scratch: Path, trials: int, seeds: int
) -> list[tuple[str, str, str]]:
    """Rows of section 3: per sampler seed, the sweep with the pruner ignored and acting."""
    work = {"epochs": "6", "delay": "0.1"}
    rows, savings, equal = [], [], 0
    for seed in range(1, seeds + 1):
        runs = {}
        for prune in (False, True):
            wall, counter, outcomes, _ = product_sweep(
                db_url, backend, scratch, trials, work, prune=prune, seed=seed
            )
            values = [o.value for o in outcomes if o.value is not None]
            runs[prune] = (
                counter.get("epochs", 0),
                max(values, default=float("nan")),
                sum(1 for o in outcomes if o.state == "pruned"),
                wall,
            )
        (full, best_full, _, wall_full), (part, best_part, pruned, wall_part) = (
            runs[False],
            runs[True],
        )
        saved = 1 - part / max(full, 1)
        savings.append(saved)
        same = best_full == best_part
        equal += same
        rows.append(
            (
                f"seed {seed}: {trials} trials, pruner ignored / acting",
                f"{full} / {part} epochs: {saved:.0%} saved",
                f"{pruned} pruned; best {best_full:.4f} / {best_part:.4f} "
                f"({'equal' if same else 'DIFFERENT'}); {wall_full:.1f} / {wall_part:.1f} s",
            )
        )
    mean = statistics.mean(savings)
    rows.append(
        (
            f"compute saved by pruning, {seeds} seeds",
            f"mean {mean:.0%} (range {min(savings):.0%}-{max(savings):.0%})",
            f"best objective equal in {equal}/{seeds} pairs; goal >= 30 %",
        )
    )
    return rows


def _cpu_sql(count: dict[str, int], trials: int) -> tuple[str, str]:
    return (
        f"{count['cpu_ms'] / trials / 1000:.3f} s/trial CPU",
        f"{count['statements'] / trials:.0f} SQL statements/trial",
    )


def _load() -> str:
    return " ".join(f"{x:.1f}" for x in os.getloadavg()) + " (1/5/15 min)"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=8)
    ap.add_argument("--db-url", help="the product database (default: SQLite in a temp folder)")
    ap.add_argument("--no-docker", action="store_true")
    ap.add_argument(
        "--prune-seeds", type=int, default=5, help="sampler seeds of the pruning comparison"
    )
    args = smoke.parse(ap, trials=2, prune_seeds=1)
    scratch = Path(tempfile.mkdtemp(prefix="pml-sweep-bench-"))
    db_url = args.db_url or f"sqlite:///{scratch / 'sweep.db'}"
    local = LocalBackend({"patient-ml/scripted-trainer": SCRIPTED})
    quick = {"epochs": "3"}
    rows: list[tuple[str, str, str]] = []
    cpu0 = time.process_time()
    print(f"load before: {_load()}")
    try:
        n = args.trials
        direct_times = timed(lambda: direct(scratch / "direct", {**quick, "score": "0.5"}), n)
        d = statistics.median(direct_times)
        rows.append(("(a) trainer run directly", f"{d:.3f} s/trial", "baseline"))
        bare = bare_optuna(scratch, n, quick) / n
        rows.append(("(b) bare Optuna loop + (a)", f"{bare:.3f} s/trial", f"+{bare - d:.3f} s"))
        product_sweep(db_url, local, scratch, 2, quick, prune=False)  # warm the imports
        wall, count, _, _ = product_sweep(db_url, local, scratch, n, quick, prune=False)
        per = wall / n
        goal = "goal < 0.2 s"
        rows.append(
            ("(c) product, local backend", f"{per:.3f} s/trial", f"+{per - d:.3f} s ({goal})")
        )
        rows.append(("    its process CPU / SQL", *_cpu_sql(count, n)))
        dock = None if args.no_docker else docker_backend()
        if dock is not None:
            wall, count, _, _ = product_sweep(db_url, dock, scratch, n, quick, prune=False)
            per = wall / n
            rows.append(
                (
                    "(d) product, Docker backend",
                    f"{per:.3f} s/trial",
                    f"+{per - d:.3f} s (goal < 1 s)",
                )
            )
            rows.append(("    its process CPU / SQL", *_cpu_sql(count, n)))

        work = {"epochs": "4", "delay": "0.25"}  # 1 s of work per trial
        one = parallel(db_url, scratch, n, 1, work)
        two = parallel(db_url, scratch, n, 2, work)
        rows.append(
            ("1 worker, 1-s trials", f"{one:.1f} s for {n} trials", "first start to last end")
        )
        rows.append(
            (
                "2 workers, 1-s trials",
                f"{two:.1f} s for {n} trials",
                f"speedup {one / two:.2f}x (goal >= 1.7x)",
            )
        )

        rows += pruning(db_url, local, scratch, 2 * n, args.prune_seeds)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    width = max(len(r[0]) for r in rows)
    print(f"\nsweep overhead (database: {db_url.split(':')[0]}; trials of the scripted trainer)")
    print(f"{'measurement':<{width}} | {'value':<26} | note")
    print(f"{'-' * width}-|-{'-' * 26}-|-----")
    for name, value, note in rows:
        print(f"{name:<{width}} | {value:<26} | {note}")
    print(f"benchmark process CPU: {time.process_time() - cpu0:.1f} s; load: {_load()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
