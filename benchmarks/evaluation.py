"""Champion vs challenger on the real Br35H sample, through the product; prints figures.

    make demo    # once: builds var/demo (product DB, Br35H NDJSON, curated snapshot)
    .venv/bin/python benchmarks/evaluation.py [--trials 4] [--backend local|docker]
                                              [--limit N] [--epochs E]

In a copy of the demo home (or, with `--limit N`, a fresh home with a class-balanced sample of
N Br35H images and the example configs, as `benchmarks/monitoring.py` builds it): run 1
(curate → 4-trial sweep → evaluate alone → approve → deploy to a cloud endpoint), then run 2
(a different seed) evaluated against run 1 on the same test examples. Prints the time of each
stage, test images scored per second, the champion vs challenger table and a prediction from
the deployed endpoint.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "var" / "demo"
sys.path.insert(0, str(ROOT))

from benchmarks.quality import fixed_epochs  # noqa: E402

from benchmarks import smoke  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=4)
    parser.add_argument("--backend", default="local", choices=["local", "docker"])
    parser.add_argument(
        "--limit", type=int, default=None,
        help="a fresh home with N Br35H images instead of a copy of var/demo",
    )  # fmt: skip
    parser.add_argument(
        "--epochs", type=int, default=None,
        help="fix the trainer's maximum epochs (default: the config's search range)",
    )  # fmt: skip
    args = smoke.parse(parser, trials=1, limit=120, epochs=1)
    if args.limit is None and not (DEMO / "patient_ml.db").exists():
        sys.exit("run `make demo` first (it builds var/demo), or pass --limit N")
    home = Path(tempfile.mkdtemp(prefix="pml-eval-bench-"))
    if args.limit is None:
        shutil.copytree(DEMO, home, dirs_exist_ok=True)
    os.environ["PATIENT_ML_HOME"] = str(home)
    os.environ.pop("PATIENT_ML_DATABASE_URL", None)
    os.environ.pop("PATIENT_ML_ARTIFACT_URI", None)

    from patient_ml import settings
    from patient_ml.curation.fetch import FetchPolicy, ImageFetcher
    from patient_ml.curation.sources import NdjsonSource
    from patient_ml.db.engine import get_engine, session_scope
    from patient_ml.deploy import deploy_run, stop_old_endpoints
    from patient_ml.evaluation.model_card import headline_metrics
    from patient_ml.services.approvals import decide
    from patient_ml.services.curation import curate
    from patient_ml.services.evaluation_run import evaluate_run
    from patient_ml.services.models import get_model, update_model
    from patient_ml.services.predictions import predict
    from patient_ml.services.runs import create_run
    from patient_ml.services.tuning import TuningWorker, finish_tuning
    from patient_ml.serving.servers import make_server
    from patient_ml.storage import artifact_store_from_uri
    from patient_ml.training.backends.local import LocalBackend

    # the demo's NDJSON names files under var/demo; a fresh home gets its own sample
    sample = DEMO / "sample" / "br35h" if args.limit is None else fresh_home(home, args.limit)
    engine = get_engine()
    store = artifact_store_from_uri(settings.artifact_uri())
    model_name = "brain-mri-tumour-classifier"
    server = make_server(args.backend)
    times: dict[str, float] = {}

    def run_once(label: str, seed: int) -> tuple[str, dict]:
        with session_scope(engine) as session:
            model = get_model(session, model_name)
            approach = {**model.training_approach, "seed": seed}
            if args.epochs is not None:  # the trainer's maximum fixed instead of searched
                approach["searchSpace"] = fixed_epochs(approach["searchSpace"], args.epochs)
            doc = {"name": model.name, "description": model.description,
                   "datasetId": model.dataset_id, "trainingApproach": approach,
                   "deployApproach": model.deploy_approach}  # fmt: skip
            update_model(session, model_name, doc, actor="bench")
            run_id = create_run(session, model_name, actor="bench").id
        started = time.perf_counter()
        curate(engine=engine, dataset_ref="brain-mri-tumour", source=NdjsonSource(sample),
               store=store, fetcher=ImageFetcher(FetchPolicy(allowed_file_roots=(sample,))),
               workdir=home / f"cur-{label}", run_id=run_id)  # fmt: skip
        times[f"{label} curate"] = time.perf_counter() - started
        started = time.perf_counter()
        TuningWorker(engine=engine, store=store, backend=LocalBackend(), run_id=run_id,
                     worker="0", workdir=home / f"tune-{label}",
                     max_trials=args.trials).run()  # fmt: skip
        finish_tuning(engine, store, run_id, actor="bench")
        times[f"{label} tune ({args.trials} trials)"] = time.perf_counter() - started
        started = time.perf_counter()
        summary = evaluate_run(engine, store, server, run_id, home / f"eval-{label}", actor="b")
        times[f"{label} evaluate"] = time.perf_counter() - started
        return run_id, summary

    r1, _ = run_once("run 1", 42)
    with session_scope(engine) as session:
        decide(
            session, r1, "approved", user="dr.ada", reason="benchmark: first model", channel="cli"
        )
    started = time.perf_counter()
    deployed = deploy_run(engine, store, r1, actor="bench", server=server)
    times["run 1 deploy (cloud endpoint)"] = time.perf_counter() - started
    r2, s2 = run_once("run 2", 7)
    report = json.loads(store.read_bytes(f"runs/{r2}/evaluation/report.json"))
    example = report["testExampleIds"][0]
    prediction = predict(engine, store, model_name, example_id=example)
    with session_scope(engine) as session:
        model_id = get_model(session, model_name).id
    stop_old_endpoints(engine, model_id, keep=None, actor="bench")

    n = s2["testExamples"]
    print(f"backend {server.kind}; test split: {n} confirmed examples "
          f"(sha256 {s2['testSetSha256'][:12]}), same for both models")  # fmt: skip
    for name, seconds in times.items():
        print(f"  {name:32s} {seconds:7.1f} s")
    both = 2 * n / times["run 2 evaluate"]
    print(f"  run 2 evaluation scored {2 * n} images (challenger + champion): {both:.0f} images/s")
    print("\nmetric              champion (run 1)  challenger (run 2)   delta")
    for name in headline_metrics("imgClf"):
        d = s2["deltas"][name]
        print(f"  {name:26s} {d['champion']:.4f}        {d['challenger']:.4f}     "
              f"{d['delta']:+.4f}{' better' if d['improved'] else ''}")  # fmt: skip
    print(f"\nendpoint {deployed['endpoint']}: prediction for {example}: "
          f"{prediction['predictions']}")  # fmt: skip
    shutil.rmtree(home, ignore_errors=True)
    return 0


def fresh_home(home: Path, limit: int) -> Path:
    """`limit` Br35H images as FHIR NDJSON under `home`, the product DB, and the example
    dataset and model configs registered with it as their source; returns the NDJSON folder."""
    import yaml
    from benchmarks.br35h_snapshot import build_sample

    from patient_ml.db import schema
    from patient_ml.db.engine import get_engine, session_scope
    from patient_ml.services.datasets import create_dataset
    from patient_ml.services.models import create_model

    sample = build_sample(home, limit)
    later = sample / "later"
    if later.is_dir():  # the labels a clinician confirms later in the demo: all of them here
        for file in later.iterdir():
            (sample / file.name).write_bytes(file.read_bytes())
    schema.upgrade(get_engine(check_schema=False))
    configs = ROOT / "include" / "configs"
    dataset = yaml.safe_load((configs / "brain_mri_dataset.yaml").read_text())
    dataset["source"] = {"type": "ndjson", "uri": str(sample)}
    model = yaml.safe_load((configs / "brain_mri_model.yaml").read_text())
    with session_scope(get_engine()) as session:
        create_dataset(session, dataset, actor="bench")
        create_model(session, model, actor="bench")
    return sample


if __name__ == "__main__":
    sys.exit(main())
