"""Hostile configs, third pass (issue 33): duplicated keys in YAML and JSON documents, names
with invisible, look-alike or differently normalised characters, image tags in non-ASCII
digits, and metric regexes that need a backtracking engine."""

from __future__ import annotations

import json
import unicodedata
from pathlib import Path

import pytest
import yaml

from patient_ml.config.identifiers import escape_controls, text_problem
from patient_ml.config.loading import (
    load_config_file,
    parse_config_text,
    parse_dataset_config,
    parse_model_config,
)
from patient_ml.exceptions import ConfigValidationError
from tests.helpers import example

# ----------------------------------------------------------------------------- duplicate keys


def _fields(error: ConfigValidationError) -> list[str]:
    return [e.field for e in error.errors]


def test_a_duplicated_top_level_key_in_yaml_is_refused_naming_the_field(tmp_path: Path) -> None:
    path = tmp_path / "dup.yaml"
    text = yaml.safe_dump(example("brain_mri_dataset"), sort_keys=False)
    path.write_text("name: first-name\n" + text)  # `name` again further down: last one won
    with pytest.raises(ConfigValidationError) as caught:
        load_config_file(path)
    assert _fields(caught.value) == ["name"]
    message = str(caught.value)
    assert "twice" in message and "lines 1 and 2" in message and "keep one" in message
    assert caught.value.http_status == 422 and caught.value.exit_code == 3


def test_a_duplicated_nested_key_in_yaml_names_its_wire_path() -> None:
    text = (
        "name: m\n"
        "trainingApproach:\n"
        "  metricDefinitions:\n"
        "    - name: a\n"
        "      regex: 'a=([0-9]+)'\n"
        "    - name: b\n"
        "      regex: 'b=([0-9]+)'\n"
        "      name: c\n"
    )
    with pytest.raises(ConfigValidationError) as caught:
        parse_config_text(text, is_json=False)
    assert _fields(caught.value) == ["trainingApproach.metricDefinitions[1].name"]


def test_yaml_keys_that_only_look_different_are_duplicates_too() -> None:
    # `id` and "id" are the same key; so are 1 and 0x1 (both the integer 1).
    with pytest.raises(ConfigValidationError) as caught:
        parse_config_text("id: a\n'id': b\nname: x\n", is_json=False)
    assert _fields(caught.value) == ["id"]
    with pytest.raises(ConfigValidationError):
        parse_config_text("values: {1: a, 0x1: b}\n", is_json=False)


def test_yaml_merge_keys_may_still_be_overridden() -> None:
    text = "base: &b {min: 1, max: 2}\nparam:\n  <<: *b\n  max: 3\n"
    assert parse_config_text(text, is_json=False)["param"] == {"min": 1, "max": 3}


def test_a_duplicated_key_in_a_json_config_is_refused_naming_the_field(tmp_path: Path) -> None:
    config = example("brain_mri_model")
    body = json.dumps(config)
    inner = json.dumps(config["deployApproach"])
    duplicated = inner[:-1] + ', "type": "edge"}'
    path = tmp_path / "dup.json"
    path.write_text(body.replace(inner, duplicated))
    with pytest.raises(ConfigValidationError) as caught:
        load_config_file(path)
    assert _fields(caught.value) == ["deployApproach.type"]
    assert "'edge'" in str(caught.value)


# ----------------------------------------------------------------------------- names


ZERO_WIDTH = ["a\u200bb", "\ufeffname", "na\u2060me", "soft\u00adhyphen", "tag\U000e0041"]
LOOK_ALIKE = [
    "br\u0430in-mri",  # Cyrillic a in a Latin word
    "\u0442umour",  # Cyrillic te
    "tum\u03bfur",  # Greek omicron
    "\uff42rain",  # fullwidth b
    "\U0001d41b\U0001d42b\U0001d41a\U0001d422\U0001d427",  # mathematical bold "brain"
    "no\u00a0tumour",  # no-break space looks like a space
]


