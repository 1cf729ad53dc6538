"""Labelling in the browser (Debian's Chromium driven by Playwright) on the real Airflow API
server of the shared deployment: a clinician labels a classification example with the keyboard
alone; two labellers save one example and the second is refused; a brush stroke and an eraser
stroke drawn on the canvas are saved and the stored mask's pixels carry the label indices; the
deployed champion's predicted mask is accepted as a starting point and saved only when the
labeller saves it. Screenshots of each mode go to test-screenshots/ (PATIENT_ML_SCREENSHOTS).

The segmentation champion is a real model: the reference segmenter trained by the local backend
and served by a real `serve` process (LocalServer), registered as the model's champion in the
product DB (the approval pipeline itself is covered by test_web_ui.py and the pipeline tests).
"""

from __future__ import annotations

import base64
import io
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
from PIL import Image

from patient_ml.curation.fetch import FetchPolicy, ImageFetcher
from patient_ml.db.engine import session_scope
from patient_ml.db.models import Endpoint, Model
from patient_ml.labels import masks
from patient_ml.labels.sinks import LABELS_FILE
from tests.e2e.conftest import E2EDeployment, register_cohort_model
from tests.e2e.test_web_ui import _login, _shot, browser  # noqa: F401 (the fixture)

playwright_api = pytest.importorskip("playwright.sync_api")
expect = playwright_api.expect

CLF_MODEL = "e2e-label-classifier"
SEG_MODEL = "e2e-label-segmenter"
SEG_IMAGE = "patient-ml/img-seg-trainer:0.1.0"  # the reference segmenter (local backend)


def _dag_id(model: str) -> str:
    return "patient_ml__" + model.replace("-", "_")


@pytest.fixture(scope="module")
def clf_model(airflow_deployment: E2EDeployment) -> dict[str, Any]:
    model_id = register_cohort_model(
        airflow_deployment, dataset="e2e-label-dataset", salt="lab001", model=CLF_MODEL,
        approvers=["admin"],
    )  # fmt: skip
    with session_scope(airflow_deployment.engine) as session:
        model = session.get(Model, model_id)
        assert model is not None
        return {"model_id": model_id, "dataset_id": model.dataset_id}


