"""Curation under hostile records (issue 16): several versions of one DocumentReference,
withdrawn versions, examples re-filed under a patient of another split, non-canonical label
codes and labels of DocumentReferences that do not exist."""

from __future__ import annotations

import hashlib
import random
import time
import uuid
from pathlib import Path
from typing import Any

import orjson
import pytest
from sqlalchemy import Engine

from patient_ml.curation.fetch import FetchPolicy, ImageFetcher
from patient_ml.curation.records import label_index
from patient_ml.curation.sources import NdjsonSource
from patient_ml.curation.staging import version_key
from patient_ml.db.engine import session_scope
from patient_ml.services.curation import curate
from patient_ml.services.datasets import create_dataset
from patient_ml.storage import LocalArtifactStore
from tests.curation.cohort import Cohort, dataset_config, png


class JitteryFetcher:
    """The real fetcher, each fetch delayed by a random few milliseconds: the pool's threads
    finish in a different order on every run."""

    def __init__(self, inner: ImageFetcher, seed: int) -> None:
        self.inner = inner
        self.random = random.Random(seed)

    def fetch(self, attachment: dict[str, Any]) -> bytes:
        time.sleep(self.random.uniform(0, 0.015))
        return self.inner.fetch(attachment)


def new_setup(engine: Engine, tmp_path: Path) -> dict[str, Any]:
    name = f"ds-{uuid.uuid4().hex[:8]}"
    code = f"code-{uuid.uuid4().hex[:8]}"
    with session_scope(engine) as session:
        dataset_id = create_dataset(session, dataset_config(name, code), actor="t").id
    cohort = Cohort(tmp_path / "source", code, f"urn:test:{name}")
    fetcher = ImageFetcher(FetchPolicy(allowed_file_roots=(cohort.images,), max_bytes=20_000))
    store = LocalArtifactStore(tmp_path / "artifacts")
    return {"id": dataset_id, "cohort": cohort, "fetcher": fetcher, "tmp": tmp_path, "store": store}


def run(engine: Engine, setup: dict[str, Any], folder: Path, **kw: Any) -> Any:
    return curate(
        engine=engine,
        dataset_ref=setup["id"],
        source=NdjsonSource(folder),
        store=setup["store"],
        fetcher=kw.pop("fetcher", setup["fetcher"]),
        workdir=setup["tmp"] / f"work-{uuid.uuid4().hex[:6]}",
        **({"workers": 4} | kw),
    )


def manifest(setup: dict[str, Any], result: Any) -> dict[str, dict[str, Any]]:
    store = setup["store"]
    lines = store.read_bytes(result.manifest_uri.removeprefix(store.uri(""))).splitlines()[1:]
    return {e["id"]: e for e in map(orjson.loads, lines)}


def reasons(result: Any) -> dict[str, int]:
    return {r: v["count"] for r, v in result.report["quarantined"]["byReason"].items()}


