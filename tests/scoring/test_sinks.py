"""Writing predictions back: against a real FHIR R4 server (sekmet) one transaction of PUTs per
chunk, idempotent by id (a rerun makes version 2, never a duplicate) and found by identifier,
code and image; to an NDJSON folder appended under the label sink's lock with versions that make
the newest line win; and the examples index of the dataset never counts a prediction as a
label."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import orjson
import pytest
import requests

from patient_ml.curation.pipeline import DatasetView
from patient_ml.exceptions import PatientMLError
from patient_ml.fhir import mapping
from patient_ml.fhir.client import FhirClient, FhirError
from patient_ml.fhir.validation import InvalidFhirResourceError, problems
from patient_ml.labels.sinks import LABELS_FILE, LabelSinkError
from patient_ml.scoring.observations import ScoringModel, prediction_id, prediction_resources
from patient_ml.scoring.sinks import (
    PREDICTIONS_FILE,
    FhirTransactionSink,
    NdjsonFolderPredictionSink,
    S3PredictionSink,
    last_version,
    prediction_sink_for,
    predictions_file,
    transaction_bundle,
)
from patient_ml.services import examples as ex
from tests.fhir import resources as fhir_records
from tests.fhir_server import FhirServer
from tests.scoring.predictions import (
    ISSUED,
    LABEL_SYSTEM,
    classifier,
    clf_output,
    scored,
    seg_output,
    segmenter,
)

PREDICTION_CODE = f"{mapping.LABEL_CODE_SYSTEM}|{mapping.PREDICTION_CODE}"


@pytest.fixture
def client(fhir_server: FhirServer) -> Iterator[FhirClient]:
    fhir = FhirClient(fhir_server.base_url, page_size=50, backoff_base=0.05)
    yield fhir
    fhir.close()


def _images(client: FhirClient, count: int) -> list[str]:
    """`count` image DocumentReferences (and their Patient) on the server; their ids."""
    system, patient_id = fhir_records.tag(), f"p-{uuid.uuid4().hex[:12]}"
    client.update({**fhir_records.patient(system, "p"), "id": patient_id})
    ids = []
    for i in range(count):
        doc_id = f"img-{uuid.uuid4().hex[:12]}"
        doc = fhir_records.document_reference(system, str(i), f"Patient/{patient_id}")
        client.update({**doc, "id": doc_id})
        ids.append(doc_id)
    return ids


def _chunk(model: ScoringModel, ids: list[str], positive: float) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for i, example_id in enumerate(ids):
        output = clf_output(positive) if model.problem_type == "imgClf" else seg_output()
        out += prediction_resources(model, scored(example_id, output, None), ISSUED)
        positive = (positive + 0.1 * (i + 1)) % 1.0
    return out


class CountingClient(FhirClient):
    requests_made: list[str]

    def request(self, method: str, url: str, **kw: Any) -> requests.Response:
        self.requests_made.append(f"{method} {url}")
        return super().request(method, url, **kw)


def _search(client: FhirClient, params: dict[str, str]) -> list[dict[str, Any]]:
    return list(client.search("Observation", params))


def test_a_chunk_written_twice_is_one_transaction_each_and_version_2(
    fhir_server: FhirServer, client: FhirClient
) -> None:
    model = classifier(f"mdl-{uuid.uuid4().hex[:10]}")
    ids = _images(client, 3)
    counting = CountingClient(fhir_server.base_url, backoff_base=0.05)
    counting.requests_made = []
    sink = prediction_sink_for(SimpleNamespace(type="fhirServer"), fhir_client=counting)
    assert isinstance(sink, FhirTransactionSink)

    assert sink.write(_chunk(model, ids, 0.8)) == 3
    assert counting.requests_made == [f"POST {fhir_server.base_url}"]  # one transaction
    rerun = _chunk(classifier(model.model_id, batch_id="batch-2"), ids, 0.3)
    assert sink.write(rerun) == 3
    assert len(counting.requests_made) == 2
    counting.close()

    for example_id in ids:
        value = f"{model.model_id}|{example_id}"
        found = _search(client, {"identifier": f"{mapping.PREDICTION_IDENTIFIER_SYSTEM}|{value}"})
        assert len(found) == 1, example_id
        [obs] = found
        assert obs["id"] == prediction_id(model.model_id, example_id)
        assert obs["meta"]["versionId"] == "2"
        assert obs["status"] == "preliminary"
        batch = [e for e in obs["extension"] if e["url"] == mapping.SCORING_BATCH_EXTENSION_URL]
        assert batch[0]["valueString"] == "batch-2"
        assert problems(obs) == []  # what the server gives back is still valid R4B
        # FHIR search escapes a `|` inside the value; sekmet takes it either way
        escaped = value.replace("|", "\\|")
        assert _search(
            client, {"identifier": f"{mapping.PREDICTION_IDENTIFIER_SYSTEM}|{escaped}"}
        ) == [obs]
    history = requests.get(
        f"{fhir_server.base_url}/Observation/{prediction_id(model.model_id, ids[0])}/_history",
        timeout=10,
    ).json()
    assert sorted(e["resource"]["meta"]["versionId"] for e in history["entry"]) == ["1", "2"]

    by_code = {o["id"] for o in _search(client, {"code": PREDICTION_CODE})}
    assert {prediction_id(model.model_id, i) for i in ids} <= by_code
    # the label search of curation (code image-label) finds none of them
    labels = {
        o["id"] for o in _search(client, {"code": f"{mapping.LABEL_CODE_SYSTEM}|image-label"})
    }
    assert not labels & by_code


def test_sekmet_searches_predictions_by_the_image_they_derive_from(client: FhirClient) -> None:
    model, other = (
        classifier(f"mdl-{uuid.uuid4().hex[:10]}"),
        classifier(f"mdl-{uuid.uuid4().hex[:10]}"),
    )
    ids = _images(client, 2)
    sink = FhirTransactionSink(client)
    sink.write(_chunk(model, ids, 0.6) + _chunk(other, ids[:1], 0.2))

    found = _search(
        client, {"derived-from": f"DocumentReference/{ids[0]}", "code": PREDICTION_CODE}
    )
    assert {o["id"] for o in found} == {
        prediction_id(model.model_id, ids[0]),
        prediction_id(other.model_id, ids[0]),
    }
    only = _search(client, {"derived-from": f"DocumentReference/{ids[1]}"})
    assert [o["id"] for o in only] == [prediction_id(model.model_id, ids[1])]


def test_a_segmentation_chunk_puts_mask_binaries_and_observations(client: FhirClient) -> None:
    model = segmenter(f"mdl-{uuid.uuid4().hex[:10]}")
    ids = _images(client, 2)
    written = _chunk(model, ids, 0.5)
    FhirTransactionSink(client).write(written)
    FhirTransactionSink(client).write(written)  # rerun: updates, no duplicates

    for example_id in ids:
        [obs] = _search(
            client,
            {"identifier": f"{mapping.PREDICTION_IDENTIFIER_SYSTEM}|{model.model_id}|{example_id}"},
        )
        [ext] = [e for e in obs["extension"] if e["url"] == mapping.MASK_EXTENSION_URL]
        content, content_type = client.read_binary(ext["valueAttachment"]["url"])
        assert content_type == "image/png"
        assert len(content) == ext["valueAttachment"]["size"]
        assert obs["meta"]["versionId"] == "2"


def test_a_failed_transaction_writes_nothing(client: FhirClient) -> None:
    model = classifier(f"mdl-{uuid.uuid4().hex[:10]}")
    ids = _images(client, 2)
    good, bad = _chunk(model, ids, 0.7)
    bad = {**bad, "issued": "not-a-date"}
    with pytest.raises(InvalidFhirResourceError, match="issued"):
        transaction_bundle([good, bad])  # refused before anything is sent
    bundle = transaction_bundle([good])  # the server refuses an entry: all or nothing
    bundle["entry"].append(
        {"resource": bad, "request": {"method": "PUT", "url": f"Observation/{bad['id']}"}}
    )
    with pytest.raises(FhirError):
        client.transaction(bundle)
    for example_id in ids:
        value = f"{model.model_id}|{example_id}"
        assert (
            _search(client, {"identifier": f"{mapping.PREDICTION_IDENTIFIER_SYSTEM}|{value}"}) == []
        )


def test_the_bundle_is_validated_and_needs_ids() -> None:
    bundle = transaction_bundle(_chunk(classifier(), ["ex-1"], 0.5), base_url="http://h/fhir")
    assert problems(bundle) == []
    [entry] = bundle["entry"]
    assert entry["request"] == {"method": "PUT", "url": f"Observation/{entry['resource']['id']}"}
    assert entry["fullUrl"] == f"http://h/fhir/Observation/{entry['resource']['id']}"
    with pytest.raises(PatientMLError, match="no resourceType or id"):
        transaction_bundle([{"resourceType": "Observation"}])
    with pytest.raises(PatientMLError, match="need a FHIR client"):
        prediction_sink_for(SimpleNamespace(type="fhirServer"))
    assert FhirTransactionSink(object()).write([]) == 0


# -- NDJSON -------------------------------------------------------------------------------


def _lines(path: Path) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines()]


def _newest(lines: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    newest: dict[str, dict[str, Any]] = {}
    for line in lines:
        old = newest.get(line["id"])
        if old is None or int(line["meta"]["versionId"]) > int(old["meta"]["versionId"]):
            newest[line["id"]] = line
    return newest


def test_ndjson_folder_two_writes_the_newest_version_of_each_id_wins(tmp_path: Path) -> None:
    source = SimpleNamespace(type="ndjson", uri=str(tmp_path))
    sink = prediction_sink_for(source)
    assert isinstance(sink, NdjsonFolderPredictionSink)
    ids = ["ex-1", "ex-2", "ex-3"]
    first = _chunk(classifier(), ids, 0.8)
    second = _chunk(classifier(batch_id="batch-2"), ids, 0.1)
    assert sink.write(first) == 3
    assert sink.write(second) == 3

    lines = _lines(tmp_path / PREDICTIONS_FILE)
    assert len(lines) == 6
    newest = _newest(lines)
    assert set(newest) == {prediction_id("mdl-clf", i) for i in ids}
    for obs in newest.values():
        batch = [e for e in obs["extension"] if e["url"] == mapping.SCORING_BATCH_EXTENSION_URL]
        assert batch[0]["valueString"] == "batch-2"
        assert obs["meta"]["lastUpdated"]
        assert problems(obs) == []
    versions = [int(line["meta"]["versionId"]) for line in lines]
    assert versions[3] > versions[0]  # the second write's lines outrank the first's
    assert last_version_of(tmp_path / PREDICTIONS_FILE) == versions[-1]
    assert not (tmp_path / LABELS_FILE).exists()  # labels are another file


def last_version_of(path: Path) -> int:
    import os

    fd = os.open(path, os.O_RDONLY)
    try:
        return last_version(fd)
    finally:
        os.close(fd)


def test_a_version_from_the_future_in_the_file_is_still_outranked(tmp_path: Path) -> None:
    """A clock set back cannot make a newer line lose: the version follows the file's last."""
    future = 10**18
    (tmp_path / PREDICTIONS_FILE).write_bytes(
        orjson.dumps({"resourceType": "Observation", "id": "x", "meta": {"versionId": str(future)}})
        + b"\n"
    )
    NdjsonFolderPredictionSink(tmp_path).write(_chunk(classifier(), ["ex-1"], 0.5))
    assert int(_lines(tmp_path / PREDICTIONS_FILE)[-1]["meta"]["versionId"]) == future + 1


