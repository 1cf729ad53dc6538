"""Examples, labels and label files through TestClient on real NDJSON sources with real PNG
files: filters and marker paging, labels written back as FHIR Observations (draft, confirmed,
a conflict resolved) that the next curation uses, and segmentation masks in the reference RLE
format."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
from sqlalchemy import select

from patient_ml.curation.fetch import FetchPolicy, ImageFetcher
from patient_ml.curation.sources import NdjsonSource
from patient_ml.db.engine import session_scope
from patient_ml.db.models import AuditEvent
from patient_ml.labels import masks, rle
from patient_ml.labels.sinks import LABELS_FILE
from patient_ml.services.curation import curate
from patient_ml.storage import LocalArtifactStore
from tests.curation.cohort import CODE_SYSTEM, Cohort, dataset_config, png


@pytest.fixture
def cohort(api: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """An imgClf dataset over 6 patients x 2 images (labels final, draft or none) plus an
    image with two confirmed labels that disagree."""
    name, code = f"ds-{uuid.uuid4().hex[:8]}", f"code-{uuid.uuid4().hex[:8]}"
    source = Cohort(tmp_path / "source", code, f"urn:test:{name}")
    source.add_patients(0, 6)
    source.doc("conflict", "p0099", data=png(99))
    source.label("c1", "conflict", 0)
    source.label("c2", "conflict", 1)
    folder = source.write_ndjson(tmp_path / "source" / "ndjson")
    monkeypatch.setenv("PATIENT_ML_ALLOWED_FILE_ROOTS", str(source.images))
    monkeypatch.setenv("PATIENT_ML_EXAMPLES_CACHE_SECONDS", "0")
    config = dataset_config(name, code) | {"source": {"type": "ndjson", "uri": str(folder)}}
    created = api("admin").post("/datasets", json=config)
    assert created.status_code == 200, created.text
    return {"id": created.json()["dataset"]["id"], "cohort": source, "folder": folder}


def _all(client: Any, path: str, **params: Any) -> list[dict[str, Any]]:
    out, marker = [], None
    while True:
        page = client.get(path, params={**params, **({"marker": marker} if marker else {})})
        assert page.status_code == 200, page.text
        out += page.json()["examples"]
        marker = page.json().get("marker")
        if not marker:
            return out


def test_examples_filters_and_marker_paging(api: Any, cohort: dict[str, Any]) -> None:
    viewer, path = api("viewer"), f"/datasets/{cohort['id']}/examples"
    assert api(None).get(path).status_code == 401
    every = _all(viewer, path, limit=5, projectId="any")
    ids = [e["id"] for e in every]
    assert ids == sorted(cohort["cohort"].good_ids | {"conflict"})  # each exactly once, in order
    by_id = {e["id"]: e for e in every}
    # d0000-0: (0+0)%5 != 1 → final class 0; d0001-0: draft class 1; d0003-0: unlabelled.
    assert by_id["d0000-0"]["label"] == {
        **by_id["d0000-0"]["label"],
        "labelType": "imgClf", "classes": [0], "isConfirmed": True, "lastConfirmedBy": "Dr. Test",
    }  # fmt: skip
    assert by_id["d0001-0"]["label"]["isConfirmed"] is False
    assert "label" not in by_id["d0003-0"]
    assert by_id["conflict"]["label"]["isConfirmed"] is False  # disagreeing: needs a person
    assert by_id["d0000-0"]["image"] == {"fileId": "DocumentReference/d0000-0"}
    assert {e["exampleType"] for e in every} == {"imgClf"}

    unlabelled = {e["id"] for e in _all(viewer, path, hasLabel="false")}
    labelled = {e["id"] for e in _all(viewer, path, hasLabel="true")}
    drafts = {e["id"] for e in _all(viewer, path, hasUnconfirmedLabel="true")}
    assert unlabelled == {i for i in ids if "label" not in by_id[i]} and "d0003-0" in unlabelled
    assert labelled == set(ids) - unlabelled
    assert drafts == {i for i in labelled if not by_id[i]["label"]["isConfirmed"]}
    assert {"d0001-0", "conflict"} <= drafts
    mine = _all(viewer, path, patientId="p0002")
    assert [e["id"] for e in mine] == ["d0002-0", "d0002-1"]

    one = viewer.get(f"{path}/d0000-0")
    assert one.status_code == 200 and one.json()["example"] == by_id["d0000-0"]
    image = viewer.get(f"{path}/d0000-0/image")
    assert image.status_code == 200 and image.content.startswith(b"\x89PNG")
    assert viewer.get(f"{path}/nope").status_code == 404
    assert viewer.get("/datasets/nope/examples").status_code == 404
    bad = viewer.get(path, params={"marker": "garbage!"})
    assert bad.status_code == 422 and bad.json()["error"]["errors"][0]["field"] == "marker"
    assert viewer.get(path, params={"cohortId": "c"}).status_code == 422
    assert viewer.get(path, params={"hasLabel": "maybe"}).status_code == 422


def test_labels_are_written_to_the_source_and_used_by_the_next_curation(
    api: Any, cohort: dict[str, Any], engine: Any, tmp_path: Path
) -> None:
    path = f"/datasets/{cohort['id']}/examples"
    body = {"labelType": "imgClf", "classes": [1]}
    assert api("viewer").put(f"{path}/d0003-0/label", json=body).status_code == 403
    editor = api("editor")
    draft = editor.put(f"{path}/d0003-0/label", json=body)
    assert draft.status_code == 200, draft.text
    assert draft.json()["label"] == {**draft.json()["label"], "classes": [1], "isConfirmed": False}
    confirmed = editor.put(f"{path}/d0003-0/label", json={**body, "isConfirmed": True})
    assert confirmed.json()["label"]["isConfirmed"] is True
    assert confirmed.json()["label"]["lastConfirmedBy"] == "editor"
    resolved = editor.put(f"{path}/conflict/label", json={**body, "isConfirmed": True})
    assert resolved.status_code == 200, resolved.text
    # The examples read back from the source show the saved labels.
    reread = editor.get(f"{path}/conflict").json()["example"]["label"]
    assert reread["isConfirmed"] is True and reread["classes"] == [1]
    assert editor.get(f"{path}/d0003-0").json()["example"]["label"]["classes"] == [1]

    lines = [orjson.loads(x) for x in (cohort["folder"] / LABELS_FILE).read_bytes().splitlines()]
    assert [(o["id"], o["status"], o["meta"]["versionId"]) for o in lines] == [
        (lines[0]["id"], "preliminary", "1"),
        (lines[0]["id"], "final", "2"),
        ("c2", "amended", "1"),  # the newest of the two, changed to class 1
        ("c1", "entered-in-error", "1"),
    ]
    assert lines[2]["valueCodeableConcept"]["coding"][0]["code"] == "1"
    assert lines[2]["performer"] == [{"display": "editor"}]
    assert lines[0]["focus"] == [{"reference": "DocumentReference/d0003-0"}]

    # Invalid labels are refused with the field named.
    for wrong, field in (
        ({"labelType": "imgClf", "classes": [5]}, "classes"),
        ({"labelType": "imgClf", "classes": [0, 1]}, "classes"),
        ({"labelType": "imgSeg", "mask": {"fileId": "x"}}, "labelType"),
    ):
        refused = editor.put(f"{path}/d0003-0/label", json=wrong)
        assert refused.status_code == 422 and refused.json()["error"]["errors"][0]["field"] == field
    with session_scope(engine) as session:
        events = session.scalars(select(AuditEvent).where(AuditEvent.action == "label.put")).all()
        assert [e.actor for e in events] == ["editor"] * 3
        assert events[-1].after["superseded"] == ["c1"]

    # A draft saved as the labelling page saves it: from the label version it read.
    unlabeled = editor.get(path, params={"view": "extended", "status": "unlabeled"}).json()
    page_pick = next(e for e in unlabeled["examples"] if e["id"] != "d0003-0")
    from_page = editor.put(
        f"{path}/{page_pick['id']}/label",
        json={"labelType": "imgClf", "classes": [0], "isConfirmed": False},
        headers={"If-Match": page_pick["labelVersion"], "X-Patient-ML-Channel": "ui"},
    )
    assert from_page.status_code == 200, from_page.text

    # The next curation uses the confirmed labels, and keeps drafts as drafts.
    store = LocalArtifactStore(tmp_path / "artifacts")
    fetcher = ImageFetcher(FetchPolicy(allowed_file_roots=(cohort["cohort"].images,)))
    result = curate(engine=engine, dataset_ref=cohort["id"], source=NdjsonSource(cohort["folder"]),
                    store=store, fetcher=fetcher, workdir=tmp_path / "work")  # fmt: skip
    manifest = [orjson.loads(x) for x in store.read_bytes(
        result.manifest_uri.removeprefix(store.uri(""))).splitlines()[1:]]  # fmt: skip
    labels = {e["id"]: e["label"] for e in manifest}
    assert labels["d0003-0"]["status"] == "confirmed" and labels["d0003-0"]["classes"] == [1]
    assert labels[page_pick["id"]]["status"] == "draft"  # kept for labellers to confirm
    assert labels[page_pick["id"]]["classes"] == [0]
    assert labels["conflict"]["status"] == "confirmed" and labels["conflict"]["classes"] == [1]
    assert labels["conflict"]["confirmedBy"] == "editor"


@pytest.fixture
def nuclei(api: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """An imgSeg dataset of two 24x16 images, one with a draft mask written by a FHIR record."""
    name, code = f"seg-{uuid.uuid4().hex[:8]}", f"code-{uuid.uuid4().hex[:8]}"
    source = Cohort(tmp_path / "source", code, f"urn:test:{name}")
    source.doc("img-a", "p1", data=png(1, (24, 16)))
    source.doc("img-b", "p2", data=png(2, (24, 16)))
    folder = source.write_ndjson(tmp_path / "source" / "ndjson")
    monkeypatch.setenv("PATIENT_ML_ALLOWED_FILE_ROOTS", str(source.images))
    monkeypatch.setenv("PATIENT_ML_EXAMPLES_CACHE_SECONDS", "0")
    config = dataset_config(name, code) | {"source": {"type": "ndjson", "uri": str(folder)}}
    config["problemDefinition"] = {
        **config["problemDefinition"],
        "problemType": "imgSeg",
        "labelDefinition": {"labels": [{"name": "nucleus"}, {"name": "membrane"}]},
    }
    created = api("admin").post("/datasets", json=config)
    assert created.status_code == 200, created.text
    dataset = created.json()["dataset"]
    labels = {lbl["name"]: lbl for lbl in dataset["problemDefinition"]["labelDefinition"]["labels"]}
    return {"id": dataset["id"], "labels": labels, "folder": folder, "images": source.images}


def _area(label_id: str, mask: np.ndarray) -> dict[str, Any]:
    rgba = np.repeat((mask.astype(np.uint8) * 255)[:, :, None], 4, axis=2)
    return {"id": label_id, "rle": rle.encode(rgba)}


def test_segmentation_label_files_round_trip_and_train(
    api: Any, nuclei: dict[str, Any], engine: Any, tmp_path: Path
) -> None:
    editor, path = api("editor"), f"/datasets/{nuclei['id']}/examples/img-a"
    nucleus, membrane = nuclei["labels"]["nucleus"], nuclei["labels"]["membrane"]
    assert editor.get(f"{path}/label-file").json() == {"labelData": None}
    one, two = np.zeros((16, 24), bool), np.zeros((16, 24), bool)
    one[2:6, 3:9], two[10:14, 12:20] = True, True
    data = {"labelType": "imgSeg", "projectId": nuclei["id"], "height": 16, "width": 24,
            "areas": [_area(nucleus["id"], one), _area(membrane["id"], two)]}  # fmt: skip
    assert api("viewer").put(f"{path}/label-file", json=data).status_code == 403
    stored = editor.put(f"{path}/label-file", json=data)
    assert stored.status_code == 200, stored.text
    file_id = stored.json()["fileId"]
    assert file_id.startswith("label-file/")
    assert editor.put(f"{path}/label-file", json=data).json()["fileId"] == file_id  # same content
    wrong_size = editor.put(f"{path}/label-file", json={**data, "height": 15})
    assert wrong_size.status_code == 422
    unknown = editor.put(f"{path}/label-file", json={**data, "areas": [_area("nope", one)]})
    assert unknown.json()["error"]["errors"][0]["field"] == "areas[0].id"

    confirm = {"labelType": "imgSeg", "mask": {"fileId": file_id}, "isConfirmed": True}
    saved = editor.put(f"{path}/label", json=confirm)
    assert saved.status_code == 200, saved.text
    label = saved.json()["label"]
    assert label["isConfirmed"] is True and label["mask"]["fileId"].startswith("Observation/")
    back = editor.get(f"{path}/label-file").json()["labelData"]
    assert back == {**data, "projectId": nuclei["id"]}
    # Re-confirming with the example's own mask keeps it.
    keep = {"labelType": "imgSeg", "isConfirmed": True, "mask": label["mask"]}
    again = editor.put(f"{path}/label", json=keep)
    assert again.status_code == 200, again.text
    assert editor.get(f"{path}/label-file").json()["labelData"] == back
    stranger_mask = {"fileId": "label-file/" + "0" * 64}
    stranger = editor.put(f"{path}/label", json={"labelType": "imgSeg", "mask": stranger_mask})
    assert stranger.status_code == 422
    classification = editor.get(f"/datasets/{nuclei['id']}/examples/img-b/label-file")
    assert classification.json() == {"labelData": None}

    store = LocalArtifactStore(tmp_path / "artifacts")
    fetcher = ImageFetcher(FetchPolicy(allowed_file_roots=(nuclei["images"],)))
    result = curate(engine=engine, dataset_ref=nuclei["id"], source=NdjsonSource(nuclei["folder"]),
                    store=store, fetcher=fetcher, workdir=tmp_path / "work")  # fmt: skip
    manifest = [orjson.loads(x) for x in store.read_bytes(
        result.manifest_uri.removeprefix(store.uri(""))).splitlines()[1:]]  # fmt: skip
    example = next(e for e in manifest if e["id"] == "img-a")
    assert example["label"]["status"] == "confirmed"
    pixels = masks.read_png(
        store.read_bytes(f"datasets/{nuclei['id']}/{example['label']['mask']['key']}")
    )
    assert pixels[3, 4] == nucleus["index"] and pixels[11, 15] == membrane["index"]
    assert pixels[0, 0] == 0
    assert CODE_SYSTEM  # the cohort's type coding system


def test_examples_carry_when_their_record_was_last_updated(
    api: Any, engine: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`updatedAt` (milliseconds, as the reference): the DocumentReference's meta.lastUpdated;
    without one (hand-made NDJSON), when its NDJSON file was written; a label's time when newer.
    Never 0."""
    import os

    name, code = f"ds-{uuid.uuid4().hex[:8]}", f"code-{uuid.uuid4().hex[:8]}"
    source = Cohort(tmp_path / "source", code, f"urn:test:{name}")
    source.doc("stamped", "p1", data=png(1), meta={"lastUpdated": "2024-05-06T07:08:09.123Z"})
    bare = "b" * 64  # the longest FHIR id
    source.doc(bare, "p2", data=png(2))
    source.label("o-bare", bare, 0)  # no meta.lastUpdated, no issued: the file's time
    folder = source.write_ndjson(tmp_path / "source" / "ndjson")
    written = 1_700_000_000.5
    for file in folder.iterdir():
        os.utime(file, (written, written))
    monkeypatch.setenv("PATIENT_ML_ALLOWED_FILE_ROOTS", str(source.images))
    monkeypatch.setenv("PATIENT_ML_EXAMPLES_CACHE_SECONDS", "0")
    config = dataset_config(name, code) | {"source": {"type": "ndjson", "uri": str(folder)}}
    dataset = api("admin").post("/datasets", json=config).json()["dataset"]
    examples = api("viewer").get(f"/datasets/{dataset['id']}/examples").json()["examples"]
    by_id = {e["id"]: e["updatedAt"] for e in examples}
    assert by_id == {"stamped": 1714979289123, bare: written * 1000}
    # Issue 31: the label history showed "—" for dates of such labels.
    one = f"/datasets/{dataset['id']}/examples/{bare}"
    shown = api("viewer").get(one, params={"view": "extended"}).json()["example"]
    assert [h["at"] for h in shown["labelHistory"]] == [written * 1000]
    labelled = api("editor").put(
        f"/datasets/{dataset['id']}/examples/{bare}/label",
        json={"labelType": "imgClf", "classes": [1], "isConfirmed": True},
    )
    assert labelled.status_code == 200, labelled.text
    assert labelled.json()["updatedAt"] > written * 1000  # the label's issued time, now
    with session_scope(engine) as session:
        [event] = session.scalars(select(AuditEvent).where(AuditEvent.action == "label.put"))
        assert (event.entity_type, event.entity_id) == ("example", bare)
        assert event.after["datasetId"] == dataset["id"]
