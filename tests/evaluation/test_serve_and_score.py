"""Evaluation through real `serve` processes and containers of both reference trainers: the
platform's metrics equal values computed here by hand from the same model run in-process,
and a server that cannot start fails with its own log."""

from __future__ import annotations

import base64
import hashlib
import importlib.util
import io
import json
import logging
import sys
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
from PIL import Image

from patient_ml.evaluation.evaluate import (
    Contender,
    EvaluationError,
    evaluate_contenders,
    evaluate_model,
    load_test_set,
)
from patient_ml.log_records import ProgressLog
from patient_ml.serving.base import ModelServer
from patient_ml.serving.servers import DockerServer, LocalServer
from patient_ml.storage import LocalArtifactStore
from patient_ml.training.backends.base import TrainingJob
from patient_ml.training.backends.local import LocalBackend
from patient_ml.training.contract import JobLayout
from patient_ml.training.metrics import MetricParser
from patient_ml.training.tuning import pack_model
from tests.docker_engine import build_trainer_image
from tests.trainers.test_trainers import (
    CLF_HPS,
    CLF_PROBLEM,
    SEG_HPS,
    SEG_PROBLEM,
    TRAINERS,
    clf_channel,
    seg_channel,
)

IMAGES = {
    "img_clf": "patient-ml/img-clf-trainer:0.1.0",
    "img_seg": "patient-ml/img-seg-trainer:0.1.0",
}
DATASET, SNAPSHOT, CLUSTERED = "ds-fixed", "snap-fixed", "snap-clustered"


def trainer_module(kind: str) -> Any:
    """The trainer's own model.py, loaded in-process under a unique name."""
    folder = TRAINERS / kind
    added = [str(folder), str(TRAINERS / "common")]  # the trainer's files and the shared ones
    sys.path[:0] = added
    try:
        spec = importlib.util.spec_from_file_location(f"{kind}_model", folder / "model.py")
        assert spec and spec.loader
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    finally:
        for path in added:
            sys.path.remove(path)