def test_last_version_reads_a_tail_longer_than_one_block(tmp_path: Path) -> None:
    big = {"resourceType": "Binary", "id": "b", "data": "A" * 200_000, "meta": {"versionId": "42"}}
    path = tmp_path / "Binary.ndjson"
    path.write_bytes(orjson.dumps({"id": "a", "meta": {"versionId": "7"}}) + b"\n"
                     + orjson.dumps(big) + b"\n")  # fmt: skip
    assert last_version_of(path) == 42
    path.write_bytes(b"")
    assert last_version_of(path) == 0


def test_ndjson_segmentation_masks_go_to_their_own_binary_file(tmp_path: Path) -> None:
    NdjsonFolderPredictionSink(tmp_path).write(_chunk(segmenter(), ["ex-1", "ex-2"], 0.5))
    assert [r["resourceType"] for r in _lines(tmp_path / predictions_file("Binary"))] == [
        "Binary",
        "Binary",
    ]
    assert len(_lines(tmp_path / PREDICTIONS_FILE)) == 2


def test_a_fifo_in_place_of_the_predictions_file_is_refused(tmp_path: Path) -> None:
    import os

    os.mkfifo(tmp_path / PREDICTIONS_FILE)
    with pytest.raises(LabelSinkError, match="Predictions cannot be written"):
        NdjsonFolderPredictionSink(tmp_path).write(_chunk(classifier(), ["ex-1"], 0.5))


