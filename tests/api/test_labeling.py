"""What the browser's labelling page needs of the examples API, on real NDJSON sources: the
extended view (status, FHIR references, pseudonymous patient key, split, label version, counts
per status), the filters by status, label, split and patient key, the label history, the
version check that refuses a save made from a stale label (409, nothing overwritten) and the
PNG previews (DICOM converted, thumbnails)."""

from __future__ import annotations

import io
import uuid
from pathlib import Path
from typing import Any

import orjson
import pytest
from PIL import Image

from patient_ml.curation.splits import patient_key
from patient_ml.db.engine import session_scope
from patient_ml.db.models import SplitAssignment
from patient_ml.labels.sinks import LABELS_FILE
from patient_ml.services import champion, example_predictions, runs
from patient_ml.services.curation import dataset_view
from tests.api.test_examples import _all, cohort  # noqa: F401 (the fixture)
from tests.curation.cohort import Cohort, dataset_config, png
from tests.helpers import example


def test_extended_view_filters_and_counts(api: Any, cohort: dict[str, Any], engine: Any) -> None:  # noqa: F811
    viewer, path = api("viewer"), f"/datasets/{cohort['id']}/examples"
    reference = viewer.get(path).json()
    assert "counts" not in reference and "status" not in reference["examples"][0]
    every = _all(viewer, path, view="extended", limit=7)
    by_id = {e["id"]: e for e in every}
    first = by_id["d0000-0"]
    assert first["status"] == "confirmed" and first["labelName"] is not None
    assert first["documentReference"].startswith("DocumentReference/d0000-0")
    assert first["patient"] == "Patient/p0000"
    assert first["split"] == "unassigned"  # no snapshot yet
    assert by_id["d0003-0"]["status"] == "unlabeled" and by_id["d0003-0"]["labelVersion"] == "none"
    assert by_id["conflict"]["status"] == "draft" and by_id["conflict"]["conflict"] is True
    salt = dataset_view(engine, cohort["id"]).salt
    assert first["patientKey"] == patient_key(salt, "Patient/p0000")

    page = viewer.get(path, params={"view": "extended", "limit": 2}).json()
    counts = page["counts"]
    expected = {s: sum(1 for e in every if e["status"] == s) for s in ("unlabeled", "draft")}
    assert counts == {**counts, **expected, "total": len(every)}
    assert counts["confirmed"] == len(every) - expected["unlabeled"] - expected["draft"]
    # The status filter narrows the page but not the counts (they say what each status holds).
    drafts = viewer.get(path, params={"view": "extended", "status": "draft"}).json()
    assert {e["id"] for e in drafts["examples"]} == {
        i for i, e in by_id.items() if e["status"] == "draft"
    }
    assert drafts["counts"] == counts
    zero = _all(viewer, path, view="extended", labelIndex=0)
    assert zero and all(e["label"]["classes"] == [0] for e in zero)

    # Splits follow the dataset's split assignments of the pseudonymous patient keys.
    with session_scope(engine) as session:
        session.add(SplitAssignment(dataset_id=cohort["id"], key_kind="patient",
                                    key=first["patientKey"], split="test"))  # fmt: skip
    tested = _all(viewer, path, view="extended", split="test")
    assert [e["id"] for e in tested] == ["d0000-0", "d0000-1"]
    assert all(e["split"] == "test" for e in tested)
    assert len(_all(viewer, path, split="unassigned")) == len(every) - 2
    mine = _all(viewer, path, patientKey=first["patientKey"])
    assert [e["id"] for e in mine] == ["d0000-0", "d0000-1"]
    only = viewer.get(path, params={"view": "extended", "split": "test", "status": "unlabeled"})
    assert only.json()["counts"]["total"] == 2

    for params, field in (
        ({"status": "done"}, "status"),
        ({"split": "holdout"}, "split"),
        ({"labelIndex": 9}, "labelIndex"),
    ):
        refused = viewer.get(path, params=params)
        assert refused.status_code == 422, refused.text
        assert refused.json()["error"]["errors"][0]["field"] == field


def _model_with_champion(api: Any, engine: Any, dataset_id: str, name: str) -> tuple[str, str]:
    """A model of the dataset with a deployed champion run (promoted as an approval does)."""
    body = {**example("brain_mri_model"), "name": name, "datasetId": dataset_id}
    created = api("admin").post("/models", json=body)
    assert created.status_code == 200, created.text
    model_id = created.json()["model"]["id"]
    with session_scope(engine) as session:
        run = runs.create_run(session, model_id, actor="t")
        runs.finish_run(session, run.id, status="succeeded", actor="t")
        champion.promote(session, model_id, run.id, actor="admin", reason="test")
        return model_id, run.id