@pytest.fixture(scope="module")
def fixed(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """For each trainer: a trained model (packed in a store) and a fixed test split."""
    root = tmp_path_factory.mktemp("serve-and-score")
    out: dict[str, Any] = {}
    for kind, problem, hps, make in (
        ("img_clf", CLF_PROBLEM, CLF_HPS, lambda d, s: clf_channel(d, per_class=20, seed=s)),
        ("img_seg", SEG_PROBLEM, SEG_HPS, lambda d, s: seg_channel(d, count=6, seed=s)),
    ):
        layout = JobLayout(root / kind / "job").create()
        for channel, seed in (("train", 1), ("validation", 2)):
            make(layout.channel(channel), seed)
        layout.write_config(hps, problem)
        result = LocalBackend().run(
            TrainingJob(name=f"fixed-{kind}", layout=layout, image=IMAGES[kind],
                        metric_parser=MetricParser([]), timeout_seconds=300)
        )  # fmt: skip
        assert result.succeeded, result.failure
        store = LocalArtifactStore(root / kind / "artifacts")
        test_dir = root / kind / "test"
        make(test_dir, 7)
        header = {"problemType": problem["problemType"], "labels": problem["labels"]}
        lines = [orjson.dumps(header)]
        for item in map(json.loads, (test_dir / "examples.jsonl").read_text().splitlines()):
            store.put_bytes(
                f"datasets/{DATASET}/{item['image']}", (test_dir / item["image"]).read_bytes()
            )
            label: dict[str, Any] = {"status": "confirmed"}
            if "label" in item:
                label["classes"] = [item["label"]]
            else:
                store.put_bytes(
                    f"datasets/{DATASET}/{item['mask']}", (test_dir / item["mask"]).read_bytes()
                )
                label["mask"] = {"key": item["mask"]}
            entry = {"id": item["id"], "split": "test", "image": {"key": item["image"]}}
            lines.append(orjson.dumps({**entry, "label": label}))
        store.put_bytes(f"datasets/{DATASET}/snapshots/{SNAPSHOT}/manifest.jsonl",
                        b"\n".join(lines) + b"\n")  # fmt: skip
        # The same examples in snapshot format 2: clusters of 4, the first one copied in train.
        clustered = [lines[0]]
        for i, line in enumerate(lines[1:]):
            extra = {
                "cluster": f"{i // 4:016x}",
                **({"copiesInSplits": ["train"]} if i == 0 else {}),
            }
            clustered.append(orjson.dumps({**orjson.loads(line), **extra}))
        store.put_bytes(f"datasets/{DATASET}/snapshots/{CLUSTERED}/manifest.jsonl",
                        b"\n".join(clustered) + b"\n")  # fmt: skip
        packed = root / kind / "model.tar.gz"
        sha = pack_model(layout.model_dir, packed)
        store.put_file("runs/r1/model.tar.gz", packed)
        out[kind] = {
            "store": store,
            "model_dir": layout.model_dir,
            "test_dir": test_dir,
            "contender": Contender(
                "challenger", "r1", IMAGES[kind], store.uri("runs/r1/model.tar.gz"), sha, (0, 1)
            ),
        }
    return out


def by_hand(kind: str, case: dict[str, Any]) -> dict[str, float]:
    """The headline metrics from the in-process model and plain counting."""
    module = trainer_module(kind)
    items = [json.loads(x) for x in (case["test_dir"] / "examples.jsonl").read_text().splitlines()]
    if kind == "img_clf":
        model = module.Classifier(case["model_dir"])
        predicted, truth = [], []
        for item in items:
            confidences = model.predict((case["test_dir"] / item["image"]).read_bytes())
            predicted.append(max(confidences, key=lambda c: c["confidence"])["index"])
            truth.append(item["label"])
        predicted_a, truth_a = np.array(predicted), np.array(truth)
        recalls = [float(np.mean(predicted_a[truth_a == c] == c)) for c in (0, 1)]
        return {
            "accuracy": float(np.mean(predicted_a == truth_a)),
            "balancedAccuracy": sum(recalls) / 2,
        }
    model = module.Segmenter(case["model_dir"])
    inter = true_px = pred_px = 0
    for item in items:
        answer = model.predict((case["test_dir"] / item["image"]).read_bytes())
        mask = np.asarray(Image.open(io.BytesIO(base64.b64decode(answer["mask"])))) == 1
        truth = np.asarray(Image.open(case["test_dir"] / item["mask"])) == 1
        inter += int((mask & truth).sum())
        true_px += int(truth.sum())
        pred_px += int(mask.sum())
    return {"dice:1": 2 * inter / (true_px + pred_px), "iou:1": inter / (true_px + pred_px - inter)}


def score(kind: str, case: dict[str, Any], server: ModelServer, tmp: Path) -> dict[str, Any]:
    test = load_test_set(case["store"], DATASET, SNAPSHOT)
    scored = evaluate_model(case["contender"], test, case["store"], server, tmp, name=f"t-{kind}")
    return scored.result


def check(kind: str, case: dict[str, Any], result: dict[str, Any]) -> None:
    expected = by_hand(kind, case)
    metrics = result["metrics"]
    if kind == "img_clf":
        assert metrics["accuracy"] == pytest.approx(expected["accuracy"])
        assert metrics["balancedAccuracy"] == pytest.approx(expected["balancedAccuracy"])
        assert sum(sum(row) for row in metrics["confusionMatrix"]["counts"]) == 40
    else:
        assert metrics["perLabel"]["1"]["dice"] == pytest.approx(expected["dice:1"])
        assert metrics["perLabel"]["1"]["iou"] == pytest.approx(expected["iou:1"])
        assert metrics["meanDice"] == pytest.approx(expected["dice:1"])


@pytest.mark.parametrize("kind", ["img_clf", "img_seg"])
def test_local_serve_matches_hand_computed_metrics(
    kind: str, fixed: dict[str, Any], tmp_path: Path
) -> None:
    server = LocalServer()
    result = score(kind, fixed[kind], server, tmp_path)
    check(kind, fixed[kind], result)
    assert result["imageDigest"].startswith("local-sha256:")
    assert [a["id"] for a in result["answers"]] == [
        e.id for e in load_test_set(fixed[kind]["store"], DATASET, SNAPSHOT).examples
    ]


@pytest.mark.parametrize("kind", ["img_clf", "img_seg"])
def test_docker_serve_matches_hand_computed_metrics(
    kind: str, fixed: dict[str, Any], tmp_path: Path, docker_engine: Any
) -> None:
    build_trainer_image(docker_engine, kind, IMAGES[kind])
    result = score(kind, fixed[kind], DockerServer(), tmp_path)
    check(kind, fixed[kind], result)
    assert result["serverKind"] == "docker" and result["imageDigest"].startswith("sha256:")
    leftovers = docker_engine.containers.list(all=True, filters={"label": "patient-ml.serve"})
    assert [c.name for c in leftovers if c.name.startswith(f"t-{kind}")] == []


def test_a_model_that_cannot_load_fails_with_the_servers_log(
    fixed: dict[str, Any], tmp_path: Path
) -> None:
    case = fixed["img_clf"]
    store: LocalArtifactStore = case["store"]
    broken = tmp_path / "broken-model"
    broken.mkdir()
    (broken / "model.json").write_text('{"trainer": "img_clf", "format": "unknown"}')
    packed = tmp_path / "broken.tar.gz"
    sha = pack_model(broken, packed)
    store.put_file("runs/broken/model.tar.gz", packed)
    champion = Contender("champion", "broken", IMAGES["img_clf"],
                         store.uri("runs/broken/model.tar.gz"), sha, (0, 1))  # fmt: skip
    test = load_test_set(store, DATASET, SNAPSHOT)
    with pytest.raises(EvaluationError, match=r"The champion \(run broken\) cannot be served"):
        evaluate_model(champion, test, store, LocalServer(), tmp_path, name="broken")
    assert hashlib.sha256(packed.read_bytes()).hexdigest() == sha


@pytest.mark.parametrize("kind", ["img_clf", "img_seg"])
def test_report_has_cluster_intervals_and_paired_differences(
    kind: str, fixed: dict[str, Any], tmp_path: Path
) -> None:
    """The same model as challenger and champion: every paired difference is exactly 0 while
    each model's own interval is not; images, clusters and the copy left out are counted."""
    case = fixed[kind]
    test = load_test_set(case["store"], DATASET, CLUSTERED)
    champion = Contender("champion", "r0", *[getattr(case["contender"], f) for f in
                         ("image", "artifact_uri", "artifact_sha256", "labels")])  # fmt: skip
    report, uri = evaluate_contenders("r1", case["contender"], champion, test, case["store"],
                                      LocalServer(), tmp_path,
                                      progress=ProgressLog(logging.getLogger("t")))  # fmt: skip
    images = len(test.examples)
    assert report["testExamplesLeftOut"] == 1 and report["leftOutExampleIds"] == [test.left_out[0]]
    assert report["testClusters"] == test.clusters == (images + 1 + 3) // 4
    assert report["resampling"]["clusters"] == test.clusters and report["clusterField"] == "cluster"
    headline = "logLoss" if kind == "img_clf" else "meanDice"
    for role in ("challenger", "champion"):
        part = report[role]
        assert part["intervals"]["images"] == images
        assert part["intervals"]["clusters"] == test.clusters
        found = part["intervals"]["metrics"][headline]
        assert found["value"] == pytest.approx(part["metrics"][headline])
        assert found["low"] < found["high"]
    difference = report["differences"][headline]
    assert difference == {"value": 0.0, "low": 0.0, "high": 0.0}
    assert uri.endswith("runs/r1/evaluation/report.json")
