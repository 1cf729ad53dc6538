"""Latency of the product's REST API under concurrent load, next to Airflow's own API.

Starts a real Airflow API server (the plugin serves `/v1/patient-ml` on it) on a SQLite product
DB — the `make demo` default, where readers and writers share one file — seeds models and runs,
and loads each endpoint (in the extended view, as the web UI reads it) with `wrk` (Debian
package `wrk`) at 4 and 16 connections while another process keeps writing to the product DB
(each write transaction holds the lock for `--write-hold` seconds, like curation and trial
workers do). Prints p50/p99 per endpoint, and the goal: the product's list endpoints' p99 no
worse than 2x Airflow's `/api/v2/dags` p99 measured in the same run.

    .venv/bin/python benchmarks/api_load.py [--seconds 10] [--models 50] [--runs 200]
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks import smoke  # noqa: E402
from include.airflow_stack import AirflowStack  # noqa: E402

CONFIGS = ROOT / "include" / "configs"
SEED = """
import copy, sys, yaml
from patient_ml.db.engine import get_engine, session_scope
from patient_ml.services.datasets import create_dataset
from patient_ml.services.models import create_model
from patient_ml.services.runs import create_run
models, runs = int(sys.argv[1]), int(sys.argv[2])
with session_scope(get_engine()) as session:
    create_dataset(session, yaml.safe_load(open(sys.argv[3])), actor="benchmark")
    base = yaml.safe_load(open(sys.argv[4]))
    for i in range(models):
        doc = copy.deepcopy(base)
        doc["name"] = f"load-model-{i:04d}"
        create_model(session, doc, actor="benchmark")
with session_scope(get_engine()) as session:
    for _ in range(runs):
        create_run(session, "load-model-0000", actor="benchmark")
"""
WRITER = """
import sys, time
from patient_ml.db.engine import get_engine, session_scope
from patient_ml.services import audit
hold, pause = float(sys.argv[1]), float(sys.argv[2])
engine = get_engine()
while True:
    with session_scope(engine) as session:
        audit.record(session, actor="writer", action="benchmark.write", entity_type="bench",
                     entity_id="1")
        session.flush()
        time.sleep(hold)
    time.sleep(pause)
