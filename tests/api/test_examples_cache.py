"""The examples index at size: a label save re-reads only that example from the source and
updates the cached index in place (so a save costs the same at any dataset size and the labeller
sees it at once), its version check still reads the source (a change made by another writer is
not overwritten), and a stale index is served while one background thread rebuilds it."""

from __future__ import annotations

import random
import time
from pathlib import Path
from typing import Any

import orjson
import pytest

from patient_ml.services import examples as ex
from tests.api.test_examples import _all, cohort  # noqa: F401 (the fixture)


def _append(folder: Path, resource: dict[str, Any]) -> None:
    """Another writer (not this process) adds a record to the NDJSON source."""
    with (folder / "Observation.external.ndjson").open("ab") as out:
        out.write(orjson.dumps(resource) + b"\n")


def test_a_save_updates_the_cached_index_and_checks_the_source(
    api: Any,
    cohort: dict[str, Any],  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PATIENT_ML_EXAMPLES_CACHE_SECONDS", "3600")
    ex.forget(cohort["id"])
    admin, path = api("admin"), f"/datasets/{cohort['id']}/examples"
    before = admin.get(path, params={"view": "extended", "limit": 1}).json()["counts"]
    assert before["unlabeled"] >= 2

    # Another writer labels d0003-0; the cached index (an hour's TTL) does not know it yet.
    _append(cohort["folder"], cohort["cohort"].label("ext-1", "d0003-0", 1))
    stale = admin.get(f"{path}/d0003-0", params={"view": "extended"}).json()["example"]
    assert stale["status"] == "unlabeled" and stale["labelVersion"] == "none"
    # A save made from that stale view is refused: the check reads the source, not the cache.
    late = admin.put(
        f"{path}/d0003-0/label",
        json={"labelType": "imgClf", "classes": [0], "isConfirmed": True},
        headers={"If-Match": "none"},
    )
    assert late.status_code == 409, late.text
    # ... and the refused save's re-read put the other writer's label into the cached index.
    now = admin.get(f"{path}/d0003-0", params={"view": "extended"}).json()["example"]
    assert now["status"] == "confirmed" and now["label"]["classes"] == [1]

    # A save through the API shows at once, counts included, with no rebuild of the index.
    unlabelled = [e["id"] for e in _all(admin, path, view="extended", status="unlabeled")]
    target = unlabelled[0]
    built = ex._CACHE[next(k for k in ex._CACHE if k[0] == cohort["id"])].built
    saved = admin.put(
        f"{path}/{target}/label",
        json={"labelType": "imgClf", "classes": [1], "isConfirmed": False},
        headers={"If-Match": "none"},
    )
    assert saved.status_code == 200, saved.text
    after = admin.get(path, params={"view": "extended", "limit": 1}).json()["counts"]
    assert after["unlabeled"] == before["unlabeled"] - 2
    assert after["draft"] == before["draft"] + 1
    assert after["confirmed"] == before["confirmed"] + 1
    drafts = {e["id"] for e in _all(admin, path, view="extended", status="draft")}
    ones = {e["id"] for e in _all(admin, path, view="extended", labelIndex=1)}
    assert target in drafts and target in ones and "d0003-0" in ones
    assert ex._CACHE[next(k for k in ex._CACHE if k[0] == cohort["id"])].built == built
    opened = admin.get(f"{path}/{target}", params={"view": "extended"}).json()["example"]
    history = opened["labelHistory"]
    assert [h["status"] for h in history] == ["draft"]


def test_a_stale_index_is_served_while_it_is_rebuilt(
    api: Any,
    cohort: dict[str, Any],  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PATIENT_ML_EXAMPLES_CACHE_SECONDS", "0.2")
    ex.forget(cohort["id"])
    viewer, path = api("viewer"), f"/datasets/{cohort['id']}/examples"

    def label(viewer: Any = viewer) -> Any:
        return viewer.get(f"{path}/d0003-0").json()["example"].get("label")

    assert label() is None
    _append(cohort["folder"], cohort["cohort"].label("ext-2", "d0003-0", 0))
    time.sleep(0.3)
    # stale: answered from the old index (no wait for the rebuild it starts)
    assert label() is None
    deadline = time.monotonic() + 20
    while label() is None:
        assert time.monotonic() < deadline, "the background rebuild never replaced the index"
        time.sleep(0.1)
    assert label()["classes"] == [0]


def test_in_place_updates_keep_the_lookups_equal_to_a_fresh_build() -> None:
    """Random label changes (none, draft, confirmed; either class) applied one example at a time
    give the same per-status and per-label position lists as an index built from scratch."""
    from benchmarks.labeling_lists import observation, records, view

    rng = random.Random(7)
    raw = records(600, 120)
    index = ex.build_index(view(), raw)
    index.lookup()
    docs = {r[2]["id"]: r for r in raw if r[2]["resourceType"] == "DocumentReference"}
    labels = {
        r[2]["focus"][0]["reference"].removeprefix("DocumentReference/"): r
        for r in raw
        if r[2]["resourceType"] == "Observation"
    }
    for step in range(300):
        doc = rng.choice(index.ids)
        status = rng.choice(["none", "preliminary", "final"])
        if status == "none":
            labels.pop(doc, None)
        else:
            resource = observation(doc, f"lab-{doc}", status, rng.randint(0, 1), patient="p",
                                   version=str(step + 2))  # fmt: skip
            labels[doc] = ("x", None, resource)
        part = [docs[doc], *([labels[doc]] if doc in labels else [])]
        index.replace_example(doc, ex.build_index(view(), part))
    fresh = ex.build_index(view(), [*docs.values(), *labels.values()])
    assert fresh.ids == index.ids
    assert fresh.lookup().status_at == index.lookup().status_at
    for name in ("by_status", "by_label"):
        rebuilt, updated = getattr(fresh.lookup(), name), getattr(index.lookup(), name)
        assert {k: v for k, v in rebuilt.items() if v} == {k: v for k, v in updated.items() if v}
    assert {i: fresh.examples[i].label for i in fresh.ids} == {
        i: index.examples[i].label for i in index.ids
    }
