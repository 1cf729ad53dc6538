"""PyTorch pieces shared by the reference trainers: threads and seeds, class-balanced loss
weights, the epoch loop (metric line per epoch, best-epoch weights, early stopping), temperature
scaling, and weights <-> model.npz (plain arrays, never pickles).

Works with Debian bookworm's python3-torch (1.13, the container base image) and the CPU wheel
of torch 2.x (the venv of the local backend).
"""

from __future__ import annotations

import contextlib
import copy
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import torch
from contract import TrainerError, fmt, log, num_cpus


def setup_torch(seed: int) -> None:
    """CPU threads from SM_NUM_CPUS, one inter-op thread, and every random generator seeded."""
    torch.set_num_threads(num_cpus())
    with contextlib.suppress(RuntimeError):  # already set (a second call in one process)
        torch.set_num_interop_threads(1)
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)


def balanced_weights(counts: np.ndarray) -> torch.Tensor:
    """Per-class loss weights n / (classes present * n_c): every present class counts equally."""
    counts = np.asarray(counts, dtype=np.float64)
    present = counts > 0
    weights = np.zeros(len(counts))
    weights[present] = counts.sum() / (np.count_nonzero(present) * counts[present])
    return torch.tensor(weights, dtype=torch.float32)


def cosine_lr(optimizer: torch.optim.Optimizer, lr0: float, step: int, total: int) -> None:
    """Linear warm-up over the first 3 % of steps, then cosine decay to 2 % of lr0."""
    warm = max(1, int(0.03 * total))
    if step < warm:
        lr = lr0 * (step + 1) / warm
    else:
        progress = (step - warm) / max(1, total - warm)
        lr = lr0 * (0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * progress)))
    for group in optimizer.param_groups:
        group["lr"] = lr


@dataclass
class Best:
    epoch: int = 0
    score: float = -math.inf
    loss: float = math.inf
    state: dict[str, torch.Tensor] | None = None


class WeightAverage:
    """An exponential moving average of a model's weights and batch-norm statistics (Polyak
    averaging, as timm's ModelEmaV2): after step t, average = d * average + (1 - d) * weights
    with d = min(decay, (1 + t) / (10 + t)), so the first steps are not dominated by the
    initial weights. Integer buffers (batch norm's step counter) are copied."""

    def __init__(self, model: torch.nn.Module, decay: float) -> None:
        self.decay = decay
        self.model = copy.deepcopy(model).eval()
        for parameter in self.model.parameters():
            parameter.requires_grad_(False)
        self.steps = 0

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        self.steps += 1
        d = min(self.decay, (1 + self.steps) / (10 + self.steps))
        current = model.state_dict()
        for name, average in self.model.state_dict().items():
            value = current[name].detach()
            if average.dtype.is_floating_point:
                average.mul_(d).add_(value, alpha=1 - d)
            else:
                average.copy_(value)


def fit(
    model: torch.nn.Module,
    batches: Callable[[int], Iterator[tuple[torch.Tensor, torch.Tensor]]],
    loss_of: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    validate: Callable[[torch.nn.Module], tuple[float, float]],
    metric: str,
    hps: dict,
    steps_per_epoch: int,
) -> Best:
    """Train with AdamW (cosine schedule); after every epoch log
    `epoch=E train_loss=.. val_loss=.. <metric>=..` from validate(model) ->
    (loss, score). Keeps the best epoch's weights (highest score, then lowest loss); stops early
    when the best is `patience` epochs old (patience 0: never). `batches(epoch)` yields
    (inputs, targets) of one epoch. With `hps["weight_average"]` = d > 0, the model validated,
    kept and returned is the moving average of the weights (`WeightAverage`, decay d per
    step), which swings far less from epoch to epoch than the weights themselves."""
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=hps["learning_rate"], weight_decay=hps["weight_decay"]
    )
    decay = float(hps.get("weight_average", 0.0))
    average = WeightAverage(model, decay) if decay > 0 else None
    scored = average.model if average else model
    total = hps["epochs"] * steps_per_epoch
    best, step = Best(), 0
    for epoch in range(1, hps["epochs"] + 1):
        model.train()
        loss_sum, seen = 0.0, 0
        for inputs, targets in batches(epoch):
            cosine_lr(optimizer, hps["learning_rate"], step, total)
            loss = loss_of(model(inputs), targets)
            if not torch.isfinite(loss):
                raise TrainerError(
                    f"training diverged at epoch {epoch} (the loss is not finite); "
                    "lower the learning_rate"
                )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if average:
                average.update(model)
            loss_sum += float(loss.detach()) * len(targets)
            seen += len(targets)
            step += 1
        model.eval()
        with torch.no_grad():
            val_loss, score = validate(scored)
        log(
            f"epoch={epoch} train_loss={fmt(loss_sum / max(1, seen))} val_loss={fmt(val_loss)} "
            f"{metric}={fmt(score)}"
        )
        if (score, -val_loss) > (best.score, -best.loss):
            state = {k: v.detach().clone() for k, v in scored.state_dict().items()}
            best = Best(epoch, score, val_loss, state)
        elif hps["patience"] and epoch - best.epoch >= hps["patience"]:
            log(f"early stop: no better {metric} in {hps['patience']} epochs")
            break
    assert best.state is not None
    model.load_state_dict(best.state)
    model.eval()
    return best


def fit_temperature(logits: np.ndarray, targets: np.ndarray, score: str = "nll") -> float:
    """The temperature T minimising a proper scoring rule of softmax(logits / T) on held-out
    (validation) logits: a grid over log T, refined by golden-section search (deterministic).

    `score` "nll" (the default): the mean negative log-likelihood (Guo et al. 2017). "brier":
    the mean Brier score, sum over classes of (p - onehot)^2, bounded (at most 2 per example),
    so a few confidently wrong validation images weigh less. On Br35H's grouped splits neither
    transfers to the test split better on average (benchmarks/calibration.py prints both)."""
    logits = logits.astype(np.float64)
    onehot = np.eye(logits.shape[1])[targets]
    if score not in ("brier", "nll"):
        raise ValueError(f"score {score!r} is not 'brier' or 'nll'")

    def loss(t: float) -> float:
        z = logits / t
        z = z - z.max(axis=1, keepdims=True)
        log_p = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
        if score == "nll":
            return float(-np.mean(log_p[np.arange(len(targets)), targets]))
        return float(np.mean(np.sum((np.exp(log_p) - onehot) ** 2, axis=1)))

    grid = np.exp(np.linspace(math.log(0.05), math.log(20.0), 121))
    best = min(grid, key=loss)
    low, high = best / 1.06, best * 1.06  # refine around the grid point (golden section)
    ratio = (math.sqrt(5) - 1) / 2
    for _ in range(30):
        a, b = high - ratio * (high - low), low + ratio * (high - low)
        if loss(a) < loss(b):
            high = b
        else:
            low = a
    return float((low + high) / 2)


def state_arrays(model: torch.nn.Module) -> dict[str, np.ndarray]:
    return {f"w.{k}": v.detach().cpu().numpy() for k, v in model.state_dict().items()}


def load_state(model: torch.nn.Module, arrays: dict[str, np.ndarray]) -> None:
    state = {k[2:]: torch.from_numpy(np.array(v)) for k, v in arrays.items() if k.startswith("w.")}
    model.load_state_dict(state)
    model.eval()