@pytest.fixture(scope="module")
def seg_model(airflow_deployment: E2EDeployment, tmp_path_factory: Any) -> Iterator[dict[str, Any]]:
    """An imgSeg dataset of synthetic disk images (48 x 48) as NDJSON, its model, and a
    champion: the reference segmenter trained on images like them, served by a local process."""
    from patient_ml.services.datasets import create_dataset
    from patient_ml.services.models import create_model
    from patient_ml.services.runs import create_run
    from patient_ml.serving.servers import LocalServer
    from patient_ml.training.backends.base import TrainingJob
    from patient_ml.training.backends.local import LocalBackend
    from patient_ml.training.contract import JobLayout
    from patient_ml.training.metrics import MetricParser
    from tests.curation.cohort import Cohort, dataset_config
    from tests.operators.lifecycle import model_config
    from tests.trainers.test_trainers import SEG_HPS, SEG_PROBLEM, disk_image, encode, seg_channel

    d = airflow_deployment
    root = tmp_path_factory.mktemp("seg-labeling")
    layout = JobLayout(root / "job").create()
    for channel, seed in (("train", 1), ("validation", 2)):
        seg_channel(layout.channel(channel), count=8, seed=seed)
    layout.write_config(SEG_HPS, SEG_PROBLEM)
    trained = LocalBackend().run(
        TrainingJob(name="e2e-seg-hint", layout=layout, image=SEG_IMAGE,
                    metric_parser=MetricParser([]), timeout_seconds=300)
    )  # fmt: skip
    assert trained.succeeded, trained.failure

    cohort = Cohort(d.sources / "seg-label-cohort", "seglab", "urn:test:e2e-seg-label")
    rng = np.random.default_rng(11)
    for n in range(4):
        image, _ = disk_image(rng, disks=2)
        cohort.doc(f"seg-{n}", f"sp{n}", data=encode(image))
    folder = cohort.write_ndjson(d.root / "seg-label-ndjson")
    server = LocalServer()
    handle = server.start(name="e2e-seg-hint", image=SEG_IMAGE, model_dir=layout.model_dir)
    try:
        with session_scope(d.engine) as session:
            config = dataset_config("e2e-seg-label", "seglab", maxImagePixels=100_000,
                                    maxImageBytes=100_000)  # fmt: skip
            config["source"] = {"type": "ndjson", "uri": str(folder)}
            config["problemDefinition"] = {
                **config["problemDefinition"],
                "problemType": "imgSeg",
                "labelDefinition": {"labels": [{"name": "disk"}, {"name": "membrane"}]},
            }
            dataset = create_dataset(session, config, actor="e2e")
            mconfig = model_config(SEG_MODEL, dataset.id)
            mconfig["trainingApproach"]["metricDefinitions"] = []
            mconfig["trainingApproach"]["objective"] = {"metric": "meanDice",
                                                        "direction": "maximize"}  # fmt: skip
            mconfig["trainingApproach"]["searchSpace"] = []
            model = create_model(session, mconfig, actor="e2e")
            run = create_run(session, model.id, actor="e2e")
            run.status = "succeeded"
            endpoint = Endpoint(model_id=model.id, run_id=run.id, kind="local", url=handle.url,
                                handle=handle.handle, status="healthy")  # fmt: skip
            session.add(endpoint)
            model.champion_id = run.id
            labels = {
                lbl["name"]: lbl for lbl in dataset.problem_definition["labelDefinition"]["labels"]
            }
            out = {"model_id": model.id, "dataset_id": dataset.id, "labels": labels,
                   "folder": folder, "images": cohort.images}  # fmt: skip
        yield out
    finally:
        server.stop(handle.handle)


def _open_examples(chromium: Any, d: E2EDeployment, model_id: str, **context: Any) -> Any:
    page = _login(chromium, d, "admin", **context)
    page.set_default_navigation_timeout(120_000)  # a busy shared machine
    page.goto(f"{d.stack.url}/")  # Airflow's own redirect after signing in, done first
    page.wait_for_load_state()
    target = f"{d.stack.url}/patient-ml-ui/?view=model&modelId={model_id}&tab=examples"
    for attempt in range(3):
        try:
            page.goto(target)
            break
        except playwright_api.Error as exc:  # a late navigation of Airflow's page
            if "interrupted" not in str(exc) or attempt == 2:
                raise
            page.wait_for_load_state()
    expect(page.get_by_test_id("examples-tab")).to_be_visible(timeout=30_000)
    return page


def _stored(folder: Path, example_id: str) -> list[dict[str, Any]]:
    """The label Observations written for the example (every version, in order)."""
    lines = [orjson.loads(x) for x in (folder / LABELS_FILE).read_bytes().splitlines()]
    return [o for o in lines if o["focus"] == [{"reference": f"DocumentReference/{example_id}"}]]


