"""Small builders shared by tests."""

from __future__ import annotations

import copy
from typing import Any

import yaml

from tests.conftest import EXAMPLE_CONFIGS


def example(name: str) -> dict[str, Any]:
    """A fresh copy of include/configs/<name>.yaml."""
    return copy.deepcopy(yaml.safe_load((EXAMPLE_CONFIGS / f"{name}.yaml").read_text()))
