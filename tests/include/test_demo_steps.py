"""The demo's summary ends with the elapsed time per step (issue 35: the README's figure is the
one the demo prints), and the steps add up to the whole."""

from __future__ import annotations

import time

import pytest

from include import demo


def test_the_steps_add_up_to_the_demo(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(demo, "STARTED", time.monotonic() - 100.0)
    monkeypatch.setattr(demo, "LAPS", [])
    demo.lap("sample data, schema, configs")  # ~100 s after the start
    demo.lap("Airflow up, DAGs parsed")  # ~0 s after the previous step
    lines = demo.elapsed_lines()
    assert lines[0] == "elapsed per step:"
    seconds = {line.split("  ")[1].strip(): float(line.rsplit(" ", 2)[-2]) for line in lines[1:]}
    assert list(seconds) == [
        "sample data, schema, configs",
        "Airflow up, DAGs parsed",
        "summary",
        "in all",
    ]
    assert 99 <= seconds["sample data, schema, configs"] <= 102
    assert seconds["Airflow up, DAGs parsed"] <= 1
    steps = sum(v for k, v in seconds.items() if k != "in all")
    assert abs(steps - seconds["in all"]) <= 2  # (each figure is rounded to a second)
