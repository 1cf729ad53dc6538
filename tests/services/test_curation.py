"""Curation end to end on real files, a real FHIR server and both product-DB engines:
quarantine of every bad input, patient-level splits, idempotence and stability across runs."""

from __future__ import annotations

import hashlib
import os
import tempfile
import uuid
from collections import defaultdict
from pathlib import Path
from typing import Any

import orjson
import pytest
from sqlalchemy import Engine, func, select

from patient_ml.curation.fetch import FetchPolicy, ImageFetcher
from patient_ml.curation.sources import (
    FhirBulkExportSource,
    FhirSearchSource,
    NdjsonSource,
    S3NdjsonSource,
)
from patient_ml.db.engine import session_scope
from patient_ml.db.models import SplitAssignment
from patient_ml.fhir.client import FhirClient
from patient_ml.services.curation import curate
from patient_ml.services.datasets import create_dataset
from patient_ml.storage import LocalArtifactStore, artifact_store_from_uri
from tests.curation.cohort import CODE_SYSTEM, Cohort, dataset_config, png
from tests.curation.hostile import HostileServer
from tests.fhir_server import FhirServer
from tests.s3_server import S3Server


def new_dataset(engine: Engine, **curation: Any) -> tuple[str, str, str]:
    name = f"ds-{uuid.uuid4().hex[:8]}"
    code = f"code-{uuid.uuid4().hex[:8]}"
    with session_scope(engine) as session:
        dataset_id = create_dataset(session, dataset_config(name, code, **curation), actor="t").id
    return dataset_id, name, code


def read_manifest(store: LocalArtifactStore, uri: str) -> tuple[dict[str, Any], list[dict]]:
    key = uri.removeprefix(store.uri(""))
    lines = store.read_bytes(key).splitlines()
    return orjson.loads(lines[0]), [orjson.loads(line) for line in lines[1:]]


@pytest.fixture
def setup(engine: Engine, tmp_path: Path) -> dict[str, Any]:
    dataset_id, name, code = new_dataset(engine)
    cohort = Cohort(tmp_path / "source", code, f"urn:test:{name}")
    cohort.add_patients(0, 30)
    cohort.add_bad_records(tmp_path / "outside")
    store = LocalArtifactStore(tmp_path / "artifacts")
    fetcher = ImageFetcher(FetchPolicy(allowed_file_roots=(cohort.images,), max_bytes=20_000))
    return {"id": dataset_id, "cohort": cohort, "store": store, "fetcher": fetcher}


def run(engine: Engine, setup: dict[str, Any], source: Any, tmp_path: Path, **kw: Any) -> Any:
    return curate(
        engine=engine,
        dataset_ref=setup["id"],
        source=source,
        store=setup["store"],
        fetcher=setup["fetcher"],
        workdir=tmp_path / f"work-{uuid.uuid4().hex[:6]}",
        **({"workers": 4} | kw),
    )