def test_s3_gets_one_object_per_write(monkeypatch: pytest.MonkeyPatch) -> None:
    puts: list[tuple[str, bytes]] = []

    class Store:
        def put_bytes(self, key: str, data: bytes) -> None:
            puts.append((key, data))

    monkeypatch.setattr("patient_ml.labels.sinks.artifact_store_from_uri", lambda *a, **k: Store())
    sink = prediction_sink_for(SimpleNamespace(type="ndjson", uri="s3://bucket/ds"))
    assert isinstance(sink, S3PredictionSink)
    sink.write(_chunk(classifier(), ["ex-1", "ex-2"], 0.5))
    [(key, data)] = puts
    assert key.startswith("Observation.patient-ml-predictions-") and key.endswith(".ndjson")
    assert len(data.splitlines()) == 2


def test_the_examples_index_of_the_folder_counts_no_prediction_as_a_label(tmp_path: Path) -> None:
    """The dataset's own NDJSON folder: two images, a confirmed label on one, predictions on
    both; the index built from every record of the folder has one label and one unlabelled."""
    docs = []
    for example_id in ("ex-1", "ex-2"):
        doc = fhir_records.document_reference("urn:sys", example_id, "Patient/p1")
        docs.append({**doc, "id": example_id})
    (tmp_path / "DocumentReference.ndjson").write_bytes(
        b"".join(orjson.dumps(d) + b"\n" for d in docs)
    )
    label = {
        "resourceType": "Observation", "id": "lbl-1", "status": "final",
        "code": {"coding": [{"system": mapping.LABEL_CODE_SYSTEM, "code": mapping.LABEL_CODE}]},
        "focus": [{"reference": "DocumentReference/ex-1"}],
        "valueCodeableConcept": {"coding": [{"system": LABEL_SYSTEM, "code": "0"}]},
    }  # fmt: skip
    (tmp_path / LABELS_FILE).write_bytes(orjson.dumps(label) + b"\n")
    NdjsonFolderPredictionSink(tmp_path).write(_chunk(classifier(), ["ex-1", "ex-2"], 0.9))

    records = [
        (f"{path.name}:{n}", None, line)
        for path in sorted(tmp_path.glob("*.ndjson"))
        for n, line in enumerate(path.read_bytes().splitlines())
    ]
    view = DatasetView(
        id="ds", name="brain", problem_type="imgClf", labels=((0, "no tumour"), (1, "tumour")),
        label_system=LABEL_SYSTEM, filter_codes=(f"{fhir_records.LOINC}|{fhir_records.MRI_BRAIN}",),
        split_ratios={"train": 0.6, "validation": 0.2, "test": 0.2}, max_image_bytes=10**7,
        max_image_pixels=10**7, min_image_side=1, salt="salt",
    )  # fmt: skip
    index = ex.build_index(view, records)
    assert set(index.examples) == {"ex-1", "ex-2"}
    one, two = index.examples["ex-1"], index.examples["ex-2"]
    assert one.label is not None and one.label.record.id == "lbl-1"
    assert [o["id"] for o in one.observations] == ["lbl-1"]  # the prediction (0.9: 1) is not
    assert two.label is None and two.observations == ()
