"""Failure cases on the real Br35H sample, through the product: what the saliency maps cost next
to the evaluation's own time, and how faithful they are (deletion AUC against random orders).

    .venv/bin/python benchmarks/failure_cases.py [--k 4] [--epochs 8] [--snapshot FOLDER]
        [--run RUN --snapshot FOLDER: evaluate a trained run again] [--limit N] [--smoke]

The demo's sample curated by the product (`benchmarks/br35h_snapshot.py`; or --snapshot, a
folder it made), one training run of the reference classifier (the demo's model config with
the sweep pinned to one trial: `--epochs`, image size 64), then the product's evaluation
(`services.evaluation_run.evaluate_run`, local backend: `serve` as a host process) with
PATIENT_ML_FAILURE_CASES=k. Prints the evaluation's seconds (validation + test scoring) and the
maps' seconds, images and requests, per case and in all, then each case's faithfulness: the
deletion AUC of the occlusion map and of the container's Grad-CAM, each against the mean of 3
random orders, and how many maps beat chance.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import orjson
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "plugins")]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--k", type=int, default=4, help="failure cases per true label")
    parser.add_argument("--epochs", type=int, default=8, help="epochs of the one training run")
    parser.add_argument("--snapshot", type=Path, help="a folder of br35h_snapshot.py --out")
    parser.add_argument("--out", type=Path, help="work folder (default: a temporary one)")
    parser.add_argument(
        "--run", help="evaluate this trained run again (with --snapshot: the folder it is in)"
    )
    parser.add_argument("--limit", type=int, help="curate the first N images (default: all)")
    from benchmarks import smoke

    args = smoke.parse(parser, k=1, epochs=1, limit=300)
    os.environ["PATIENT_ML_FAILURE_CASES"] = str(args.k)
    out = (args.out or Path(tempfile.mkdtemp(prefix="pml-failures-"))).resolve()
    out.mkdir(parents=True, exist_ok=True)

    from benchmarks.br35h_snapshot import build_sample, curate_sample
    from benchmarks.quality import existing_snapshot

    from patient_ml.db import schema
    from patient_ml.db.engine import get_engine
    from patient_ml.evaluation.evaluate import evaluation_report_key
    from patient_ml.services.evaluation_run import evaluate_run
    from patient_ml.serving.servers import LocalServer
    from patient_ml.storage import LocalArtifactStore

    started = time.perf_counter()
    folder = args.snapshot.resolve() if args.snapshot else out
    url = f"sqlite:///{folder / 'patient_ml.db'}"
    if args.snapshot:
        engine = get_engine(url)
        curated = existing_snapshot(folder)
    else:
        schema.upgrade(get_engine(url, check_schema=False))
        engine = get_engine(url)
        curated = curate_sample(engine, build_sample(out, args.limit), out)
    store = LocalArtifactStore(folder / "artifacts")
    snapshot_id = curated.manifest_uri.rstrip("/").split("/")[-2]
    print(f"snapshot {snapshot_id[:12]}: {len(curated.examples)} examples "
          f"({time.perf_counter() - started:.0f} s)")  # fmt: skip

    run_id = args.run or train_one(args, engine, store, curated, snapshot_id, out)
    began = time.perf_counter()
    evaluate_run(engine, store, LocalServer(), run_id, out / "evaluation", actor="benchmark")
    wall = time.perf_counter() - began
    report = orjson.loads(store.read_bytes(evaluation_report_key(run_id)))
    print_report(report, wall, args.k)
    return 0


def train_one(
    args: argparse.Namespace, engine: Any, store: Any, curated: Any, snapshot_id: str, out: Path
) -> str:
    """A model of the demo's config on the snapshot and one run of it, trained (one trial)."""
    from patient_ml.db.engine import session_scope
    from patient_ml.services import snapshots as snapshot_service
    from patient_ml.services.models import create_model
    from patient_ml.services.runs import create_run
    from patient_ml.services.tuning import TuningWorker, finish_tuning
    from patient_ml.training.backends.local import LocalBackend
    from patient_ml.training.tuning import Limits

    config = yaml.safe_load((ROOT / "include" / "configs" / "brain_mri_model.yaml").read_text())
    config["name"] = f"failures-{uuid.uuid4().hex[:6]}"
    config["datasetId"] = curated.dataset_id
    config["approvalPolicy"] = {"approvers": []}
    approach = config["trainingApproach"]
    approach["maxTrials"], approach["parallelTrials"] = 1, 1
    approach["searchSpace"] = [
        {"type": "categorical", "name": "epochs", "values": [args.epochs]},
        {"type": "categorical", "name": "image_size", "values": [64]},
    ]
    with session_scope(engine) as session:
        model_id = create_model(session, config, actor="benchmark").id
        run_id = create_run(session, model_id, actor="benchmark").id
        snapshot_service.link_run_to_snapshot(session, run_id, snapshot_id, actor="benchmark")
    began = time.perf_counter()
    TuningWorker(engine=engine, store=store, backend=LocalBackend(), run_id=run_id, worker="0",
                 workdir=out / "trials", limits=Limits(timeout_seconds=3600, cpus=2,
                                                       memory_mb=4096),
                 max_trials=1).run()  # fmt: skip
    finish_tuning(engine, store, run_id, actor="benchmark")
    print(f"training: one trial of {args.epochs} epochs in {time.perf_counter() - began:.0f} s "
          f"(run {run_id})")  # fmt: skip
    return str(run_id)


