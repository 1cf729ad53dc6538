"""Failure cases: the most confident errors at the operating point, with occlusion maps through
the real `serve` of the reference classifier, its Grad-CAM through the optional route, and the
deletion-AUC faithfulness of each against random orders."""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
from PIL import Image

from patient_ml.evaluation.evaluate import Contender, evaluate_model, load_test_set
from patient_ml.evaluation.failure_cases import (
    compute_failure_cases,
    picture_key,
    select,
)
from patient_ml.evaluation.operating_point import OperatingPoint
from patient_ml.evaluation.saliency import (
    Pixels,
    SaliencyOptions,
    cells,
    deletion_auc,
    deletion_steps,
    order_of,
    per_cell,
)
from patient_ml.services.evaluations import failure_cases_summary
from patient_ml.serving.client import explain, invoke_batch
from patient_ml.serving.servers import LocalServer
from patient_ml.storage import LocalArtifactStore
from patient_ml.training.backends.base import TrainingJob
from patient_ml.training.backends.local import LocalBackend
from patient_ml.training.contract import JobLayout
from patient_ml.training.metrics import MetricParser
from patient_ml.training.tuning import pack_model
from tests.evaluation.test_serve_and_score import trainer_module
from tests.trainers.test_trainers import CLF_PROBLEM, blob_image, clf_channel, encode

HPS = {"epochs": "6", "image_size": "64", "batch_size": "16", "width": "8", "seed": "3"}
DATASET, SNAPSHOT = "ds-fail", "snap-fail"
LABELS = ((0, "no_blob"), (1, "blob"))
POINT = OperatingPoint.model_validate(
    {"rule": "youden", "positiveLabel": {"index": 1, "name": "blob"}, "threshold": 0.5}
)


# --- selection and the faithfulness arithmetic --------------------------------------------


def test_select_keeps_the_most_confident_errors_per_true_label_at_the_threshold() -> None:
    # rows: (truth, p(blob)); threshold 0.3 on blob: p >= 0.3 is called blob
    rows = [(1, 0.05), (1, 0.25), (1, 0.9), (1, 0.29), (0, 0.31), (0, 0.95), (0, 0.1), (0, 0.6)]
    point = POINT.model_copy(update={"threshold": 0.3})
    truths = [t for t, _ in rows]
    answers = [[1 - p, p] for _, p in rows]
    chosen = select(truths, answers, [0, 1], point, per_class=2)
    # false negatives (truth blob, p < 0.3): most confident = lowest p(blob): rows 0 then 1
    assert [c.row for c in chosen[1]] == [0, 1]
    assert chosen[1][0].confidence == pytest.approx(0.95)
    # false positives (truth no_blob, p >= 0.3): rows 5 (0.95) then 7 (0.6); 4 (0.31) cut by k
    assert [c.row for c in chosen[0]] == [5, 7]
    # argmax instead of the threshold: row 4 (0.31) is no error, row 3 (0.29) is one
    argmax = select(truths, answers, [0, 1], None, per_class=10)
    assert [c.row for c in argmax[1]] == [0, 1, 3]
    assert [c.row for c in argmax[0]] == [5, 7]


def test_select_keeps_one_error_per_cluster() -> None:
    """Copies of one slice (one cluster) make the same error: the gallery shows it once."""
    truths = [0, 0, 0, 0]
    answers = [[0.1, 0.9], [0.12, 0.88], [0.3, 0.7], [0.2, 0.8]]
    chosen = select(truths, answers, [0, 1], None, 3, clusters=["a", "a", "b", "a"])
    assert [c.row for c in chosen[0]] == [0, 2]
    assert [c.row for c in select(truths, answers, [0, 1], None, 3)[0]] == [0, 1, 3]