def test_curation_from_ndjson_quarantines_every_bad_record(
    engine: Engine, setup: dict[str, Any], tmp_path: Path
) -> None:
    cohort: Cohort = setup["cohort"]
    folder = cohort.write_ndjson(tmp_path / "ndjson")

    result = run(engine, setup, NdjsonSource(folder), tmp_path)

    assert result.created
    report = result.report
    by_reason = {r: v["count"] for r, v in report["quarantined"]["byReason"].items()}
    assert by_reason == cohort.expected_reasons
    header, examples = read_manifest(setup["store"], result.manifest_uri)
    assert header["datasetId"] == setup["id"] and header["problemType"] == "imgClf"
    assert {e["id"] for e in examples} == cohort.good_ids
    assert result.example_count == len(examples) == report["examples"]["total"]
    assert report["records"]["documentReferencesNotSelected"] == 1
    assert report["records"]["documentReferencesExcludedByStatus"] == 1

    # Patient-level split: a patient never has examples in two splits.
    splits_of: dict[str, set[str]] = defaultdict(set)
    for example in examples:
        splits_of[example["patientKey"]].add(example["split"])
    assert all(len(s) == 1 for s in splits_of.values())
    assert set(report["patients"]) == {"train", "validation", "test"}
    assert sum(report["patients"].values()) == len(splits_of)
    assert all(count > 0 for count in report["examples"]["bySplit"].values())
    # No patient identifier leaks into the manifest (keyed hash only).
    manifest_text = setup["store"].read_bytes(
        result.manifest_uri.removeprefix(setup["store"].uri(""))
    )
    assert b"p0001" not in manifest_text and b"Patient/" not in manifest_text

    # Labels: confirmed / draft / none as in the records.
    statuses = {e["id"]: e["label"]["status"] for e in examples}
    assert statuses["d0000-0"] == "confirmed" and statuses["d0000-1"] == "draft"
    assert statuses["d0001-2" if "d0001-2" in statuses else "d0002-1"] in {"none", "draft"}
    assert statuses["lbl-target"] == "none"  # its only labels were quarantined
    totals = defaultdict(int)
    for split in ("train", "validation", "test"):
        for status, n in report["examples"]["byLabelStatus"][split].items():
            totals[status] += n
    assert totals["confirmed"] == sum(1 for s in statuses.values() if s == "confirmed")

    # Every image is in the store under its content address, bytes intact.
    for example in examples:
        key = f"datasets/{setup['id']}/{example['image']['key']}"
        data = setup["store"].read_bytes(key)
        assert hashlib.sha256(data).hexdigest() == example["image"]["sha256"]
    base = f"datasets/{setup['id']}/snapshots/{result.snapshot_id}"
    stored_report = orjson.loads(setup["store"].read_bytes(f"{base}/report.json"))
    assert stored_report["quarantined"]["total"] == sum(cohort.expected_reasons.values())
    quarantine_lines = setup["store"].read_bytes(f"{base}/quarantine.jsonl").splitlines()
    assert len(quarantine_lines) == stored_report["quarantined"]["total"]


def test_same_inputs_give_the_same_snapshot(
    engine: Engine, setup: dict[str, Any], tmp_path: Path
) -> None:
    folder = setup["cohort"].write_ndjson(tmp_path / "ndjson")
    first = run(engine, setup, NdjsonSource(folder), tmp_path)
    second = run(engine, setup, NdjsonSource(folder), tmp_path, workers=1)
    assert second.snapshot_id == first.snapshot_id
    assert (first.created, second.created) == (True, False)
    assert second.manifest_uri == first.manifest_uri


def test_new_data_never_moves_earlier_examples(
    engine: Engine, setup: dict[str, Any], tmp_path: Path
) -> None:
    cohort: Cohort = setup["cohort"]
    first = run(engine, setup, NdjsonSource(cohort.write_ndjson(tmp_path / "v1")), tmp_path)
    _, before = read_manifest(setup["store"], first.manifest_uri)

    cohort.add_patients(100, 40)
    # A new record carrying a byte-identical copy of an earlier image, under a new patient:
    # the identical image links the new patient to the old one's split.
    old = next(e for e in before if e["id"] == "d0005-0")
    copy_bytes = setup["store"].read_bytes(f"datasets/{setup['id']}/{old['image']['key']}")
    cohort.doc("copy-of-d0005-0", "p7777", data=copy_bytes)
    cohort.doc("p7777-other", "p7777", data=b"" + _png_for("p7777"))
    second = run(engine, setup, NdjsonSource(cohort.write_ndjson(tmp_path / "v2")), tmp_path)

    assert second.snapshot_id != first.snapshot_id and second.created
    _, after = read_manifest(setup["store"], second.manifest_uri)
    split_after = {e["id"]: e["split"] for e in after}
    for example in before:
        assert split_after[example["id"]] == example["split"], example["id"]
    # The new patient's other image follows the split of the image it shares.
    assert split_after["p7777-other"] == old["split"]
    assert "copy-of-d0005-0" not in split_after  # collapsed into the earlier identical example
    with session_scope(engine) as session:
        stored = session.scalar(
            select(func.count())
            .select_from(SplitAssignment)
            .where(SplitAssignment.dataset_id == setup["id"])
        )
    assert stored and stored >= len({e["patientKey"] for e in after})


def _png_for(tag: str) -> bytes:
    from tests.curation.cohort import png

    return png(int(hashlib.sha256(tag.encode()).hexdigest()[:6], 16))