"""
LATENCY = re.compile(r"^\s+(50|99)(?:\.000)?%\s+([\d.]+)(us|ms|s)\s*$", re.M)
UNIT = {"us": 1e-3, "ms": 1.0, "s": 1000.0}


def wrk(url: str, token: str, connections: int, seconds: int) -> dict[str, float]:
    out = subprocess.run(
        ["wrk", "-t", "2", "-c", str(connections), "-d", f"{seconds}s", "--latency",
         "--timeout", "10s", "-H", f"Authorization: Bearer {token}", url],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    found = {f"p{m[0]}": float(m[1]) * UNIT[m[2]] for m in LATENCY.findall(out)}
    requests_line = re.search(r"^\s*(\d+) requests in", out, re.M)
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    timeouts = re.search(r"timeout (\d+)", out)
    found["requests"] = float(requests_line.group(1)) if requests_line else 0.0
    found["errors"] = float(errors.group(1) if errors else 0) + float(
        timeouts.group(1) if timeouts else 0
    )
    return found


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=int, default=10, help="duration of each load")
    ap.add_argument("--models", type=int, default=50)
    ap.add_argument("--runs", type=int, default=200, help="runs of the first model")
    ap.add_argument("--write-hold", type=float, default=0.2, help="seconds a write holds")
    ap.add_argument("--write-pause", type=float, default=0.1, help="seconds between writes")
    ap.add_argument("--connections", default="4,16")
    args = smoke.parse(ap, seconds=1, models=3, runs=10, connections="2")
    if not shutil.which("wrk"):
        sys.exit("wrk is not installed: apt-get install -y wrk")
    with tempfile.TemporaryDirectory(prefix="pml-api-load-") as tmp:
        home = Path(tmp)
        env = {"PATIENT_ML_HOME": str(home / "pml"), "PATIENT_ML_BACKEND": "local",
               "PATIENT_ML_DAG_CACHE": "off"}  # fmt: skip
        stack = AirflowStack(home / "airflow", env=env)
        for var in ("PATIENT_ML_DATABASE_URL", "PATIENT_ML_CONN_ID"):
            stack.env.pop(var, None)
        bin_dir = Path(sys.executable).parent
        run_env = stack.env
        subprocess.run([bin_dir / "patient-ml", "db", "upgrade"], env=run_env, check=True,
                       capture_output=True)  # fmt: skip
        subprocess.run(
            [sys.executable, "-c", SEED, str(args.models), str(args.runs),
             str(CONFIGS / "brain_mri_dataset.yaml"), str(CONFIGS / "brain_mri_model.yaml")],
            env=run_env, check=True,
        )  # fmt: skip
        stack.migrate()
        log = (home / "api-server.log").open("ab")
        server = subprocess.Popen(
            [sys.executable, "-m", "airflow", "api-server"],
            env=run_env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
        writer = None
        try:
            deadline = time.monotonic() + 120
            while not stack.passwords_file.exists() or not _answers(stack.url):
                if server.poll() is not None or time.monotonic() > deadline:
                    sys.exit(f"the API server did not start; see {home / 'api-server.log'}")
                time.sleep(0.5)
            token = stack.client().session.headers["Authorization"].split()[1]
            models = stack.client().get("/v1/patient-ml/models?view=extended")["models"]
            model_id = models[0]["id"]
            endpoints = {
                "Airflow GET /api/v2/dags": "/api/v2/dags",
                "GET /v1/patient-ml/models": "/v1/patient-ml/models?view=extended",
                "GET /v1/patient-ml/models/{id}/runs": (
                    f"/v1/patient-ml/models/{model_id}/runs?view=extended"
                ),
                "GET /v1/patient-ml/datasets": "/v1/patient-ml/datasets?view=extended",
            }
            for path in endpoints.values():  # warm up each route once
                requests.get(stack.url + path, headers={"Authorization": f"Bearer {token}"},
                             timeout=60).raise_for_status()  # fmt: skip
            writer = subprocess.Popen(
                [sys.executable, "-c", WRITER, str(args.write_hold), str(args.write_pause)],
                env=run_env,
            )  # fmt: skip
            print(f"{args.models} models, {args.runs} runs of one model; SQLite product DB; a "
                  f"writer holds the write lock {args.write_hold} s every "
                  f"{args.write_hold + args.write_pause:.1f} s; wrk {args.seconds} s per row; "
                  "latency in ms")  # fmt: skip
            print(f"{'endpoint':<40} {'conns':>5} {'req/s':>7} {'p50':>8} {'p99':>8} "
                  f"{'errors':>6} {'p99 / Airflow p99':>18}")  # fmt: skip
            verdicts = []
            for conns in (int(c) for c in args.connections.split(",")):
                airflow_p99 = None
                for name, path in endpoints.items():
                    r = wrk(stack.url + path, token, conns, args.seconds)
                    ratio = ""
                    if airflow_p99 is None:
                        airflow_p99 = r["p99"]
                    else:
                        ratio = f"{r['p99'] / airflow_p99:.2f}x"
                        verdicts.append(r["p99"] <= 2 * airflow_p99 and not r["errors"])
                    print(f"{name:<40} {conns:>5} {r['requests'] / args.seconds:>7.1f} "
                          f"{r['p50']:>8.1f} {r['p99']:>8.1f} {int(r['errors']):>6} "
                          f"{ratio:>18}", flush=True)  # fmt: skip
            print("goal (product list p99 <= 2x Airflow's p99, no errors):",
                  "met" if all(verdicts) else "NOT met")  # fmt: skip
        finally:
            if writer is not None:
                writer.kill()
            os.killpg(server.pid, 15)
            server.wait(30)


def _answers(url: str) -> bool:
    try:
        return requests.get(f"{url}/api/v2/version", timeout=5).status_code < 500
    except requests.RequestException:
        return False


if __name__ == "__main__":
    main()