def test_large_images_are_scaled_down_first() -> None:
    big = Pixels.of(encode(np.random.default_rng(0).random((600, 300))), max_side=256)
    assert (big.height, big.width) == (256, 128) and big.mode == "L"
    deep = np.random.default_rng(1).integers(0, 65535, (512, 512)).astype(np.uint16)
    buffer = io.BytesIO()
    Image.fromarray(deep).save(buffer, format="PNG")
    scaled = Pixels.of(buffer.getvalue(), max_side=64)
    assert scaled.array.shape == (64, 64) and scaled.array.dtype == np.uint16
    assert Pixels.of(scaled.encode(scaled.array)).mode == "I;16"
    small = Pixels.of(encode(np.zeros((32, 40))), max_side=256)
    assert (small.height, small.width) == (32, 40)


def test_select_three_labels_one_vs_rest() -> None:
    truths = [0, 1, 2, 2]
    answers = [[0.1, 0.8, 0.1], [0.2, 0.7, 0.1], [0.6, 0.3, 0.1], [0.1, 0.1, 0.8]]
    chosen = select(truths, answers, [0, 1, 2], None, per_class=4)
    assert [(c.row, c.decided_position) for c in chosen[0]] == [(0, 1)]
    assert chosen[1] == []
    assert [(c.row, c.decided_position) for c in chosen[2]] == [(2, 0)]


def test_deletion_auc_and_orders() -> None:
    assert deletion_auc([1.0, 0.0, 0.0]) == pytest.approx(0.25)
    assert deletion_auc([1.0, 1.0, 1.0]) == pytest.approx(1.0)
    assert deletion_steps([3, 1, 2, 0], 2) == [[3, 1], [3, 1, 2, 0]]
    assert order_of(np.array([[0.1, 0.5], [0.3, 0.5]])) == [1, 3, 2, 0]
    mesh = cells(10, 7, 2)
    assert len(mesh) == 4 and mesh[3] == (slice(5, 10), slice(4, 7))
    coarse = np.array([[0.0, 1.0], [0.0, 0.0]])
    fine = per_cell(coarse, 4)
    assert fine.shape == (4, 4) and fine[0, 3] == fine.max() and fine[3, 0] == fine.min()
    with pytest.raises(ValueError, match="grid=1"):
        SaliencyOptions(grid=1)


