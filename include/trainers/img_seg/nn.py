"""A small NumPy network shared by the reference trainers: softmax regression (hidden_units=0)
or one ReLU hidden layer, class-weighted cross-entropy, mini-batch Adam with a cosine learning
rate decay, and the epoch loop that logs metric lines and keeps the best epoch's weights.

Identical in every trainer folder (tests/trainers checks that the copies do not drift apart).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
from contract import TrainerError, fmt, log

Params = dict[str, np.ndarray]
MIN_LR_FRACTION = 0.05  # the cosine decay ends at this fraction of learning_rate
BETA1, BETA2, EPS = 0.9, 0.999, 1e-8


def softmax(z: np.ndarray) -> np.ndarray:
    """Row-wise softmax (in place on a copy of z)."""
    z = z - z.max(axis=1, keepdims=True)
    np.exp(z, out=z)
    z /= z.sum(axis=1, keepdims=True)
    return z


def forward(params: Params, x: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """Logits and (for the MLP) the hidden activations."""
    if "w2" in params:
        hidden = np.maximum(x @ params["w1"] + params["b1"], 0.0)
        return hidden @ params["w2"] + params["b2"], hidden
    return x @ params["w1"] + params["b1"], None


def probabilities(params: Params, x: np.ndarray, chunk: int = 65_536) -> np.ndarray:
    """Softmax probabilities for many rows, computed in chunks."""
    if len(x) == 0:
        return np.zeros((0, params["b2" if "b2" in params else "b1"].shape[0]), np.float32)
    return np.concatenate(
        [softmax(forward(params, x[i : i + chunk])[0]) for i in range(0, len(x), chunk)]
    )


def init_params(rng: np.random.Generator, inputs: int, hidden: int, classes: int) -> Params:
    if hidden == 0:
        return {
            "w1": np.zeros((inputs, classes), np.float32),
            "b1": np.zeros(classes, np.float32),
        }
    w1 = rng.standard_normal((inputs, hidden)) * math.sqrt(2.0 / inputs)
    w2 = rng.standard_normal((hidden, classes)) * math.sqrt(1.0 / hidden)
    return {
        "w1": w1.astype(np.float32),
        "b1": np.zeros(hidden, np.float32),
        "w2": w2.astype(np.float32),
        "b2": np.zeros(classes, np.float32),
    }


def gradients(
    params: Params, x: np.ndarray, y: np.ndarray, weights: np.ndarray, l2: float
) -> tuple[float, Params]:
    """Weighted mean cross-entropy of a batch and its gradients (+ L2 on the weight matrices)."""
    logits, hidden = forward(params, x)
    probs = softmax(logits)
    rows = np.arange(len(y))
    loss = float(np.mean(-np.log(np.maximum(probs[rows, y], 1e-12)) * weights))
    delta = probs
    delta[rows, y] -= 1.0
    delta *= (weights / len(y)).astype(np.float32)[:, None]
    grads: Params = {}
    if hidden is None:
        grads["w1"], grads["b1"] = x.T @ delta, delta.sum(axis=0)
    else:
        grads["w2"], grads["b2"] = hidden.T @ delta, delta.sum(axis=0)
        back = delta @ params["w2"].T
        back[hidden <= 0] = 0.0
        grads["w1"], grads["b1"] = x.T @ back, back.sum(axis=0)
    if l2:
        for key in ("w1", "w2"):
            if key in grads:
                grads[key] += np.float32(l2) * params[key]
    return loss, grads


def balanced_weights(y: np.ndarray, classes: int) -> np.ndarray:
    """Per-class loss weights n / (classes present * n_c): every present class counts equally."""
    counts = np.bincount(y, minlength=classes)
    present = counts > 0
    weights = np.zeros(classes, np.float32)
    weights[present] = len(y) / (np.count_nonzero(present) * counts[present])
    return weights


def fit(
    x: np.ndarray,
    y: np.ndarray,
    classes: int,
    hps: dict,
    validate: Callable[[Params], tuple[float, float]],
    metric: str,
) -> tuple[Params, int, float, float]:
    """Train on standardised rows x (float32) with class positions y; after every epoch log
    `epoch=E train_loss=.. val_loss=.. <metric>=..` from validate(params) -> (loss, score).
    Returns the weights of the best epoch (highest score, then lowest loss), that epoch, its
    score and its loss. Deterministic for a given hps["seed"]."""
    rng = np.random.default_rng(hps["seed"])
    params = init_params(rng, x.shape[1], hps["hidden_units"], classes)
    moments = {k: (np.zeros_like(v), np.zeros_like(v)) for k, v in params.items()}
    sample_weight = balanced_weights(y, classes)[y]
    batch, epochs, lr0, l2 = hps["batch_size"], hps["epochs"], hps["learning_rate"], hps["l2"]
    total = epochs * math.ceil(len(y) / batch)
    step = 0
    best: tuple[float, float] | None = None
    best_params, best_epoch, best_loss = params, 0, math.inf
    for epoch in range(1, epochs + 1):
        order = rng.permutation(len(y))
        loss_sum = 0.0
        for start in range(0, len(order), batch):
            idx = np.sort(order[start : start + batch])  # sorted: faster row gathers
            loss, grads = gradients(params, x[idx], y[idx], sample_weight[idx], l2)
            if not math.isfinite(loss):
                raise TrainerError(
                    f"training diverged at epoch {epoch} (the loss is not finite); "
                    "lower the learning_rate"
                )
            loss_sum += loss * len(idx)
            step += 1
            cosine = 0.5 * (1 + math.cos(math.pi * (step - 1) / max(1, total - 1)))
            lr = lr0 * (MIN_LR_FRACTION + (1 - MIN_LR_FRACTION) * cosine)
            scale = lr * math.sqrt(1 - BETA2**step) / (1 - BETA1**step)
            for key, grad in grads.items():
                m, v = moments[key]
                m *= BETA1
                m += (1 - BETA1) * grad
                v *= BETA2
                v += (1 - BETA2) * grad * grad
                params[key] -= (scale * m / (np.sqrt(v) + EPS)).astype(np.float32)
        val_loss, score = validate(params)
        log(
            f"epoch={epoch} train_loss={fmt(loss_sum / len(y))} val_loss={fmt(val_loss)} "
            f"{metric}={fmt(score)}"
        )
        if best is None or (score, -val_loss) > best:
            best = (score, -val_loss)
            best_params = {k: v.copy() for k, v in params.items()}
            best_epoch, best_loss = epoch, val_loss
    assert best is not None
    return best_params, best_epoch, best[0], best_loss