def load() -> str:
    return " ".join(f"{x:.1f}" for x in os.getloadavg())


def print_report(report: dict[str, Any], wall: float, k: int) -> None:
    challenger = report["challenger"]
    section = report["failureCases"]
    cost = section["cost"]
    cases = section["cases"]
    metrics = challenger["metrics"]
    print(f"\ntest split: {report['testExamples']} images; balanced accuracy "
          f"{metrics['balancedAccuracy']:.3f}, AUROC {metrics.get('auroc', float('nan')):.3f}; "
          f"decided at {section['decidedBy']}")  # fmt: skip
    for group in section["classes"]:
        print(f"  true {group['trueLabel']['name']:>10}: {group['errors']:3d} errors of "
              f"{group['images']:4d} images, {group['shown']} shown")  # fmt: skip
    evaluation = cost.get("evaluationSeconds", challenger["seconds"])
    n = max(len(cases), 1)
    print(f"\ncost (one `serve` process on this machine's shared CPUs; load {load()})")
    print(f"  evaluation of the challenger (serve start, validation + test scoring): "
          f"{evaluation:.1f} s")  # fmt: skip
    print(f"  failure cases, k={k} per label -> {len(cases)} cases, maps "
          f"{' + '.join(section['methods'])}: {cost['seconds']:.1f} s "
          f"({cost['seconds'] / n:.2f} s per case), {cost['images']} images "
          f"({cost['images'] // n} per case) in {cost['requests']} requests")  # fmt: skip
    print(f"  maps / evaluation: {cost['seconds'] / evaluation:.2f}x; whole evaluate_run "
          f"{wall:.1f} s")  # fmt: skip
    print(
        "\nfaithfulness: deletion AUC of the map vs the mean of "
        f"{section['saliency']['randomOrders']} random orders ({section['saliency']['grid']}²"
        f" cells, {section['saliency']['steps']} steps; lower = the probability falls faster)"
    )
    print(f"  {'case':>4} {'true':>9} {'called':>9} {'conf':>5} | {'occlusion':>9} {'random':>6} "
          f"{'ratio':>5} | {'grad-cam':>8} {'ratio':>5}")  # fmt: skip
    ratios: dict[str, list[float]] = {"occlusion": [], "grad-cam": []}
    beats: dict[str, int] = {"occlusion": 0, "grad-cam": 0}
    for case in cases:
        maps = case["maps"]
        occ = maps.get("occlusion", {}).get("faithfulness")
        cam = maps.get("grad-cam", {}).get("faithfulness")
        for name, found in (("occlusion", occ), ("grad-cam", cam)):
            if found and found["ratio"] is not None:
                ratios[name].append(found["ratio"])
                beats[name] += found["difference"] > 0
        if occ is None:
            print(f"  {case['case']:>4} no maps: {case.get('mapsError')}")
            continue
        cam_text = f"{cam['deletionAuc']:8.3f} {cam['ratio']:5.2f}" if cam else f"{'-':>8} {'-':>5}"
        print(f"  {case['case']:>4} {case['trueLabel']['name']:>9} "
              f"{case['predictedLabel']['name']:>9} {case['confidence']:5.2f} | "
              f"{occ['deletionAuc']:9.3f} {occ['randomDeletionAuc']:6.3f} {occ['ratio']:5.2f} | "
              f"{cam_text}")  # fmt: skip
    for name, values in ratios.items():
        if values:
            print(f"  {name}: median ratio {statistics.median(values):.2f} (mean "
                  f"{statistics.fmean(values):.2f}); better than random in {beats[name]} of "
                  f"{len(values)} cases")  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
