"""include/trainers/common/torch_loop.py in-process: temperature fitting."""

from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

COMMON = Path(__file__).resolve().parents[2] / "include" / "trainers" / "common"


@pytest.fixture(scope="module")
def torch_loop() -> Any:
    sys.path.insert(0, str(COMMON))
    try:
        import torch_loop as module
    finally:
        sys.path.remove(str(COMMON))
    return module


def calibrated(rng: np.random.Generator, n: int, temperature: float) -> tuple[np.ndarray, Any]:
    """Two-class logits and labels drawn from softmax(logits / temperature)."""
    logits = np.stack([np.zeros(n), rng.normal(0.0, 4.0, n)], axis=1)
    p1 = 1 / (1 + np.exp(-logits[:, 1] / temperature))
    return logits, (rng.random(n) < p1).astype(np.int64)


@pytest.mark.parametrize("score", ["brier", "nll"])
def test_fit_temperature_recovers_the_temperature_of_the_labels(
    torch_loop: Any, score: str
) -> None:
    rng = np.random.default_rng(0)
    for temperature in (0.5, 1.0, 2.0):
        logits, y = calibrated(rng, 20_000, temperature)
        fitted = torch_loop.fit_temperature(logits, y, score)
        assert abs(math.log(fitted / temperature)) < 0.08, (score, temperature, fitted)


def test_a_few_confidently_wrong_labels_move_the_brier_fit_less(torch_loop: Any) -> None:
    rng = np.random.default_rng(1)
    logits, y = calibrated(rng, 2_000, 1.0)
    margin = np.abs(logits[:, 1])
    flipped = y.copy()
    worst = np.argsort(-margin)[:40]  # 2 % of the examples, the most confident ones, wrong
    flipped[worst] = 1 - flipped[worst]
    nll = torch_loop.fit_temperature(logits, flipped, "nll")
    brier = torch_loop.fit_temperature(logits, flipped, "brier")
    assert nll > 1.5  # the log-likelihood pays without bound for each confident error
    assert 1.0 < brier < nll and math.log(brier) < 0.5 * math.log(nll)


def test_fit_temperature_rejects_an_unknown_score(torch_loop: Any) -> None:
    with pytest.raises(ValueError, match="'ece' is not 'brier' or 'nll'"):
        torch_loop.fit_temperature(np.zeros((2, 2)), np.array([0, 1]), "ece")