@pytest.mark.parametrize("value", ZERO_WIDTH + LOOK_ALIKE)
def test_invisible_and_look_alike_characters_are_refused_in_names(value: str) -> None:
    config = example("brain_mri_dataset")
    config["problemDefinition"]["labelDefinition"]["labels"][1]["name"] = value
    with pytest.raises(ConfigValidationError) as caught:
        parse_dataset_config(config)
    assert _fields(caught.value) == ["problemDefinition.labelDefinition.labels[1].name"]
    message = str(caught.value)
    assert "U+" in message  # names the character, so the user can find it
    with pytest.raises(ConfigValidationError):
        parse_model_config(example("brain_mri_model") | {"name": value})


@pytest.mark.parametrize(
    "value",
    [
        "Tum\u00f6r",
        "\u041e\u043f\u0443\u0445\u043e\u043b\u044c",
        "\u816b\u760d\u3042\u308a",
        "\uc885\uc591",
        "\u0648\u0631\u0645",
        "\u0917\u093e\u0901\u0920",
        "\u0395\u03bb\u03bb\u03b7\u03bd\u03b9\u03ba\u03ac",
        "x-ray 2",
        "\u0646\u06cc\u0645\u200c\u0641\u0627\u0635\u0644\u0647",
    ],
)
def test_names_in_one_script_per_word_stay_accepted(value: str) -> None:
    assert text_problem(value) is None, text_problem(value)


def test_names_are_stored_nfc_so_two_spellings_are_one_name() -> None:
    nfd = unicodedata.normalize("NFD", "Tumör")
    config = example("brain_mri_dataset")
    config["problemDefinition"]["labelDefinition"]["labels"][1]["name"] = nfd
    parsed = parse_dataset_config(config)
    assert parsed.problem_definition.label_definition.labels[1].name == "Tumör"  # NFC
    config["problemDefinition"]["labelDefinition"]["labels"][0]["name"] = "Tumör"
    with pytest.raises(ConfigValidationError) as caught:
        parse_dataset_config(config)
    assert _fields(caught.value) == ["problemDefinition.labelDefinition.labels[1].name"]


def test_stored_names_are_shown_escaped() -> None:
    assert escape_controls("a\u200bb") == "a\\u200bb"
    assert escape_controls("x\u00a0y") == "x\\u00a0y"


# ----------------------------------------------------------------------------- image tags


@pytest.mark.parametrize(
    "image",
    ["patient-ml/trainer:\u0661\u0662", "patient-ml/trainer:v\u00e9", "patient-ml/trainer:\uff11"],
)
def test_image_tags_are_ascii(image: str) -> None:
    config = example("brain_mri_model")
    config["trainingApproach"]["trainingImage"] = image
    with pytest.raises(ConfigValidationError) as caught:
        parse_model_config(config)
    assert _fields(caught.value) == ["trainingApproach.trainingImage"]


# ----------------------------------------------------------------------------- metric regexes

NEEDS_BACKTRACKING = [
    (r"(\d)\1=([0-9]+)", "backreference"),
    (r"(?=val)val=([0-9]+)", "lookaround"),
    (r"(?<!x)val=([0-9]+)", "lookaround"),
    (r"(?>a+)val=([0-9]+)", "atomic"),
]


@pytest.mark.parametrize(("regex", "what"), NEEDS_BACKTRACKING)
def test_regexes_that_need_backtracking_are_refused_when_saved(regex: str, what: str) -> None:
    config = example("brain_mri_model")
    config["trainingApproach"]["metricDefinitions"][0]["regex"] = regex
    with pytest.raises(ConfigValidationError) as caught:
        parse_model_config(config)
    assert _fields(caught.value) == ["trainingApproach.metricDefinitions[0].regex"]
    message = str(caught.value)
    assert "linear-time" in message and "RE2" in message


def test_a_nested_quantifier_is_accepted_as_the_engine_runs_it_in_linear_time() -> None:
    config = example("brain_mri_model")
    config["trainingApproach"]["metricDefinitions"][0]["regex"] = r"^(?:a+)+=([0-9]+)$"
    assert parse_model_config(config).training_approach.metric_definitions[0].regex