@pytest.mark.parametrize("mode", ["search", "export"])
def test_curation_from_a_real_fhir_server_matches_ndjson(
    engine: Engine, setup: dict[str, Any], tmp_path: Path, fhir_server: FhirServer, mode: str
) -> None:
    cohort: Cohort = setup["cohort"]
    from_files = run(engine, setup, NdjsonSource(cohort.write_ndjson(tmp_path / "n")), tmp_path)
    _, file_examples = read_manifest(setup["store"], from_files.manifest_uri)

    client = FhirClient(fhir_server.base_url)
    client.transaction(cohort.transaction())
    if mode == "search":
        source: Any = FhirSearchSource(client, [f"{CODE_SYSTEM}|{cohort.code}"])
    else:
        source = FhirBulkExportSource(client)
    result = run(engine, setup, source, tmp_path)

    _, server_examples = read_manifest(setup["store"], result.manifest_uri)
    by_id = {e["id"]: e for e in file_examples}
    served = {e["id"]: e for e in server_examples}
    # The server stores only well-formed resources; every good example comes through, in the
    # same split, with the same label.
    assert set(served) == set(by_id)
    for doc_id, example in served.items():
        assert example["split"] == by_id[doc_id]["split"]
        assert example["label"]["status"] == by_id[doc_id]["label"]["status"]
        assert example["image"]["sha256"] == by_id[doc_id]["image"]["sha256"]


def test_curation_with_images_and_artifacts_on_s3(
    engine: Engine, tmp_path: Path, s3: S3Server
) -> None:
    dataset_id, name, code = new_dataset(engine)
    cohort = Cohort(tmp_path / "source", code, f"urn:test:{name}")
    cohort.add_patients(0, 12)
    images_bucket, artifacts_bucket = s3.new_bucket(), s3.new_bucket()
    client = s3.client()
    for resource in cohort.docs:
        attachment = resource["content"][0]["attachment"]
        path = Path(attachment["url"].removeprefix("file://"))
        client.put_object(Bucket=images_bucket, Key=f"in/{path.name}", Body=path.read_bytes())
        attachment["url"] = f"s3://{images_bucket}/in/{path.name}"
    cohort.doc("s3-missing", "p5000", url=f"s3://{images_bucket}/in/missing.png")
    store = artifact_store_from_uri(f"s3://{artifacts_bucket}/pml", aws_conn_id=s3.conn_id)
    fetcher = ImageFetcher(FetchPolicy(max_bytes=20_000, aws_conn_id=s3.conn_id))
    setup = {"id": dataset_id, "store": store, "fetcher": fetcher}

    result = run(engine, setup, NdjsonSource(cohort.write_ndjson(tmp_path / "n")), tmp_path)

    assert result.manifest_uri.startswith(f"s3://{artifacts_bucket}/pml/datasets/{dataset_id}/")
    assert result.example_count == len(cohort.good_ids)
    assert result.report["quarantined"]["byReason"]["image_not_found"]["count"] == 1
    keys = list(store.list_keys(f"datasets/{dataset_id}"))
    assert sum(k.endswith(".png") for k in keys) == len(cohort.good_ids)
    assert any(k.endswith("/report.json") for k in keys)
    # The same records read as NDJSON objects from S3 give the same snapshot.
    for path in sorted((tmp_path / "n").glob("*.ndjson")):
        client.put_object(Bucket=images_bucket, Key=f"export/{path.name}", Body=path.read_bytes())
    s3_source = S3NdjsonSource(f"s3://{images_bucket}/export", aws_conn_id=s3.conn_id)
    again = run(engine, setup, s3_source, tmp_path)
    assert (again.snapshot_id, again.created) == (result.snapshot_id, False)


