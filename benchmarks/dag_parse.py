"""Parse time of the DAG factory file (dags/patient_ml_dags.py) with 1, 100 and 1,000 stored
model configs, measured the way Airflow's DAG processor parses: each parse in a fresh Python
process that has Airflow loaded, timing the execution of the DAG file (including its imports of
the patient_ml package, which the processor does not pre-import).

Printed per size:
- cold: a parse with no build cache file, as on a new scheduler, DAG processor or worker image
  and after an upgrade (every DAG built or copied from its shape's DAG, the cache written);
- new configs: the first parse after the configs were added (their DAGs built or copied);
- warm: a parse with nothing changed (DAGs from the build cache);
- one changed: a parse after one config changed (one DAG built, the rest from the cache);
- single: a task's parse, where Airflow's parsing context names one DAG;
- DagBag: Airflow's whole DagBag fill of the file when warm (adds Airflow's own per-DAG checks);
- no cache: PATIENT_ML_DAG_CACHE=off (every parse builds every DAG).

With `--dagbag-sizes 5000`, then only Airflow's DagBag fill at those sizes, cold (no build
cache) and warm, against Airflow's parse timeout ([dag_processor] dag_file_processor_timeout).
The load average is printed at the start and the end (the figures depend on it).

    .venv/bin/python benchmarks/dag_parse.py [--sizes 1,100,1000] [--repeat 3]
        [--dagbag-sizes 5000]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks import smoke  # noqa: E402

DAG_FILE = ROOT / "dags" / "patient_ml_dags.py"
CONFIGS = ROOT / "include" / "configs"

PARSE = r"""
import json, os, runpy, sys, time
import airflow.sdk  # loaded in Airflow's DAG processor before it parses a file
from airflow.dag_processing.dagbag import DagBag
mode, path = sys.argv[1], sys.argv[2]
if mode == "dagbag":
    started = time.perf_counter()
    bag = DagBag(dag_folder=path)
    elapsed = time.perf_counter() - started
    count, errors = len(bag.dags), len(bag.import_errors)
else:
    started = time.perf_counter()
    namespace = runpy.run_path(path)
    elapsed = time.perf_counter() - started
    count = sum(1 for k in namespace if k.startswith("patient_ml__"))
    errors = 0
print(json.dumps({"seconds": elapsed, "dags": count, "errors": errors}))
"""


def parse(env: dict[str, str], mode: str = "run", dag_id: str | None = None) -> dict:
    child = dict(env)
    if dag_id:
        child["_AIRFLOW_PARSING_CONTEXT_DAG_ID"] = dag_id
    out = subprocess.run(
        [sys.executable, "-c", PARSE, mode, str(DAG_FILE)],
        env=child, capture_output=True, text=True, check=True,
    )  # fmt: skip
    return json.loads(out.stdout.strip().splitlines()[-1])


def add_models(env: dict[str, str], start: int, stop: int) -> None:
    """Store models start..stop-1: copies of the example classifier config, each its own DAG."""
    code = f"""
import copy, yaml
from patient_ml.db.engine import get_engine, session_scope
from patient_ml.services.models import create_model
base = yaml.safe_load(open({str(CONFIGS / "brain_mri_model.yaml")!r}))
with session_scope(get_engine()) as session:
    for i in range({start}, {stop}):
        doc = copy.deepcopy(base)
        doc["name"] = f"bench-model-{{i:04d}}"
        doc["trainingApproach"]["parallelTrials"] = 1 + i % 4
        create_model(session, doc, actor="benchmark")
"""
    subprocess.run([sys.executable, "-c", code], env=env, check=True)


def touch_one_model(env: dict[str, str]) -> None:
    code = """
from patient_ml.db.engine import get_engine, session_scope
from patient_ml.services.models import get_model, model_to_wire, update_model
with session_scope(get_engine()) as session:
    doc = model_to_wire(get_model(session, "bench-model-0000"))
    doc["description"] = doc["description"] + " (edited)"
    update_model(session, "bench-model-0000", doc, actor="benchmark")