# --- through the reference classifier's serve -------------------------------------------


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A trained blob detector, and a test split whose labels are wrong for some images."""
    root = tmp_path_factory.mktemp("failure-cases")
    layout = JobLayout(root / "job").create()
    for channel, seed in (("train", 1), ("validation", 2)):
        clf_channel(layout.channel(channel), per_class=24, seed=seed)
    layout.write_config(HPS, CLF_PROBLEM)
    result = LocalBackend().run(
        TrainingJob(name="failures", layout=layout, image="patient-ml/img-clf-trainer:0.1.0",
                    metric_parser=MetricParser([]), timeout_seconds=300)
    )  # fmt: skip
    assert result.succeeded, result.failure
    store = LocalArtifactStore(root / "artifacts")
    rng = np.random.default_rng(11)
    lines = [orjson.dumps({"problemType": "imgClf", "labels": CLF_PROBLEM["labels"]})]
    truths = {}
    for n in range(16):
        blob = n % 2 == 1
        wrong = n in (0, 1, 2, 3, 5)  # these are labelled as the other label
        label = int(blob) ^ int(wrong)
        key = f"images/t{n}.png"
        store.put_bytes(f"datasets/{DATASET}/{key}", encode(blob_image(rng, blob)))
        truths[f"doc-{n}"] = label
        entry = {"id": f"doc-{n}", "split": "test", "image": {"key": key}}
        lines.append(orjson.dumps({**entry, "label": {"status": "confirmed", "classes": [label]}}))
    store.put_bytes(f"datasets/{DATASET}/snapshots/{SNAPSHOT}/manifest.jsonl",
                    b"\n".join(lines) + b"\n")  # fmt: skip
    packed = root / "model.tar.gz"
    sha = pack_model(layout.model_dir, packed)
    store.put_file("runs/r1/model.tar.gz", packed)
    who = Contender("challenger", "r1", "patient-ml/img-clf-trainer:0.1.0",
                    store.uri("runs/r1/model.tar.gz"), sha, (0, 1))  # fmt: skip
    return {"store": store, "contender": who, "model_dir": layout.model_dir, "truths": truths}


def test_evaluation_explains_the_most_confident_errors(
    served: dict[str, Any], tmp_path: Path
) -> None:
    store = served["store"]
    test = load_test_set(store, DATASET, SNAPSHOT)
    scored = evaluate_model(
        served["contender"], test, store, LocalServer(), tmp_path, name="t-fail", failure_cases=2
    )
    section = scored.failure_cases
    assert section is not None
    point = OperatingPoint.model_validate(scored.result["metrics"]["operatingPoint"])
    answers = {a["id"]: a["confidences"] for a in scored.result["answers"]}
    # every case is an error at the run's operating point, most confident first per label
    by_label: dict[int, list[float]] = {}
    for case in section["cases"]:
        confidences = {int(k): v for k, v in answers[case["exampleId"]].items()}
        assert point.decide_one(confidences) == case["predictedLabel"]["index"]
        assert served["truths"][case["exampleId"]] == case["trueLabel"]["index"]
        assert case["predictedLabel"]["index"] != case["trueLabel"]["index"]
        by_label.setdefault(case["trueLabel"]["index"], []).append(case["confidence"])
    assert section["cases"], "the mislabelled images give errors"
    for values in by_label.values():
        assert len(values) <= 2 and values == sorted(values, reverse=True)
    shown = {c["trueLabel"]["index"]: c["shown"] for c in section["classes"]}
    assert shown == {t: len(v) for t, v in by_label.items()} | {
        t: 0 for t in shown if t not in by_label
    }
    # both maps, through the container: occlusion and its Grad-CAM
    assert section["methods"] == ["occlusion", "grad-cam"] and section["containerMap"]
    differences = []
    for case in section["cases"]:
        assert "mapsError" not in case
        assert set(case["maps"]) == {"occlusion", "grad-cam"}
        for name in ("image", "occlusion", "grad-cam"):
            picture = Image.open(
                io.BytesIO(store.read_bytes(picture_key("r1", case["case"], name)))
            )
            assert max(picture.size) == 192
        faith = case["maps"]["occlusion"]["faithfulness"]
        assert len(faith["curve"]) == 17 and faith["curve"][0] == pytest.approx(case["probability"])
        differences.append(faith["difference"])
    # on a blob detector, hiding what occlusion marks first lowers the probability faster
    # than hiding random cells
    assert np.mean(differences) > 0.05, differences
    cost = section["cost"]
    assert cost["images"] == len(section["cases"]) * (65 + 16 * (2 + 3))
    assert cost["requests"] >= cost["images"] / 64
    assert cost["seconds"] > 0 and cost["evaluationSeconds"] == scored.result["seconds"]
    # the run summary drops grids and curves and has no storage path
    summary = failure_cases_summary(section)
    text = json.dumps(summary)
    assert "curve" not in text and '"grid": [[' not in text
    assert str(store.uri("")) not in text and "failure-cases/" not in text


def test_grad_cam_of_the_reference_classifier_marks_the_blob(served: dict[str, Any]) -> None:
    model = trainer_module("img_clf").Classifier(served["model_dir"])
    rng = np.random.default_rng(5)
    image = blob_image(rng, False)
    yy, xx = np.mgrid[:32, :32]
    image += 0.6 * np.exp(-((yy - 8) ** 2 + (xx - 24) ** 2) / (2 * 3.0**2))  # top right
    answer = model.explain(encode(image), 1)
    values = np.asarray(answer["values"])
    assert answer["method"] == "grad-cam" and values.shape == (4, 4)
    quarters = per_cell(values, 2)
    assert quarters.argmax() == 1, values  # the top-right quarter
    with pytest.raises(Exception, match="label index 7"):
        model.explain(encode(image), 7)


def test_a_container_without_the_optional_route_gets_occlusion_only(
    served: dict[str, Any], tmp_path: Path
) -> None:
    """The platform asks /explanations, gets 404 from a server without it, and goes on."""
    store = served["store"]
    test = load_test_set(store, DATASET, SNAPSHOT)
    server = LocalServer()
    model_dir = tmp_path / "model"
    shutil.copytree(served["model_dir"], model_dir)
    handle = server.start(name="t-no-explain", image="patient-ml/img-clf-trainer:0.1.0",
                          model_dir=model_dir)  # fmt: skip
    try:
        data = store.read_bytes(f"datasets/{DATASET}/{test.examples[0].image_key}")
        assert explain(handle.url, data, 1) is not None  # the reference container offers it
        calls: list[int] = []

        def no_route(data: bytes, index: int) -> dict[str, Any] | None:
            calls.append(index)
            return explain(handle.url.rstrip("/") + "/no-such-prefix", data, index)

        def probabilities(images: list[bytes]) -> np.ndarray:
            rows = [[c["confidence"] for c in a] for a in invoke_batch(handle.url, images)]
            return np.asarray(rows)

        answers = [probabilities([store.read_bytes(f"datasets/{DATASET}/{e.image_key}")])[0]
                   for e in test.examples]  # fmt: skip
        section = compute_failure_cases(
            "r2",
            example_ids=[e.id for e in test.examples],
            truths=[int(e.label) for e in test.examples if e.label is not None],
            answers=[list(a) for a in answers],
            labels=LABELS,
            point=None,
            read_image=lambda row: store.read_bytes(
                f"datasets/{DATASET}/{test.examples[row].image_key}"
            ),
            probabilities=probabilities,
            explainer=no_route,
            store=store,
            per_class=1,
        )
    finally:
        server.stop(handle.handle)
    assert section["methods"] == ["occlusion"] and not section["containerMap"]
    assert len(calls) == 1  # asked once; not again after the 404
    for case in section["cases"]:
        assert set(case["maps"]) == {"occlusion"}
        assert store.exists(picture_key("r2", case["case"], "occlusion"))
        assert not store.exists(picture_key("r2", case["case"], "grad-cam"))


def test_the_docker_container_gives_the_same_maps(
    served: dict[str, Any], tmp_path: Path, docker_engine: Any
) -> None:
    """The reference image in Docker (Debian's PyTorch) answers the batches and the optional
    route as the host process does: the same cases, both maps, occlusion scores alike."""
    from patient_ml.serving.servers import DockerServer
    from tests.docker_engine import build_trainer_image

    build_trainer_image(docker_engine, "img_clf", "patient-ml/img-clf-trainer:0.1.0")
    store = served["store"]
    test = load_test_set(store, DATASET, SNAPSHOT)
    found = {}
    for kind, server in (("local", LocalServer()), ("docker", DockerServer())):
        scored = evaluate_model(served["contender"], test, store, server, tmp_path / kind,
                                name=f"t-fail-{kind}", failure_cases=1)  # fmt: skip
        assert scored.failure_cases is not None
        found[kind] = scored.failure_cases
    assert found["docker"]["methods"] == ["occlusion", "grad-cam"]
    local, docker = found["local"]["cases"], found["docker"]["cases"]
    assert [c["exampleId"] for c in docker] == [c["exampleId"] for c in local]
    for a, b in zip(local, docker, strict=True):
        # PyTorch 1.13 (Debian) and 2.13 (the venv): close, not bit-identical
        assert b["confidence"] == pytest.approx(a["confidence"], abs=0.02)
        ours, theirs = (
            a["maps"]["occlusion"]["faithfulness"],
            b["maps"]["occlusion"]["faithfulness"],
        )
        assert theirs["deletionAuc"] == pytest.approx(ours["deletionAuc"], abs=0.05)
