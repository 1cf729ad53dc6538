"""Predictions of a model's deployed champion for an example (by id) or for image bytes.

imgClf answers per label `{index, value, confidence, name}` (value: whether it is the
predicted label, as in the reference API; name: the label's name), highest confidence first.
The predicted label is the one at the champion's operating point, the threshold stored with its
run (`evaluation.operating_point`): the positive label when its confidence is at least the
threshold, else the most confident other label; without a stored point, the most confident
label. `operatingPoint` says which rule, threshold and label decided. imgSeg answers a mask
(base64 PNG, pixel = label index) with its size.

With `test_example=True` and neither an example id nor image bytes (the reference SDK's
`predict(model_id)` sends no parameter), the example is the first, in id order, of the test
split of the dataset's latest snapshot: an image no champion trained on.

Every answered prediction is recorded in the prediction log (`services.prediction_log`: the
image's sha256 and statistics and the output, never the image or the example id) for the
model's monitoring, with the subgroup attributes `monitoring.subgroups` names (site,
manufacturer): the caller's, else the example's from the snapshot manifest.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from sqlalchemy import Engine

from patient_ml.db.engine import session_scope
from patient_ml.db.models import Dataset, Model, Run
from patient_ml.db.require import present
from patient_ml.evaluation.operating_point import ARGMAX, stored
from patient_ml.exceptions import NotFoundError, PatientMLError
from patient_ml.monitoring.image_stats import image_statistics
from patient_ml.services import prediction_log
from patient_ml.services.common import get_by_id_or_name
from patient_ml.services.endpoints import champion_endpoint
from patient_ml.services.monitoring import settings_of
from patient_ml.services.monitoring_subgroups import served_attributes
from patient_ml.services.snapshots import list_snapshots
from patient_ml.serving.client import invoke
from patient_ml.storage import ArtifactStore
from patient_ml.training.channels import iter_manifest, manifest_key, snapshot_prefix

if TYPE_CHECKING:
    from patient_ml.evaluation.operating_point import OperatingPoint

log = logging.getLogger("patient_ml.predictions")

MAX_IMAGE_BYTES = 50_000_000


def example_entry(
    store: ArtifactStore, dataset_id: str, snapshot_id: str, example_id: str
) -> dict[str, Any]:
    """The manifest entry of an example with an image (its key, label, attributes)."""
    for entry in iter_manifest(store, manifest_key(dataset_id, snapshot_id)):
        if entry.get("id") == example_id and "image" in entry:
            return dict(entry)
    raise NotFoundError(
        f"Example {example_id!r} is not in the latest snapshot ({snapshot_id[:12]}) of the "
        "model's dataset.",
        fix="use an example id listed by the examples API, or send the image bytes",
    )


def first_test_example(store: ArtifactStore, dataset_id: str, snapshot_id: str) -> str:
    """The first example id (in id order) of the snapshot's test split."""
    ids = [
        str(entry["id"])
        for entry in iter_manifest(store, manifest_key(dataset_id, snapshot_id))
        if entry.get("split") == "test" and "image" in entry and entry.get("id")
    ]
    if not ids:
        raise NotFoundError(
            f"The latest snapshot ({snapshot_id[:12]}) of the model's dataset has no test "
            "example to predict.",
            fix="pass exampleId=<an example id listed by the examples API>",
        )
    return min(ids)