def test_classification_by_keyboard_and_a_concurrent_save(
    browser: Any,  # noqa: F811
    airflow_deployment: E2EDeployment,
    clf_model: dict[str, Any],
) -> None:
    d = airflow_deployment
    page = _open_examples(browser, d, clf_model["model_id"])
    tiles = page.get_by_test_id("example-tile")
    expect(tiles.first).to_be_visible()
    unlabeled = page.get_by_test_id("status-unlabeled")
    before = int(re.findall(r"[\d,]+", unlabeled.inner_text())[-1].replace(",", ""))
    first_id = tiles.first.get_attribute("data-example-id")
    _shot(page, "labeling-grid")

    # Keyboard only: Enter opens the selected tile, 2 picks the 2nd label, Enter confirms and
    # the next unlabelled example opens.
    page.locator("body").press("Enter")
    title = page.get_by_test_id("example-title")
    expect(title).to_have_text(first_id)
    page.keyboard.press("2")
    expect(
        page.get_by_test_id("label-choices").get_by_role("button", pressed=True)
    ).to_contain_text("positive")
    _shot(page, "labeling-classification")
    page.keyboard.press("Enter")
    expect(title).not_to_have_text(first_id, timeout=30_000)
    second_id = title.inner_text()
    folder = Path(_source_folder(d, clf_model["dataset_id"]))
    [saved] = _stored(folder, first_id)
    assert saved["status"] == "final" and saved["performer"] == [{"display": "admin"}]
    assert saved["valueCodeableConcept"]["coding"][0]["code"] == "1"

    # Another labeller saves the example now open; this page's save is refused, nothing lost.
    other = d.api.request(
        "PUT",
        f"/v1/patient-ml/datasets/{clf_model['dataset_id']}/examples/{second_id}/label",
        {"labelType": "imgClf", "classes": [0], "isConfirmed": True},
    )
    assert other["label"]["classes"] == [0]
    page.keyboard.press("2")
    page.keyboard.press("d")  # save as draft
    alert = page.get_by_role("alert").filter(has_text="meanwhile")
    expect(alert).to_contain_text("Someone else saved this example meanwhile")
    expect(alert).to_contain_text("your label was not saved")
    _shot(page, "labeling-conflict")
    stored = _stored(folder, second_id)
    assert [o["valueCodeableConcept"]["coding"][0]["code"] for o in stored] == ["0"]
    # Reloaded, the page shows the other save in the history, and may replace it knowingly.
    page.get_by_role("button", name="Show the current label").click()
    expect(page.get_by_test_id("label-history")).to_contain_text("confirmed")
    page.keyboard.press("2")
    page.keyboard.press("d")
    expect(title).not_to_have_text(second_id, timeout=30_000)
    assert [o["status"] for o in _stored(folder, second_id)] == ["final", "preliminary"]

    page.locator("body").press("Escape")
    expect(page.get_by_test_id("status-unlabeled")).to_contain_text(str(before - 2))
    page.context.close()


def _source_folder(d: E2EDeployment, dataset_id: str) -> str:
    from patient_ml.db.models import Dataset

    with session_scope(d.engine) as session:
        dataset = session.get(Dataset, dataset_id)
        assert dataset is not None
        return str(dataset.source["uri"])


def _to_screen(canvas: Any, x: float, y: float) -> tuple[float, float]:
    """Page coordinates of image pixel (x, y) in the labelling canvas (its view transform)."""
    box = canvas.bounding_box()
    scale = float(canvas.get_attribute("data-scale"))
    ox, oy = (
        float(canvas.get_attribute("data-offset-x")),
        float(canvas.get_attribute("data-offset-y")),
    )
    return box["x"] + ox + x * scale, box["y"] + oy + y * scale


def _stroke(page: Any, canvas: Any, points: list[tuple[float, float]]) -> None:
    page.mouse.move(*_to_screen(canvas, *points[0]))
    page.mouse.down()
    for point in points[1:]:
        page.mouse.move(*_to_screen(canvas, *point), steps=8)
    page.mouse.up()


def _mask_of(d: E2EDeployment, seg: dict[str, Any], example_id: str) -> np.ndarray:
    [*_, newest] = _stored(Path(seg["folder"]), example_id)
    fetcher = ImageFetcher(FetchPolicy(allowed_file_roots=(seg["images"],)))
    attachment = newest["extension"][0]["valueAttachment"]
    return masks.read_png(bytes(fetcher.fetch(attachment)))


