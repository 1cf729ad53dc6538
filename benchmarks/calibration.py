"""How the reference classifier's temperature transfers from validation to test on Br35H's
grouped splits; prints the figures behind include/trainers/README.md's calibration notes.

    .venv/bin/python benchmarks/calibration.py --snapshot DIR [--snapshot DIR2 ...]
                                               [--cpus 1] [--boot 1000]

Each DIR is the output folder of `benchmarks/br35h_snapshot.py --out DIR` (one dataset salt,
so one patient split). For each snapshot, img_clf's `train` runs as a host process on the
snapshot's confirmed train/validation channels (the product's `materialize_channels`) with
its default hyperparameters, with training seeds 0 and 1 (initialisation, batch order and
augmentation: two models per split). Of each model, on the confirmed test
split: balanced accuracy, AUROC, and the expected calibration error (Guo et al. 2017: 15
equal-width bins over [0, 1] of the top-class confidence; benchmarks/quality.py's definition)
and log loss of softmax(logits / T) for T = 1, T fitted on validation by NLL (the trainer's
choice), T fitted on validation by Brier score, and, for reference only, T fitted on the
test split itself (not available to a trainer), with the platform's ECE (10 bins) and its 95 %
interval from the product's cluster bootstrap (`patient_ml.evaluation.intervals`: the test
clusters resampled). Also the validation split's share of images
the model gets wrong with a logit margin over 3 (confidently wrong), against the test split's.
Trainings are not a sweep (no search): a comparison of the calibration step, not of models.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "plugins"))
sys.path.insert(0, str(ROOT))

from benchmarks.quality import (  # noqa: E402
    auroc,
    balanced_accuracy,
    confirmed,
    ece,
    existing_snapshot,
    trainer_module,
)

from benchmarks import smoke  # noqa: E402

VARIANTS = {"seed 0 (default)": {}, "seed 1": {"seed": "1"}}


def train(snapshot: Path, hps: dict[str, str], job: Path, cpus: int) -> tuple[Path, float]:
    """img_clf's `train` on the snapshot's channels; returns the model folder and CPU seconds."""
    import resource

    from patient_ml.storage import LocalArtifactStore
    from patient_ml.training.backends.local import process_environment
    from patient_ml.training.channels import materialize_channels
    from patient_ml.training.contract import JobLayout, sm_environment

    curated = existing_snapshot(snapshot)
    layout = JobLayout(job).create()
    snapshot_id = curated.manifest_uri.rstrip("/").split("/")[-2]
    stats = materialize_channels(
        LocalArtifactStore(snapshot / "artifacts"), curated.dataset_id, snapshot_id, layout
    )
    layout.write_config(hps, stats.problem)
    env = process_environment(cpus, sm_environment(layout, num_cpus=cpus))
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    with open(job / "train.log", "w") as log:
        subprocess.run(
            [sys.executable, str(ROOT / "include" / "trainers" / "img_clf" / "train")],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            check=True,
        )
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return layout.model_dir, cpu


def split_logits(
    module: Any, classifier: Any, snapshot: Path, split: str
) -> tuple[np.ndarray, np.ndarray]:
    curated = existing_snapshot(snapshot)
    examples = confirmed(curated.examples, split)
    y = np.array([classifier.indices.index(e["label"]["classes"][0]) for e in examples])
    rows = np.stack([module.load_pixels(curated.image_path(e), classifier.size) for e in examples])
    return classifier.logits(rows), y


def log_loss(y: np.ndarray, p1: np.ndarray) -> float:
    p = np.clip(np.where(y == 1, p1, 1 - p1), 1e-12, 1.0)
    return float(-np.mean(np.log(p)))


def confidently_wrong(logits: np.ndarray, y: np.ndarray, margin: float = 3.0) -> int:
    signed = (logits[:, 1] - logits[:, 0]) * np.where(y == 1, 1.0, -1.0)
    return int(np.sum(signed < -margin))


def report(snapshot: Path, name: str, model_dir: Path, cpu: float, boot: int) -> None:
    module = trainer_module("img_clf")
    import torch_loop  # the trainer's own, on sys.path after trainer_module

    classifier = module.Classifier(model_dir)
    meta = json.loads((model_dir / "model.json").read_text())
    z_val, y_val = split_logits(module, classifier, snapshot, "validation")
    z_test, y_test = split_logits(module, classifier, snapshot, "test")
    temperatures = {
        "T = 1": 1.0,
        "T by validation NLL (trainer)": torch_loop.fit_temperature(z_val, y_val, "nll"),
        "T by validation Brier": torch_loop.fit_temperature(z_val, y_val, "brier"),
        "T by test NLL (reference only)": torch_loop.fit_temperature(z_test, y_test, "nll"),
    }
    assert abs(temperatures["T by validation NLL (trainer)"] / classifier.temperature - 1) < 1e-3
    p_test = module.softmax(z_test)[:, 1]
    print(
        f"  {name}: best epoch {meta['metrics']['best_epoch']}, trainer CPU {cpu:.0f} s; "
        f"validation balanced accuracy {balanced_accuracy(y_val, module.softmax(z_val)[:, 1]):.3f}"
        f", confidently wrong {confidently_wrong(z_val, y_val)}/{len(y_val)}; test balanced "
        f"accuracy {balanced_accuracy(y_test, p_test):.3f}, AUROC {auroc(y_test, p_test):.3f}, "
        f"confidently wrong {confidently_wrong(z_test, y_test)}/{len(y_test)}",
        flush=True,
    )
    from patient_ml.evaluation.intervals import ClassificationStatistic, ClusterBootstrap

    curated = existing_snapshot(snapshot)
    test = confirmed(curated.examples, "test")
    cluster = ClusterBootstrap([e.get("cluster") or e["patientKey"] for e in test], resamples=boot)
    for label, t in temperatures.items():
        p1 = module.softmax(z_test / t)[:, 1]
        platform = cluster.estimate(
            ClassificationStatistic.of([0, 1], y_test.tolist(), np.stack([1 - p1, p1], 1))
        )["expectedCalibrationError"]
        print(
            f"    {label:32s} T {t:6.3f}: test ECE {ece(y_test, p1):.3f} (15 bins); the "
            f"platform's (10 bins) {platform.value:.3f} [{platform.low:.3f}, "
            f"{platform.high:.3f}] over {cluster.resampling.clusters} clusters; log loss "
            f"{log_loss(y_test, p1):.3f}",
            flush=True,
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--snapshot", type=Path, action="append")
    parser.add_argument("--cpus", type=int, default=1, help="threads per training (default 1)")
    parser.add_argument("--boot", type=int, default=1000, help="bootstrap resamples")
    parser.add_argument("--epochs", help="the trainer's epochs (default: its own default)")
    args = smoke.parse(parser, boot=50, epochs="2")
    if args.smoke and not args.snapshot:  # a 300-image snapshot made as br35h_snapshot.py does
        from benchmarks.br35h_snapshot import build_sample, curate_sample

        from patient_ml.db import schema
        from patient_ml.db.engine import get_engine

        out = Path(tempfile.mkdtemp(prefix="calibration-smoke-"))
        url = f"sqlite:///{out / 'patient_ml.db'}"
        schema.upgrade(get_engine(url, check_schema=False))
        curate_sample(get_engine(url), build_sample(out, limit=300), out)
        args.snapshot = [out]
    if not args.snapshot:
        parser.error("--snapshot DIR is required (an output folder of br35h_snapshot.py)")
    print(f"load: {' '.join(f'{x:.1f}' for x in os.getloadavg())} (1/5/15 min)", flush=True)
    with tempfile.TemporaryDirectory(prefix="calibration-") as temporary:
        for snapshot in args.snapshot:
            snapshot = snapshot.resolve()
            curated = existing_snapshot(snapshot)
            counts = {
                s: len(confirmed(curated.examples, s)) for s in ("train", "validation", "test")
            }
            print(
                f"snapshot {snapshot.name} (dataset {curated.dataset_id[:8]}): confirmed "
                + ", ".join(f"{s} {n}" for s, n in counts.items()),
                flush=True,
            )
            for name, hps in VARIANTS.items():
                started = time.perf_counter()
                job = Path(temporary) / f"{snapshot.name}-{hps.get('seed', '0')}"
                epochs = {"epochs": args.epochs} if args.epochs else {}
                model_dir, cpu = train(snapshot, {**hps, **epochs}, job, args.cpus)
                report(snapshot, name, model_dir, cpu, args.boot)
                print(f"    ({time.perf_counter() - started:.0f} s wall)", flush=True)
    print(f"load: {' '.join(f'{x:.1f}' for x in os.getloadavg())} (1/5/15 min)", flush=True)


if __name__ == "__main__":
    main()
