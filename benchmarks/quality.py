"""Held-out quality of the reference trainers, trained by the product's own sweep on the real
samples, beside simple baselines fitted on the same split, with intervals that resample the
test set's independent clusters; prints the figures of docs/training.md.

    .venv/bin/python benchmarks/quality.py [--salts quality-1,quality-2,quality-3]
                                           [--snapshot DIR ...] [--trials 4] [--cpus 1]
                                           [--boot 2000] [--skip-clf] [--skip-seg] [--tile 64]

1. Br35H (imgClf), once per dataset split salt (`--salts`; default three): the demo's sample
   (`benchmarks/br35h_snapshot.py`: sample build + two curations) curated by the product into a
   dataset whose split salt is that salt, so the product's own linking (copies under the 8
   orientations, intensity changes, sharpening, small crops: one group), split drawing and
   clusters decide the splits; `--snapshot DIR` (repeatable) reuses folders of
   `br35h_snapshot.py --out` instead. Validation and test examples with a copy in train
   (`copiesInSplits`) are left out, as the channels and the evaluation leave them out. A model
   from include/configs/brain_mri_model.yaml, a run linked to the snapshot, the run's Optuna
   sweep through `TuningWorker` on the local backend (the trainer's `train` as a host process,
   as in `make demo`), `finish_tuning` (best trial by validation balanced accuracy). The best
   model (the packed model.tar.gz) is scored on the product's test set
   (`evaluation.evaluate.load_test_set`) with the trainer's own `Classifier` (the code `serve`
   runs). Baselines, fitted on train, hyperparameters chosen on validation, probabilities by
   Platt scaling on validation: logistic regression on 64x64 pixels; HOG (128x128, 9
   orientations, 8-px cells, 2x2 blocks) + linear SVM; HOG + RBF-SVM.
   Intervals: the product's cluster bootstrap (`patient_ml.evaluation.intervals`): each
   resample draws the test set's clusters (patient, or near-duplicate group where larger) with
   replacement; the CNN and each baseline are scored on the same resamples (paired
   differences). The number of clusters is printed beside the number of images. The goal is
   judged against the strongest baseline on each test split (the hardest comparison).
2. Nuclei (imgSeg): `include/sample_data build nuclei --tile T` (stardist's image cut into
   T x T tiles), curated with include/configs/nuclei_dataset.yaml, swept the same way with
   include/configs/nuclei_model.yaml; pooled Dice on the test tiles. Baseline: Otsu's threshold
   per tile (+ the same small-object removal).

Metrics: balanced accuracy, AUROC and the platform's expected calibration error (10 bins) as
the product computes them; for the CNN also the ECE of Guo et al. 2017 (15 equal-width bins
over [0, 1] of the top-class confidence), 15 equal-mass bins, the ECE a perfectly calibrated
model with the same confidences shows on this many images, the ECE without the temperature
and with a temperature fitted by validation Brier score. Times: CPU seconds (user + sys of the
trainer processes) per trial; the load average at the start and the end.
"""

from __future__ import annotations

import argparse
import importlib.util
import io
import json
import os
import resource
import sys
import tarfile
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "plugins"))
sys.path.insert(0, str(ROOT))

from benchmarks import smoke  # noqa: E402

TRAINERS = ROOT / "include" / "trainers"
CONFIGS = ROOT / "include" / "configs"
SALTS = ("quality-1", "quality-2", "quality-3")  # dataset split salts: the splits, reproducibly


# --- metrics -----------------------------------------------------------------------------


def balanced_accuracy(y: np.ndarray, p1: np.ndarray) -> float:
    predicted = (p1 >= 0.5).astype(int)
    return float(np.mean([np.mean(predicted[y == c] == c) for c in (0, 1) if np.any(y == c)]))


def auroc(y: np.ndarray, score: np.ndarray) -> float:
    from scipy.stats import rankdata

    pos, neg = y == 1, y == 0
    if not pos.any() or not neg.any():
        return float("nan")
    ranks = rankdata(score)
    return float((ranks[pos].sum() - pos.sum() * (pos.sum() + 1) / 2) / (pos.sum() * neg.sum()))


