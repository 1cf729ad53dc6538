"""A table of invalid configs driven through the CLI: each is refused with exit code 3, a
message naming the field and the fix, and nothing written (rows and audit events unchanged)."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml
from sqlalchemy import text

from patient_ml.cli.main import main
from patient_ml.db.engine import get_engine
from tests.conftest import EXAMPLE_CONFIGS
from tests.helpers import example

DELETE = object()
PD = ("problemDefinition",)
LABELS = (*PD, "labelDefinition", "labels")
TA = ("trainingApproach",)
SS = (*TA, "searchSpace")
MD = (*TA, "metricDefinitions")

# id: (kind, [(path, new value or DELETE)], [(field path, message fragment), ...])
CASES: dict[str, tuple[str, list[tuple[tuple[Any, ...], Any]], list[tuple[str, str]]]] = {
    "ds-name-missing": ("datasets", [(("name",), DELETE)], [("name", "is required")]),
    "ds-unknown-field": (
        "datasets",
        [(("nmae",), "x")],
        [("nmae", "did you mean 'name'")],
    ),
    "ds-problem-type": (
        "datasets",
        [((*PD, "problemType"), "imgDet")],
        [("problemDefinition.problemType", "'imgClf' or 'imgSeg'")],
    ),
    "ds-label-index-duplicate": (
        "datasets",
        [((*LABELS, 1, "index"), 0)],
        [("problemDefinition.labelDefinition.labels[1].index", "is already used by labels[0]")],
    ),
    "ds-label-index-range": (
        "datasets",
        [((*LABELS, 1, "index"), 256)],
        [("problemDefinition.labelDefinition.labels[1].index", "less than or equal to 255")],
    ),
    "ds-label-name-duplicate": (
        "datasets",
        [((*LABELS, 1, "name"), "no_tumour")],
        [("problemDefinition.labelDefinition.labels[1].name", "duplicates the name")],
    ),
    "ds-labels-empty": (
        "datasets",
        [(LABELS, [])],
        [("problemDefinition.labelDefinition.labels", "must not be empty")],
    ),
    "ds-codes-empty": (
        "datasets",
        [((*PD, "trainingDataFilter", "codes"), [])],
        [("problemDefinition.trainingDataFilter.codes", "must not be empty")],
    ),
    "ds-code-not-a-token": (
        "datasets",
        [((*PD, "trainingDataFilter", "codes"), ["a|b|c"])],
        [("problemDefinition.trainingDataFilter.codes[0]", "is not a FHIR token")],
    ),
    "ds-filter-type": (
        "datasets",
        [((*PD, "trainingDataFilter", "filterType"), "Sql")],
        [("problemDefinition.trainingDataFilter.filterType", "'FhirCodesFilter'")],
    ),
    "ds-max-label-index-below-use": (
        "datasets",
        [((*PD, "labelDefinition", "maxLabelIndex"), 0)],
        [("problemDefinition.labelDefinition.maxLabelIndex", "below the highest label index")],
    ),
    "ds-split-sum": (
        "datasets",
        [(("curation", "splitRatios", "test"), 0.3)],
        [("curation.splitRatios", "add up to 1.15, not 1")],
    ),
    "ds-split-zero": (
        "datasets",
        [(("curation", "splitRatios"), {"train": 0.85, "validation": 0.15, "test": 0})],
        [("curation.splitRatios.test", "no patient would ever be in test")],
    ),
    "ds-max-image-bytes": (
        "datasets",
        [(("curation", "maxImageBytes"), -1)],
        [("curation.maxImageBytes", "greater than or equal to 1000")],
    ),
    "ds-source-type": (
        "datasets",
        [(("source", "type"), "ftp")],
        [("source.type", "'fhirServer' or 'ndjson'")],
    ),
    "md-name-missing": ("models", [(("name",), DELETE)], [("name", "is required")]),
    "md-dataset-unknown": (
        "models",
        [(("datasetId",), "no-such-dataset")],
        [("datasetId", "create it first")],
    ),
    "md-max-trials-zero": (
        "models",
        [((*TA, "maxTrials"), 0)],
        [("trainingApproach.maxTrials", "greater than or equal to 1")],
    ),
    "md-max-trials-huge": (
        "models",
        [((*TA, "maxTrials"), 5000)],
        [("trainingApproach.maxTrials", "less than or equal to 1000")],
    ),
    "md-parallel-above-max": (
        "models",
        [((*TA, "parallelTrials"), 20)],
        [("trainingApproach.parallelTrials", "set parallelTrials to at most 8")],
    ),
    "md-image-reference": (
        "models",
        [((*TA, "trainingImage"), "UPPER/Case::tag")],
        [("trainingApproach.trainingImage", "not a valid container image reference")],
    ),
    "md-regex-does-not-compile": (
        "models",
        [((*MD, 0, "regex"), "val=([0-9")],
        [("trainingApproach.metricDefinitions[0].regex", "does not compile")],
    ),
    "md-regex-two-groups": (
        "models",
        [((*MD, 0, "regex"), "val=([0-9]+)_(x)")],
        [("trainingApproach.metricDefinitions[0].regex", "needs exactly 1")],
    ),
    "md-metric-duplicate": (
        "models",
        [((*MD, 1, "name"), "validation:balancedAccuracy")],
        [("trainingApproach.metricDefinitions[1].name", "metric names must be unique")],
    ),
    "md-objective-unknown": (
        "models",
        [((*TA, "objective", "metric"), "validation:nope")],
        [("trainingApproach.objective.metric", "names no metric")],
    ),
    "md-objective-direction": (
        "models",
        [((*TA, "objective", "direction"), "sideways")],
        [("trainingApproach.objective.direction", "'minimize' or 'maximize'")],
    ),
    "md-search-min-above-max": (
        "models",
        [((*SS, 0, "min"), 0.5)],
        [("trainingApproach.searchSpace[0].max", "must be greater than min")],
    ),
    "md-search-log-min-zero": (
        "models",
        [((*SS, 0, "min"), 0.0)],
        [("trainingApproach.searchSpace[0].min", "greater than 0 for a log scale")],
    ),
    "md-search-integer-bound": (
        "models",
        [((*SS, 1, "min"), 1.5)],
        [("trainingApproach.searchSpace[1].min", "must be a whole number")],
    ),
    "md-search-categorical-empty": (
        "models",
        [((*SS, 2, "values"), [])],
        [("trainingApproach.searchSpace[2].values", "list at least one value")],
    ),
    "md-search-name-duplicate": (
        "models",
        [((*SS, 1, "name"), "learning_rate")],
        [("trainingApproach.searchSpace[1].name", "hyperparameter names must be unique")],
    ),
    "md-search-scale": (
        "models",
        [((*SS, 0, "scale"), "cubic")],
        [("trainingApproach.searchSpace[0].scale", "'auto', 'linear', 'log' or 'reverseLog'")],
    ),
    "md-retrain-every-too-short": (
        "models",
        [((*TA, "retrainEvery"), 1000)],
        [("trainingApproach.retrainEvery", "at least one day")],
    ),
    "md-deploy-type": (
        "models",
        [(("deployApproach", "type"), "moon")],
        [("deployApproach.type", "'cloud' or 'edge'")],
    ),
    "md-several-problems-at-once": (
        "models",
        [((*TA, "maxTrials"), 0), ((*SS, 0, "scale"), "cubic")],
        [
            ("trainingApproach.maxTrials", "greater than or equal to 1"),
            ("trainingApproach.searchSpace[0].scale", "'auto', 'linear', 'log' or 'reverseLog'"),
        ],
    ),
}

BASE = {"datasets": "brain_mri_dataset", "models": "brain_mri_model"}
TABLES = ("pml_datasets", "pml_models", "pml_audit_events")


def mutated(base: dict[str, Any], changes: list[tuple[tuple[Any, ...], Any]]) -> dict[str, Any]:
    doc = copy.deepcopy(base)
    for path, value in changes:
        parent = doc
        for key in path[:-1]:
            parent = parent[key]
        if value is DELETE:
            del parent[path[-1]]
        else:
            parent[path[-1]] = value
    return doc


def row_counts(db_url: str) -> dict[str, int]:
    with get_engine(db_url).connect() as conn:
        return {t: conn.execute(text(f"SELECT count(*) FROM {t}")).scalar_one() for t in TABLES}


def test_every_case_is_distinct_and_the_table_is_large_enough() -> None:
    expectations = [pair for _, _, pairs in CASES.values() for pair in pairs]
    singles = [(kind, *pairs[0]) for kind, _, pairs in CASES.values() if len(pairs) == 1]
    assert len(singles) == len(set(singles)), "two cases test the same field and message"
    assert len(CASES) >= 30 and len(expectations) > len(CASES)


@pytest.fixture
def seeded_db(db_url: str, capsys: pytest.CaptureFixture[str]) -> str:
    path = EXAMPLE_CONFIGS / f"{BASE['datasets']}.yaml"
    assert main(["--db-url", db_url, "datasets", "create", "-f", str(path)]) == 0
    capsys.readouterr()
    return db_url


@pytest.mark.parametrize("case", list(CASES))
def test_invalid_config_is_refused_and_nothing_is_written(
    case: str, seeded_db: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    kind, changes, expected = CASES[case]
    base = example(BASE[kind])
    path = tmp_path / f"{case}.yaml"
    path.write_text(yaml.safe_dump(mutated(base, changes)))
    before = row_counts(seeded_db)

    code = main(["--db-url", seeded_db, kind, "create", "-f", str(path)])

    err = capsys.readouterr().err
    assert code == 3, err
    assert "nothing was saved" in err
    problem_lines = [line.strip() for line in err.splitlines() if line.strip().startswith("- ")]
    assert len(problem_lines) == len(expected), err
    for field, fragment in expected:
        assert any(
            line.startswith(f"- {field}: ") and fragment in line for line in problem_lines
        ), f"{field!r} with {fragment!r} not in:\n{err}"
    assert row_counts(seeded_db) == before


def test_the_same_configs_are_refused_on_update(
    seeded_db: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "bad.yaml"
    base = example(BASE["datasets"])
    path.write_text(yaml.safe_dump(mutated(base, [((*LABELS, 1, "index"), 0)])))
    before = row_counts(seeded_db)
    code = main(["--db-url", seeded_db, "datasets", "update", base["name"], "-f", str(path)])
    assert code == 3
    assert "labels[1].index" in capsys.readouterr().err
    assert row_counts(seeded_db) == before