def test_segmentation_brush_eraser_and_a_predicted_mask(
    browser: Any,  # noqa: F811
    airflow_deployment: E2EDeployment,
    seg_model: dict[str, Any],
) -> None:
    d = airflow_deployment
    disk, membrane = seg_model["labels"]["disk"]["index"], seg_model["labels"]["membrane"]["index"]
    page = _open_examples(browser, d, seg_model["model_id"])
    page.get_by_test_id("example-tile").first.click()
    title = page.get_by_test_id("example-title")
    expect(title).to_have_text("seg-0")
    canvas = page.get_by_test_id("label-canvas")
    # The champion's hint is hidden until asked for (it would anchor the reader).
    expect(page.get_by_test_id("accept-hint")).to_have_count(0)
    page.get_by_test_id("toggle-hint").click()
    expect(page.get_by_test_id("accept-hint")).to_be_visible(timeout=60_000)  # the champion's

    # Brush of radius 3 (one step down from 5), label 1 (disk) along row 10.
    page.keyboard.press("[")
    page.keyboard.press("1")
    _stroke(page, canvas, [(8, 10), (30, 10)])
    page.keyboard.press("2")  # membrane
    _stroke(page, canvas, [(40, 36), (41, 36)])
    page.keyboard.press("e")  # eraser across the disk stroke's middle
    _stroke(page, canvas, [(19, 4), (19, 16)])
    page.keyboard.press("Control+z")  # undo the erase ...
    page.keyboard.press("Control+Shift+z")  # ... and redo it
    _shot(page, "labeling-segmentation")
    page.get_by_test_id("save-confirmed").click()
    expect(title).not_to_have_text("seg-0", timeout=30_000)

    pixels = _mask_of(d, seg_model, "seg-0")
    assert pixels.shape == (48, 48)
    assert pixels[10, 10] == disk and pixels[10, 28] == disk  # the brush stroke
    assert pixels[10, 19] == 0  # erased
    assert pixels[36, 40] == membrane
    assert pixels[0, 0] == 0 and pixels[47, 47] == 0
    assert set(np.unique(pixels).tolist()) == {0, disk, membrane}
    assert pixels[30, 5] == 0  # nothing painted there

    # The champion's predicted mask: shown as a hint, saved only when accepted and saved.
    expect(title).to_have_text("seg-1")
    page.get_by_test_id("toggle-hint").click()
    expect(page.get_by_test_id("accept-hint")).to_be_visible(timeout=60_000)
    hint = d.api.get(
        f"/v1/patient-ml/datasets/{seg_model['dataset_id']}/examples/seg-1/hint"
        f"?modelId={seg_model['model_id']}"
    )["hint"]
    predicted = np.asarray(Image.open(io.BytesIO(base64.b64decode(hint["mask"]))))
    assert predicted.any(), "the trained segmenter finds the disks"
    assert not (Path(seg_model["folder"]) / LABELS_FILE).read_bytes().count(b"seg-1")
    page.get_by_test_id("accept-hint").click()
    page.keyboard.press("e")
    _stroke(page, canvas, [(0, 0), (47, 0)])  # an edit on top of the accepted prediction
    _shot(page, "labeling-hint")
    page.get_by_test_id("save-draft").click()
    expect(title).not_to_have_text("seg-1", timeout=30_000)
    saved = _mask_of(d, seg_model, "seg-1")
    expected = np.where(predicted == 1, disk, 0)
    expected[0:3, :] = 0  # the erased top rows (radius 3 around row 0)
    assert (saved[3:] == expected[3:]).all()
    assert not saved[0:2].any()

    # The hints shown were kept: the grid's "has prediction" filter finds seg-0 and seg-1 (and
    # the example opened after seg-1, if its hint came back before Esc), each with its mask.
    page.keyboard.press("Escape")
    page.get_by_test_id("status-all").click()
    page.get_by_label("Prediction").select_option("true")

    def tile(example_id: str) -> Any:
        return page.locator(f'[data-testid=example-tile][data-example-id="{example_id}"]')

    expect(tile("seg-0")).to_be_visible(timeout=30_000)
    expect(tile("seg-1")).to_be_visible()
    expect(tile("seg-3")).to_have_count(0)  # never opened: no hint, no prediction
    shown = page.get_by_test_id("example-tile").count()
    expect(page.get_by_test_id("tile-prediction")).to_have_count(shown)
    expect(page.get_by_test_id("tile-prediction").first).to_contain_text("mask:")
    page.context.close()