def ece(y: np.ndarray, p1: np.ndarray, bins: int = 15, low: float = 0.0) -> float:
    """Expected calibration error of the top-class confidence (Guo et al. 2017): `bins`
    equal-width bins over [low, 1], sum over bins of (share of examples) x |accuracy - mean
    confidence|. The standard is 15 bins over [0, 1]; with two classes the confidence is
    >= 0.5, so only the upper 8 bins fill. (This benchmark's earlier runs used 15 bins over
    [0.5, 1]: bins half as wide, whose sampling noise on ~450 images is larger.)"""
    confidence = np.maximum(p1, 1 - p1)
    correct = ((p1 >= 0.5).astype(int) == y).astype(float)
    edges = np.linspace(low, 1.0, bins + 1)
    which = np.clip(np.digitize(confidence, edges[1:-1]), 0, bins - 1)
    total = 0.0
    for b in range(bins):
        mask = which == b
        if mask.any():
            total += mask.mean() * abs(correct[mask].mean() - confidence[mask].mean())
    return float(total)


def ece_equal_mass(y: np.ndarray, p1: np.ndarray, bins: int = 15) -> float:
    """The same with `bins` bins of equal counts (sorted by confidence)."""
    confidence = np.maximum(p1, 1 - p1)
    correct = ((p1 >= 0.5).astype(int) == y).astype(float)
    groups = np.array_split(np.argsort(confidence, kind="stable"), bins)
    return float(
        sum(
            len(g) / len(y) * abs(correct[g].mean() - confidence[g].mean())
            for g in groups
            if len(g)
        )
    )


def ece_floor(p1: np.ndarray, draws: int = 200, seed: int = 0) -> float:
    """Mean ECE of a perfectly calibrated model with these confidences: labels drawn as
    Bernoulli(p1). On a few hundred images the ECE of a calibrated model is not 0."""
    rng = np.random.default_rng(seed)
    return float(np.mean([ece((rng.random(len(p1)) < p1).astype(int), p1) for _ in range(draws)]))


CLF_METRICS: dict[str, Callable[[np.ndarray, np.ndarray], float]] = {
    "balanced accuracy": balanced_accuracy,
    "AUROC": auroc,
    "ECE": ece,
}


def show(name: str, cells: list[str], width: int = 34) -> None:
    print(f"  {name:{width}s} " + "  ".join(cells), flush=True)


# --- the product's sweep -----------------------------------------------------------------