def test_has_prediction_filters_by_the_champions_kept_predictions(
    api: Any,
    cohort: dict[str, Any],  # noqa: F811
    engine: Any,
) -> None:
    """An example *has a prediction* when the model's current champion predicted its current
    image (a labelling hint keeps the prediction's summary): filtered on the server with marker
    paging and counts; an older champion's or an older image's prediction does not count."""
    viewer, path = api("viewer"), f"/datasets/{cohort['id']}/examples"
    model_id, first_champion = _model_with_champion(api, engine, cohort["id"], "hinted")
    versions = {e["id"]: e["image"]["fileId"] for e in _all(viewer, path)}

    def keep(example_id: str, run_id: str, label: int, image_version: str | None = None) -> None:
        if image_version is None:
            image_version = versions[example_id].partition("/_history/")[2] or None
        with session_scope(engine) as session:
            example_predictions.record(
                session,
                model_id=model_id,
                example_id=example_id,
                run_id=run_id,
                image_version=image_version,
                output={"label": label, "confidence": 0.75, "confidences": {str(label): 0.75}},
            )

    for example_id in ("d0001-0", "d0002-1", "d0004-0"):
        keep(example_id, first_champion, 1)
    keep("d0005-0", first_champion, 0, image_version="an-older-version")
    query = {"modelId": model_id, "view": "extended"}
    predicted = _all(viewer, path, hasPrediction="true", limit=2, **query)
    assert [e["id"] for e in predicted] == ["d0001-0", "d0002-1", "d0004-0"]
    assert predicted[0]["prediction"] == {
        "runId": first_champion,
        "at": predicted[0]["prediction"]["at"],
        "labelIndex": 1,
        "labelName": predicted[0]["prediction"]["labelName"],
        "confidence": 0.75,
    }
    assert predicted[0]["prediction"]["labelName"]
    everything = _all(viewer, path, **query)
    assert {e["id"] for e in everything if "prediction" in e} == {"d0001-0", "d0002-1", "d0004-0"}
    unpredicted = _all(viewer, path, hasPrediction="false", **query)
    assert {e["id"] for e in unpredicted} == {e["id"] for e in everything} - {
        "d0001-0",
        "d0002-1",
        "d0004-0",
    }
    page = viewer.get(path, params={**query, "hasPrediction": "true", "limit": 1}).json()
    assert page["counts"]["total"] == 3 and "marker" in page
    narrowed = viewer.get(
        path, params={**query, "hasPrediction": "true", "status": "unlabeled"}
    ).json()
    assert narrowed["counts"]["total"] == 3  # counts leave the status filter out
    assert all(e["status"] == "unlabeled" for e in narrowed["examples"])

    # A new champion has predicted nothing yet; the old one's predictions no longer count.
    with session_scope(engine) as session:
        newer = runs.create_run(session, model_id, actor="t")
        runs.finish_run(session, newer.id, status="succeeded", actor="t")
        champion.promote(session, model_id, newer.id, actor="admin", reason="better")
        newer_id = newer.id
    assert _all(viewer, path, hasPrediction="true", **query) == []
    keep("d0002-1", newer_id, 0)
    again = _all(viewer, path, hasPrediction="true", **query)
    assert [(e["id"], e["prediction"]["labelIndex"]) for e in again] == [("d0002-1", 0)]

    # hasPrediction means one model's champion: it needs modelId, of this dataset.
    refused = viewer.get(path, params={"hasPrediction": "true"})
    assert refused.status_code == 422, refused.text
    assert refused.json()["error"]["errors"][0]["field"] == "modelId"
    other = api("admin").post("/datasets", json={**example("brain_mri_dataset"), "name": "other"})
    assert other.status_code == 200, other.text
    foreign, _ = _model_with_champion(api, engine, other.json()["dataset"]["id"], "elsewhere")
    wrong = viewer.get(path, params={"hasPrediction": "true", "modelId": foreign})
    assert wrong.status_code == 422 and wrong.json()["error"]["errors"][0]["field"] == "modelId"
    assert viewer.get(path, params={"hasPrediction": "true", "modelId": "nope"}).status_code == 404


