"""include/trainers/common/torch_loop.py in-process: temperature fitting, the moving average
of the weights."""

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


def test_weight_average_follows_the_weights_with_its_decay(torch_loop: Any) -> None:
    """After each step the average moves (1 - d) of the way to the weights (d warmed up as
    (1 + t) / (10 + t)); batch norm's integer step counter is copied, not averaged."""
    import torch

    model = torch.nn.Sequential(torch.nn.Linear(2, 1), torch.nn.BatchNorm1d(1))
    with torch.no_grad():
        model[0].weight.fill_(0.0)
    average = torch_loop.WeightAverage(model, decay=0.9)
    expected = 0.0
    for step in range(1, 31):
        with torch.no_grad():
            model[0].weight.fill_(1.0)
            model[1].num_batches_tracked.fill_(step)
        average.update(model)
        d = min(0.9, (1 + step) / (10 + step))
        expected = d * expected + (1 - d) * 1.0
        assert float(average.model[0].weight[0, 0]) == pytest.approx(expected, rel=1e-6)
        assert int(average.model[1].num_batches_tracked) == step
    assert expected < 1.0  # it approaches the weights, never reaches them
    assert not any(p.requires_grad for p in average.model.parameters())


@pytest.mark.parametrize("decay", [0.0, 0.9])
def test_fit_keeps_the_averaged_weights_when_asked(torch_loop: Any, decay: float) -> None:
    """fit validates, keeps and returns the moving average (decay > 0) or the weights
    themselves (decay 0): the model returned is the one validate() scored best."""
    import torch

    torch.manual_seed(0)
    model = torch.nn.Linear(4, 2)
    x = torch.randn(64, 4)
    y = (x[:, 0] > 0).long()
    seen: list[dict[str, torch.Tensor]] = []
    scored_nets: set[int] = set()

    def validate(net: torch.nn.Module) -> tuple[float, float]:
        scored_nets.add(id(net))
        seen.append({k: v.clone() for k, v in net.state_dict().items()})
        return float(torch.nn.functional.cross_entropy(net(x), y)), float(len(seen) == 2)

    hps = {"learning_rate": 0.1, "weight_decay": 0.0, "epochs": 4, "patience": 0,
           "weight_average": decay}  # fmt: skip
    best = torch_loop.fit(
        model,
        lambda epoch: iter([(x, y)] * 8),
        torch.nn.functional.cross_entropy,
        validate,
        "score",
        hps,
        steps_per_epoch=8,
    )
    assert best.epoch == 2
    assert scored_nets == ({id(model)} if decay == 0 else scored_nets - {id(model)})
    assert len(scored_nets) == 1
    for key, value in model.state_dict().items():
        assert torch.equal(value, seen[1][key])