"""
    subprocess.run([sys.executable, "-c", code], env=env, check=True)


def timed(env: dict[str, str], repeat: int, **kw) -> tuple[float, int]:
    runs = [parse(env, **kw) for _ in range(repeat)]
    return statistics.median(r["seconds"] for r in runs), runs[0]["dags"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="1,100,1000")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--dagbag-sizes", default="", help="e.g. 5000: DagBag fills only, cold/warm")
    args = smoke.parse(ap, sizes="10", repeat=1, dagbag_sizes="20")
    sizes = sorted(int(s) for s in args.sizes.split(","))
    dagbag_sizes = sorted(int(s) for s in args.dagbag_sizes.split(",") if s.strip())
    print(f"load average at start: {_load()}")
    with tempfile.TemporaryDirectory(prefix="pml-dag-parse-") as home:
        env = {**os.environ, "PATIENT_ML_HOME": home, "PATIENT_ML_BACKEND": "local"}
        for var in ("PATIENT_ML_DATABASE_URL", "PATIENT_ML_CONN_ID", "PATIENT_ML_DAG_CACHE"):
            env.pop(var, None)
        bin_dir = Path(sys.executable).parent
        subprocess.run([bin_dir / "patient-ml", "db", "upgrade"], env=env, check=True,
                       capture_output=True)  # fmt: skip
        subprocess.run(
            [bin_dir / "patient-ml", "datasets", "create", "-f",
             str(CONFIGS / "brain_mri_dataset.yaml")],
            env=env, check=True, capture_output=True,
        )  # fmt: skip
        print(f"DAG file {DAG_FILE.relative_to(ROOT)}; median of {args.repeat} parses, each in "
              "a fresh process; seconds")  # fmt: skip
        header = f"{'configs':>8} {'cold':>7} {'new configs':>12} {'warm':>7} {'1 changed':>10} "
        print(header + f"{'single':>7} {'DagBag':>7} {'no cache':>9}")
        cache = Path(home) / "cache" / "dag-build-cache.pickle"
        stored = 0
        for size in sizes:
            add_models(env, stored, size)
            stored = size
            new_configs = parse(env)
            colds = []
            for _ in range(args.repeat):
                cache.unlink(missing_ok=True)
                colds.append(parse(env)["seconds"])
            cold = statistics.median(colds)
            warm, count = timed(env, args.repeat)
            touch_one_model(env)
            one_changed = parse(env)["seconds"]
            parse(env)  # re-warm
            single, single_count = timed(env, args.repeat, dag_id="patient_ml__bench_model_0000")
            dagbag, _ = timed(env, 1, mode="dagbag")
            nocache, _ = timed({**env, "PATIENT_ML_DAG_CACHE": "off"}, args.repeat)
            assert count == size and single_count == 1, (count, single_count)
            print(
                f"{size:>8} {cold:>7.3f} {new_configs['seconds']:>12.3f} {warm:>7.3f} "
                f"{one_changed:>10.3f} "
                f"{single:>7.3f} {dagbag:>7.3f} {nocache:>9.3f}",
                flush=True,
            )
        if dagbag_sizes:
            timeout = parse_timeout(env)
            print(f"Airflow DagBag fill of the file, one each; parse timeout {timeout:.0f} s")
            print(f"{'configs':>8} {'cold':>7} {'warm':>7}")
        for size in dagbag_sizes:
            add_models(env, stored, size)
            stored = max(stored, size)
            cache.unlink(missing_ok=True)
            cold_bag = parse(env, mode="dagbag")
            warm_bag = parse(env, mode="dagbag")
            for bag in (cold_bag, warm_bag):
                assert bag["dags"] == stored and bag["errors"] == 0, bag
                assert bag["seconds"] < timeout, (bag, timeout)
            print(
                f"{stored:>8} {cold_bag['seconds']:>7.3f} {warm_bag['seconds']:>7.3f}", flush=True
            )
    print(f"load average at end: {_load()}")


def parse_timeout(env: dict[str, str]) -> float:
    code = (
        "from airflow.configuration import conf; "
        "print(conf.getfloat('dag_processor', 'dag_file_processor_timeout'))"
    )
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         check=True)  # fmt: skip
    return float(out.stdout.strip().splitlines()[-1])


def _load() -> str:
    return ", ".join(f"{x:.2f}" for x in os.getloadavg())


if __name__ == "__main__":
    started = time.perf_counter()
    main()
    print(f"({time.perf_counter() - started:.0f} s in all)")
