"""The failure gallery's API: the run's failure cases and their pictures, served from the
artifact store to users who may read the model, by case number and picture name only."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from patient_ml.db.engine import session_scope
from patient_ml.db.models import Run
from patient_ml.evaluation.failure_cases import picture_key
from patient_ml.evaluation.saliency import Pixels, overlay_png, thumbnail_png
from patient_ml.services import runs
from patient_ml.storage import LocalArtifactStore
from tests.helpers import example


def png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture
def gallery(
    api: Any, engine: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> dict[str, Any]:
    monkeypatch.setenv("PATIENT_ML_ARTIFACT_URI", str(tmp_path / "artifacts"))
    store = LocalArtifactStore(tmp_path / "artifacts")
    admin = api("admin")
    admin.post("/datasets", json=example("brain_mri_dataset"))
    model = admin.post("/models", json=example("brain_mri_model")).json()["model"]
    pixels = Pixels.of(png((np.arange(64 * 48) % 251).reshape(48, 64).astype(np.uint8)))
    with session_scope(engine) as s:
        run = runs.create_run(s, model["id"], actor="t")
        run_id = run.id
        plain = runs.create_run(s, model["id"], actor="t")
        plain_id = plain.id
    store.put_bytes(picture_key(run_id, 0, "image"), thumbnail_png(pixels))
    store.put_bytes(picture_key(run_id, 0, "occlusion"), overlay_png(pixels, np.eye(8)))
    section = {
        "perClass": 4,
        "cases": [
            {
                "case": 0,
                "exampleId": "doc-7",
                "kind": "falsePositive",
                "trueLabel": {"index": 0, "name": "no_tumor"},
                "predictedLabel": {"index": 1, "name": "tumor"},
                "confidence": 0.97,
                "pictures": ["image", "occlusion"],
                "maps": {"occlusion": {"method": "occlusion", "faithfulness": {"ratio": 0.4}}},
            }
        ],
    }
    with session_scope(engine) as s:
        s.get(Run, run_id).evaluation = {"testExamples": 10, "failureCases": section}
        s.get(Run, plain_id).evaluation = {"testExamples": 10}
    return {"model": model["id"], "run": run_id, "plain": plain_id, "store": store}


def test_pictures_are_served_to_readers_only_by_case_and_name(
    api: Any, gallery: dict[str, Any]
) -> None:
    base = f"/models/{gallery['model']}/runs/{gallery['run']}/failure-cases"
    viewer = api("viewer")
    listed = viewer.get(base)
    assert listed.status_code == 200, listed.text
    assert listed.json()["failureCases"]["cases"][0]["exampleId"] == "doc-7"
    assert "file:" not in listed.text and "artifacts" not in listed.text
    path = f"/models/{gallery['model']}/runs/{gallery['run']}"
    run = viewer.get(path, params={"view": "extended"}).json()["run"]
    assert run["evaluation"]["failureCases"]["cases"][0]["pictures"] == ["image", "occlusion"]

    image = viewer.get(f"{base}/0/image.png")
    assert image.status_code == 200 and image.headers["content-type"] == "image/png"
    assert image.headers["cache-control"].startswith("private")
    assert Image.open(io.BytesIO(image.content)).size == (192, 144)
    overlay = viewer.get(f"{base}/0/occlusion.png")
    assert Image.open(io.BytesIO(overlay.content)).mode == "RGB"

    missing = viewer.get(f"{base}/0/grad-cam.png")  # a name it may have, but this case has not
    assert missing.status_code == 404 and "grad-cam" in missing.json()["error"]["message"]
    assert viewer.get(f"{base}/3/image.png").status_code == 404
    assert viewer.get(f"{base}/0/secret.png").status_code == 422
    assert viewer.get(f"{base}/-1/image.png").status_code == 422
    assert viewer.get(f"{base}/0/..%2Fimage.png").status_code in (404, 422)
    assert api(None).get(f"{base}/0/image.png").status_code == 401
    plain = viewer.get(f"/models/{gallery['model']}/runs/{gallery['plain']}/failure-cases")
    assert plain.status_code == 404 and "no failure cases" in plain.json()["error"]["message"]
    other = viewer.get(f"/models/{gallery['model']}/runs/nope/failure-cases/0/image.png")
    assert other.status_code == 404
