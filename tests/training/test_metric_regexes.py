"""User metric regexes are bounded (issue 33): the platform runs a model config's
`metricDefinitions` over every line of every training log with a linear-time engine (RE2), so a
pattern that backtracks catastrophically in Python's `re` costs microseconds per line; a
stored pattern RE2 cannot run (written around the config checks) fails the trial at once with
a message naming the field and the fix."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from patient_ml.training import metrics
from patient_ml.training.metrics import MetricParser
from tests.training.helpers import backend as local_backend
from tests.training.helpers import job

# Each takes seconds on a 28-character line in a backtracking engine (doubling per character).
CATASTROPHIC = [
    {"name": "nested", "regex": r"^(?:a+)+b=([0-9]+)"},
    {"name": "alternation", "regex": r"^(?:a|aa)+c=([0-9]+)"},
    {"name": "digits", "regex": r"val_loss=((?:1+)+)y"},
]


def test_catastrophic_patterns_cost_microseconds_per_line() -> None:
    parser = MetricParser.from_config(CATASTROPHIC)
    hostile = ["a" * 25 + "!", "val_loss=" + "1" * 25 + "x"]
    started = time.perf_counter()
    for line in hostile:
        assert parser.feed(line) == []
    assert time.perf_counter() - started < 0.5
    assert parser.feed("aaab=7") == [("nested", 7.0)]


def test_fifty_patterns_over_lines_of_the_maximum_length_stay_bounded() -> None:
    definitions = [{"name": f"m{i}", "regex": rf"(?:x|a+)+m{i}=([0-9]+)"} for i in range(50)]
    parser = MetricParser.from_config(definitions)
    started = time.perf_counter()
    for _ in range(10):
        assert parser.feed("a" * 20_000) == []  # matched on its first MAX_LINE characters
    assert time.perf_counter() - started < 2


def test_a_training_log_with_redos_lines_does_not_stall_the_trial(tmp_path: Path) -> None:
    training = job(tmp_path / "job", epochs=2, score=0.8, mode="redos")
    training.metric_parser = MetricParser.from_config(
        [*CATASTROPHIC, {"name": "validation:accuracy", "regex": r"val_accuracy=([0-9.]+)"}]
    )
    started = time.monotonic()
    outcome = local_backend().run(training)
    assert outcome.succeeded, outcome.failure
    assert outcome.metrics == {"validation:accuracy": 0.8}
    assert time.monotonic() - started < 8


@pytest.mark.parametrize("regex", [r"(\d)\1=([0-9]+)", r"(?<=loss=)([0-9.]+)"])
def test_a_stored_pattern_the_engine_cannot_run_fails_with_the_field_and_fix(regex: str) -> None:
    with pytest.raises(metrics.MetricDefinitionError) as caught:
        MetricParser.from_config(
            [{"name": "a", "regex": "a=([0-9]+)"}, {"name": "b", "regex": regex}]
        )
    message = str(caught.value)
    assert "metricDefinitions[1].regex" in message and "RE2" in message
    assert "update the model config" in message


def test_digits_are_ascii_as_in_the_config_examples() -> None:
    parser = MetricParser.from_config([{"name": "m", "regex": r"m=(\d+)"}])
    assert parser.feed("m=\u0661\u0662") == []  # Arabic-Indic digits: not a metric value
    assert parser.feed("m=12") == [("m", 12.0)]


def test_an_optional_group_that_did_not_match_is_skipped_not_a_crash() -> None:
    parser = MetricParser.from_config([{"name": "loss", "regex": r"loss=(\d+)?"}])
    assert parser.feed("loss=") == [] and parser.skipped == 1
    assert parser.feed("loss=3") == [("loss", 3.0)]
