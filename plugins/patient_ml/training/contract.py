"""The SageMaker-compatible training contract, in one place.

A training job sees, under one root (`/opt/ml` in a container, a scratch folder for the local
backend):

    input/config/hyperparameters.json   every value a string (SageMaker's convention)
    input/config/problem.json           {"problemType", "labels": [{"index", "name"}]}
    input/data/train/examples.jsonl     one example per line, paths relative to the channel
    input/data/train/images/...         {"id", "image", "label"} (imgClf) or
    input/data/validation/...           {"id", "image", "mask"} (imgSeg)
    model/                              the trainer writes its model here
    output/failure                      the trainer writes why it failed here

and finds these paths in `SM_*` environment variables too, so the same entrypoint runs in a
container and as a host process.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

CONTAINER_ROOT = Path("/opt/ml")
CHANNELS = ("train", "validation")
FAILURE_TEXT_LIMIT = 4000


@dataclass(frozen=True)
class JobLayout:
    root: Path

    @property
    def config_dir(self) -> Path:
        return self.root / "input" / "config"

    @property
    def data_dir(self) -> Path:
        return self.root / "input" / "data"

    def channel(self, name: str) -> Path:
        return self.data_dir / name

    @property
    def model_dir(self) -> Path:
        return self.root / "model"

    @property
    def output_dir(self) -> Path:
        return self.root / "output"

    @property
    def failure_file(self) -> Path:
        return self.output_dir / "failure"

    def create(self) -> JobLayout:
        for path in (self.config_dir, self.model_dir, self.output_dir / "data"):
            path.mkdir(parents=True, exist_ok=True)
        for name in CHANNELS:
            self.channel(name).mkdir(parents=True, exist_ok=True)
        return self

    def write_config(self, hyperparameters: dict[str, Any], problem: dict[str, Any]) -> None:
        self.config_dir.mkdir(parents=True, exist_ok=True)
        (self.config_dir / "hyperparameters.json").write_text(
            json.dumps(hyperparameters_as_strings(hyperparameters), indent=2, sort_keys=True)
        )
        (self.config_dir / "problem.json").write_text(json.dumps(problem, indent=2))

    def read_failure(self) -> str | None:
        try:
            text = self.failure_file.read_text(encoding="utf-8", errors="replace").strip()
        except OSError:
            return None
        return text[:FAILURE_TEXT_LIMIT] or None


def hyperparameters_as_strings(values: dict[str, Any]) -> dict[str, str]:
    """SageMaker passes every hyperparameter as a string; so do we, on every backend."""
    out: dict[str, str] = {}
    for key, value in values.items():
        if isinstance(value, bool):
            out[key] = "true" if value else "false"
        elif isinstance(value, float):
            out[key] = repr(value)
        else:
            out[key] = str(value)
    return out


def sm_environment(
    layout: JobLayout, *, num_cpus: int | None = None, seen_as: JobLayout | None = None
) -> dict[str, str]:
    """The SM_* variables a trainer may read: paths of `seen_as` (the layout as the trainer
    sees it, e.g. /opt/ml in a container; default `layout`), hyperparameters from `layout`."""
    hps = json.loads((layout.config_dir / "hyperparameters.json").read_text())
    layout = seen_as or layout
    return {
        "SM_INPUT_DIR": str(layout.root / "input"),
        "SM_INPUT_CONFIG_DIR": str(layout.config_dir),
        "SM_INPUT_DATA_DIR": str(layout.data_dir),
        "SM_CHANNELS": json.dumps(list(CHANNELS)),
        "SM_CHANNEL_TRAIN": str(layout.channel("train")),
        "SM_CHANNEL_VALIDATION": str(layout.channel("validation")),
        "SM_MODEL_DIR": str(layout.model_dir),
        "SM_OUTPUT_DIR": str(layout.output_dir),
        "SM_OUTPUT_DATA_DIR": str(layout.output_dir / "data"),
        "SM_HPS": json.dumps(hps, sort_keys=True),
        "SM_NUM_CPUS": str(num_cpus or os.cpu_count() or 1),
        "SM_NUM_GPUS": "0",
    }
