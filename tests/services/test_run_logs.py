"""The logs service on a real local artifact store: CloudWatch plain-text filters, paging by
opaque markers (every event exactly once, in order), torn and foreign lines, missing objects."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import pytest

from patient_ml.exceptions import InvalidInputError
from patient_ml.log_records import LogFile, encode
from patient_ml.services.log_filter import parse_filter
from patient_ml.services.run_logs import read_events, run_logs_page
from patient_ml.storage import ArtifactNotFoundError, LocalArtifactStore

RUN = "run-1"
LINES = [
    "[trial 0] training on 40 examples",
    "[trial 0] epoch=1 val_loss=0.5000 val_accuracy=0.5000",
    "[trial 0] ERROR CUDA out of memory",
    "[trial 0] WARN slow data loader",
    "[trial 0] done",
]


def matching(pattern: str, lines: list[str] = LINES) -> list[str]:
    keep = parse_filter(pattern)
    return [line for line in lines if keep.matches(line)]


@pytest.fixture
def store(tmp_path: Path) -> LocalArtifactStore:
    return LocalArtifactStore(tmp_path / "artifacts")


def put(store: LocalArtifactStore, key: str, records: list[tuple[float, str]]) -> None:
    store.put_bytes(f"runs/{RUN}/logs/{key}", b"".join(encode(m, t) for t, m in records))


def payloads(body: dict[str, Any]) -> list[str]:
    return [e["payload"] for e in body["events"]]


def test_plain_terms_must_all_appear_case_sensitively() -> None:
    assert matching("") == matching("   ") == LINES
    assert matching("epoch val_loss") == [LINES[1]]
    assert matching("ERROR memory") == [LINES[2]]
    assert matching("error") == []
    assert matching("val_acc") == [LINES[1]]  # substring, as in CloudWatch


def test_quoted_phrases_are_one_term() -> None:
    assert matching('"out of memory"') == [LINES[2]]
    assert matching('"memory out"') == []
    assert matching('"[trial 0] done"') == [LINES[4]]
    assert matching('""') == LINES
    assert matching(r'"say \"hi\""', ['say "hi" now', "say hi"]) == ['say "hi" now']


def test_question_mark_terms_match_any() -> None:
    assert matching("?ERROR ?WARN") == [LINES[2], LINES[3]]
    assert matching('?"slow data" ?nothing') == [LINES[3]]


def test_exclusions_follow_a_positive_term() -> None:
    assert matching("trial -epoch -ERROR -WARN") == [LINES[0], LINES[4]]
    assert matching('?ERROR ?WARN -"slow data"') == [LINES[2]]
    assert matching('"" -trial') == []
    assert matching("val_loss-0.5") == []  # a dash inside a term is not an exclusion


@pytest.mark.parametrize(
    ("pattern", "says"),
    [
        ("{ $.level = 1 }", "JSON filter patterns are not supported"),
        ("[ip, user, status=404]", "space-delimited filter patterns are not supported"),
        ("%ERR.*%", "regular-expression filter patterns are not supported"),
        ("ERROR ?WARN", "cannot be mixed"),
        ("?WARN ERROR", "cannot be mixed"),
        ("-ERROR", "before any term"),
        ('"not closed', "not closed"),
        ("a ? b", "must be followed by a term"),
        ('"a"b', "followed by a space"),
        ('ab"c', "quote inside"),
    ],
)
def test_unsupported_or_malformed_filters_are_field_errors(pattern: str, says: str) -> None:
    with pytest.raises(InvalidInputError) as caught:
        parse_filter(pattern)
    error = caught.value
    assert error.http_status == 422
    [field] = error.errors
    assert field.field == "filter" and field.value == pattern
    assert says in field.message and says in error.message and error.fix
    if "not supported" in says:  # and says what is
        assert "plain-text terms" in error.fix and "?a ?b" in error.fix


def test_events_merge_across_objects_in_a_stable_order(store: LocalArtifactStore) -> None:
    put(store, "training/trial-1.jsonl", [(1000.0, "[trial 1] a"), (3000.0, "[trial 1] c")])
    put(store, "training/trial-0.jsonl", [(1000.0, "[trial 0] a"), (2000.0, "[trial 0] b")])
    put(store, "evaluation.jsonl", [(3000.0, "scored")])
    store.put_bytes(f"runs/{RUN}/logs/notes.txt", b"not a log object")
    store.put_bytes("runs/other-run/logs/evaluation.jsonl", encode("another run", 1.0))
    body = run_logs_page(store, RUN)
    assert body["events"][0] == {
        "type": "logEntry",
        "timestamp": 1000.0,
        "payload": "[trial 0] a",
        "stage": "training",
    }
    assert payloads(body) == ["[trial 0] a", "[trial 1] a", "[trial 0] b", "scored",
                              "[trial 1] c"]  # fmt: skip
    assert [e["stage"] for e in body["events"]][3] == "evaluation"
    assert "marker" not in body


def test_paging_returns_every_event_exactly_once_in_order(store: LocalArtifactStore) -> None:
    for trial in range(3):  # equal timestamps across objects: the order is still total
        put(
            store,
            f"training/trial-{trial}.jsonl",
            [(1000.0 + i // 4, f"[trial {trial}] line {i}") for i in range(25)],
        )
    everything = payloads(run_logs_page(store, RUN))
    assert len(everything) == 75
    for limit in (1, 7, 25, 74):
        seen: list[str] = []
        marker = None
        while True:
            body = run_logs_page(store, RUN, marker=marker, limit=limit)
            assert 0 < len(body["events"]) <= limit
            seen += payloads(body)
            marker = body.get("marker")
            if marker is None:
                break
        assert seen == everything, limit
    exact = run_logs_page(store, RUN, limit=75)
    assert "marker" not in exact and len(exact["events"]) == 75


def test_paging_with_a_filter_and_late_lines(store: LocalArtifactStore) -> None:
    put(store, "training/trial-0.jsonl", [(float(i), f"line {i} {'odd' if i % 2 else 'even'}")
                                          for i in range(10)])  # fmt: skip
    first = run_logs_page(store, RUN, filter_pattern="odd", limit=3)
    assert payloads(first) == ["line 1 odd", "line 3 odd", "line 5 odd"]
    # The trial goes on logging; the marker stays valid and nothing is repeated.
    put(store, "training/trial-0.jsonl", [(float(i), f"line {i} {'odd' if i % 2 else 'even'}")
                                          for i in range(14)])  # fmt: skip
    rest = run_logs_page(store, RUN, filter_pattern="odd", marker=first["marker"], limit=3)
    assert payloads(rest) == ["line 7 odd", "line 9 odd", "line 11 odd"]
    last = run_logs_page(store, RUN, filter_pattern="odd", marker=rest["marker"], limit=3)
    assert payloads(last) == ["line 13 odd"] and "marker" not in last


def test_torn_and_foreign_lines_are_skipped(store: LocalArtifactStore, tmp_path: Path) -> None:
    path = tmp_path / "trial.jsonl"
    with LogFile(path) as record:
        record.write("first", 1.0)
        record.write("second", 2.0)
    complete = path.read_bytes() + encode("third", 3.0)
    torn = complete[:-9]  # the writer was killed mid-line
    key = f"runs/{RUN}/logs/training/trial-0.jsonl"
    store.put_bytes(key, torn)
    store.put_bytes(
        f"runs/{RUN}/logs/evaluation.jsonl",
        b'not json\n[1, 2]\n{"timestamp": "x", "message": "m"}\n'
        b'{"timestamp": true, "message": "m"}\n{"timestamp": 5, "message": 7}\n'
        + encode("good", 4.0),
    )
    assert payloads(run_logs_page(store, RUN)) == ["first", "second", "good"]
    store.put_bytes(key, complete)  # the same object, uploaded again when complete
    assert payloads(run_logs_page(store, RUN)) == ["first", "second", "third", "good"]


def test_no_logs_and_vanishing_objects(
    store: LocalArtifactStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert run_logs_page(store, RUN) == {"events": []}
    put(store, "training/trial-0.jsonl", [(1.0, "kept")])
    put(store, "training/trial-1.jsonl", [(2.0, "deleted while listing")])
    real = store.read_bytes

    def read_bytes(key: str) -> bytes:  # failure injection: deleted after list_keys
        if key.endswith("trial-1.jsonl"):
            raise ArtifactNotFoundError(f"no {key}")
        return real(key)

    monkeypatch.setattr(store, "read_bytes", read_bytes)
    assert [e.payload for e in read_events(store, RUN)] == ["kept"]


@pytest.mark.parametrize(
    "marker",
    [
        "not-a-marker",
        "!!!",
        base64.urlsafe_b64encode(b'{"v": 1, "t": 1}').decode(),
        base64.urlsafe_b64encode(b'{"v": 2, "t": 1, "st": "a", "src": "b", "seq": 0}').decode(),
        base64.urlsafe_b64encode(b'{"v": 1, "t": 1, "st": "a", "src": "b", "seq": "0"}').decode(),
        base64.urlsafe_b64encode(b"[1, 2, 3]").decode(),
        "é",
    ],
)
def test_invalid_markers_are_field_errors(store: LocalArtifactStore, marker: str) -> None:
    with pytest.raises(InvalidInputError) as caught:
        run_logs_page(store, RUN, marker=marker)
    [field] = caught.value.errors
    assert field.field == "marker" and caught.value.http_status == 422


def test_limit_is_checked(store: LocalArtifactStore) -> None:
    for bad in (0, 10_001):
        with pytest.raises(InvalidInputError, match="limit"):
            run_logs_page(store, RUN, limit=bad)