def predict(
    engine: Engine,
    store: ArtifactStore,
    model_ref: str,
    *,
    example_id: str | None = None,
    image: bytes | None = None,
    test_example: bool = False,
    log: bool = True,
    attributes: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """The champion's prediction (see the module docstring), recorded in the prediction log
    (`log=False`: not recorded, for labelling hints that are no real traffic) with the
    subgroup attributes it was served for: `attributes` (e.g. `{"site": "North"}`, from the
    caller), else the example's own; only those the model's `monitoring.subgroups` names."""
    served: dict[str, Any] = {"attributes": attributes}
    result = _predict(
        engine,
        store,
        model_ref,
        example_id=example_id,
        image=image,
        served=served,
        test_example=test_example,
    )
    if log:
        _log_prediction(engine, result, served)
    return result


def _log_prediction(engine: Engine, result: dict[str, Any], served: dict[str, Any]) -> None:
    """Best effort: a prediction is answered even when its log row cannot be written."""
    try:
        statistics = image_statistics(served["image"])
        output = prediction_log.output_summary(result["problemType"], result)
        with session_scope(engine) as session:
            prediction_log.record_prediction(
                session,
                model_id=result["modelId"],
                run_id=result["runId"],
                statistics=statistics,
                output=output,
                latency_ms=served.get("latencyMs"),
                attributes=served_attributes(
                    served.get("subgroups") or (),
                    served.get("attributes"),
                    served.get("exampleAttributes"),
                ),
            )
    except Exception as exc:
        log.warning("the prediction of model %s was not logged: %s", result.get("modelId"),
                    type(exc).__name__)  # fmt: skip


def _predict(
    engine: Engine,
    store: ArtifactStore,
    model_ref: str,
    *,
    example_id: str | None,
    image: bytes | None,
    served: dict[str, Any],
    test_example: bool = False,
) -> dict[str, Any]:
    if test_example and example_id is None and image is None:
        pass  # the first test example of the latest snapshot (below)
    elif (example_id is None) == (image is None):
        raise PatientMLError(
            "A prediction needs exactly one of an example id and image bytes.",
            fix="pass --example ID or --image FILE",
        )
    if image is not None and not 0 < len(image) <= MAX_IMAGE_BYTES:
        raise PatientMLError(
            f"The image has {len(image)} bytes; it must have 1 to {MAX_IMAGE_BYTES}.",
            fix="send one PNG, JPEG or DICOM-converted image",
        )
    with session_scope(engine) as session:
        model = get_by_id_or_name(session, Model, model_ref)
        endpoint = champion_endpoint(session, model.id)
        run = session.get(Run, endpoint.run_id)
        dataset = session.get(Dataset, model.dataset_id)
        run = present(run, f"run {endpoint.run_id} of the champion endpoint")
        dataset = present(dataset, f"dataset of model {model.id}")
        labels = {
            int(x["index"]): x["name"]
            for x in run.config["problemDefinition"]["labelDefinition"]["labels"]
            if x.get("index") is not None
        }
        problem_type = run.config["problemDefinition"]["problemType"]
        point = stored(run.operating_point) or ARGMAX
        snapshots = list_snapshots(session, dataset.id)
        url, run_id, dataset_id = endpoint.url, run.id, dataset.id
        served["subgroups"] = list(settings_of(model).subgroups)
    if image is None:
        if not snapshots:
            raise NotFoundError(
                f"Dataset {dataset_id} has no snapshot, so example {example_id!r} is unknown.",
                fix="curate the dataset first, or send the image bytes",
            )
        if example_id is None:
            example_id = first_test_example(store, dataset_id, snapshots[-1].id)
        entry = example_entry(store, dataset_id, snapshots[-1].id, example_id)
        image = store.read_bytes(f"{snapshot_prefix(dataset_id)}/{entry['image']['key']}")
        served["exampleAttributes"] = entry.get("attributes")
    image, url = present(image, "example image"), present(url, "champion endpoint URL")
    started = time.perf_counter()
    answer = invoke(url, image)
    served.update(image=image, latencyMs=(time.perf_counter() - started) * 1000)
    result: dict[str, Any] = {"modelId": model.id, "runId": run_id, "problemType": problem_type}
    if example_id is not None:
        result["exampleId"] = example_id
    result.update(answer_fields(problem_type, labels, point, answer, url))
    return result


def answer_fields(
    problem_type: str, labels: Mapping[int, str], point: OperatingPoint, answer: object, url: str
) -> dict[str, Any]:
    """A model server's answer for one image as the prediction's fields: imgSeg `mask`,
    `width`, `height`; imgClf `predictions` (highest confidence first, `value` true for the
    label decided at the operating point `point`) and `operatingPoint`. An answer outside the
    serving contract raises PatientMLError naming the endpoint."""
    if problem_type == "imgSeg":
        if not isinstance(answer, dict) or "mask" not in answer:
            raise _bad_answer(url)
        return {"mask": answer["mask"], "width": answer.get("width"),
                "height": answer.get("height")}  # fmt: skip
    items = answer.get("predictions") if isinstance(answer, dict) else answer
    if not isinstance(items, list):
        raise _bad_answer(url)
    try:
        predictions: list[dict[str, Any]] = sorted(
            (
                {
                    "index": int(item["index"]),
                    "name": labels.get(int(item["index"])),
                    "confidence": float(item["confidence"]),
                }
                for item in items
            ),
            key=lambda p: -p["confidence"],
        )
    except (KeyError, TypeError, ValueError):
        raise _bad_answer(url) from None
    known = {p["index"]: p["confidence"] for p in predictions if p["index"] in labels}
    decided = point.decide_one(known) if known else None
    for prediction in predictions:
        prediction["value"] = prediction["index"] == decided  # one label per image
    return {
        "predictions": predictions,
        "operatingPoint": {
            **{
                k: v for k, v in point.wire().items() if k in ("rule", "positiveLabel", "threshold")
            },
            "label": decided,
            "name": labels.get(decided) if decided is not None else None,
        },
    }


def _bad_answer(url: str) -> PatientMLError:
    return PatientMLError(
        f"The endpoint at {url} answered outside the serving contract.",
        fix='answer {"predictions": [{"index", "confidence"}]} (imgClf) or {"mask", "width", '
        '"height"} (imgSeg), as the container contract says (docs/training.md)',
    )
