"""Hostile config input (issue 16): YAML alias bombs, huge files, deep nesting, unsafe ids,
control and bidi characters, unbounded text, and huge values echoed back in errors."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from patient_ml.config.identifiers import escape_controls, is_safe_id, require_safe_id
from patient_ml.config.limits import MAX_CONFIG_BYTES
from patient_ml.config.loading import load_config_file, parse_dataset_config, parse_model_config
from patient_ml.curation.pipeline import staging_path
from patient_ml.exceptions import (
    ConfigFileError,
    ConfigValidationError,
    InvalidInputError,
    PayloadTooLargeError,
)
from tests.helpers import example

# 408 bytes (the bomb had 677): 9 levels of 9 aliases, ~387 million strings expanded.
ALIAS_BOMB = "\n".join(
    [
        'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]',
        *(
            f"{c}: &{c} [" + ",".join([f"*{p}"] * 9) + "]"
            for p, c in zip("abcdefgh", "bcdefghi", strict=True)
        ),
        "name: *i",
        "description: *i",
        "problemDefinition: {problemType: imgClf}",
        "",
    ]
)


def test_a_yaml_alias_bomb_is_refused_at_once(tmp_path: Path) -> None:
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text(ALIAS_BOMB)
    assert len(ALIAS_BOMB) < 700
    started = time.monotonic()
    with pytest.raises(ConfigFileError) as caught:
        load_config_file(bomb)
    assert time.monotonic() - started < 2
    message = str(caught.value)
    assert "more than 20000 values" in message and "lol" not in message
    assert len(message) < 400


def test_aliases_within_the_limit_still_work(tmp_path: Path) -> None:
    config = tmp_path / "ok.yaml"
    config.write_text("labels: &l [a, b]\nmore: *l\nname: x\n")
    assert load_config_file(config)["more"] == ["a", "b"]


def test_a_file_above_the_size_limit_is_refused_unread(tmp_path: Path) -> None:
    big = tmp_path / "big.yaml"
    with big.open("wb") as out:
        out.write(b"name: x\ndescription: ")
        out.truncate(100_000_000)  # 100 MB (sparse: nothing is written)
    with pytest.raises(ConfigFileError) as caught:
        load_config_file(big)
    assert f"more than the limit of {MAX_CONFIG_BYTES}" in str(caught.value)


@pytest.mark.parametrize("suffix", [".json", ".yaml"])
def test_deep_nesting_is_refused(tmp_path: Path, suffix: str) -> None:
    deep = tmp_path / f"deep{suffix}"
    deep.write_text('{"name": ' + "[" * 5000 + "]" * 5000 + "}")
    with pytest.raises(ConfigFileError) as caught:
        load_config_file(deep)
    assert "levels deep" in str(caught.value)


def test_a_self_referencing_alias_is_refused(tmp_path: Path) -> None:
    loop = tmp_path / "loop.yaml"
    loop.write_text("name: &n [x, *n]\n")
    with pytest.raises(ConfigFileError):
        load_config_file(loop)


HOSTILE_IDS = ["../../x", "..", ".", ".hidden", "a/b", "/abs", "a\\b", "a\x00b", "a b", "é",
               "x" * 37, "", "a\tb"]  # fmt: skip


@pytest.mark.parametrize("bad", HOSTILE_IDS)
def test_unsafe_ids_are_refused_for_datasets_and_models(bad: str) -> None:
    for parse, name in ((parse_dataset_config, "brain_mri_dataset"),
                        (parse_model_config, "brain_mri_model")):  # fmt: skip
        config = example(name) | {"id": bad}
        with pytest.raises(ConfigValidationError) as caught:
            parse(config)
        assert [e.field for e in caught.value.errors] == ["id"]
    assert not is_safe_id(bad)
    with pytest.raises(InvalidInputError):
        require_safe_id(bad)


@pytest.mark.parametrize("good", ["brain-mri_v1.2", "0b3b1c1e-2f47-4c55-9a0e-5b1f0e3d9a11", "x"])
def test_safe_ids_are_accepted(good: str) -> None:
    assert parse_dataset_config(example("brain_mri_dataset") | {"id": good}).id == good


def test_no_path_is_built_from_an_unsafe_id(tmp_path: Path) -> None:
    work = tmp_path / "work"
    with pytest.raises(InvalidInputError):
        staging_path(work, "../..")
    assert not work.exists() and list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("field", "value"),
    [("name", "a\x00b"), ("name", "red \x1b[31m"), ("name", "abc\u202etxt.exe"),
     ("name", "two\nlines"), ("description", "bell \x07"), ("description", "\u2066isolate")],
)  # fmt: skip
def test_control_and_bidi_characters_are_refused(field: str, value: str) -> None:
    with pytest.raises(ConfigValidationError) as caught:
        parse_dataset_config(example("brain_mri_dataset") | {field: value})
    assert [e.field for e in caught.value.errors] == [field]


def test_descriptions_may_hold_lines() -> None:
    text = "first line\n\tsecond line"
    assert parse_dataset_config(example("brain_mri_dataset") | {"description": text}).description


def _label_name(config: dict[str, Any], value: str) -> dict[str, Any]:
    config["problemDefinition"]["labelDefinition"]["labels"][0]["name"] = value
    return config


@pytest.mark.parametrize(
    ("kind", "edit", "field"),
    [
        ("dataset", lambda c: c | {"description": "x" * 4001}, "description"),
        ("dataset", lambda c: _label_name(c, "y" * 129), "labelDefinition.labels[0].name"),
        ("dataset", lambda c: _label_name(c, "a\u202eb"), "labelDefinition.labels[0].name"),
        ("model", lambda c: c | {"name": "n" * 129}, "name"),
        ("model", lambda c: c | {"datasetId": "d\x00"}, "datasetId"),
    ],
)
def test_free_text_is_bounded(kind: str, edit: Any, field: str) -> None:
    name, parse = (
        ("brain_mri_dataset", parse_dataset_config)
        if kind == "dataset"
        else ("brain_mri_model", parse_model_config)
    )
    with pytest.raises(ConfigValidationError) as caught:
        parse(edit(example(name)))
    assert any(e.field.endswith(field) for e in caught.value.errors), caught.value


def test_huge_values_are_never_echoed_whole() -> None:
    huge = "z" * 1_000_000
    with pytest.raises(ConfigValidationError) as caught:
        parse_dataset_config(example("brain_mri_dataset") | {"name": huge})
    assert len(str(caught.value)) < 500
    shown = caught.value.errors[0].as_dict()["value"]
    assert len(shown) <= 200
    huge_list = list(range(100_000))
    with pytest.raises(ConfigValidationError) as caught:
        parse_dataset_config(example("brain_mri_dataset") | {"name": huge_list})
    assert len(json.dumps([e.as_dict() for e in caught.value.errors])) < 1000


def test_payload_too_large_is_a_config_file_error_with_413() -> None:
    assert issubclass(PayloadTooLargeError, ConfigFileError)
    assert PayloadTooLargeError.http_status == 413


def test_escape_controls_shows_what_is_stored() -> None:
    assert escape_controls("ok name") == "ok name"
    assert escape_controls("a\x1b[31mb\u202ec") == "a\\u001b[31mb\\u202ec"
    assert escape_controls("l1\nl2", keep="\n") == "l1\nl2"