def test_hostile_records_are_quarantined_and_curation_finishes(
    engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One NDJSON batch of hostile attachments: every one is quarantined with a reason, the
    others make a snapshot, nothing from a disallowed port is stored, no temp folder is left."""
    allowed, disallowed = HostileServer(png(7001)), HostileServer(png(7002) + b"DISALLOWED")
    try:
        dataset_id, name, code = new_dataset(engine)
        cohort = Cohort(tmp_path / "source", code, f"urn:test:{name}")
        cohort.add_patients(0, 6)
        images = cohort.images
        os.symlink(images / "loop-b", images / "loop-a")
        os.symlink(images / "loop-a", images / "loop-b")
        os.mkfifo(images / "fifo.png")
        a, d = allowed.port, disallowed.port
        hostile = {
            f"http://127.0.0.1:{d}\\@127.0.0.1:{a}/x.png": "url_malformed",
            f"http://127.0.0.1:{a}/redirect-to/http%3A%2F%2F127.0.0.1%3A99999%2Fx.png": (
                "url_malformed"
            ),
            f"http://127.0.0.1:{a}/redirect-to/http%3A%2F%2F127.0.0.1%3A{d}%2Fx.png": (
                "url_not_allowed"
            ),
            "http://127.0.0.1:port/x.png": "url_malformed",
            "http://[::1/x.png": "url_malformed",
            f"file://{images}/a%00.png": "url_malformed",
            f"file://{images}/loop-a": "image_unreachable",
            f"file://{images}/{'n' * 300}.png": "image_unreachable",
            f"file://{images}/fifo.png": "image_not_found",
            f"http://127.0.0.1:{a}/trickle": "image_fetch_timeout",
        }
        for n, url in enumerate(hostile):
            cohort.doc(f"hostile-{n:02d}", f"p9{n:03d}", url=url)
        cohort.doc("via-allowed", "p8000", url=f"http://127.0.0.1:{a}/ok.png")
        cohort.good_ids.add("via-allowed")
        store = LocalArtifactStore(tmp_path / "artifacts")
        fetcher = ImageFetcher(
            FetchPolicy(
                allowed_file_roots=(images,),
                allowed_http_hosts=(f"127.0.0.1:{a}",),
                max_bytes=20_000,
                deadline=1.0,
            )
        )
        temp = tmp_path / "temp"
        temp.mkdir()
        monkeypatch.setattr(tempfile, "tempdir", str(temp))
        source = NdjsonSource(cohort.write_ndjson(tmp_path / "ndjson"))

        result = curate(
            engine=engine,
            dataset_ref=dataset_id,
            source=source,
            store=store,
            fetcher=fetcher,
            workers=4,
        )
    finally:
        allowed.close()
        disallowed.close()

    assert result.created
    items = {i["resourceId"]: i["reason"] for i in result.report["quarantined"]["items"]}
    assert items == {f"hostile-{n:02d}": reason for n, reason in enumerate(hostile.values())}
    _, examples = read_manifest(store, result.manifest_uri)
    assert {e["id"] for e in examples} == cohort.good_ids
    assert disallowed.requests == 0
    for path in (tmp_path / "artifacts").rglob("*"):
        assert not path.is_file() or b"DISALLOWED" not in path.read_bytes(), path
    assert list(temp.iterdir()) == []  # item 10: no patient-ml-curation-* folder left


def test_the_temporary_folder_is_removed_when_curation_fails(
    engine: Engine, setup: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    temp = tmp_path / "temp"
    temp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temp))

    class BrokenSource:
        description = "a source that fails half-way"

        def records(self) -> Any:
            yield from NdjsonSource(setup["cohort"].write_ndjson(tmp_path / "n")).records()
            raise OSError("the export disappeared")

    with pytest.raises(OSError, match="disappeared"):
        curate(
            engine=engine,
            dataset_ref=setup["id"],
            source=BrokenSource(),
            store=setup["store"],
            fetcher=setup["fetcher"],
        )
    assert list(temp.iterdir()) == []


def test_s3_source_reads_objects_with_very_long_keys(tmp_path: Path, s3: S3Server) -> None:
    bucket = s3.new_bucket()
    cohort = Cohort(tmp_path / "source", "code", "urn:test:labels")
    cohort.add_patients(0, 3)
    folder = cohort.write_ndjson(tmp_path / "n")
    client = s3.client()
    long_prefix = "/".join(["x" * 200] * 4)  # a local file name this long cannot exist
    for path in sorted(folder.glob("*.ndjson")):
        client.put_object(
            Bucket=bucket, Key=f"export/{long_prefix}/{path.name}", Body=path.read_bytes()
        )
    source = S3NdjsonSource(f"s3://{bucket}/export", aws_conn_id=s3.conn_id)
    records = list(source.records())
    assert len(records) == len(list(NdjsonSource(folder).records()))
    assert records[0][1] == "DocumentReference"
