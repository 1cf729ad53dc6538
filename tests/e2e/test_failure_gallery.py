"""The failure gallery in the browser (Debian's Chromium driven by Playwright) on the real Airflow
API server of the shared deployment.

A run of a classifier model is evaluated by the product (`evaluate_contenders` and
`record_evaluation`) with a real model: the reference classifier trained by the local backend
on blob images, served by a real `serve` process, on a test split in the deployment's artifact
store where some labels are wrong (so the model makes confident errors). The run page's
Evaluation tab then shows the gallery: per true label the thumbnails, loaded from the
authenticated API with the browser's Airflow session; the overlay toggle swaps in the occlusion
and Grad-CAM maps; each map's faithfulness is in words. Screenshot: run-failure-cases.png.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import orjson
import pytest

from patient_ml.db.engine import session_scope
from patient_ml.db.models import Model
from tests.e2e.conftest import E2EDeployment, register_cohort_model
from tests.e2e.test_web_ui import _login, _shot, browser  # noqa: F401 (the fixture)

playwright_api = pytest.importorskip("playwright.sync_api")
expect = playwright_api.expect

MODEL = "e2e-failure-gallery"
IMAGE = "patient-ml/img-clf-trainer:0.1.0"
HPS = {"epochs": "6", "image_size": "64", "batch_size": "16", "width": "8", "seed": "3"}


@pytest.fixture(scope="module")
def evaluated(airflow_deployment: E2EDeployment, tmp_path_factory: Any) -> dict[str, Any]:
    from patient_ml.evaluation.evaluate import Contender, evaluate_contenders, load_test_set
    from patient_ml.log_records import ProgressLog
    from patient_ml.services.evaluations import record_evaluation
    from patient_ml.services.runs import create_run
    from patient_ml.serving.servers import LocalServer
    from patient_ml.storage import artifact_store_from_uri
    from patient_ml.training.backends.base import TrainingJob
    from patient_ml.training.backends.local import LocalBackend
    from patient_ml.training.contract import JobLayout
    from patient_ml.training.metrics import MetricParser
    from patient_ml.training.tuning import pack_model
    from tests.trainers.test_trainers import CLF_PROBLEM, blob_image, clf_channel, encode

    d = airflow_deployment
    root = tmp_path_factory.mktemp("failure-gallery")
    layout = JobLayout(root / "job").create()
    for channel, seed in (("train", 1), ("validation", 2)):
        clf_channel(layout.channel(channel), per_class=24, seed=seed)
    layout.write_config(HPS, CLF_PROBLEM)
    trained = LocalBackend().run(
        TrainingJob(name="e2e-failures", layout=layout, image=IMAGE,
                    metric_parser=MetricParser([]), timeout_seconds=300)
    )  # fmt: skip
    assert trained.succeeded, trained.failure

    model_id = register_cohort_model(
        d, dataset="e2e-failure-dataset", salt="fail01", model=MODEL, approvers=["admin"]
    )
    with session_scope(d.engine) as session:
        run = create_run(session, model_id, actor="e2e")
        run_id = run.id
        dataset_id = session.get(Model, model_id).dataset_id
        labels = run.config["problemDefinition"]["labelDefinition"]["labels"]
    indices = sorted(int(x["index"]) for x in labels)
    store = artifact_store_from_uri((d.root / "artifacts").as_uri())
    rng = np.random.default_rng(11)
    lines = [orjson.dumps({"problemType": "imgClf", "labels": labels})]
    for n in range(16):
        blob = n % 2 == 1
        label = indices[int(blob) ^ int(n in (0, 1, 2, 3, 5))]  # five labelled the other way
        key = f"images/gallery-{n}.png"
        store.put_bytes(f"datasets/{dataset_id}/{key}", encode(blob_image(rng, blob)))
        entry = {"id": f"doc-{n}", "split": "test", "image": {"key": key}, "patientKey": f"p{n}"}
        lines.append(orjson.dumps({**entry, "label": {"status": "confirmed", "classes": [label]}}))
    store.put_bytes(f"datasets/{dataset_id}/snapshots/gallery/manifest.jsonl",
                    b"\n".join(lines) + b"\n")  # fmt: skip
    sha = pack_model(layout.model_dir, root / "model.tar.gz")
    store.put_file(f"runs/{run_id}/model.tar.gz", root / "model.tar.gz")
    challenger = Contender("challenger", run_id, IMAGE, store.uri(f"runs/{run_id}/model.tar.gz"),
                           sha, tuple(indices))  # fmt: skip
    report, uri = evaluate_contenders(
        run_id, challenger, None, load_test_set(store, dataset_id, "gallery"), store,
        LocalServer(), root / "evaluation", progress=ProgressLog(logging.getLogger("e2e")),
        failure_cases=3,
    )  # fmt: skip
    assert report["failureCases"]["cases"]
    with session_scope(d.engine) as session:
        record_evaluation(session, run_id, report, report_uri=uri, actor="e2e")
    return {"model_id": model_id, "run_id": run_id, "section": report["failureCases"]}


def test_the_run_page_shows_the_failure_gallery_with_its_maps(
    airflow_deployment: E2EDeployment,
    evaluated: dict[str, Any],
    browser: Any,  # noqa: F811
) -> None:
    d = airflow_deployment
    page = _login(browser, d, "admin")
    page.set_default_navigation_timeout(120_000)
    page.goto(f"{d.stack.url}/")
    page.wait_for_load_state()
    target = (
        f"{d.stack.url}/patient-ml-ui/?view=run&modelId={evaluated['model_id']}"
        f"&runId={evaluated['run_id']}&tab=evaluation"
    )
    for attempt in range(3):
        try:
            page.goto(target)
            break
        except playwright_api.Error as exc:  # a late navigation of Airflow's page
            if "interrupted" not in str(exc) or attempt == 2:
                raise
            page.wait_for_load_state()
    gallery = page.get_by_test_id("failure-gallery")
    expect(gallery).to_be_visible(timeout=60_000)
    first = evaluated["section"]["cases"][0]
    card = page.get_by_test_id(f"failure-case-{first['case']}")
    expect(card).to_contain_text(f"called {first['predictedLabel']['name']} with confidence")
    expect(card).to_contain_text(first["exampleId"])
    picture = page.get_by_test_id(f"failure-picture-{first['case']}")
    expect(picture).to_have_attribute("data-picture", "image")

    def loaded() -> bool:  # served by the API with the browser's session, decoded by Chromium
        return bool(picture.evaluate("img => img.complete && img.naturalWidth > 0"))

    d.stack.wait_for(loaded, 30, "the thumbnail to load")
    page.get_by_test_id("overlay-occlusion").click()
    expect(picture).to_have_attribute("data-picture", "occlusion")
    d.stack.wait_for(loaded, 30, "the occlusion overlay to load")
    expect(page.get_by_test_id(f"faithfulness-{first['case']}-occlusion")).to_contain_text(
        "deletion AUC"
    )
    expect(page.get_by_test_id(f"faithfulness-{first['case']}-grad-cam")).to_contain_text(
        "Grad-CAM (container)"
    )
    expect(page.get_by_test_id("failure-cost")).to_contain_text("the evaluation itself")
    gallery.scroll_into_view_if_needed()
    _shot(page, "run-failure-cases")
    page.get_by_test_id("overlay-grad-cam").click()
    expect(picture).to_have_attribute("data-picture", "grad-cam")
    d.stack.wait_for(loaded, 30, "the Grad-CAM overlay to load")