def trainer_module(kind: str) -> Any:
    """The trainer's own model.py (the inference code `serve` runs), loaded in-process."""
    sys.path[:0] = [str(TRAINERS / kind), str(TRAINERS / "common")]
    spec = importlib.util.spec_from_file_location(f"{kind}_model", TRAINERS / kind / "model.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while it loads
    spec.loader.exec_module(module)
    return module


def sweep(
    engine: Any,
    store: Any,
    dataset_id: str,
    manifest_uri: str,
    config_name: str,
    trials: int,
    cpus: int,
    workdir: Path,
    epochs: int | None = None,
) -> tuple[Path, dict[str, Any], list[dict[str, Any]]]:
    """A model + run on the curated snapshot, the run's sweep (local backend, one worker),
    the best trial recorded; returns the unpacked best model, finish_tuning's summary and the
    trials (number, state, objective, CPU seconds)."""
    from patient_ml.db.engine import session_scope
    from patient_ml.services import snapshots as snapshot_service
    from patient_ml.services import training as training_service
    from patient_ml.services.models import create_model
    from patient_ml.services.runs import create_run
    from patient_ml.services.tuning import TuningWorker, finish_tuning
    from patient_ml.training.backends.local import LocalBackend
    from patient_ml.training.tuning import Limits

    config = yaml.safe_load((CONFIGS / f"{config_name}.yaml").read_text())
    config["name"] = f"{config['name']}-{uuid.uuid4().hex[:6]}"
    config["datasetId"] = dataset_id
    config["trainingApproach"]["maxTrials"] = trials
    config["trainingApproach"]["parallelTrials"] = min(
        trials, config["trainingApproach"].get("parallelTrials", 1)
    )
    if epochs is not None:  # --epochs: the trainer's maximum fixed instead of searched
        config["trainingApproach"]["searchSpace"] = fixed_epochs(
            config["trainingApproach"]["searchSpace"], epochs
        )
    snapshot_id = manifest_uri.rstrip("/").split("/")[-2]
    with session_scope(engine) as session:
        model_id = create_model(session, config, actor="benchmark").id
        run_id = create_run(session, model_id, actor="benchmark").id
        snapshot_service.link_run_to_snapshot(session, run_id, snapshot_id, actor="benchmark")
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    TuningWorker(
        engine=engine,
        store=store,
        backend=LocalBackend(),
        run_id=run_id,
        worker="0",
        workdir=workdir / "trials",
        limits=Limits(timeout_seconds=1800, cpus=cpus, memory_mb=4096),
        max_trials=trials,
    ).run()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    summary = finish_tuning(engine, store, run_id, actor="benchmark")
    summary["wallSeconds"] = time.perf_counter() - started
    summary["cpuSeconds"] = cpu
    with session_scope(engine) as session:
        trials_done = [
            {
                "number": t.number,
                "state": t.state,
                "params": t.params,
                "value": t.value,
                "failure": t.failure,
            }
            for t in training_service.list_trials(session, run_id)
        ]
    packed = store.read_bytes(summary["modelArtifactUri"].removeprefix(store.uri("")))
    model_dir = workdir / "best-model"
    model_dir.mkdir(parents=True, exist_ok=True)
    with tarfile.open(fileobj=io.BytesIO(packed), mode="r:gz") as tar:
        tar.extractall(model_dir, filter="data")
    return model_dir, summary, trials_done


def fixed_epochs(search_space: list[dict[str, Any]], epochs: int) -> list[dict[str, Any]]:
    """A config's search space with the trainer's `epochs` fixed at `epochs` (one categorical
    value) instead of searched: `--epochs` of the benchmarks, for seconds-long smoke runs."""
    return [
        {"type": "categorical", "name": "epochs", "values": [epochs]}
        if parameter["name"] == "epochs"
        else parameter
        for parameter in search_space
    ]


def print_sweep(summary: dict[str, Any], trials: list[dict[str, Any]]) -> None:
    for t in trials:
        value = "" if t["value"] is None else f" objective {t['value']:.4f}"
        print(f"    trial {t['number']}: {t['state']}{value} {t['params']}"
              + (f" ({t['failure']})" if t["failure"] else ""))  # fmt: skip
    states = [t["state"] for t in trials]
    print(
        f"  sweep: {len(trials)} trials ({', '.join(f'{states.count(s)} {s}' for s in sorted(set(states)))}), "  # noqa: E501
        f"wall {summary['wallSeconds']:.0f} s, trainer CPU {summary['cpuSeconds']:.0f} s "
        f"({summary['cpuSeconds'] / max(1, len(trials)):.0f} s per trial); best trial "
        f"{summary['bestTrial']} {summary['objective']} with {summary['hyperparameters']}",
        flush=True,
    )


# --- Br35H -------------------------------------------------------------------------------


def confirmed(examples: list[dict[str, Any]], split: str) -> list[dict[str, Any]]:
    return [
        e
        for e in examples
        if e["split"] == split and (e.get("label") or {}).get("status") == "confirmed"
    ]


def hog_features(images: list[Image.Image]) -> np.ndarray:
    from skimage.feature import hog

    return np.stack(
        [
            hog(
                np.asarray(im.resize((128, 128), Image.Resampling.BILINEAR), np.float32) / 255,
                orientations=9,
                pixels_per_cell=(8, 8),
                cells_per_block=(2, 2),
            )
            for im in images
        ]
    ).astype(np.float32)


def pixel_features(images: list[Image.Image]) -> np.ndarray:
    return np.stack(
        [
            np.asarray(im.resize((64, 64), Image.Resampling.BILINEAR), np.float32).ravel() / 255
            for im in images
        ]
    )


def baselines(x: dict[str, dict[str, np.ndarray]], y: dict[str, np.ndarray]) -> list[Scored]:
    """The simple baselines fitted on train, their hyperparameter chosen on validation
    (balanced accuracy), probabilities by Platt scaling on validation."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import SVC, LinearSVC

    candidates: dict[str, tuple[str, list[Callable[[], Any]]]] = {
        "logistic regression, 64x64 pixels": (
            "pixels",
            [
                lambda c=c: make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=2000))
                for c in (0.001, 0.01, 0.1)
            ],
        ),
        "HOG + linear SVM": (
            "hog",
            [
                lambda c=c: make_pipeline(StandardScaler(), LinearSVC(C=c, max_iter=5000))
                for c in (0.0001, 0.001, 0.01)
            ],
        ),
        "HOG + RBF-SVM": (
            "hog",
            [lambda c=c: make_pipeline(StandardScaler(), SVC(C=c)) for c in (1.0, 3.0, 10.0)],
        ),
    }
    out = []
    for name, (kind, makers) in candidates.items():
        started = time.perf_counter()
        best: tuple[float, Any] | None = None
        for make in makers:  # hyperparameters chosen on validation (balanced accuracy)
            model = make().fit(x[kind]["train"], y["train"])
            score = decision(model, x[kind]["validation"])
            value = balanced_accuracy(y["validation"], (score > 0).astype(float))
            if best is None or value > best[0]:
                best = (value, model)
        assert best is not None
        model = best[1]
        platt = LogisticRegression(C=1e6).fit(
            decision(model, x[kind]["validation"])[:, None], y["validation"]
        )
        p1 = platt.predict_proba(decision(model, x[kind]["test"])[:, None])[:, 1]
        out.append(Scored(name, p1, best[0], time.perf_counter() - started))
    return out


def decision(model: Any, x: np.ndarray) -> np.ndarray:
    if hasattr(model, "decision_function"):
        return np.asarray(model.decision_function(x), dtype=np.float64)
    return np.asarray(model.predict_proba(x)[:, 1], dtype=np.float64)


def existing_snapshot(folder: Path) -> Any:
    """The latest snapshot that `benchmarks/br35h_snapshot.py --out FOLDER` curated."""
    from benchmarks.br35h_snapshot import CuratedSample

    (dataset,) = (folder / "artifacts" / "datasets").iterdir()
    manifest = max(
        dataset.glob("snapshots/*/manifest.jsonl"), key=lambda path: path.stat().st_mtime
    )
    examples = [json.loads(line) for line in manifest.read_bytes().splitlines()[1:]]
    return CuratedSample(examples, dataset, manifest.as_uri(), [], dataset.name)


@dataclass
class Salted:
    """One dataset salt's snapshot: the confirmed examples of each split (validation and test
    without those that have a copy in train, as the channels and the evaluation leave them
    out), the product's test set (with each example's cluster) and where things are."""

    salt: str
    folder: Path
    engine: Any
    curated: Any
    splits: dict[str, list[dict[str, Any]]]
    test: Any  # patient_ml.evaluation.evaluate.TestSet
    left_out: dict[str, int]
    seconds: float


def curated_salt(args: argparse.Namespace, salt: str, folder: Path) -> Salted:
    """The demo's sample curated by the product (near-duplicate linking, split drawing and
    clusters are the product's) into a dataset whose split salt is `salt`; or, with
    --snapshot, a folder of `benchmarks/br35h_snapshot.py --out`."""
    from benchmarks.br35h_snapshot import build_sample, curate_sample

    from patient_ml.db import schema
    from patient_ml.db.engine import get_engine
    from patient_ml.evaluation.evaluate import load_test_set
    from patient_ml.storage import LocalArtifactStore

    started = time.perf_counter()
    if salt.startswith("snapshot:"):
        folder = Path(salt.removeprefix("snapshot:"))
        engine = get_engine(f"sqlite:///{folder / 'patient_ml.db'}")
        curated = existing_snapshot(folder)
    else:
        folder.mkdir(parents=True, exist_ok=True)
        url = f"sqlite:///{folder / 'patient_ml.db'}"
        schema.upgrade(get_engine(url, check_schema=False))
        engine = get_engine(url)
        curated = curate_sample(engine, build_sample(folder, args.limit), folder, salt=salt)
    splits, left_out = {}, {}
    for split in ("train", "validation", "test"):
        examples = confirmed(curated.examples, split)
        kept = [e for e in examples if split == "train" or not copy_in_train(e)]
        splits[split], left_out[split] = kept, len(examples) - len(kept)
    snapshot_id = curated.manifest_uri.rstrip("/").split("/")[-2]
    test = load_test_set(LocalArtifactStore(folder / "artifacts"), curated.dataset_id, snapshot_id)
    assert [e.id for e in test.examples] == [e["id"] for e in splits["test"]]
    seconds = time.perf_counter() - started
    return Salted(salt, folder, engine, curated, splits, test, left_out, seconds)


def copy_in_train(example: dict[str, Any]) -> bool:
    return "train" in (example.get("copiesInSplits") or ())


def clusters_of(examples: list[dict[str, Any]]) -> int:
    return len({e.get("cluster") or e["patientKey"] for e in examples})


@dataclass
class Scored:
    name: str
    p1: np.ndarray  # test probability of label position 1
    validation: float  # validation balanced accuracy (what chose it)
    seconds: float  # fit time (the CNN: trainer CPU of the whole sweep)


def br35h(args: argparse.Namespace, root: Path) -> list[dict[str, Any]]:
    """Every salt's snapshot, sweep, baselines and cluster-paired intervals; returns one
    summary row per salt."""
    rows = []
    salts = [f"snapshot:{s}" for s in args.snapshot] if args.snapshot else args.salts
    for number, salt in enumerate(salts):
        rows.append(one_salt(args, curated_salt(args, salt, root / f"salt-{number}")))
    return rows


def one_salt(args: argparse.Namespace, salted: Salted) -> dict[str, Any]:
    from patient_ml.evaluation.intervals import ClassificationStatistic, ClusterBootstrap
    from patient_ml.storage import LocalArtifactStore

    splits, curated = salted.splits, salted.curated
    print(
        f"\nBr35H, dataset salt {salted.salt!r} (sample built and curated by the product in "
        f"{salted.seconds:.0f} s): confirmed "
        + ", ".join(f"{s} {len(v):,} images / {clusters_of(v)} clusters" for s, v in splits.items())
        + "; left out (a copy in train): "
        + ", ".join(f"{s} {n}" for s, n in salted.left_out.items() if s != "train"),
        flush=True,
    )
    store = LocalArtifactStore(salted.folder / "artifacts")
    model_dir, summary, trials = sweep(
        salted.engine, store, curated.dataset_id, curated.manifest_uri, "brain_mri_model",
        args.trials, args.cpus, salted.folder, args.epochs,
    )  # fmt: skip
    print_sweep(summary, trials)
    module = trainer_module("img_clf")
    classifier = module.Classifier(model_dir)
    indices = classifier.indices
    test = splits["test"]
    y_test = np.array([indices.index(e["label"]["classes"][0]) for e in test])
    rows = np.stack([module.load_pixels(curated.image_path(e), classifier.size) for e in test])
    p_cnn = classifier.probabilities(rows)[:, 1]
    meta = json.loads((model_dir / "model.json").read_text())
    print(
        f"  best model: temperature {meta['temperature']:.3f}, best epoch "
        f"{meta['metrics']['best_epoch']}, orientations averaged {meta['orientations']}, "
        f"validation balanced accuracy {meta['metrics']['val_balanced_accuracy']:.4f}",
        flush=True,
    )
    calibration_notes(module, classifier, curated, splits, rows, y_test, p_cnn)

    images: dict[str, list[Image.Image]] = {s: [] for s in splits}
    for s, examples in splits.items():
        for e in examples:
            with Image.open(curated.image_path(e)) as opened:
                images[s].append(opened.convert("L"))
    y = {
        s: np.array([indices.index(e["label"]["classes"][0]) for e in v]) for s, v in splits.items()
    }
    x = {
        "pixels": {s: pixel_features(images[s]) for s in splits},
        "hog": {s: hog_features(images[s]) for s in splits},
    }
    cnn = Scored(
        "reference CNN (img_clf, product sweep)",
        p_cnn,
        float(meta["metrics"]["val_balanced_accuracy"]),
        float(summary["cpuSeconds"]),
    )
    contenders = [cnn, *baselines(x, y)]

    # The product's intervals: resample the test set's clusters (patient, or near-duplicate
    # group where larger), the same resamples for the CNN and each baseline (paired).
    labels = list(range(len(indices)))
    clusters = [e.cluster for e in salted.test.examples]
    boot = ClusterBootstrap(clusters, resamples=args.boot)

    def statistic(p1: np.ndarray) -> Any:
        return ClassificationStatistic.of(labels, y_test.tolist(), np.stack([1 - p1, p1], 1))

    n_images, n_clusters = boot.resampling.images, boot.resampling.clusters
    print(
        f"\n  test split: {n_images} images in {n_clusters} independent clusters "
        f"({int(y_test.sum())} tumour images); 95 % cluster bootstrap ({args.boot} resamples "
        "of the clusters, the product's patient_ml.evaluation.intervals):",
        flush=True,
    )
    show("model", [f"{m:24s}" for m in CLF_COLUMNS.values()] + ["validation", "fit"])
    # CNN - baseline on the same resamples (the CNN as the "challenger")
    compared = {c.name: boot.compare(statistic(p_cnn), statistic(c.p1)) for c in contenders[1:]}
    for c in contenders:
        own = boot.estimate(statistic(c.p1))
        cells = [interval_text(own[m]) for m in CLF_COLUMNS]
        show(c.name, [*cells, f"{c.validation:.3f}".ljust(10), f"{c.seconds:.0f} s"])
    print("  paired differences, reference CNN - baseline (the same cluster resamples):")
    for c in contenders[1:]:
        lead = compared[c.name].differences
        print(
            f"    - {c.name}: balanced accuracy "
            f"{interval_text(lead['balancedAccuracy'], '+').strip()}; AUROC "
            f"{interval_text(lead['auroc'], '+').strip()}",
            flush=True,
        )
    # The strongest baseline is the one with the best test score (the hardest comparison);
    # the one validation would have chosen is named beside it.
    strongest = max(contenders[1:], key=lambda c: balanced_accuracy(y_test, c.p1))
    chosen = max(contenders[1:], key=lambda c: c.validation)
    lead = compared[strongest.name].differences["balancedAccuracy"]
    low = lead.low if lead.low is not None else float("nan")
    print(
        f"  strongest baseline on this test split: {strongest.name} (on validation: "
        f"{chosen.name}); the CNN's balanced-accuracy lead "
        f"{interval_text(lead, '+').strip()}: goal "
        f"(lower bound > 0) {'met' if low > 0 else 'NOT met'}, stretch (lower bound > +0.05) "
        f"{'met' if low > 0.05 else 'not met'}",
        flush=True,
    )
    return {
        "salt": salted.salt,
        "images": n_images,
        "clusters": n_clusters,
        "cnn": boot.estimate(statistic(p_cnn))["balancedAccuracy"],
        "baseline": strongest.name,
        "baseline_value": balanced_accuracy(y_test, strongest.p1),
        "lead": lead,
        "cpu_per_trial": summary["cpuSeconds"] / max(1, len(trials)),
    }


CLF_COLUMNS = {
    "balancedAccuracy": "balanced accuracy",
    "auroc": "AUROC",
    "expectedCalibrationError": "ECE (10 bins)",
}


def interval_text(interval: Any, sign: str = "") -> str:
    """'0.912 [0.850, 0.960]' of a product Interval (no interval: the value alone)."""
    if interval.value is None:
        return "undefined".ljust(24)
    if interval.low is None or interval.high is None:
        return f"{interval.value:{sign}.3f} (no interval)".ljust(24)
    return (
        f"{interval.value:{sign}.3f} [{interval.low:{sign}.3f}, {interval.high:{sign}.3f}]"
    ).ljust(24)


def print_summary(rows: list[dict[str, Any]], started_load: tuple[float, ...]) -> None:
    print(
        "\nSummary (balanced accuracy on each salt's test split; the CNN's lead over the "
        "strongest baseline on that split, paired, 95 % cluster bootstrap):"
    )
    for r in rows:
        lead = r["lead"]
        print(
            f"  {r['salt']}: {r['images']} images / {r['clusters']} clusters; CNN "
            f"{interval_text(r['cnn']).strip()}; {r['baseline']} {r['baseline_value']:.3f}; "
            f"lead {interval_text(lead, '+').strip()}; trainer CPU {r['cpu_per_trial']:.0f} s "
            "per trial",
            flush=True,
        )
    lows = [r["lead"].low for r in rows]
    met = all(low is not None and low > 0 for low in lows)
    print(
        f"  goal (lower bound > 0 on every salt): {'met' if met else 'NOT met'}; lower bounds "
        + ", ".join("none" if low is None else f"{low:+.3f}" for low in lows)
    )
    print(
        f"  load average at the start {' / '.join(f'{x:.1f}' for x in started_load)}, at the end "
        f"{' / '.join(f'{x:.1f}' for x in os.getloadavg())} (1 / 5 / 15 min)",
        flush=True,
    )


def calibration_notes(
    module: Any,
    classifier: Any,
    curated: Any,
    splits: dict[str, list[dict[str, Any]]],
    rows: np.ndarray,
    y_test: np.ndarray,
    p_cnn: np.ndarray,
) -> None:
    """How the CNN's test ECE comes about: the ECE under other binnings, of a perfectly
    calibrated model with the same confidences, of the logits without the temperature and
    with a temperature fitted by Brier score; validation against test (class shares,
    per-class recall) of the same model."""
    import torch_loop  # the trainer's own (trainer_module put include/trainers/common first)

    indices = classifier.indices
    val = splits["validation"]
    y_val = np.array([indices.index(e["label"]["classes"][0]) for e in val])
    x_val = np.stack([module.load_pixels(curated.image_path(e), classifier.size) for e in val])
    p_val = classifier.probabilities(x_val)[:, 1]
    z_test = classifier.logits(rows)
    t_brier = torch_loop.fit_temperature(classifier.logits(x_val), y_val, "brier")
    print(
        f"  CNN test ECE: {ece(y_test, p_cnn):.3f} (15 bins over [0, 1]); 15 equal-mass bins "
        f"{ece_equal_mass(y_test, p_cnn):.3f}; 15 bins over [0.5, 1] "
        f"{ece(y_test, p_cnn, low=0.5):.3f}; a calibrated model with these confidences "
        f"{ece_floor(p_cnn):.3f}; without the temperature (T = 1) "
        f"{ece(y_test, module.softmax(z_test)[:, 1]):.3f}; with the temperature fitted by "
        f"validation Brier score instead of NLL (T = {t_brier:.3f}) "
        f"{ece(y_test, module.softmax(z_test / t_brier)[:, 1]):.3f}",
        flush=True,
    )
    for name, y, p in (("validation", y_val, p_val), ("test", y_test, p_cnn)):
        predicted = (p >= 0.5).astype(int)
        recalls = " / ".join(f"{np.mean(predicted[y == c] == c):.3f}" for c in (0, 1))
        print(
            f"  {name}: {len(y)} images, label 1 share {y.mean():.2f}; recall of label 0 / 1 "
            f"{recalls}; ECE {ece(y, p):.3f}",
            flush=True,
        )


# --- nuclei ------------------------------------------------------------------------------


def nuclei(args: argparse.Namespace, folder: Path) -> None:
    import subprocess

    from skimage.filters import threshold_otsu

    from patient_ml.curation.fetch import FetchPolicy, ImageFetcher
    from patient_ml.curation.sources import NdjsonSource
    from patient_ml.db import schema
    from patient_ml.db.engine import get_engine, session_scope
    from patient_ml.services.curation import curate
    from patient_ml.services.datasets import create_dataset
    from patient_ml.storage import LocalArtifactStore

    sample = folder / "sample"
    subprocess.run(
        [sys.executable, str(ROOT / "include" / "sample_data"), "build", "nuclei", "--out",
         str(sample), "--tile", str(args.tile)],
        check=True, cwd=ROOT, stdout=subprocess.DEVNULL,
    )  # fmt: skip
    later = sample / "later"
    if later.is_dir():  # the labels a clinician confirms later: all of them, for the benchmark
        for file in later.iterdir():
            (sample / file.name).write_bytes(file.read_bytes())
    url = f"sqlite:///{folder / 'patient_ml.db'}"
    schema.upgrade(get_engine(url, check_schema=False))
    engine = get_engine(url)
    config = yaml.safe_load((CONFIGS / "nuclei_dataset.yaml").read_text())
    config["name"] = f"nuclei-{uuid.uuid4().hex[:6]}"
    config["source"] = {"type": "ndjson", "uri": sample.as_uri()}
    with session_scope(engine) as session:
        dataset_id = create_dataset(session, config, actor="benchmark").id
    store = LocalArtifactStore(folder / "artifacts")
    result = curate(
        engine=engine,
        dataset_ref=dataset_id,
        source=NdjsonSource(sample),
        store=store,
        fetcher=ImageFetcher(FetchPolicy(allowed_file_roots=(sample,), max_bytes=50_000_000)),
        workdir=folder / "work",
        workers=2,
    )
    lines = store.read_bytes(result.manifest_uri.removeprefix(store.uri(""))).splitlines()
    examples = [json.loads(line) for line in lines[1:]]
    root = folder / "artifacts" / "datasets" / dataset_id
    splits = {s: confirmed(examples, s) for s in ("train", "validation", "test")}
    print(
        f"\nNuclei: stardist img2d.tif in {args.tile}x{args.tile} tiles, curated: confirmed "
        + ", ".join(f"{s} {len(v)}" for s, v in splits.items()),
        flush=True,
    )
    model_dir, summary, trials = sweep(
        engine, store, dataset_id, result.manifest_uri, "nuclei_model", args.trials, args.cpus,
        folder, args.epochs,
    )  # fmt: skip
    print_sweep(summary, trials)
    from patient_ml.evaluation.evaluate import load_test_set
    from patient_ml.evaluation.intervals import ClusterBootstrap, SegmentationStatistic

    segmenter = trainer_module("img_seg").Segmenter(model_dir)
    min_size = segmenter.min_object_size
    stats: dict[str, list[tuple[int, int, int]]] = {"reference U-Net": [], "Otsu threshold": []}
    pixels = 0
    snapshot_id = result.manifest_uri.rstrip("/").split("/")[-2]
    test = load_test_set(store, dataset_id, snapshot_id)
    by_id = {e["id"]: e for e in splits["test"]}
    for example in test.examples:
        e = by_id[example.id]
        with Image.open(root / e["image"]["key"]) as opened:
            gray = np.asarray(opened.convert("L"), np.float32) / 255
        with Image.open(root / e["label"]["mask"]["key"]) as opened:
            truth = np.asarray(opened) > 0
        pixels += truth.size
        predicted = {
            "reference U-Net": segmenter.segment(gray) > 0,
            "Otsu threshold": otsu(gray, threshold_otsu, min_size),
        }
        for name, mask in predicted.items():
            stats[name].append((int((mask & truth).sum()), int(truth.sum()), int(mask.sum())))
    boot = ClusterBootstrap([e.cluster for e in test.examples], resamples=args.boot)
    print(
        f"\nNuclei test split: {len(test.examples)} tiles in {boot.resampling.clusters} "
        f"independent clusters, {pixels:,} pixels; pooled Dice, 95 % cluster bootstrap "
        f"({args.boot} resamples; the tiles of one image are one patient's, so with one "
        "source image there is nothing independent to resample and no interval):"
    )
    for name, rows in stats.items():
        counts = np.array(rows, dtype=np.float64)[:, None, :]  # one foreground label
        found = boot.estimate(SegmentationStatistic.of([1], counts))
        show(name, [f"Dice {interval_text(found['meanDice']).strip()}"])


def otsu(gray: np.ndarray, threshold_otsu: Callable[..., float], min_size: int) -> np.ndarray:
    from scipy import ndimage

    mask = gray > threshold_otsu(gray) if gray.max() > gray.min() else np.zeros_like(gray, bool)
    if min_size > 1 and mask.any():
        components, count = ndimage.label(mask)
        sizes = np.bincount(components.ravel(), minlength=count + 1)
        small = sizes < min_size
        small[0] = False
        mask[small[components]] = False
    return mask


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=4, help="trials per sweep (default 4)")
    parser.add_argument("--cpus", type=int, default=1, help="threads per trial (default 1)")
    parser.add_argument("--tile", type=int, default=64, help="nuclei tile side (default 64)")
    parser.add_argument("--boot", type=int, default=2000, help="cluster bootstrap resamples")
    parser.add_argument(
        "--salts",
        type=lambda text: [s for s in text.split(",") if s],
        default=list(SALTS),
        help=f"dataset split salts, comma-separated (default {','.join(SALTS)})",
    )
    parser.add_argument("--skip-clf", action="store_true")
    parser.add_argument("--skip-seg", action="store_true")
    parser.add_argument("--keep", type=Path, help="keep the work files in this folder")
    parser.add_argument(
        "--snapshot",
        type=Path,
        action="append",
        help="instead of --salts: reuse an output folder of benchmarks/br35h_snapshot.py "
        "(repeatable)",
    )
    parser.add_argument(
        "--limit", type=int, default=None,
        help="a class-balanced subset of N Br35H images for the sample (default: all 3,000)",
    )  # fmt: skip
    parser.add_argument(
        "--epochs", type=int, default=None,
        help="fix the trainers' maximum epochs (default: the configs' search ranges)",
    )  # fmt: skip
    args = smoke.parse(parser, limit=160, salts=["smoke-1"], trials=1, boot=50, epochs=1, tile=128)
    load = os.getloadavg()
    print(f"load average {' / '.join(f'{x:.1f}' for x in load)} (1 / 5 / 15 min)", flush=True)
    with tempfile.TemporaryDirectory(prefix="quality-") as temporary:
        root = args.keep or Path(temporary)
        if not args.skip_clf:
            (root / "br35h").mkdir(parents=True, exist_ok=True)
            print_summary(br35h(args, root / "br35h"), load)
        if not args.skip_seg:
            (root / "nuclei").mkdir(parents=True, exist_ok=True)
            nuclei(args, root / "nuclei")


if __name__ == "__main__":
    main()