def test_history_and_the_version_check(api: Any, cohort: dict[str, Any]) -> None:  # noqa: F811
    path = f"/datasets/{cohort['id']}/examples/d0003-0"
    editor, admin = api("editor"), api("admin")
    opened = editor.get(path, params={"view": "extended"}).json()["example"]
    assert opened["labelVersion"] == "none" and opened["labelHistory"] == []
    body = {"labelType": "imgClf", "classes": [1]}
    # Both open the unlabelled example; admin saves first, the editor's save is refused.
    first = admin.put(f"{path}/label", json=body, headers={"If-Match": "none"})
    assert first.status_code == 200, first.text
    lines_before = (cohort["folder"] / LABELS_FILE).read_bytes()
    late = editor.put(f"{path}/label", json={**body, "classes": [0]}, headers={"If-Match": "none"})
    assert late.status_code == 409, late.text
    message = late.json()["error"]["message"]
    assert "labelled by admin" in message and "your label was not saved" in message
    assert (cohort["folder"] / LABELS_FILE).read_bytes() == lines_before  # nothing written
    # Read again: the editor now starts from admin's version and may replace it.
    current = editor.get(path, params={"view": "extended"}).json()["example"]
    assert current["labelVersion"].endswith("/_history/1")
    saved = editor.put(
        f"{path}/label",
        json={**body, "classes": [0], "isConfirmed": True},
        headers={"If-Match": current["labelVersion"]},
    )
    assert saved.status_code == 200, saved.text
    history = editor.get(path, params={"view": "extended"}).json()["example"]["labelHistory"]
    assert [(h["status"], h["by"], h["labelIndex"]) for h in history] == [
        ("draft", "admin", 1),
        ("confirmed", "editor", 0),
    ]
    assert all(isinstance(h["at"], float) for h in history)
    # Without If-Match (reference clients) the save is not checked.
    assert editor.put(f"{path}/label", json=body).status_code == 200


def test_previews_are_png_for_the_browser(
    api: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.curation.test_images import dicom

    name, code = f"ds-{uuid.uuid4().hex[:8]}", f"code-{uuid.uuid4().hex[:8]}"
    source = Cohort(tmp_path / "source", code, f"urn:test:{name}")
    source.doc("big", "p1", data=png(1, (160, 100)))
    dcm = source.root / "images" / "scan.dcm"
    dcm.parent.mkdir(parents=True, exist_ok=True)
    dcm.write_bytes(dicom(40, 30))
    source.doc("scan", "p2", url=dcm.as_uri(), content_type="application/dicom")
    folder = source.write_ndjson(tmp_path / "source" / "ndjson")
    monkeypatch.setenv("PATIENT_ML_ALLOWED_FILE_ROOTS", f"{source.images}:{dcm.parent}")
    monkeypatch.setenv("PATIENT_ML_EXAMPLES_CACHE_SECONDS", "0")
    config = dataset_config(name, code, maxImageBytes=100_000, maxImagePixels=100_000)
    config["source"] = {"type": "ndjson", "uri": str(folder)}
    dataset = api("admin").post("/datasets", json=config).json()["dataset"]
    viewer, path = api("viewer"), f"/datasets/{dataset['id']}/examples"

    full = viewer.get(f"{path}/big/preview.png")
    assert full.status_code == 200, full.text
    assert full.headers["content-type"] == "image/png"
    assert full.headers["cache-control"].startswith("private")
    assert Image.open(io.BytesIO(full.content)).size == (160, 100)
    thumb = viewer.get(f"{path}/big/preview.png", params={"size": 128})
    assert Image.open(io.BytesIO(thumb.content)).size == (128, 80)
    scan = viewer.get(f"{path}/scan/preview.png")
    assert scan.status_code == 200, scan.text
    with Image.open(io.BytesIO(scan.content)) as img:
        assert img.size == (30, 40) and img.mode == "L"  # 16-bit grey scaled to 8 bits
        assert img.getextrema()[1] == 255
    wrong = viewer.get(f"{path}/big/preview.png", params={"size": 100})
    assert wrong.status_code == 422 and wrong.json()["error"]["errors"][0]["field"] == "size"
    assert api(None).get(f"{path}/big/preview.png").status_code == 401
    assert viewer.get(f"{path}/nope/preview.png").status_code == 404
    hint = viewer.get(f"{path}/big/hint", params={"modelId": "nope"})
    assert hint.status_code == 404, hint.text
    assert orjson.loads(hint.content)["error"]["message"]
