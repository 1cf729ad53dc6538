"""Recovery time per fault on a real Airflow (issue 34): the fault suite's scenario
(`include.faults.survive_faults`, the same code as tests/e2e/test_faults.py) run `--rounds`
times on a fresh deployment (LocalExecutor, the local training backend, PostgreSQL when
reachable, else SQLite), each round one run of a classifier with 2 trial workers and 4 trials:

1. tune[0]'s task process SIGKILLed mid-trial: seconds until its trainer (which outlives it in a
   session of its own) is gone (the local backend's trainer dies at its next log line, into the
   closed pipe; a container would wait for the retry, which removes it), and until Airflow's
   retry of the task runs (the DAG's retry delay, 60 s, is in it);
2. scheduler and triggerer down while the run awaits approval, a REST rejection, the scheduler
   back after `--scheduler-down` seconds: seconds from the decision to the DAG run's end.

After each round it checks the records (exactly 4 counted trials, the product and Optuna
agreeing, nothing running, no process or scratch folder of the run left) and prints what is
wrong. The database outage is measured at the sweep by tests/training/test_sweep_outage.py.

    .venv/bin/python benchmarks/faults.py [--rounds 3] [--scheduler-down 5]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "plugins"), str(ROOT)]

from benchmarks import smoke  # noqa: E402
from include.faults import (  # noqa: E402
    FAULT_TRAINING,
    MAX_TRIALS,
    FaultRun,
    RunRecords,
    survive_faults,
)
from tests.e2e.conftest import register_cohort_model, start_deployment  # noqa: E402

MODEL = "bench-faults-classifier"
DAG_ID = "patient_ml__bench_faults_classifier"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--scheduler-down", type=float, default=5.0)
    args = smoke.parse(parser, rounds=1)
    started = time.monotonic()
    rounds: list[FaultRun] = []
    with (
        tempfile.TemporaryDirectory(prefix="pml-faults-") as tmp,
        start_deployment(Path(tmp), None, mirrors=False) as d,
    ):
        print(f"Airflow ready in {time.monotonic() - started:.0f} s", flush=True)
        model_id = register_cohort_model(
            d, dataset="bench-faults", salt="faults01", model=MODEL, approvers=["admin"],
            training=FAULT_TRAINING,
        )  # fmt: skip
        d.wait_for_dag(DAG_ID)
        for index in range(args.rounds):
            run = survive_faults(
                d.stack, d.api, d.engine, DAG_ID, model_id,
                scheduler_down_seconds=args.scheduler_down,
            )  # fmt: skip
            problems = RunRecords.of(d.engine, run.run_id).problems(MAX_TRIALS)
            print(f"round {index + 1}: DAG run {run.state}; killed task → trainer gone "
                  f"{run.kill_to_trainer_gone:.1f} s, → retry running {run.kill_to_retry:.1f} s; "
                  f"scheduler down {run.scheduler_down:.1f} s, decision → run ended "
                  f"{run.decision_to_end:.1f} s; records: {'; '.join(problems) or 'consistent'}",
                  flush=True)  # fmt: skip
            rounds.append(run)
    print(f"\n{'fault':52s} {'median s':>9s} {'max s':>7s}")
    for label, values in (
        ("task process killed → its trainer gone", [r.kill_to_trainer_gone for r in rounds]),
        ("task process killed → its retry running", [r.kill_to_retry for r in rounds]),
        ("scheduler + triggerer down, decision → run ended", [r.decision_to_end for r in rounds]),
    ):
        print(f"{label:52s} {statistics.median(values):9.1f} {max(values):7.1f}")
    print(f"({len(rounds)} round(s), {time.monotonic() - started:.0f} s in all)")


if __name__ == "__main__":
    main()