def write(cohort: Cohort, folder: Path, docs: list[dict[str, Any]] | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    lines = [orjson.dumps(d) for d in (cohort.docs if docs is None else docs)]
    (folder / "DocumentReference.ndjson").write_bytes(b"\n".join(lines) + b"\n")
    obs = b"\n".join(orjson.dumps(o) for o in cohort.observations) + b"\n"
    (folder / "Observation.ndjson").write_bytes(obs)
    return folder


def versioned(
    cohort: Cohort, doc_id: str, patient: str, seed: int, version: str | None, updated: str | None
) -> dict[str, Any]:
    doc = cohort.doc(doc_id, patient, url=None)
    doc["content"][0]["attachment"]["url"] = cohort._write_image(f"{doc_id}-{seed}.png", png(seed))
    meta = {k: v for k, v in (("versionId", version), ("lastUpdated", updated)) if v}
    if meta:
        doc["meta"] = meta
    return doc


# ----------------------------------------------------------------------------- versions


def test_version_order_is_total() -> None:
    assert version_key("10", None, "a") > version_key("9", None, "b")  # numerically
    assert version_key("2", "2020-01-01T00:00:00Z", "a") > version_key("1", "2025-01-01", "b")
    assert version_key("x", "2024-01-01T01:00:00+02:00", "a") < version_key(
        "y", "2024-01-01T00:00:00Z", "a"
    )  # instants compared in UTC
    assert version_key("1", "2024-01-01", "b") > version_key("1", "2024-01-01", "a")  # tie


def test_the_newest_version_wins_whatever_the_thread_timing(engine: Engine, tmp_path: Path) -> None:
    setup = new_setup(engine, tmp_path)
    cohort: Cohort = setup["cohort"]
    newest: dict[str, int] = {}
    for n in range(12):
        doc_id, patient = f"multi-{n}", f"pm{n}"
        # Stale versions are written after the newest one, so "last read" or "last fetched"
        # picks them: numeric versionIds (10 beats 9), lastUpdated, and a tie on both.
        if n % 3 == 0:
            versioned(cohort, doc_id, patient, 1000 + n, "10", None)
            versioned(cohort, doc_id, patient, 2000 + n, "9", None)
            newest[doc_id] = 1000 + n
        elif n % 3 == 1:
            versioned(cohort, doc_id, patient, 1000 + n, None, "2024-05-01T10:00:00Z")
            versioned(cohort, doc_id, patient, 2000 + n, None, "2024-05-01T09:00:00Z")
            newest[doc_id] = 1000 + n
        else:
            versioned(cohort, doc_id, patient, 1000 + n, "3", "2024-05-01T10:00:00Z")
            versioned(cohort, doc_id, patient, 2000 + n, "3", "2024-05-01T10:00:00Z")
    for n in range(8):
        cohort.doc(f"plain-{n}", f"pp{n}", data=png(3000 + n))
    folder = write(cohort, tmp_path / "batch")

    ids = set()
    for attempt in range(10):
        fetcher = JitteryFetcher(setup["fetcher"], seed=attempt)
        ids.add(run(engine, setup, folder, workers=4, fetcher=fetcher).snapshot_id)
    assert len(ids) == 1, f"{len(ids)} different snapshot ids in 10 runs"

    # Read in the opposite order (every file line reversed): still the same snapshot.
    docs = list(reversed(cohort.docs))
    reversed_result = run(engine, setup, write(cohort, tmp_path / "reversed", docs), workers=2)
    assert reversed_result.snapshot_id in ids

    examples = manifest(setup, reversed_result)
    for doc_id, seed in newest.items():
        assert examples[doc_id]["image"]["sha256"] == hashlib.sha256(png(seed)).hexdigest()
    assert reversed_result.report["records"]["documentReferenceVersionsSuperseded"] == 12


def test_a_newer_withdrawn_version_removes_the_resource(engine: Engine, tmp_path: Path) -> None:
    setup = new_setup(engine, tmp_path)
    cohort: Cohort = setup["cohort"]
    for n in range(6):
        cohort.doc(f"keep-{n}", f"pk{n}", data=png(4000 + n))
    gone = versioned(cohort, "gone-eie", "pg1", 4100, "2", None)
    gone["status"] = "entered-in-error"
    versioned(cohort, "gone-eie", "pg1", 4101, "1", None)
    old = versioned(cohort, "gone-sup", "pg2", 4102, None, "2024-01-01T00:00:00Z")
    newer = versioned(cohort, "gone-sup", "pg2", 4103, None, "2024-02-01T00:00:00Z")
    newer["status"] = "superseded"
    # An older withdrawn version does not hide a newer current one.
    back = versioned(cohort, "back", "pg3", 4104, "1", None)
    back["status"] = "entered-in-error"
    versioned(cohort, "back", "pg3", 4105, "2", None)
    assert old["status"] == "current"

    result = run(engine, setup, write(cohort, tmp_path / "batch"))

    examples = manifest(setup, result)
    assert "gone-eie" not in examples and "gone-sup" not in examples
    assert "back" in examples
    assert result.report["records"]["documentReferencesExcludedByStatus"] == 2


# ----------------------------------------------------------------------------- splits


def test_an_example_re_filed_under_a_patient_of_another_split_is_quarantined(
    engine: Engine, tmp_path: Path
) -> None:
    setup = new_setup(engine, tmp_path)
    cohort: Cohort = setup["cohort"]
    cohort.add_patients(0, 30, images_each=1)
    first = run(engine, setup, write(cohort, tmp_path / "v1"))
    before = manifest(setup, first)
    moved = next(e for e in before.values() if e["split"] == "train")
    target = next(e for e in before.values() if e["split"] == "validation")
    target_patient = next(d["subject"]["reference"] for d in cohort.docs if d["id"] == target["id"])

    # The record is re-filed under the other patient, with a re-encoded image (new sha256).
    doc = next(d for d in cohort.docs if d["id"] == moved["id"])
    doc["subject"] = {"reference": target_patient}
    doc["content"][0]["attachment"]["url"] = cohort._write_image("refiled.png", png(55_555))
    second = run(engine, setup, write(cohort, tmp_path / "v2"))

    after = manifest(setup, second)
    assert moved["id"] not in after  # never silently in validation
    for example_id, example in before.items():
        if example_id != moved["id"]:
            assert after[example_id]["split"] == example["split"]
    assert reasons(second).get("split_conflict") == 1
    item = next(i for i in second.report["quarantined"]["items"] if i["resourceId"] == moved["id"])
    assert item["reason"] == "split_conflict" and "train" in item["detail"]

    # Filed back under its first patient, it returns to its first split.
    doc["subject"] = {"reference": f"Patient/p{int(moved['id'][1:5]):04d}"}
    third = run(engine, setup, write(cohort, tmp_path / "v3"))
    assert manifest(setup, third)[moved["id"]]["split"] == "train"


# ----------------------------------------------------------------------------- labels


@pytest.mark.parametrize(
    ("code", "index"),
    [("0", 0), ("1", 1), ("255", 255), ("+1", None), (" 1", None), ("01", None),
     ("1_0", None), ("\u0661", None), ("\uff11", None), ("1.0", None), ("", None),
     ("-0", None), ("1\n", None), ("9999", None), (None, None)],
)  # fmt: skip
def test_only_canonical_label_codes_name_an_index(code: str | None, index: int | None) -> None:
    assert label_index(code) == index


def test_non_canonical_and_orphan_labels_are_reported(engine: Engine, tmp_path: Path) -> None:
    setup = new_setup(engine, tmp_path)
    cohort: Cohort = setup["cohort"]
    hostile = ["\u0661", "+1", " 1", "01", "1_0"]
    for n, code in enumerate(hostile):
        cohort.doc(f"lab-{n}", f"pl{n}", data=png(5000 + n))
        cohort.label(f"obs-{n}", f"lab-{n}", code)
    cohort.doc("lab-int", "pli", data=png(5100))
    cohort.label("obs-int", "lab-int", 1)["valueCodeableConcept"]["coding"][0]["code"] = 1
    cohort.doc("lab-ok", "plo", data=png(5101))
    cohort.label("obs-ok", "lab-ok", "1")
    cohort.label("obs-orphan-1", "no-such-doc", "1")
    cohort.label("obs-orphan-2", "no-such-doc-either", "0", status="preliminary")

    result = run(engine, setup, write(cohort, tmp_path / "batch"))

    examples = manifest(setup, result)
    for n in range(len(hostile)):
        assert examples[f"lab-{n}"]["label"]["status"] == "none"
    assert examples["lab-int"]["label"]["status"] == "none"
    assert examples["lab-ok"]["label"]["classes"] == [1]
    assert reasons(result)["label_malformed"] == len(hostile) + 1
    assert reasons(result)["label_orphan"] == 2
    assert result.report["records"]["orphanLabels"] == 2
    orphan_ids = {
        i["resourceId"]
        for i in result.report["quarantined"]["items"]
        if i["reason"] == "label_orphan"
    }
    assert orphan_ids == {"obs-orphan-1", "obs-orphan-2"}


# ----------------------------------------------------------------------------- ids


@pytest.mark.parametrize("bad", ["../..", "a/b", "/abs"])
def test_curating_a_dataset_with_an_unsafe_id_builds_no_path(
    engine: Engine, tmp_path: Path, bad: str
) -> None:
    """A dataset row written around the config checks (by hand, or by an older version):
    curation refuses its id before building any file name or storage key from it."""
    from patient_ml.db.models import Dataset
    from patient_ml.exceptions import InvalidInputError

    config = dataset_config("legacy", "code-legacy")
    with session_scope(engine) as session:
        session.add(
            Dataset(
                id=bad,
                name=f"legacy-{uuid.uuid4().hex[:6]}",
                description="",
                problem_type="imgClf",
                problem_definition=config["problemDefinition"],
                curation=config["curation"],
                source=config["source"],
                created_by="t",
            )
        )
    root = tmp_path / "root"
    work = root / "a" / "b" / "work"
    source = root / "source"
    source.mkdir(parents=True)
    (source / "DocumentReference.ndjson").write_bytes(b"")
    with pytest.raises(InvalidInputError, match="not a valid identifier"):
        curate(
            engine=engine,
            dataset_ref=bad,
            source=NdjsonSource(source),
            store=LocalArtifactStore(root / "artifacts"),
            fetcher=ImageFetcher(FetchPolicy()),
            workdir=work,
        )
    created = sorted(str(p.relative_to(root)) for p in root.rglob("*"))
    assert created in (
        ["source", "source/DocumentReference.ndjson"],
        ["artifacts", "source", "source/DocumentReference.ndjson"],
    )


# ----------------------------------------------------------------------------- FHIR validity


def test_a_rejected_record_carries_fhir_resources_precise_reason(
    engine: Engine, tmp_path: Path
) -> None:
    """The fast parser rejects; fhir.resources says exactly what is invalid FHIR (field and
    rule, no value). A record that is valid FHIR but outside the contract gets no such text."""
    setup = new_setup(engine, tmp_path)
    cohort: Cohort = setup["cohort"]
    cohort.doc("no-content", "pa", data=png(6000)).pop("content")
    cohort.doc("group-subject", "pb", data=png(6001))["subject"] = {"reference": "Group/g1"}
    cohort.doc("int-code", "pc", data=png(6002))
    cohort.label("obs-int-code", "int-code", 1)["valueCodeableConcept"]["coding"][0]["code"] = 7

    result = run(engine, setup, write(cohort, tmp_path / "batch"))

    items = {i["resourceId"]: i for i in result.report["quarantined"]["items"]}
    assert items["no-content"]["reason"] == "missing_attachment"
    assert items["no-content"]["detail"] == "FHIR R4B: content: Field required"
    assert items["obs-int-code"]["reason"] == "label_malformed"
    assert items["obs-int-code"]["detail"] == (
        "the label code is not a string; "
        "FHIR R4B: valueCodeableConcept.coding[0].code: Input should be a valid string"
    )
    assert items["group-subject"]["reason"] == "subject_not_patient"
    assert items["group-subject"]["detail"] == "Group"  # valid FHIR: nothing to add
