"""Valid configs: example files parse, wire names round-trip, friendly coercions."""

from __future__ import annotations

import json

import pytest

from patient_ml.config import load_config_file, parse_dataset_config, parse_model_config
from patient_ml.config.models import CategoricalParameter, ModelConfig
from patient_ml.config.rules import IMAGE_REFERENCE
from tests.conftest import EXAMPLE_CONFIGS
from tests.helpers import example


@pytest.mark.parametrize(
    "name", ["brain_mri_dataset", "nuclei_dataset", "brain_mri_flagged_dataset"]
)
def test_example_datasets_parse_and_round_trip(name: str) -> None:
    data = load_config_file(EXAMPLE_CONFIGS / f"{name}.yaml")
    cfg = parse_dataset_config(data)
    assert parse_dataset_config(cfg.to_wire()) == cfg
    assert cfg.to_wire()["problemDefinition"]["trainingDataFilter"]["filterType"] == (
        "FhirCodesFilter"
    )


@pytest.mark.parametrize("name", ["brain_mri_model", "nuclei_model", "brain_mri_second_read_model"])
def test_example_models_parse_and_round_trip(name: str) -> None:
    cfg = parse_model_config(load_config_file(EXAMPLE_CONFIGS / f"{name}.yaml"))
    wire = cfg.to_wire()
    assert parse_model_config(wire) == cfg
    assert set(wire) >= {"name", "datasetId", "trainingApproach", "deployApproach"}
    assert "maxTrials" in wire["trainingApproach"] and "max_trials" not in wire["trainingApproach"]


def test_json_files_and_snake_case_are_accepted(tmp_path) -> None:
    data = example("brain_mri_model")
    data["training_approach"] = data.pop("trainingApproach")
    data["training_approach"]["max_trials"] = data["training_approach"].pop("maxTrials")
    path = tmp_path / "model.json"
    path.write_text(json.dumps(data))
    cfg = parse_model_config(load_config_file(path))
    assert cfg.training_approach.max_trials == 8


def test_categorical_values_become_strings() -> None:
    param = CategoricalParameter.model_validate(
        {"type": "categorical", "name": "x", "values": [32, 0.5, True, "adam"]}
    )
    assert param.values == ["32", "0.5", "true", "adam"]


def test_reference_client_payload_is_accepted() -> None:
    """What the phc SDK sends for create_model: reference fields only, an ECR image URI."""
    payload = {
        "name": "m",
        "description": "d",
        "datasetId": "1b4e28ba-2fa1-11d2-883f-0016d3cca427",
        "trainingApproach": {
            "type": "tuningJob",
            "trainingImage": "123456789012.dkr.ecr.us-east-1.amazonaws.com/trainer:v1",
            "metricDefinitions": [{"name": "val_acc", "regex": "val_acc: ([0-9\\.]+)"}],
            "objective": {"metric": "val_acc", "direction": "maximize"},
            "searchSpace": [
                {"type": "continuous", "name": "lr", "min": 0.001, "max": 0.1, "scale": "log"}
            ],
            "maxTrials": 30,
            "retrainEvery": 86400000 * 7,
        },
        "deployApproach": {
            "type": "cloud",
            "inferenceImage": "123456789012.dkr.ecr.us-east-1.amazonaws.com/trainer:v1",
        },
    }
    assert isinstance(parse_model_config(payload), ModelConfig)


@pytest.mark.parametrize(
    ("reference", "valid"),
    [
        ("patient-ml/img-clf-trainer:0.1.0", True),
        ("localhost:5000/team/trainer", True),
        ("trainer@sha256:" + "a" * 64, True),
        ("registry.example.org/a/b/c:v1.2-rc_3", True),
        ("Trainer:latest", False),
        ("trainer:", False),
        ("-trainer", False),
        ("trainer:bad tag", False),
    ],
)
def test_image_reference_grammar(reference: str, valid: bool) -> None:
    assert bool(IMAGE_REFERENCE.match(reference)) is valid
